"""The platform's services as the dev tooling sees them.

A service named `x` lives in `services/x/` with its entry point `services/x/main.py`
(registered in pyproject.toml's `insa.services` group, run as `insa run x`), reads
`INSA_X_*` settings, connects to the broker as the account of the same name (`insa-x`,
a role in `shared/broker_accounts.py`), and serves health and metrics on an HTTP port.
Adding it here puts it in the local stack (`make run`) and gives tests and benchmarks a
process launcher for it (`devtools.stack.service_process`); a test checks that this list
and the entry points agree.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Service:
    name: str
    stack_http_port: int  # on the local stack; INSA_STACK_<NAME>_HTTP_PORT overrides it

    @property
    def module(self) -> str:
        return f"services.{self.name}.main"

    @property
    def env_prefix(self) -> str:
        return f"INSA_{self.name.upper()}_"

    @property
    def account(self) -> str:
        return f"insa-{self.name}"


INGESTOR = Service("ingestor", 18001)
DIAGNOSTICS = Service("diagnostics", 18002)
ALERTS = Service("alerts", 18003)
API = Service("api", 18004)  # its HTTP port is the API itself, health and metrics too

# Started by the local stack in this order, once the migrations are applied.
SERVICES = (INGESTOR, DIAGNOSTICS, ALERTS, API)
