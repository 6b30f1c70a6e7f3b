"""``bench.signup http``: the sign-up form's time as the service answers it, early vs ``?complete=true`` (#22).

``taggram serve`` in a subprocess (``bench.common.running_service``: fp32, loopback), msd-musicnn, the in-process
cache off (``TAGGRAM_MEMORY_CACHE_BYTES=0``) so every request is computed: the same real tracks as ``agreement``
(2–10 minutes; Ogg Vorbis, Opus and mp3 from the corpus, m4a re-encoded from Ogg). Per track, one after another on
an otherwise idle service: ``POST /suggest-subgenres?complete=true`` (the whole analysis, today's answer), then
``POST /suggest-subgenres`` (the early answer), then a wait until its background analysis has finished
(``taggram_background_analyses_pending`` back to 0), so no request shares the CPU with another's work or joins a
computation already running (``SingleFlight``). The time is the response's, over loopback, from the first byte sent
to the answer read: what the form waits for, less the network.

The machine is shared, so absolute seconds move with the load: the same run also times one raw ONNX Runtime batch
(``TAGGRAM_MAX_BATCH_PATCHES`` patches of the track, the service's largest batch, with the service's per-batch
intra-op threads), between the requests, so a reader can scale the service's figures to another machine's inference
speed. Reported: p50/p95 per format and overall, the ratio early ÷ complete per track, and whether the early answer's
top-1 is the complete one's.

``--precision bf16`` (or ``auto``) serves in that precision (docs/precision.md); the raw batch stays fp32 ONNX Runtime.
``--platform``: the service loads msd-musicnn and mtt-musicnn, so the default answer is the platform taxonomy's
(both models analyse each upload; docs/api.md); each track is then also answered early with ``?model=msd-musicnn``
alone (its background drained too), and the report adds what the second model costs the early answer.
"""

from __future__ import annotations

import io
import statistics
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from bench import common
from bench.signup import MAX_SECONDS, geometry, load, pick_tracks
from service.config import Settings
from service.decode.sample import sample_track
from service.engine.patch import spread_patch_offsets

CLIENT_TIMEOUT_SECONDS = 600.0
DRAIN_TIMEOUT_SECONDS = 600.0
DRAIN_POLL_SECONDS = 0.2
RAW_REPEATS = 3  # raw batches timed after each track (their median is that track's figure)
FORMATS = ("ogg", "opus", "mp3", "m4a")
PLATFORM_SECOND = "mtt-musicnn"  # the platform taxonomy's second model (service/artefacts/taxonomies/platform.json)


def service_settings(args) -> dict[str, str]:
    """``running_service`` settings for ``--platform`` (load the second model too) and ``--precision``."""
    models = {"models": f"{args.model},{PLATFORM_SECOND}"} if args.platform else {}
    return {**models, "precision": args.precision}


def post(
    client: httpx.Client, url: str, data: bytes, content_type: str, *, complete: bool, model: str | None = None
) -> tuple[float, dict]:
    started = time.perf_counter()
    params = {"complete": "true"} if complete else {}
    response = client.post(
        f"{url}/suggest-subgenres",
        params=params | ({"model": model} if model else {}),
        content=data,
        headers={"content-type": content_type},
    )
    seconds = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"/suggest-subgenres answered {response.status_code}: {response.text[:200]}")
    body = response.json()
    if body["cached"]:
        raise RuntimeError("a request hit the cache: the bench must compute every request")
    return seconds, body


async def signup(client: httpx.AsyncClient, url: str, path: Path, *, early: bool) -> tuple[float, dict]:
    """A sign-up's /suggest-subgenres (early, or ``?complete=true``): its response time and answer (checked)."""
    started = time.perf_counter()
    response = await client.post(
        f"{url}/suggest-subgenres",
        params=None if early else {"complete": "true"},
        content=path.read_bytes(),
        headers={"content-type": common.content_type(path)},
    )
    seconds = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"/suggest-subgenres answered {response.status_code}: {response.text[:200]}")
    body = response.json()
    if body["cached"] or body["complete"] == early:
        raise RuntimeError(f"a sign-up answered cached={body['cached']} complete={body['complete']} (early {early})")
    return seconds, body


def drain(url: str) -> float:
    """Wait until no background analysis is pending; the seconds waited."""
    started = time.perf_counter()
    while common.metric(common.scrape(url), "taggram_background_analyses_pending") > 0:
        if time.perf_counter() - started > DRAIN_TIMEOUT_SECONDS:
            raise RuntimeError(f"background analyses still pending after {DRAIN_TIMEOUT_SECONDS:.0f} s")
        time.sleep(DRAIN_POLL_SECONDS)
    return time.perf_counter() - started


def spread_batch(model, data: bytes, patches: int) -> np.ndarray:
    """``patches`` spread patches of the track, as the early answer samples them."""
    g = geometry(model)
    sample = sample_track(
        io.BytesIO(data), lambda n: spread_patch_offsets(n, g, patches), g.patch_samples, max_seconds=MAX_SECONDS + 60
    )
    return np.ascontiguousarray(np.stack(sample.regions))


