"""Rejects through the API, end to end: devices publish bad messages over MQTT, the real
ingestor refuses them with a reason, and the API shows a device's recent ones and the
fleet's summary by reason."""

from __future__ import annotations

from devtools.stack.servers import RunningBroker
from devtools.stack.service_process import ServiceProcess
from services.api.pagination import encode_cursor
from shared.mqtt import telemetry_topic
from tests.fixtures.api import Api
from tests.utils.db import fetch
from tests.utils.devices import connect_device
from tests.utils.waiting import wait_until


async def test_a_devices_rejects_and_the_fleet_summary(
        api: Api, broker: RunningBroker, ingestor: ServiceProcess, db_url: str) -> None:
    w1, w2 = connect_device(broker, "W-1"), connect_device(broker, "W-2")
    w1.publish(telemetry_topic("W-1"), b'{"flow_rate": "2500"}')
    w1.publish(telemetry_topic("W-1"), b'{"pip": 1e9}')
    w1.publish(telemetry_topic("W-1"), b'{"flow_rate": 2500}')  # good: stored
    w2.publish(telemetry_topic("W-2"), b'{"pip": 2e9}')
    w2.publish(telemetry_topic("W-2"), b"not json")
    await wait_until(lambda: fetch(db_url, "SELECT 1 FROM rejected_messages"),
                     lambda r: len(r) == 4, what="four rejects")

    viewer = await api.user("viewer")
    page = (await viewer.get("/devices/W-1/rejects")).json()
    assert [(r["reason"], r["detail"], r["payload"]) for r in page["items"]] == [
        ("implausible_value", "pip 1e+09 psi is outside its plausible range [-15, 10000] psi",
         '{"pip": 1e9}'),
        ("text_for_number", "flow_rate is a numeric metric; got the text '2500'",
         '{"flow_rate": "2500"}')]
    assert page["items"][0]["topic"] == "insa/devices/W-1/telemetry"
    assert page["next_cursor"] is None
    first = (await viewer.get("/devices/W-1/rejects", params={"limit": 1})).json()
    rest = (await viewer.get("/devices/W-1/rejects",
                             params={"limit": 1, "cursor": first["next_cursor"]})).json()
    assert [r["id"] for r in first["items"] + rest["items"]] == [r["id"] for r in page["items"]]
    foreign = encode_cursor("not an id")  # a well-formed cursor of another endpoint
    refused = await viewer.get("/devices/W-1/rejects", params={"cursor": foreign})
    assert refused.status_code == 422 and refused.json()["error"]["details"]["field"] == \
        "cursor"
    only = (await viewer.get("/devices/W-1/rejects",
                             params={"reason": "text_for_number"})).json()["items"]
    assert [r["reason"] for r in only] == ["text_for_number"]

    summary = (await viewer.get("/rejects/summary")).json()
    by_reason = {r["reason"]: r for r in summary["reasons"]}
    assert {k: (v["messages"], v["devices"]) for k, v in by_reason.items()} == {
        "implausible_value": (2, 2), "text_for_number": (1, 1), "invalid_json": (1, 1)}
    assert summary["reasons"][0]["reason"] == "implausible_value"  # most messages first
    assert by_reason["implausible_value"]["example_device_id"] == "W-2"  # the latest
    assert "2e+09" in by_reason["implausible_value"]["example_detail"]

    # A key scoped to W-2 sees W-2's alone, and nothing of W-1.
    scoped = api.client(key=await api.key("viewer", device_id="W-2"))
    own = (await scoped.get("/rejects/summary")).json()["reasons"]
    assert {r["reason"]: r["messages"] for r in own} == {"implausible_value": 1,
                                                         "invalid_json": 1}
    assert (await scoped.get("/devices/W-1/rejects")).status_code == 404
    # Only the good reading was stored.
    rows = await fetch(db_url, "SELECT value FROM telemetry")
    assert [r["value"] for r in rows] == [2500.0]
    w1.close()
    w2.close()
