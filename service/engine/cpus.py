"""The CPUs this process may use: the one count every default worker and thread number derives from (inference
workers, intra-op threads, the backfill's and check-catalog's decode processes, train-head's jobs)."""

from __future__ import annotations

import math
import os
from pathlib import Path

# A container's CPU limit (CFS quota): cgroup v2 "cpu.max" holds "<quota µs> <period µs>" or "max <period>";
# cgroup v1 has cpu.cfs_quota_us (-1 = no limit) and cpu.cfs_period_us.
CGROUP_V2_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_CPU_DIR = Path("/sys/fs/cgroup/cpu")


def quota_cores(quota_us: int, period_us: int) -> int | None:
    """Whole cores a CFS quota allows (rounded up: 1.5 CPUs keep two workers busy part-time); None = no limit."""
    if quota_us <= 0 or period_us <= 0:
        return None
    return max(1, math.ceil(quota_us / period_us))


def parse_cpu_max(text: str) -> int | None:
    """cgroup v2 ``cpu.max`` ("200000 100000", "max 100000") → cores, or None without a limit."""
    quota, period = text.split()
    return None if quota == "max" else quota_cores(int(quota), int(period))


def cgroup_cpu_limit() -> int | None:
    """The CPU limit of this process's container, in whole cores; None where there is none (or no cgroup fs)."""
    try:
        return parse_cpu_max(CGROUP_V2_CPU_MAX.read_text())
    except (OSError, ValueError):
        pass
    try:
        quota = int((CGROUP_V1_CPU_DIR / "cpu.cfs_quota_us").read_text())
        period = int((CGROUP_V1_CPU_DIR / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_cores(quota, period)


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by its container's CPU limit (which the mask does
    not show: a container limited to 2 CPUs still sees every core of the node)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 2
    limit = cgroup_cpu_limit()
    return min(cpus, limit) if limit else cpus
