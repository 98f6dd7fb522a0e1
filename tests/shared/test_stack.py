"""The local stack's supervisord config: no program is ever given up on (FATAL)."""

from __future__ import annotations

import configparser
from pathlib import Path

from devtools.stack.broker import BrokerSpec
from devtools.stack.processes import PostgresSpec, RedisSpec
from devtools.stack.stack import StackConfig, write_supervisor_config


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
