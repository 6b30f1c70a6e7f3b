"""Load and overload of the real service: capacity, then 1×, 2× and 4× of it, then recovery.

What it proves (docs/reliability.md, "Load and overload"):

* over capacity the only 5xx answers are 503 (each with Retry-After) and 504;
* the server's memory (RSS of the `taggram serve` process, sampled every 0.5 s) stays bounded;
* the latency of admitted requests stays bounded;
* when the load drops, the process recovers: nothing left queued, unloaded latency again.

How:

1. Start ``taggram serve`` as a child process on a free loopback port (``--env KEY=VALUE`` adds TAGGRAM_* settings),
   or target ``--url`` (loopback only, and no memory figures unless ``--pid`` is given).
2. Workload from real music (``corpus/music.py``: three tracks, as ogg, mp3 and m4a): 80 % 30-s clips cut at a random
   offset of a random file → ``POST /suggest-subgenres``; 15 % full tracks (from a small random offset to the end,
   so the bytes differ) → ``POST /embed``; 5 % a repeat of a clip already answered (a cache hit). Every other
   upload is distinct, so the content-addressed cache never hits by accident.
3. Unloaded latency: a few requests of each kind, one at a time.
4. Capacity: open-loop Poisson arrivals at rising rates (each step at least ``--step-seconds`` and 20 requests);
   capacity is the highest rate with no errors whose p95 latency stays at most 2× the unloaded p95 of the same mix
   (from the unloaded samples, each kind weighted by its share). If the first step fails, lower rates are tried.
5. Levels 1×, 2×, 4× and 8× capacity (``--levels``), ``--seconds`` each, open loop (arrivals do not wait for
   answers, as real clients do not), at most rate × seconds requests, client timeout ``--timeout``.
6. Recovery: after the last level, wait until nothing is in flight; then unloaded latency again, and RSS.

Everything is bounded: requests per level, seconds per level, the client timeout; only 127.0.0.1 is contacted.

Usage: .venv/bin/python bench/load.py [--seconds 120] [--step-seconds 90] [--capacity RPS] [--json out.json]
Prints a Markdown report (paste into docs/reliability.md) and writes the raw samples as JSON if asked.

Writes docs/reliability.md, "Load and overload" (by hand, from its printed report).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import hashlib
import ipaddress
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from corpus.music import cut_clip, duration_seconds, music_files

REPO_ROOT = Path(__file__).resolve().parents[1]
MIX = (("clip", 0.80), ("full", 0.15), ("repeat", 0.05))
ENDPOINT = {"clip": "/suggest-subgenres", "full": "/embed", "repeat": "/suggest-subgenres"}
CLIP_SECONDS = 30.0
CAPACITY_FACTORS = (0.25, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0)  # × the rate one-at-a-time service times allow
LATENCY_FACTOR = 2.0  # capacity: p95 under this × unloaded median
MIN_STEP_REQUESTS = 20  # a capacity step lasts until at least this many requests were sent
RSS_SAMPLE_SECONDS = 0.5


# ---- workload ---------------------------------------------------------------------------------------------------


class Workload:
    """Distinct real uploads on demand: 30-s clips and full tracks, never the same bytes twice."""

    def __init__(self, seed: int) -> None:
        self.files = music_files(("ogg", "mp3", "m4a"))
        self.durations = {f: duration_seconds(f) for f in self.files}
        self.rng = random.Random(seed)
        self.seen: set[str] = set()

    def _unique(self, make) -> bytes:
        for _ in range(50):
            data = make()
            digest = hashlib.sha256(data).hexdigest()
            if digest not in self.seen:
                self.seen.add(digest)
                return data
        raise RuntimeError("could not make a distinct upload")

    def clip(self) -> bytes:
        def make() -> bytes:
            path = self.rng.choice(self.files)
            offset = round(self.rng.uniform(0, self.durations[path] - CLIP_SECONDS - 1), 1)
            return cut_clip(path, offset, CLIP_SECONDS)

        return self._unique(make)

    def full(self) -> bytes:
        def make() -> bytes:
            path = self.rng.choice(self.files)
            return cut_clip(path, round(self.rng.uniform(0, 8), 1), 10_000.0)

        return self._unique(make)


@dataclass
class Sample:
    kind: str
    sent_at: float  # seconds since the level started
    latency: float
    status: int | str  # HTTP status or the transport error's name
    retry_after: str | None = None
    cached: bool | None = None


@dataclass
class Level:
    name: str
    rate: float  # offered requests/s
    seconds: float
    samples: list[Sample] = field(default_factory=list)
    rss_peak_mb: float = 0.0
    wall_seconds: float = 0.0  # first send to last answer

    def by_kind(self, kind: str) -> list[Sample]:
        return [s for s in self.samples if s.kind == kind]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


# ---- the server -------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def spawned_server(env_overrides: dict[str, str], log_path: Path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAGGRAM_")}
    env |= {
        "TAGGRAM_HOST": "127.0.0.1",
        "TAGGRAM_PORT": str(port),
        "TAGGRAM_MODELS": "msd-musicnn",
        "TAGGRAM_MODELS_DIR": str(REPO_ROOT / "models"),
        "TAGGRAM_LOG_LEVEL": "warning",
    } | env_overrides
    taggram = Path(sys.executable).with_name("taggram")
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(taggram), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"taggram serve exited with {process.returncode}; see {log_path}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("taggram serve never became ready")
            time.sleep(0.2)
        yield url, process.pid, {k: v for k, v in env.items() if k.startswith("TAGGRAM_")}
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class RssSampler:
    """RSS of one process every RSS_SAMPLE_SECONDS, in a thread; ``mark()`` resets the running peak."""

    def __init__(self, pid: int | None) -> None:
        self.process = psutil.Process(pid) if pid else None
        self.samples: list[tuple[float, float]] = []  # (monotonic, MiB)
        self.peak_since_mark = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):
                mb = self.process.memory_info().rss / 2**20
                self.samples.append((time.monotonic(), mb))
                self.peak_since_mark = max(self.peak_since_mark, mb)
            self._stop.wait(RSS_SAMPLE_SECONDS)

    def now(self) -> float:
        return self.process.memory_info().rss / 2**20 if self.process else float("nan")

    def mark(self) -> None:
        self.peak_since_mark = self.now() if self.process else float("nan")

    def __enter__(self) -> RssSampler:
        if self.process:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


async def in_flight(client: httpx.AsyncClient) -> float:
    text = (await client.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith("taggram_requests_in_flight "):
            return float(line.split()[1]) - 1  # minus this /metrics request
    raise RuntimeError("no taggram_requests_in_flight in /metrics")


async def wait_idle(client: httpx.AsyncClient, timeout: float) -> float:
    started = time.monotonic()
    while await in_flight(client) > 0:
        if time.monotonic() - started > timeout:
            raise RuntimeError("the server never went idle")
        await asyncio.sleep(0.5)
    return time.monotonic() - started


# ---- sending ----------------------------------------------------------------------------------------------------


async def send(client: httpx.AsyncClient, kind: str, data: bytes, sent_at: float, timeout: float) -> Sample:
    started = time.monotonic()
    try:
        response = await client.post(
            ENDPOINT[kind], content=data, timeout=timeout, headers={"content-type": "application/octet-stream"}
        )
    except httpx.TransportError as error:
        return Sample(kind, sent_at, time.monotonic() - started, type(error).__name__)
    cached = response.json().get("cached") if response.status_code == 200 else None
    return Sample(
        kind, sent_at, time.monotonic() - started, response.status_code, response.headers.get("retry-after"), cached
    )


def plan(
    workload: Workload, rate: float, seconds: float, rng: random.Random, min_requests: int = 0
) -> list[tuple[float, str, bytes | None]]:
    """(arrival time, kind, bytes) for a Poisson process of ``rate`` over ``seconds`` (longer if that makes fewer than
    ``min_requests`` arrivals); repeats pick their bytes when sent."""
    arrivals, t = [], rng.expovariate(rate)
    while t < seconds or len(arrivals) < min_requests:
        kind = rng.choices([k for k, _ in MIX], [w for _, w in MIX])[0]
        data = None if kind == "repeat" else (workload.clip() if kind == "clip" else workload.full())
        arrivals.append((t, kind, data))
        t += rng.expovariate(rate)
    return arrivals


async def run_level(
    url: str, level: Level, workload: Workload, rss: RssSampler, timeout: float, seed: int, min_requests: int = 0
) -> Level:
    arrivals = plan(workload, level.rate, level.seconds, random.Random(seed), min_requests)
    answered_clips: list[bytes] = []
    rng = random.Random(seed + 1)
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
    async with httpx.AsyncClient(base_url=url, limits=limits) as client:
        rss.mark()
        t0 = time.monotonic()

        async def one(at: float, kind: str, data: bytes | None) -> None:
            if kind == "repeat":
                if not answered_clips:
                    kind, data = "clip", workload.clip()
                else:
                    data = rng.choice(answered_clips)
            sample = await send(client, kind, data, at, timeout)
            level.samples.append(sample)
            if kind == "clip" and sample.status == 200:
                answered_clips.append(data)

        tasks = []
        for at, kind, data in arrivals:
            await asyncio.sleep(max(0.0, t0 + at - time.monotonic()))
            tasks.append(asyncio.create_task(one(at, kind, data)))
        await asyncio.gather(*tasks)
        level.wall_seconds = time.monotonic() - t0
        level.rss_peak_mb = rss.peak_since_mark
    return level


async def unloaded(
    url: str, workload: Workload, timeout: float, clips: int = 8, fulls: int = 4
) -> dict[str, list[float]]:
    latencies: dict[str, list[float]] = {"clip": [], "full": [], "repeat": []}
    async with httpx.AsyncClient(base_url=url) as client:
        last_clip = b""
        for kind, count in (("clip", clips), ("full", fulls)):
            for _ in range(count):
                data = workload.clip() if kind == "clip" else workload.full()
                sample = await send(client, kind, data, 0.0, timeout)
                if sample.status != 200:
                    raise RuntimeError(f"unloaded {kind} request failed: {sample}")
                latencies[kind].append(sample.latency)
                last_clip = data if kind == "clip" else last_clip
        for _ in range(3):
            latencies["repeat"].append((await send(client, "repeat", last_clip, 0.0, timeout)).latency)
    return latencies


# ---- judging ----------------------------------------------------------------------------------------------------


def mix_percentile(latencies: dict[str, list[float]], q: float) -> float:
    """Percentile of the workload mix from per-kind samples: each kind weighs its share of the mix."""
    weighted = sorted((value, weight / len(latencies[kind])) for kind, weight in MIX for value in latencies[kind])
    cumulative = 0.0
    for value, weight in weighted:
        cumulative += weight
        if cumulative >= q / 100 - 1e-9:
            return value
    return weighted[-1][0]


def sustains(level: Level, unloaded_p95: float) -> bool:
    """No errors, at least MIN_STEP_REQUESTS answered, and p95 latency at most LATENCY_FACTOR × the unloaded p95."""
    answered = [s.latency for s in level.samples if s.status == 200]
    if len(answered) != len(level.samples) or len(answered) < MIN_STEP_REQUESTS:
        return False
    return percentile(answered, 95) <= LATENCY_FACTOR * unloaded_p95


def summary(level: Level) -> dict:
    ok = [s for s in level.samples if s.status == 200]
    statuses: dict[str, int] = {}
    for s in level.samples:
        statuses[str(s.status)] = statuses.get(str(s.status), 0) + 1
    admitted = [s.latency for s in ok]
    per_kind = {kind: [s.latency for s in ok if s.kind == kind] for kind in ("clip", "full", "repeat")}
    return {
        "level": level.name,
        "offered_rps": level.rate,
        "sent": len(level.samples),
        "throughput_rps": len(ok) / level.wall_seconds if level.wall_seconds else 0.0,
        "p50": percentile(admitted, 50),
        "p95": percentile(admitted, 95),
        "p99": percentile(admitted, 99),
        "max": max(admitted) if admitted else float("nan"),
        "clip_p95": percentile(per_kind["clip"], 95),
        "full_p95": percentile(per_kind["full"], 95),
        "statuses": statuses,
        "bad_5xx": sum(
            1 for s in level.samples if isinstance(s.status, int) and s.status >= 500 and s.status not in (503, 504)
        ),
        "transport_errors": sum(1 for s in level.samples if isinstance(s.status, str)),
        "503_without_retry_after": sum(1 for s in level.samples if s.status == 503 and not s.retry_after),
        "hits": sum(1 for s in ok if s.cached),
        "rss_peak_mb": level.rss_peak_mb,
        "wall_seconds": level.wall_seconds,
    }


def fmt(x: float, digits: int = 2) -> str:
    return "–" if x != x else f"{x:.{digits}f}"


def report(
    env: dict,
    base: dict,
    unloaded_p95: float,
    steps: list[dict],
    capacity: float,
    levels: list[dict],
    recovery: dict,
    rss: RssSampler,
) -> str:
    rss_start = recovery["rss_before_mb"]
    lines = [
        f"Run {dt.datetime.now().isoformat(timespec='seconds')} on {platform.node()} "
        f"({os.cpu_count()} CPUs, {platform.machine()}), `{' '.join(sys.argv)}`.",
        f"Server settings: {', '.join(f'{k}={v}' for k, v in sorted(env.items()) if k not in ('TAGGRAM_PORT',))}.",
        "",
        f"Unloaded median latency: clip {fmt(base['clip'])} s, full track {fmt(base['full'])} s, "
        f"repeat (cache hit) {fmt(base['repeat'], 3)} s; p95 of the mix {fmt(unloaded_p95)} s. "
        f"Server RSS when idle: {fmt(rss_start, 0)} MiB.",
        "",
        f"Capacity search (open loop, at least {MIN_STEP_REQUESTS} requests a step; a step passes with no errors and "
        f"p95 ≤ {LATENCY_FACTOR:g}× the unloaded p95 of the mix = {fmt(LATENCY_FACTOR * unloaded_p95)} s):",
        "",
        "| offered req/s | sent | errors | p50 s | p95 s | clip p95 s | full p95 s | passes |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | :---: |",
    ]
    for step in steps:
        errors = step["sent"] - step["statuses"].get("200", 0)
        lines.append(
            f"| {fmt(step['offered_rps'], 3)} | {step['sent']} | {errors} | {fmt(step['p50'])} | "
            f"{fmt(step['p95'])} | {fmt(step['clip_p95'])} | {fmt(step['full_p95'])} | "
            f"{'yes' if step['passes'] else 'no'} |"
        )
    lines += [
        "",
        f"**Capacity: {fmt(capacity, 3)} requests/s** of the mix.",
        "",
        "| load | offered req/s | sent | 2xx/s | p50 s | p95 s | p99 s | max s | 503 | 504 | other 5xx "
        "| transport errors | 503 w/o Retry-After | cache hits | peak RSS MiB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in levels:
        lines.append(
            f"| {s['level']} | {fmt(s['offered_rps'], 3)} | {s['sent']} | {fmt(s['throughput_rps'], 3)} | "
            f"{fmt(s['p50'])} | {fmt(s['p95'])} | {fmt(s['p99'])} | {fmt(s['max'])} | {s['statuses'].get('503', 0)} | "
            f"{s['statuses'].get('504', 0)} | {s['bad_5xx']} | {s['transport_errors']} | "
            f"{s['503_without_retry_after']} | "
            f"{s['hits']} | {fmt(s['rss_peak_mb'], 0)} |"
        )
    lines += [
        "",
        f"Recovery after the last level: idle again {fmt(recovery['idle_after_s'], 1)} s after the last answer; then "
        f"clip median {fmt(recovery['clip_median'])} s (unloaded {fmt(base['clip'])} s); "
        f"RSS {fmt(recovery['rss_after_mb'], 0)} MiB "
        f"(idle before the run {fmt(rss_start, 0)} MiB, peak over the whole run "
        f"{fmt(max((mb for _, mb in rss.samples), default=float('nan')), 0)} MiB).",
    ]
    return "\n".join(lines)


# ---- main -------------------------------------------------------------------------------------------------------


def loopback_only(url: str) -> str:
    host = urlsplit(url).hostname or ""
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"refusing to load {host}: this generator only targets loopback")
    return url.rstrip("/")


async def main_async(args) -> int:
    workload = Workload(args.seed)
    env_overrides = dict(item.split("=", 1) for item in args.env)
    with contextlib.ExitStack() as stack:
        if args.url:
            url, pid, env = loopback_only(args.url), args.pid, {}
        else:
            url, pid, env = stack.enter_context(spawned_server(env_overrides, Path(args.log)))
        rss = stack.enter_context(RssSampler(pid))
        rss_before = rss.now()

        print("[load] unloaded latency", file=sys.stderr)
        lat = await unloaded(url, workload, args.timeout)
        base = {kind: statistics.median(values) for kind, values in lat.items()}
        # One request at a time already uses every core (ONNX Runtime's intra-op threads), so the mix's mean
        # unloaded service time bounds the rate the machine can sustain.
        mean_service = sum(weight * base[kind] for kind, weight in MIX)
        estimate = 1.0 / mean_service

        unloaded_p95 = mix_percentile(lat, 95)
        steps: list[dict] = []
        capacity = args.capacity

        async def step(rate: float) -> bool:
            print(f"[load] capacity step {rate:.3f} req/s", file=sys.stderr)
            level = await run_level(
                url,
                Level(f"step {len(steps)}", rate, args.step_seconds),
                workload,
                rss,
                args.timeout,
                args.seed + 10 + len(steps),
                min_requests=MIN_STEP_REQUESTS,
            )
            async with httpx.AsyncClient(base_url=url) as client:
                await wait_idle(client, args.timeout * 2)
            steps.append(summary(level) | {"passes": sustains(level, unloaded_p95)})
            return steps[-1]["passes"]

        if capacity is None:
            factors = list(CAPACITY_FACTORS)
            if await step(factors[0] * estimate):
                capacity = factors[0] * estimate
                for factor in factors[1:]:  # up while the steps pass
                    if not await step(factor * estimate):
                        break
                    capacity = factor * estimate
            else:
                factor = factors[0]
                for _ in range(3):  # down until one passes
                    factor *= 0.6
                    if await step(factor * estimate):
                        capacity = factor * estimate
                        break
                if capacity is None:
                    raise SystemExit("no capacity step passed; see the steps above")

        results = []
        levels = [float(x) for x in args.levels.split(",")]
        for multiple in levels:
            print(f"[load] level {multiple}× = {multiple * capacity:.3f} req/s", file=sys.stderr)
            level = await run_level(
                url,
                Level(f"{multiple:g}×", multiple * capacity, args.seconds),
                workload,
                rss,
                args.timeout,
                args.seed + int(100 * multiple),
            )
            results.append(summary(level))
            if multiple != levels[-1]:
                async with httpx.AsyncClient(base_url=url) as client:
                    await wait_idle(client, args.timeout * 2)

        print("[load] recovery", file=sys.stderr)
        async with httpx.AsyncClient(base_url=url) as client:
            idle_after = await wait_idle(client, args.timeout * 2)
        after = await unloaded(url, workload, args.timeout, clips=5, fulls=0)
        recovery = {
            "idle_after_s": idle_after,
            "clip_median": statistics.median(after["clip"]),
            "rss_after_mb": rss.now(),
            "rss_before_mb": rss_before,
        }

        text = report(env, base, unloaded_p95, steps, capacity, results, recovery, rss)
        print(text)
        if args.json:
            Path(args.json).write_text(
                json.dumps(
                    {
                        "base": base,
                        "unloaded": lat,
                        "steps": steps,
                        "capacity": capacity,
                        "levels": results,
                        "recovery": recovery,
                        "env": env,
                        "rss": rss.samples,
                    },
                    indent=1,
                )
            )
    bad = sum(s["bad_5xx"] + s["503_without_retry_after"] for s in results)
    return 1 if bad else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="target a running server (loopback only) instead of spawning one")
    parser.add_argument("--pid", type=int, help="with --url: the server's pid, for memory figures")
    parser.add_argument(
        "--env", action="append", default=[], metavar="TAGGRAM_X=V", help="setting for the spawned server"
    )
    parser.add_argument("--seconds", type=float, default=120.0, help="duration of each load level")
    parser.add_argument("--step-seconds", type=float, default=90.0, help="duration of each capacity step")
    parser.add_argument("--capacity", type=float, help="skip the capacity search and use this many requests/s")
    parser.add_argument("--levels", default="1,2,4,8", help="multiples of the capacity to run, comma-separated")
    parser.add_argument("--timeout", type=float, default=180.0, help="client timeout per request, seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", help="write every sample here")
    parser.add_argument("--log", default="/tmp/taggram-load.log", help="the spawned server's output")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
