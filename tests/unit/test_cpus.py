"""The usable CPU count (service/engine/cpus.py): the affinity mask capped by a container's CPU quota, the one count
every default worker and thread number derives from."""

from __future__ import annotations

import os

from service.config import Settings
from service.engine import cpus
from service.engine.cpus import cgroup_cpu_limit, parse_cpu_max, quota_cores, usable_cpus
from service.offline import catalog_check


def test_a_containers_cpu_quota_caps_the_usable_cpus_rounded_up_to_whole_cores():
    assert parse_cpu_max("200000 100000\n") == 2
    assert parse_cpu_max("150000 100000") == 2  # 1.5 CPUs: two workers, each busy part of the time
    assert parse_cpu_max("50000 100000") == 1
    assert parse_cpu_max("max 100000") is None
    assert quota_cores(-1, 100_000) is None  # cgroup v1: no quota
    assert quota_cores(400_000, 100_000) == 4
    limit = cgroup_cpu_limit()
    assert 1 <= usable_cpus() <= len(os.sched_getaffinity(0))
    assert limit is None or usable_cpus() <= limit


def test_check_catalog_runs_one_decode_process_per_usable_cpu_by_default(tmp_path, monkeypatch):
    """Under a container's 1-CPU quota (a cgroup v2 cpu.max file saying so), one decode process, however many cores
    the machine shows."""
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("100000 100000\n")
    monkeypatch.setattr(cpus, "CGROUP_V2_CPU_MAX", cpu_max)
    assert usable_cpus() == 1
    assert catalog_check.build_parser(Settings()).parse_args(["catalog", "--output", "rows.jsonl"]).workers == 1
