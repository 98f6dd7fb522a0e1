"""`insa broker-accounts`: the platform's accounts, and a further replica's from its own
INSA_MQTT_PASSWORD_<ROLE>_<N>."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from services.cli import main
from shared.broker_accounts import SERVICE_ACCOUNTS


def every_role_password(monkeypatch: pytest.MonkeyPatch) -> None:
    for account in SERVICE_ACCOUNTS:
        monkeypatch.setenv("INSA_MQTT_PASSWORD_" + account.removeprefix("insa-").upper(),
                           f"{account}-secret-0123456789")


def test_replica_accounts_get_their_service_role(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    every_role_password(monkeypatch)
    monkeypatch.setenv("INSA_MQTT_PASSWORD_ALERTS_2", "second-alerts-secret-012345")
    monkeypatch.setenv("INSA_MQTT_PASSWORD_SUBSCRIBER_3", "third-subscriber-secret-0123")
    path = tmp_path / "dynamic-security.json"
    result = CliRunner().invoke(main, ["broker-accounts", "--file", str(path)])
    assert result.exit_code == 0, result.output
    clients = {c["username"]: c for c in json.loads(path.read_text())["clients"]}
    assert set(clients) == {*SERVICE_ACCOUNTS, "insa-alerts-2", "insa-subscriber-3"}
    assert clients["insa-alerts-2"]["roles"] == [{"rolename": "insa-alerts"}]
    assert clients["insa-alerts-2"]["clientid"] == "insa-alerts-2"
    assert clients["insa-subscriber-3"]["roles"] == [{"rolename": "insa-subscriber"}]


def test_a_replica_account_needs_a_real_secret(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    every_role_password(monkeypatch)
    monkeypatch.setenv("INSA_MQTT_PASSWORD_INGESTOR_2", "short")
    result = CliRunner().invoke(main, ["broker-accounts", "--file", str(tmp_path / "f.json")])
    assert result.exit_code != 0 and "INSA_MQTT_PASSWORD_INGESTOR_2" in result.output
