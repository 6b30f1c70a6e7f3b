"""Cache miss vs hit over HTTP for full-length tracks, with the in-process LRU and with Redis.

For each backend (``--backends``) the service runs in a subprocess (``memory``: the default in-process cache;
``redis``: ``TAGGRAM_REDIS_URL=--redis-url``, whose database — 14 by default, and only that one — is flushed
first). For every track: the first ``POST /taggram`` of its bytes is a miss (checked: ``"cached": false``), the
next ``--hits`` identical posts are hits (checked: ``"cached": true``); the hit figure is their median.

What a hit still costs is the upload itself (the body is read, spooled and SHA-256-hashed before the cache is
asked), the cache lookup and the JSON answer. To show how much of the hit is just the upload, the same number of
**non-audio bytes** is posted too: the service reads and hashes all of it, misses the cache, and FFmpeg's probe
refuses it (415). That round trip is an upper bound for "upload + hash" — it includes the probe, which is timed
in-process on the same bytes and reported next to it. Nothing here is a pure network floor.

Writes docs/benchmarks.md, "Cache hit vs miss".
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

from bench import common
from corpus.music import cut_clip, music_files
from service.decode import DecodeError, decode

SECTION = "cache"
TARGET_RATIO = 30.0
WARM_UP_CLIP_SECONDS = 30.0


@dataclass
class Row:
    track: str
    size: int
    segments: int = 0
    miss: float = 0.0
    hits: list[float] = field(default_factory=list)
    rejects: list[float] = field(default_factory=list)
    probe: float = 0.0
    response_bytes: int = 0

    @property
    def hit(self) -> float:
        return statistics.median(self.hits)

    @property
    def ratio(self) -> float:
        return self.miss / self.hit


def post(client: httpx.Client, data: bytes, content_type: str) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = client.post("/taggram", content=data, headers={"content-type": content_type})
    return time.perf_counter() - started, response


def checked(response: httpx.Response, cached: bool, what: str) -> dict:
    if response.status_code != 200:
        raise RuntimeError(f"{what}: HTTP {response.status_code}: {response.text[:300]}")
    body = response.json()
    if body["cached"] is not cached:
        raise RuntimeError(f"{what}: expected cached={cached}, got {body['cached']}")
    return body


def non_audio(size: int) -> bytes:
    """Bytes no allowed demuxer accepts: repeated text (FFmpeg probes it and refuses: 415)."""
    pattern = b"this is not audio, only a body of the same size. "
    return (pattern * (size // len(pattern) + 1))[:size]


def probe_seconds(data: bytes) -> float:
    started = time.perf_counter()
    try:
        decode(io.BytesIO(data), max_seconds=3600.0)
    except DecodeError:
        return time.perf_counter() - started
    raise RuntimeError("the non-audio body decoded")


def measure_backend(backend: str, files: list[Path], args: argparse.Namespace) -> tuple[list[Row], dict]:
    settings: dict[str, object] = {}
    if backend == "redis":
        redis.Redis.from_url(args.redis_url, socket_timeout=5).flushdb()  # only the database named in the URL
        settings["redis_url"] = args.redis_url
    elif backend != "memory":
        raise ValueError(f"unknown backend {backend!r}")
    rows = []
    with (
        common.running_service(args.port, args.model, **settings) as service,
        httpx.Client(base_url=service.url, timeout=600.0) as client,
    ):
        # Warm-up: one miss, one hit and one refused body, on a clip that is not measured.
        clip = cut_clip(files[0], 0.0, WARM_UP_CLIP_SECONDS)
        checked(post(client, clip, common.content_type(files[0]))[1], False, "warm-up miss")
        checked(post(client, clip, common.content_type(files[0]))[1], True, "warm-up hit")
        post(client, non_audio(len(clip)), "application/octet-stream")
        before = common.scrape(service.url)
        for path in files:
            data = path.read_bytes()
            row = Row(path.name, len(data))
            row.miss, response = post(client, data, common.content_type(path))
            row.segments = len(checked(response, False, f"{path.name} miss")["segments"])
            for _ in range(args.hits):
                seconds, response = post(client, data, common.content_type(path))
                checked(response, True, f"{path.name} hit")
                row.hits.append(seconds)
                row.response_bytes = len(response.content)
            garbage = non_audio(len(data))
            for _ in range(args.hits):
                seconds, response = post(client, garbage, "application/octet-stream")
                if response.status_code != 415:
                    raise RuntimeError(f"non-audio body: expected 415, got {response.status_code}")
                row.rejects.append(seconds)
            rows.append(row)
            print(
                f"{backend} {path.name}: miss {row.miss:.2f} s, hit {1000 * row.hit:.1f} ms, × {row.ratio:.0f}",
                file=sys.stderr,
            )
        after = common.scrape(service.url)
    for row in rows:  # timed after the service stopped, so the two never compete
        row.probe = statistics.median(probe_seconds(non_audio(row.size)) for _ in range(3))
    counters = {
        name: common.metric(after, f"taggram_cache_{name}_total", backend=backend)
        - common.metric(before, f"taggram_cache_{name}_total", backend=backend)
        for name in ("hits", "misses", "errors")
    }
    return rows, counters


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.cache",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--formats", default="ogg,mp3,m4a", help="comma-separated: ogg, mp3, m4a")
    parser.add_argument("--tracks", type=int, default=0, help="use only the first N files (0 = all)")
    parser.add_argument("--hits", type=int, default=5, help="identical requests after the miss (median reported)")
    parser.add_argument("--backends", default="memory,redis", help="comma-separated: memory, redis")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14", help="its database is FLUSHED first")
    common.add_service_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    files = music_files(tuple(args.formats.split(",")), limit=args.tracks)
    sections = []
    summary = []
    for backend in args.backends.split(","):
        rows, counters = measure_backend(backend, files, args)
        table = common.markdown_table(
            [
                "track",
                "upload MB",
                "segments",
                "miss s",
                "hit ms (median)",
                "miss ÷ hit",
                "same-size non-audio → 415, ms",
                "of which FFmpeg probe, ms",
                "response KB",
            ],
            [
                [
                    r.track,
                    f"{r.size / 1e6:.2f}",
                    r.segments,
                    f"{r.miss:.2f}",
                    f"{1000 * r.hit:.1f}",
                    f"{r.ratio:.0f}×",
                    f"{1000 * statistics.median(r.rejects):.1f}",
                    f"{1000 * r.probe:.1f}",
                    f"{r.response_bytes / 1e3:.0f}",
                ]
                for r in rows
            ],
        )
        ratios = [r.ratio for r in rows]
        median = statistics.median(ratios)
        verdict = "met" if min(ratios) >= TARGET_RATIO else "met by the median" if median >= TARGET_RATIO else "MISSED"
        summary.append(
            f"- **{backend}**: median miss ÷ hit = **{median:.0f}×** (min {min(ratios):.0f}×; target ≥ "
            f"{TARGET_RATIO:.0f}×: {verdict}); "
            f"service counters over the run: {counters['hits']:.0f} hits, {counters['misses']:.0f} misses, "
            f"{counters['errors']:.0f} cache errors (the misses include the non-audio posts: the cache is asked "
            f"before decoding)"
        )
        sections += [f"### {backend}", "", table, ""]
    text = "\n".join(
        [
            "## Cache hit vs miss (`bench/cache.py`)",
            "",
            *common.environment_lines(["bench.cache", *argv]),
            f"- input: {len(files)} full-length tracks ({args.formats}), raw body `POST /taggram`, default hop; "
            f"{args.hits} hits per track after the miss; Redis: `{args.redis_url}` (flushed first)",
            "",
            *summary,
            "",
            *sections,
            "The 415 column posts the same number of non-audio bytes: the service reads, spools and hashes them all, "
            'asks the cache (miss), then FFmpeg\'s probe refuses them. It bounds "upload + hash" from above; the probe '
            "alone (timed in-process on the same bytes, after the service stopped) is the next column.",
        ]
    )
    print(text)
    if not args.no_write:
        common.update_report(SECTION, text)


if __name__ == "__main__":
    main()
