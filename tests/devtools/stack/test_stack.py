"""The local stack: supervisord never gives up on a program (FATAL), services get the same
variables as in compose and only their own secrets, and no secret is readable by others."""

from __future__ import annotations

import configparser
import stat
from pathlib import Path

import pytest

from devtools.registry import SERVICES, Service
from devtools.stack.broker import BrokerSpec
from devtools.stack.processes import PostgresSpec, RedisSpec
from devtools.stack.stack import (
    API_ADMIN_PASSWORD,
    API_JWT_SECRET,
    StackConfig,
    load_secrets,
    service_environment,
    write_supervisor_config,
)
from shared.broker_accounts import SPARKPLUG_ACCOUNT
from tests.utils.compose import compose_services

SECRETS = dict.fromkeys(["postgres", "redis", API_JWT_SECRET, API_ADMIN_PASSWORD,
                         *(s.account for s in SERVICES), SPARKPLUG_ACCOUNT], "x" * 16)
SPARKPLUG = {"ingestor"}  # the programs that also run the Sparkplug B host


def test_every_program_restarts_and_is_never_given_up_on(tmp_path: Path) -> None:
    cfg = StackConfig(tmp_path, 1, 2, 3, 4, {s.name: 5 for s in SERVICES}, 2)
    write_supervisor_config(cfg, PostgresSpec(tmp_path / "pg", 1, "insa", "x" * 16),
                            RedisSpec(tmp_path / "redis", 2, "x" * 16),
                            BrokerSpec(tmp_path / "mqtt", 3, 4), SECRETS, None, None)
    parser = configparser.RawConfigParser()
    parser.read(cfg.supervisor_conf)
    programs = [s for s in parser.sections() if s.startswith("program:")]
    assert {"program:postgres", "program:redis", "program:mosquitto", "program:ingestor",
            "program:simulator"} <= set(programs)
    for program in programs:
        assert parser.get(program, "autorestart") == "true", program
        # supervisord's backoff grows a second per failed start: this is years of retrying.
        assert int(parser.get(program, "startretries")) >= 100_000, program


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_local_stack_uses_the_same_variable_names_as_compose(tmp_path: Path,
                                                             service: Service) -> None:
    cfg = StackConfig(tmp_path, 1, 2, 3, 4, {s.name: 5 for s in SERVICES}, 1)
    local = service_environment(cfg, SECRETS, service)
    assert set(local) - {"INSA_ENV"} <= set(compose_services()[service.name]["environment"])


def test_each_program_gets_only_the_secrets_it_uses_and_none_is_world_readable(
        tmp_path: Path) -> None:
    cfg = StackConfig(tmp_path, 1, 2, 3, 4, {s.name: 5 for s in SERVICES}, 1)
    secret = load_secrets(tmp_path, ["sim-esp-001"])
    write_supervisor_config(cfg, PostgresSpec(tmp_path / "pg", 1, "insa", "x" * 16),
                            RedisSpec(tmp_path / "redis", 2, "x" * 16),
                            BrokerSpec(tmp_path / "mqtt", 3, 4), secret, None, None)
    for name in ("supervisord.conf", "secrets.env", "devices.env"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    parser = configparser.RawConfigParser()
    parser.read(cfg.supervisor_conf)
    everyone = {"postgres", "redis"}
    for program in [*(s.name for s in SERVICES), "simulator"]:
        environment = parser.get(f"program:{program}", "environment")
        given = {k for k, v in secret.items() if v in environment}
        own = {f"insa-{program}"} if program != "simulator" else set()
        if program in SPARKPLUG:
            own.add(SPARKPLUG_ACCOUNT)
        extra = {API_JWT_SECRET, API_ADMIN_PASSWORD} if program == "api" else set()
        assert given == (everyone | own | extra if own else set()), program
    assert (tmp_path / "devices.env").read_text() == f"sim-esp-001={secret['sim-esp-001']}\n"
