"""Fairness under mixed load: 30 s clips to /suggest-subgenres while long uploads are in flight.

Real music only (``corpus.music``: lincity-ng-data). Each long upload is a ``--long-minutes`` WAV (22.05 kHz stereo
16-bit, so the service decodes *and* resamples it) made by looping the soundtrack's tracks, upload i starting
i × ``UPLOAD_OFFSET_SECONDS`` into the loop so no two share bytes (checked: identical uploads would share one
computation, ``cache.SingleFlight``, and count twice). Clips are 30 s packet copies of the .ogg tracks at distinct
offsets. The cache is off (``TAGGRAM_MEMORY_CACHE_BYTES=0``): every request is computed.

One service process, loopback only, these phases in this order (ratios are within this one run):

1. **idle** — ``--idle-clips`` clips one after another on the idle service.
2. for each N in ``--long-uploads`` (default 2 and 4), ``--repeats`` times, alternating:
   a. **alone** — N long uploads to /embed at once, nothing else: their throughput (audio seconds per wall second).
   b. **mixed** — the same N long uploads again plus one client sending clips back to back (``--clip-gap-ms``
      apart) until the long uploads are done: the clips' latency percentiles and the uploads' throughput.
   The repeats are pooled (audio over wall time summed over the repeats; the clips of every mixed phase in one
   set of percentiles) and the per-repeat ratios are listed: on a fast machine one phase lasts seconds, and a
   single pair of phases is at the mercy of whatever else ran during them.

Reported: clip p50/p95/p99 (idle and mixed, and p99 as a multiple of idle p99), long-upload throughput mixed vs
alone, the clips' share of the audio analysed while mixed, and all audio analysed per second (long + clips) vs the
long uploads alone: the clips' work is taken from the long uploads' share, so a busy clip stream lowers the long
uploads' ratio even when no capacity is lost. On a shared machine wall-clock throughput moves with other work, so
the service's own CPU time per audio second is reported too: the same figure mixed as alone means the fair
schedule costs no throughput (a dedicated machine turns CPU time into wall time), and so is the CPU other
processes took during each phase (from /proc/stat, less the service's and this client's), in cores: a phase whose
ratio is low while other work took a core measured the machine, not the service. Bounded: at most ``--max-clips`` clips
per mixed phase; every request has a client timeout.

``--signups K`` (issue #22): each repeat adds two mixed phases with K ``--signup-minutes`` WAV sign-ups posted to
/suggest-subgenres with the long uploads, **early answers on** (each leaves its complete analysis in the background
at bulk priority) and **off** (``?complete=true``: the client waits, at /suggest-subgenres' interactive priority). The
sign-ups and their background analyses finish (none pending) before the next phase; their CPU counts in the phase.

Writes docs/benchmarks.md, "Fairness: clips while long uploads are in flight" (``--section``, ``--report``).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench import common
from bench.fairness_audio import CLIP_SECONDS, LONG_RATE_HZ, long_upload, make_clips
from bench.signup_http import PLATFORM_SECOND, drain, service_settings, signup
from corpus.music import ensure_music

SECTION = "fairness"
CLIENT_TIMEOUT_SECONDS = 900.0
SERVICE_REQUEST_TIMEOUT_SECONDS = 900  # the long uploads share 2 busy cores: the default 120 s deadline is too short


@dataclass
class Phase:
    name: str
    clip_latencies: list[float] = field(default_factory=list)
    long_seconds: float = 0.0  # audio seconds of the long uploads
    long_wall: float = 0.0  # first upload sent → last upload answered
    clip_seconds: float = 0.0  # audio seconds of the clips answered while the long uploads were in flight
    cpu_seconds: float = 0.0  # the service process's CPU time over the phase (/proc): not slowed by other work
    wall: float = 0.0  # the whole phase, for the other processes' share of the machine
    other_cpu_seconds: float = 0.0  # CPU time of every other process on the machine over the phase
    repeat_ratios: list[float] = field(default_factory=list)  # long throughput vs alone, per repeat (mixed only)
    signup_seconds: float = 0.0  # audio seconds of the sign-ups (--signups), analysed early + background or whole
    signup_latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def absorb(self, other: Phase) -> None:
        """Pool a repeat of the same phase into this one."""
        self.clip_latencies += other.clip_latencies
        self.long_seconds += other.long_seconds
        self.long_wall += other.long_wall
        self.clip_seconds += other.clip_seconds
        self.cpu_seconds += other.cpu_seconds
        self.wall += other.wall
        self.other_cpu_seconds += other.other_cpu_seconds
        self.errors += other.errors
        self.signup_seconds += other.signup_seconds
        self.signup_latencies += other.signup_latencies

    @property
    def long_throughput(self) -> float:
        return self.long_seconds / self.long_wall if self.long_wall else float("nan")


async def send_clip(client: httpx.AsyncClient, url: str, clip: bytes, phase: Phase) -> None:
    started = time.perf_counter()
    response = await client.post(f"{url}/suggest-subgenres", content=clip, headers={"content-type": "audio/ogg"})
    if response.status_code != 200:
        phase.errors.append(f"clip {response.status_code} {response.text[:120]}")
        return
    phase.clip_latencies.append(time.perf_counter() - started)
    phase.clip_seconds += response.json()["duration_seconds"]


async def send_long(client: httpx.AsyncClient, url: str, path: Path, phase: Phase) -> None:
    response = await client.post(f"{url}/embed", content=path.read_bytes(), headers={"content-type": "audio/wav"})
    if response.status_code != 200:
        phase.errors.append(f"long {response.status_code} {response.text[:120]}")
        return
    body = response.json()
    if body["cached"]:
        raise RuntimeError("a long upload hit the cache: the bench must compute every request")
    phase.long_seconds += body["duration_seconds"]


async def signups_done(client: httpx.AsyncClient, url: str, signups: list[Path], early: bool, phase: Phase) -> None:
    """The sign-ups answered, then their background analyses finished (nothing at all without sign-ups)."""
    for seconds, body in await asyncio.gather(*(signup(client, url, path, early=early) for path in signups)):
        phase.signup_latencies.append(seconds)
        phase.signup_seconds += body["duration_seconds"]
    if signups:
        await asyncio.to_thread(drain, url)


def run_phase(
    service: common.Service,
    name: str,
    longs: list[Path],
    clips: list[bytes],
    clip_gap: float,
    max_clips: int,
    signups: tuple[list[Path], bool] = ([], True),
) -> Phase:
    phase = Phase(name)
    cpu_before = common.process_cpu_seconds(service.process.pid)
    machine_before, own_before, started = common.machine_busy_cpu_seconds(), time.process_time(), time.perf_counter()
    asyncio.run(phase_requests(service.url, phase, longs, clips, clip_gap, max_clips, signups))
    phase.wall = time.perf_counter() - started
    phase.cpu_seconds = common.process_cpu_seconds(service.process.pid) - cpu_before
    own = time.process_time() - own_before
    phase.other_cpu_seconds = max(0.0, common.machine_busy_cpu_seconds() - machine_before - phase.cpu_seconds - own)
    return phase


async def phase_requests(
    url: str,
    phase: Phase,
    longs: list[Path],
    clips: list[bytes],
    clip_gap: float,
    max_clips: int,
    signups: tuple[list[Path], bool],
) -> None:
    async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT_SECONDS) as client:
        if not longs:  # idle: clips one after another
            for clip in clips:
                await send_clip(client, url, clip, phase)
            return
        started = time.perf_counter()
        uploads = asyncio.ensure_future(all_answered(client, url, longs, phase))
        signed_up = asyncio.ensure_future(signups_done(client, url, *signups, phase))
        if clips:
            await asyncio.wait([uploads], timeout=clip_gap)  # the uploads are on their way in before the first clip
            sent = 0
            while not uploads.done() and sent < max_clips:
                await send_clip(client, url, clips[sent % len(clips)], phase)
                sent += 1
                await asyncio.wait([uploads], timeout=clip_gap)
        # The uploads' wall time ends when the last one is answered, not when the clip client notices (a pause
        # between clips or a clip still in flight would otherwise count as the uploads' time).
        phase.long_wall = await uploads - started
        await signed_up


async def all_answered(client: httpx.AsyncClient, url: str, longs: list[Path], phase: Phase) -> float:
    """Send the long uploads at once; time.perf_counter() when the last one was answered."""
    await asyncio.gather(*(send_long(client, url, path, phase) for path in longs))
    return time.perf_counter()


def row(phase: Phase, idle_p99: float, alone: Phase | None) -> list[object]:
    lat = phase.clip_latencies
    p99 = common.percentile(lat, 99)
    clips = (
        [
            len(lat),
            *(f"{common.percentile(lat, q):.2f}" for q in (50, 95)),
            f"{p99:.2f}",
            f"{p99 / idle_p99:.1f}×" if lat else "–",
        ]
        if lat
        else [0, "–", "–", "–", "–"]
    )
    longs = ["–"] * 7
    if phase.long_wall:
        mixed = alone is not None and alone is not phase
        ratio = f"{phase.long_throughput / alone.long_throughput:.2f}×" if mixed else "1.00×"
        per_repeat = ", ".join(f"{r:.2f}" for r in phase.repeat_ratios) if mixed else "–"
        total = (phase.long_seconds + phase.clip_seconds) / phase.long_wall
        total_ratio = f"{total / alone.long_throughput:.2f}×" if mixed else "1.00×"
        share = phase.clip_seconds / (phase.long_seconds + phase.clip_seconds)
        cpu = phase.cpu_seconds / (phase.long_seconds + phase.clip_seconds + phase.signup_seconds)
        alone_cpu = alone.cpu_seconds / alone.long_seconds if alone else cpu
        longs = [
            f"{phase.long_throughput:.1f}",
            ratio,
            per_repeat,
            f"{share:.0%}",
            total_ratio,
            f"{1000 * cpu:.1f}",
            f"{alone_cpu / cpu:.2f}×",
        ]
    cores = [
        f"{seconds / phase.wall:.2f}" if phase.wall else "–" for seconds in (phase.cpu_seconds, phase.other_cpu_seconds)
    ]
    signed_up = phase.signup_latencies
    signups = [len(signed_up), f"{common.percentile(signed_up, 50):.2f}" if signed_up else "–"]
    return [phase.name, *clips, *longs, *signups, *cores, len(phase.errors)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_service_arguments(parser)
    parser.add_argument("--long-uploads", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--repeats", type=int, default=3, help="alone/mixed pairs per N, alternating, pooled")
    parser.add_argument("--long-minutes", type=float, default=15.5)
    parser.add_argument("--idle-clips", type=int, default=15)
    parser.add_argument(
        "--clip-gap-ms",
        type=float,
        default=3000.0,
        help="pause between one clip's answer and the next (the clips' share of the work)",
    )
    parser.add_argument("--max-clips", type=int, default=200, help="clips per mixed phase at most")
    parser.add_argument("--section", default=SECTION, help="docs/benchmarks.md section to write")
    parser.add_argument("--report", type=Path, default=common.REPORT, help="the docs file the section goes to")
    parser.add_argument(
        "--signups", type=int, default=0, help="sign-ups per extra mixed phase, early answers on and off (issue #22)"
    )
    parser.add_argument("--signup-minutes", type=float, default=4.0)
    parser.add_argument(
        "--platform",
        action="store_true",
        help="load mtt-musicnn too: clips and sign-ups get the platform taxonomy's default answer (two models)",
    )
    parser.add_argument("--precision", choices=("fp32", "bf16", "auto"), default="fp32", help="TAGGRAM_PRECISION")
    args = parser.parse_args(argv)

    tracks = ensure_music()
    longs = [long_upload(i, args.long_minutes, tracks) for i in range(max(args.long_uploads))]
    signups = [long_upload(len(longs) + i, args.signup_minutes, tracks) for i in range(args.signups)]
    if len({hashlib.sha256(path.read_bytes()).digest() for path in longs + signups}) != len(longs + signups):
        raise SystemExit("two long uploads have the same bytes: the service would compute them once")
    clips = make_clips(tracks, args.idle_clips + args.max_clips)
    idle_clips, stream_clips = clips[: args.idle_clips], clips[args.idle_clips :]
    gap = args.clip_gap_ms / 1000
    phases: list[tuple[Phase, Phase | None]] = []
    with common.running_service(
        args.port,
        args.model,
        memory_cache_bytes=0,
        request_timeout_seconds=SERVICE_REQUEST_TIMEOUT_SECONDS,
        **service_settings(args),
    ) as service:
        run_phase(service, "warm-up", [], idle_clips[:2], gap, 0)
        idle = run_phase(service, "idle: clips alone", [], idle_clips, gap, 0)
        phases.append((idle, None))
        for n in args.long_uploads:
            alone, mixed = Phase(f"{n} long uploads alone"), Phase(f"{n} long uploads + clip stream")
            with_signups = [
                (early, Phase(f"{n} long uploads + clip stream + {len(signups)} sign-ups, early answers {label}"))
                for early, label in ((True, "on"), (False, "off"))
                if signups
            ]
            for repeat in range(args.repeats):
                alone_once = run_phase(service, alone.name, longs[:n], [], gap, 0)
                mixed_once = run_phase(service, mixed.name, longs[:n], stream_clips, gap, args.max_clips)
                mixed.repeat_ratios.append(mixed_once.long_throughput / alone_once.long_throughput)
                alone.absorb(alone_once)
                mixed.absorb(mixed_once)
                for early, pooled in with_signups:
                    once = run_phase(
                        service, pooled.name, longs[:n], stream_clips, gap, args.max_clips, (signups, early)
                    )
                    pooled.repeat_ratios.append(once.long_throughput / alone_once.long_throughput)
                    pooled.absorb(once)
                    print(
                        f"{pooled.name}: clips p99 {common.percentile(once.clip_latencies, 99):.2f} s", file=sys.stderr
                    )
                print(
                    f"N={n} repeat {repeat + 1}: alone {alone_once.long_throughput:.1f} audio s/s; mixed "
                    f"{mixed_once.long_throughput:.1f} ({mixed.repeat_ratios[-1]:.2f}×); clips p99 "
                    f"{common.percentile(mixed_once.clip_latencies, 99):.2f} s; other work "
                    f"{alone_once.other_cpu_seconds / alone_once.wall:.2f} / "
                    f"{mixed_once.other_cpu_seconds / mixed_once.wall:.2f} cores",
                    file=sys.stderr,
                )
            phases += [(alone, alone), (mixed, alone), *((pooled, alone) for _, pooled in with_signups)]
    idle_p99 = common.percentile(idle.clip_latencies, 99)
    header = [
        "phase",
        "clips",
        "clip p50 s",
        "clip p95 s",
        "clip p99 s",
        "p99 vs idle",
        "long uploads: audio s per s",
        "vs alone",
        "per repeat",
        "clips' share of audio",
        "all audio vs alone",
        "service CPU ms per audio s",
        "audio per CPU-s vs alone",
        "sign-ups",
        "sign-up p50 s",
        "service, cores busy",
        "other work, cores",
        "errors",
    ]
    table = common.markdown_table(header, [row(phase, idle_p99, alone) for phase, alone in phases])
    errors = [e for phase, _ in phases for e in phase.errors]
    body = "\n".join(
        [
            "## Fairness: clips while long uploads are in flight",
            "",
            *common.environment_lines(["bench.fairness", *(argv if argv is not None else sys.argv[1:])]),
            f"- models: {args.model}"
            + (
                f" and {PLATFORM_SECOND}: clips and sign-ups get the platform taxonomy's "
                "answer (both models analyse each)"
                if args.platform
                else " alone"
            ),
            f"- long uploads: {args.long_minutes:g} min WAV each ({LONG_RATE_HZ} Hz stereo 16-bit, real music "
            f"looped) to /embed; clips: {CLIP_SECONDS:g} s ogg/vorbis to /suggest-subgenres, "
            f"{args.clip_gap_ms:g} ms apart, one at "
            f"a time; cache off; one service process; alone and mixed alternate {args.repeats}× per N and are pooled "
            "(audio over wall time summed; the clips' percentiles over every mixed phase)",
            *(
                [
                    f"- sign-ups: {len(signups)} × {args.signup_minutes:g} min WAV to /suggest-subgenres with the long "
                    "uploads; early answers on: answered from a sample, the complete analyses in the background; off: "
                    "?complete=true; their CPU (background included) counts in the service CPU per audio second"
                ]
                if signups
                else []
            ),
            '- "cores busy": CPU time over the phase\'s wall time; "other work": every other process on the machine '
            "(/proc/stat, less the service and this client): a service below 2 cores busy while nothing else ran left "
            "the CPU idle; compare the ratios (same run), not the absolute figures; p99 of a few dozen "
            "clips is close to their maximum",
            "",
            table,
            "",
            *(["Errors: " + "; ".join(errors[:5]), ""] if errors else []),
        ]
    )
    print(body)
    if not args.no_write:
        common.update_report(args.section, body, args.report)


if __name__ == "__main__":
    main()
