"""What the benchmarks measure with: a process's CPU seconds, and latency percentiles."""

from __future__ import annotations

import os
import statistics
from pathlib import Path


def _stat(pid: int | str) -> list[str]:
    """/proc/<pid>/stat's fields after the command name (field 3 of proc(5) first)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


class CpuSampler:
    """CPU seconds (user + system) a process used, from /proc; with `children`, those of
    its children too, live and exited (PostgreSQL's backends are the postmaster's)."""

    def __init__(self, pid: int, children: bool = False) -> None:
        self.pid = pid
        self.children = children

    def seconds(self) -> float:
        fields = _stat(self.pid)
        ticks = int(fields[11]) + int(fields[12])
        if self.children:
            ticks += int(fields[13]) + int(fields[14])  # exited children, once reaped
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    try:
                        child = _stat(entry.name)
                    except OSError:
                        continue  # exited meanwhile
                    if int(child[1]) == self.pid:
                        ticks += int(child[11]) + int(child[12])
        return ticks / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 10) - 1] \
        if len(values) > 1 else (values[0] if values else 0.0)


def latency_summary(latencies: list[float]) -> dict[str, float]:
    return {"p50": percentile(latencies, 50), "p95": percentile(latencies, 95),
            "p99": percentile(latencies, 99), "max": max(latencies, default=0)}
