"""Throughput and latency under concurrent clients: the service in a subprocess, N closed-loop async clients.

Each level (``--levels``, default 1, 4, 16, 64 clients) sends a fixed number of requests (``max(--min-requests,
clients × --requests-per-client)``), each a different ``--clip-seconds`` clip of real music: packets copied from a
different offset of a track (``corpus.music.cut_clip``: ogg/vorbis, mp3, m4a/aac), so every request has unique bytes
and the cache (left at its default, in-process) never hits — the cache-hit counter is checked. Clips are cut
before any measurement. A client that gets 503 waits for its Retry-After (unless ``--no-retry-wait``) and
sends the same clip again, at most ``--max-retries`` times; every 503 is counted.

Reported per level: successful requests/s and patches/s (patches computed, from /metrics, over the level's wall time),
latency percentiles of successful requests (the attempt that succeeded, from send to full response), non-200 answers by
status and problem code, and from the service's /metrics (differences over the level): mean inference batch size
(``taggram_batch_size_patches`` sum/count), mean queue wait per patch and mean ONNX Runtime time per batch; plus the
service process's CPU use (from /proc, in % of all cores).

Writes docs/benchmarks.md, "Concurrent clients".
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import itertools
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from bench import common
from corpus.music import cut_clip, duration_seconds, music_files
from service.config import Settings
from service.engine.run import batch_policy

SECTION = "concurrency"
WARM_UP_REQUESTS = 2
OFFSET_STEP_SECONDS = 1.37  # between clips of one track: not a multiple of any codec frame


@dataclass
class Clip:
    data: bytes
    content_type: str
    source: str


@dataclass
class LevelResult:
    clients: int
    requests: int
    wall: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: collections.Counter = field(default_factory=collections.Counter)
    details: collections.Counter = field(default_factory=collections.Counter)
    metrics_before: dict = field(default_factory=dict)
    metrics_after: dict = field(default_factory=dict)
    cpu_seconds: float = 0.0


def clip_source(files: list[Path], seconds: float):
    """Endless (file, offset) pairs, round-robin over the files, each offset used once per file."""
    offsets = {}
    for index, path in enumerate(files):
        usable = max(duration_seconds(path) - seconds - 1.0, 0.0)
        phase = (index * 0.29) % OFFSET_STEP_SECONDS
        offsets[path] = list(np.arange(phase, usable, OFFSET_STEP_SECONDS)) or [0.0]
    for round_index in itertools.count():
        for path in files:
            if round_index < len(offsets[path]):
                yield path, float(offsets[path][round_index])
        if all(round_index >= len(v) for v in offsets.values()):
            raise RuntimeError("ran out of distinct clips: lower the request counts or shorten --clip-seconds")


def make_clips(files: list[Path], seconds: float, count: int) -> list[Clip]:
    clips, seen = [], set()
    for path, offset in clip_source(files, seconds):
        if len(clips) >= count:
            break
        data = cut_clip(path, offset, seconds)
        digest = hashlib.sha256(data).digest()
        if digest in seen:
            continue
        seen.add(digest)
        clips.append(Clip(data, common.content_type(path), f"{path.name}@{offset:.1f}s"))
    return clips


async def run_level(url: str, clients: int, clips: list[Clip], args: argparse.Namespace) -> LevelResult:
    result = LevelResult(clients, len(clips))
    queue = iter(clips)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(http: httpx.AsyncClient) -> None:
        for clip in queue:  # a shared iterator: each clip is taken by exactly one client
            for attempt in range(args.max_retries + 1):
                started = time.perf_counter()
                try:
                    response = await http.post(
                        args.endpoint, content=clip.data, headers={"content-type": clip.content_type}
                    )
                except httpx.TransportError as error:
                    result.errors[type(error).__name__] += 1
                    result.details[f"{type(error).__name__}: {error!r}"[:160]] += 1
                    break
                elapsed = time.perf_counter() - started
                if response.status_code == 200:
                    body = response.json()
                    if body.get("cached"):
                        result.errors["200 but cached"] += 1
                    result.latencies.append(elapsed)
                    break
                problem = response.json() if "json" in response.headers.get("content-type", "") else {}
                result.errors[f"{response.status_code} {problem.get('code', '')}".strip()] += 1
                result.details[f"{response.status_code}: {problem.get('detail', response.text[:80])}"] += 1
                if response.status_code != 503 or attempt == args.max_retries:
                    break
                if not args.no_retry_wait:
                    await asyncio.sleep(float(response.headers.get("retry-after", "1")))

    async with httpx.AsyncClient(base_url=url, timeout=args.timeout, limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        result.wall = time.perf_counter() - started
    return result


def level_row(r: LevelResult, model: str) -> list[object]:
    before, after = r.metrics_before, r.metrics_after

    def delta(name: str, **labels: str) -> float:
        return common.metric(after, name, **labels) - common.metric(before, name, **labels)

    batches = delta("taggram_batch_size_patches_count", model=model)
    batch_mean = delta("taggram_batch_size_patches_sum", model=model) / batches if batches else float("nan")
    waits = delta("taggram_queue_wait_seconds_count", model=model)
    wait_mean = delta("taggram_queue_wait_seconds_sum", model=model) / waits if waits else float("nan")
    infer_mean = delta("taggram_inference_duration_seconds_sum", model=model) / batches if batches else float("nan")
    hits = delta("taggram_cache_hits_total")
    patches = delta("taggram_batch_size_patches_sum", model=model)
    ok = len(r.latencies)
    errors = ", ".join(f"{k}: {v}" for k, v in sorted(r.errors.items())) or "none"
    if hits:
        errors += f"; CACHE HITS: {hits:.0f}"
    cpu = r.cpu_seconds / r.wall / os.cpu_count() if r.wall else float("nan")
    ms = [1000 * common.percentile(r.latencies, q) for q in (50, 95, 99)]
    return [
        r.clients,
        f"{ok}/{r.requests}",
        f"{r.wall:.1f}",
        f"{ok / r.wall:.2f}",
        f"{patches / r.wall:.1f}",
        *(f"{v:.0f}" for v in ms),
        errors,
        f"{batch_mean:.1f}",
        f"{1000 * wait_mean:.0f}",
        f"{1000 * infer_mean:.0f}",
        f"{cpu:.0%}",
    ]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.concurrency",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--levels", default="1,4,16,64", help="comma-separated numbers of concurrent clients")
    parser.add_argument("--requests-per-client", type=int, default=1)
    parser.add_argument("--min-requests", type=int, default=16, help="at least this many requests per level")
    parser.add_argument("--clip-seconds", type=float, default=30.0)
    parser.add_argument("--formats", default="ogg,mp3,m4a", help="comma-separated: ogg, mp3, m4a")
    parser.add_argument("--endpoint", default="/taggram", choices=("/taggram", "/embed", "/suggest-subgenres"))
    parser.add_argument("--max-retries", type=int, default=5, help="per request, after a 503")
    parser.add_argument("--no-retry-wait", action="store_true", help="retry a 503 at once instead of after Retry-After")
    parser.add_argument("--timeout", type=float, default=300.0, help="client timeout per request (s)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="service setting for the run, e.g. --set intra_op_threads=1 (→ TAGGRAM_INTRA_OP_THREADS)",
    )
    common.add_service_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    levels = [int(x) for x in args.levels.split(",")]
    counts = [max(args.min_requests, c * args.requests_per_client) for c in levels]
    files = music_files(tuple(args.formats.split(",")))
    started = time.perf_counter()
    clips = make_clips(files, args.clip_seconds, WARM_UP_REQUESTS + sum(counts))
    print(
        f"cut {len(clips)} distinct {args.clip_seconds:g} s clips from {len(files)} files in "
        f"{time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )
    results = []
    overrides = dict(item.split("=", 1) for item in args.set)
    with common.running_service(args.port, args.model, **overrides) as service:
        warm = asyncio.run(run_level(service.url, 1, clips[:WARM_UP_REQUESTS], args))
        if len(warm.latencies) != WARM_UP_REQUESTS:
            raise RuntimeError(f"warm-up failed: {dict(warm.errors)}\n{service.log_tail()}")
        position = WARM_UP_REQUESTS
        for clients, count in zip(levels, counts):
            level_clips, position = clips[position : position + count], position + count
            before, cpu_before = common.scrape(service.url), common.process_cpu_seconds(service.process.pid)
            result = asyncio.run(run_level(service.url, clients, level_clips, args))
            result.cpu_seconds = common.process_cpu_seconds(service.process.pid) - cpu_before
            result.metrics_before, result.metrics_after = before, common.scrape(service.url)
            results.append(result)
            print(
                f"{clients} clients: {len(result.latencies)}/{count} ok in {result.wall:.1f} s, "
                f"errors {dict(result.errors)}",
                file=sys.stderr,
            )
            for detail, n in result.details.most_common(8):
                print(f"    {n} × {detail}", file=sys.stderr)
        if any(r.details for r in results):
            print(f"service log tail:\n{service.log_tail(40)}", file=sys.stderr)
    header = [
        "clients",
        "ok / sent",
        "wall s",
        "req/s",
        "patches/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "non-200",
        "mean batch",
        "queue wait ms",
        "infer ms/batch",
        "service CPU",
    ]
    first = results[0]
    patches_per_clip = (
        common.metric(first.metrics_after, "taggram_batch_size_patches_sum", model=args.model)
        - common.metric(first.metrics_before, "taggram_batch_size_patches_sum", model=args.model)
    ) / max(len(first.latencies), 1)
    default = common.service_default
    # The defaults' policy: model_construct reads no TAGGRAM_* variable (as service_default).
    default_workers = batch_policy(Settings.model_construct(), on_cuda=False).inference_workers
    text = "\n".join(
        [
            "## Concurrent clients (`bench/concurrency.py`)",
            "",
            *common.environment_lines(["bench.concurrency", *argv]),
            f"- input: distinct {args.clip_seconds:g} s clips (≈{patches_per_clip:.0f} patches each) cut from "
            f"{len(files)} files ({args.formats}); `POST {args.endpoint}`; service defaults (in-process cache, batch "
            f"≤ {default('max_batch_patches')} patches, {default_workers} inference workers, "
            f"{default('max_batch_wait_ms'):g} ms batch wait, "
            f"{default('max_concurrent_analyses')} concurrent analyses, "
            f"queue {default('max_queue_patches')} patches)"
            f"{''.join(f', {k}={v}' for k, v in overrides.items())}; 503 → "
            f"{'immediate retry' if args.no_retry_wait else 'wait Retry-After, retry'} (≤ {args.max_retries}×)",
            "",
            common.markdown_table(header, [level_row(r, args.model) for r in results], "r" * 8 + "l" + "r" * 4),
            "",
            *(
                f"- {r.clients} clients, refusals: " + "; ".join(f"{n} × {d}" for d, n in r.details.most_common(4))
                for r in results
                if r.details
            ),
            "",
            "Latency: the successful attempt only. `non-200` counts every refused attempt (503s included, also those "
            "later retried successfully). Batch, queue wait and inference time come from /metrics differences over the "
            "level; service CPU is the server process's CPU time over the wall time, in % of all cores. "
            "A transport error (e.g. `ReadError`) means the client got no HTTP answer at all (connection reset), "
            "so it cannot retry politely.",
        ]
    )
    print(text)
    if not args.no_write:
        common.update_report(SECTION, text)


if __name__ == "__main__":
    main()
