"""`insa run` finds the services from their installed entry points, and the dev tooling's
registry (the local stack, the tests' launcher) knows the same ones."""

from __future__ import annotations

from click.testing import CliRunner

from devtools.registry import SERVICES
from services.cli import main, runnable_services


def test_insa_run_offers_every_registered_service_and_nothing_else() -> None:
    assert runnable_services() == sorted(s.name for s in SERVICES)
    result = CliRunner().invoke(main, ["run", "--help"])
    assert result.exit_code == 0
    assert "{alerts|api|diagnostics|ingestor}" in result.output
    refused = CliRunner().invoke(main, ["run", "simulator"])
    assert refused.exit_code == 2 and "'simulator' is not one of" in refused.output