def raw_batch_seconds(model, batch: np.ndarray) -> float:
    """Median of RAW_REPEATS runs of one batch through the model's ONNX Runtime session."""
    times = []
    for _ in range(RAW_REPEATS):
        started = time.perf_counter()
        model.runner.run(batch)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def p50_p95(values: list[float]) -> list[str]:
    return [f"{common.percentile(values, 50):.2f}", f"{common.percentile(values, 95):.2f}"]


def run_http(args) -> str:
    service_defaults = Settings()
    batch_patches = service_defaults.max_batch_patches
    # The service's batches: one inference worker per usable CPU, each batch on usable CPUs ÷ workers threads (1 here).
    models, _ = load(args.model, intra_op_threads=1)
    model = models[args.model]
    tracks = pick_tracks(args.tracks)
    rows, raw, alone = [], [], []
    with (
        common.running_service(args.port, args.model, memory_cache_bytes=0, **service_settings(args)) as service,
        httpx.Client(timeout=CLIENT_TIMEOUT_SECONDS) as client,
    ):
        warm = tracks[0][1]
        post(client, service.url, warm.read_bytes(), common.content_type(warm), complete=False)
        drain(service.url)
        for fmt, path in tracks:
            data, kind = path.read_bytes(), common.content_type(path)
            full_s, full = post(client, service.url, data, kind, complete=True)
            early_s, early = post(client, service.url, data, kind, complete=False)
            background_s = drain(service.url)
            if args.platform:
                alone.append(post(client, service.url, data, kind, complete=False, model=args.model)[0])
                drain(service.url)
            raw.append(raw_batch_seconds(model, spread_batch(model, data, batch_patches)))
            same = early["suggestions"][0]["subgenre"] == full["suggestions"][0]["subgenre"]
            rows.append((fmt, path.name, full["duration_seconds"] / 60, full_s, early_s, early, background_s, same))
            print(rows[-1][:5], f"raw {raw[-1]:.3f}", file=sys.stderr)
    table = [
        [
            fmt,
            name,
            f"{minutes:.1f}",
            f"{full_s:.2f}",
            f"{early_s:.2f}",
            f"{early_s / full_s:.2f}",
            f"{early['coverage']:.3f}",
            "no" if early.get("sampling") else "yes",
            f"{background_s:.1f}",
            "yes" if same else "no",
        ]
        for fmt, name, minutes, full_s, early_s, early, background_s, same in rows
    ]
    summary = []
    for label, keep in [(fmt, fmt) for fmt in FORMATS] + [("all", None)]:
        chosen = [r for r in rows if keep is None or r[0] == keep]
        if chosen:
            ratios = [r[4] / r[3] for r in chosen]
            summary.append(
                [
                    label,
                    len(chosen),
                    *p50_p95([r[3] for r in chosen]),
                    *p50_p95([r[4] for r in chosen]),
                    f"{statistics.median(ratios):.2f}",
                    f"{sum(r[7] for r in chosen)}/{len(chosen)}",
                ]
            )
    raw_p50 = statistics.median(raw)
    early_p50 = common.percentile([r[4] for r in rows], 50)
    answered_by = rows[0][5]["taxonomy"] + " over " + "+".join(rows[0][5]["models"])
    second = []
    if alone:
        cost = [r[4] / a for r, a in zip(rows, alone, strict=True)]
        second = [
            f"- the second model's cost: the same tracks answered early by {args.model} alone (`?model=`): p50 "
            f"**{common.percentile(alone, 50):.2f} s** (p95 {common.percentile(alone, 95):.2f}) against "
            f"{early_p50:.2f} s for the platform answer; per track the platform answer takes "
            f"{statistics.median(cost):.2f}× the single model's (min {min(cost):.2f}, max {max(cost):.2f})"
        ]
    return "\n\n".join(
        [
            f"### Server time over HTTP, early vs complete ({answered_by}, {args.precision}, {len(rows)} tracks)",
            "\n".join(common.environment_lines(["bench.signup", *sys.argv[1:]])),
            f"- service: `taggram serve` ({args.precision}, loopback, cache off, defaults otherwise: "
            f"{service_defaults.early_answer_patches} early patches, batches of ≤ {batch_patches}); one request at "
            "a time, each early answer's background analysis finished before the next request",
            f"- raw ONNX Runtime, one batch of {batch_patches} patches (1 intra-op thread, as each of the service's "
            f"workers): p50 **{1000 * raw_p50:.0f} ms** over the run (min {1000 * min(raw):.0f}, max "
            f"{1000 * max(raw):.0f}); the early answer's p50 is {early_p50 / raw_p50:.0f} such batches",
            common.markdown_table(
                [
                    "format",
                    "tracks",
                    "complete p50 (s)",
                    "complete p95 (s)",
                    "early p50 (s)",
                    "early p95 (s)",
                    "early ÷ complete, p50",
                    "same top-1",
                ],
                summary,
            ),
            "Per track:",
            common.markdown_table(
                [
                    "format",
                    "file",
                    "minutes",
                    "complete (s)",
                    "early (s)",
                    "early ÷ complete",
                    "coverage",
                    "seeked",
                    "background (s)",
                    "same top-1",
                ],
                table,
            ),
            *second,
        ]
    )
