"""A bounded schemathesis run over the OpenAPI schema as an admin: no request it makes
may get a server error or a response that breaks the documented schema."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from tests.fixtures.api import ADMIN_PASSWORD, Api

# Enough to reach every operation with examples, edge cases and random inputs, and still
# finish in about a minute on the 2-core machine.
MAX_EXAMPLES = 15
MAX_SECONDS = 90


@pytest.mark.timeout(MAX_SECONDS + 60)
async def test_schemathesis_finds_no_server_error_and_no_schema_break(
        api: Api, tmp_path: Path) -> None:
    token = (await api.login("admin", ADMIN_PASSWORD))["access_token"]
    st = Path(sys.executable).parent / "st"
    process = await asyncio.create_subprocess_exec(
        str(st), "run", f"{api.url}/api/v1/openapi.json",
        "--checks", "not_a_server_error,response_schema_conformance,content_type_conformance",
        "--phases", "examples,coverage,fuzzing", "--max-examples", str(MAX_EXAMPLES),
        "--seed", "20261125", "--workers", "1", "--max-time", str(MAX_SECONDS),
        "--request-timeout", "20", "--no-color", "--suppress-health-check", "all",
        # Its own logout and refresh would end the session mid-run; they are covered by
        # tests/services/api/test_auth.py.
        "--exclude-path-regex", "/auth/(logout|refresh)$",
        "-H", f"Authorization: Bearer {token}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""}, cwd=tmp_path)
    output, _ = await process.communicate()
    text = output.decode(errors="replace")
    summary = text[text.find("=== FAILURES") if "=== FAILURES" in text else -3000:]
    assert process.returncode == 0, summary[:8000]
