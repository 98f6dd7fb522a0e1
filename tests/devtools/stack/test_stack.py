"""The local stack: supervisord never gives up on a program (FATAL), and services get the
same variables as in compose."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

from devtools.registry import SERVICES, Service
from devtools.stack.broker import BrokerSpec
from devtools.stack.processes import PostgresSpec, RedisSpec
from devtools.stack.stack import (
    API_ADMIN_PASSWORD,
    API_JWT_SECRET,
    StackConfig,
    service_environment,
    write_supervisor_config,
)
from tests.utils.compose import compose_services


def test_every_program_restarts_and_is_never_given_up_on(tmp_path: Path) -> None:
    cfg = StackConfig(tmp_path, 1, 2, 3, 4, 5, 2)
    write_supervisor_config(cfg, PostgresSpec(tmp_path / "pg", 1, "insa", "x" * 16),
                            RedisSpec(tmp_path / "redis", 2, "x" * 16),
                            BrokerSpec(tmp_path / "mqtt", 3, 4), {}, None, None)
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
    local = service_environment(cfg, dict.fromkeys(
        ["postgres", "redis", API_JWT_SECRET, API_ADMIN_PASSWORD,
         *(s.account for s in SERVICES)], "x" * 16))
    others = tuple(s.env_prefix for s in SERVICES if s is not service)
    mine = {k for k in local if not k.startswith(others)} - {"INSA_ENV"}
    assert mine <= set(compose_services()[service.name]["environment"])
