"""Sparkplug B 3.0: payloads decoded (`payload`) and encoded (`encoding`), topics and STATE
messages (`topics`).

The protobuf module `sparkplug_b_pb2` is generated from `sparkplug_b.proto` by `make install`
(and the image build); it is not committed and never leaves `payload` and `encoding`.
"""


class SparkplugError(ValueError):
    """Not a valid Sparkplug B payload, topic or STATE message; the message says what is wrong
    (and where: "metric 3 ('Speed'): Int8 value 300 out of range")."""
