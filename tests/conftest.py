"""Fixtures live in tests/fixtures/ (servers, services, MQTT clients); helpers that tests
call directly live in tests/utils/."""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["tests.fixtures.servers", "tests.fixtures.services", "tests.fixtures.mqtt",
                  "tests.fixtures.api", "tests.fixtures.browser"]


@pytest.fixture(autouse=True)
def _no_ambient_insa_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A running stack's INSA_* variables must not leak into tests."""
    for key in list(os.environ):
        if key.startswith("INSA_"):
            monkeypatch.delenv(key)
