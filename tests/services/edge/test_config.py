"""The mapping file: the documented example is valid, and a bad one is refused before
anything connects, naming the field (or the TOML line) and why."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.edge.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[3]

HEAD = """
gateway = "gw-1"
[broker]
host = "127.0.0.1"
[buffer]
path = "buffer.sqlite3"
"""
MODBUS = HEAD + """
[[modbus]]
name = "rtu-1"
host = "127.0.0.1"
[[modbus.blocks]]
function = "holding_registers"
start = 10
count = 4
[[modbus.blocks.points]]
device = "W-1"
metric = "pip"
address = {address}
data_type = "{data_type}"
unit = "{unit}"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(text)
    return path


def test_the_documented_example_is_valid() -> None:
    config = load_config(REPO / "docs/examples/edge-site.toml")
    assert config.gateway == "north-field-gw"
    assert config.broker.resolved_port == 8883
    assert [s.name for s in config.opcua] + [s.name for s in config.modbus] == \
        ["vsd-panel-7", "rtu-12"]
    # Relative paths are from the file's folder.
    assert config.broker.ca_file == REPO / "docs/examples/certs/insa-ca.crt"


def test_a_valid_file_and_its_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MODBUS.format(address=12, data_type="float32",
                                                       unit="kPa")))
    [server] = config.modbus
    assert (server.port, server.unit_id, server.byte_order, server.word_order) == \
        (502, 1, "big", "big")
    assert config.buffer.path == tmp_path / "buffer.sqlite3"
    assert (config.status.host, config.status.port) == ("127.0.0.1", 8470)


@pytest.mark.parametrize(("address", "data_type", "unit", "error"), [
    (13, "float32", "psi",
     r"modbus\[0\]\.blocks\[0\]: .*points\[0\] \(W-1/pip\): address 13 \(2 wide\) is "
     r"outside the block 10\.\.13"),
    (9, "int16", "psi", r"address 9 .* outside the block"),
    (10, "int64", "psi", r"modbus\[0\]\.blocks\[0\]\.points\[0\]\.data_type: Input should be"),
    (10, "int16", "degC", r"points\[0\]: Value error, 'degC' cannot express pip"),
])
def test_a_bad_point_is_refused_naming_where(tmp_path: Path, address: int, data_type: str,
                                             unit: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        load_config(write(tmp_path, MODBUS.format(address=address, data_type=data_type,
                                                  unit=unit)))


def test_a_misspelt_key_a_duplicate_series_and_no_source_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"modbus\[0\]\.pol_interval: Extra inputs"):
        load_config(write(tmp_path, MODBUS.format(address=10, data_type="int16", unit="psi")
                          .replace('host = "127.0.0.1"\n[[modbus.blocks]]',
                                   'host = "127.0.0.1"\npol_interval = 1\n[[modbus.blocks]]')))
    twice = MODBUS.format(address=10, data_type="int16", unit="psi") + """
[[modbus.blocks.points]]
device = "W-1"
metric = "pip"
address = 11
data_type = "int16"
"""
    with pytest.raises(ConfigError, match=r"modbus\[0\]\.blocks\[0\]\.points\[1\] maps W-1/pip"):
        load_config(write(tmp_path, twice))
    with pytest.raises(ConfigError, match="nothing to read"):
        load_config(write(tmp_path, HEAD))


def test_coils_are_bool_and_registers_need_a_type(tmp_path: Path) -> None:
    coils = MODBUS.format(address=10, data_type="float32", unit="psi").replace(
        "holding_registers", "coils")
    with pytest.raises(ConfigError, match="coils are bool, not float32"):
        load_config(write(tmp_path, coils))
    untyped = MODBUS.format(address=10, data_type="int16", unit="psi").replace(
        'data_type = "int16"\n', "")
    with pytest.raises(ConfigError, match="data_type is required for holding_registers"):
        load_config(write(tmp_path, untyped))


def test_opcua_node_ids_and_security_are_checked(tmp_path: Path) -> None:
    opcua = HEAD + """
[[opcua]]
name = "vsd-1"
endpoint = "opc.tcp://127.0.0.1:4840"
security = "{security}"
[[opcua.points]]
node = "{node}"
device = "W-1"
metric = "pip"
"""
    with pytest.raises(ConfigError, match=r"opcua\[0\]\.points\[0\]\.node: .*not an OPC UA"):
        load_config(write(tmp_path, opcua.format(security="none", node="W-1.pip")))
    with pytest.raises(ConfigError, match="Basic256Sha256 needs certificate and private_key"):
        load_config(write(tmp_path, opcua.format(security="Basic256Sha256",
                                                 node="ns=2;s=W-1.pip")))


def test_a_toml_syntax_error_names_its_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not valid TOML: .*line 3"):
        load_config(write(tmp_path, 'gateway = "gw-1"\n[broker]\nhost = \n'))
