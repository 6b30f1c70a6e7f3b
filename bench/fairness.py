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

Writes docs/benchmarks.md, "Fairness: clips while long uploads are in flight".
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path

import av
import httpx
import numpy as np
import soxr

from bench import common
from corpus.music import CACHE_DIR, cut_clip, duration_seconds, ensure_music

SECTION = "fairness"
LONG_RATE_HZ = 22_050  # long uploads' sample rate: not 16 kHz, so the service resamples as it would for real files
LONG_CHANNELS = 2
CLIP_SECONDS = 30.0
CLIP_OFFSET_STEP_SECONDS = 1.37  # between clips of one track: distinct bytes, not a multiple of a codec frame
CLIENT_TIMEOUT_SECONDS = 900.0
SERVICE_REQUEST_TIMEOUT_SECONDS = 900  # the long uploads share 2 busy cores: the default 120 s deadline is too short
LONG_DIR = CACHE_DIR / "long"
# Upload i starts this far into the looped soundtrack. Starting each at a different *track* repeated itself from the
# fourth upload on (the soundtrack has three tracks), and the service computed that upload once for two.
UPLOAD_OFFSET_SECONDS = 41.3


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

    @property
    def long_throughput(self) -> float:
        return self.long_seconds / self.long_wall if self.long_wall else float("nan")


def decode_native(path: Path) -> np.ndarray:
    """A track as float32 [samples, 2] at LONG_RATE_HZ."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="stereo", rate=stream.rate)
        pieces = [
            np.asarray(out.to_ndarray()).reshape(-1, 2)
            for frame in container.decode(stream)
            for out in resampler.resample(frame)
        ]
        rate = stream.rate
    samples = np.concatenate(pieces)
    return soxr.resample(samples, rate, LONG_RATE_HZ).astype(np.float32)


def long_upload(index: int, minutes: float, tracks: list[Path]) -> Path:
    """A WAV of ``minutes`` of real music: the tracks looped, from ``index`` × UPLOAD_OFFSET_SECONDS on (made once,
    cached)."""
    path = LONG_DIR / f"long-{index}-{minutes:g}min-from-{index * UPLOAD_OFFSET_SECONDS:g}s.wav"
    if path.exists():
        return path
    LONG_DIR.mkdir(parents=True, exist_ok=True)
    wanted = int(minutes * 60 * LONG_RATE_HZ)
    partial = path.with_suffix(".partial")
    with wave.open(str(partial), "wb") as out:
        out.setnchannels(LONG_CHANNELS)
        out.setsampwidth(2)
        out.setframerate(LONG_RATE_HZ)
        written, turn, skip = 0, 0, round(index * UPLOAD_OFFSET_SECONDS * LONG_RATE_HZ)
        while written < wanted:
            samples = decode_native(tracks[turn % len(tracks)])
            turn += 1
            if skip >= len(samples):
                skip -= len(samples)
                continue
            samples, skip = samples[skip:][: wanted - written], 0
            out.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
            written += len(samples)
    partial.rename(path)
    return path


def make_clips(tracks: list[Path], count: int) -> list[bytes]:
    clips, offsets = [], {track: 0.0 for track in tracks}
    lengths = {track: duration_seconds(track) for track in tracks}
    turn = 0
    while len(clips) < count:
        track = tracks[turn % len(tracks)]
        turn += 1
        if offsets[track] + CLIP_SECONDS > lengths[track]:
            continue
        clips.append(cut_clip(track, offsets[track], CLIP_SECONDS))
        offsets[track] += CLIP_OFFSET_STEP_SECONDS
    return clips


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


def run_phase(
    service: common.Service, name: str, longs: list[Path], clips: list[bytes], clip_gap: float, max_clips: int
) -> Phase:
    phase = Phase(name)
    cpu_before = common.process_cpu_seconds(service.process.pid)
    machine_before, own_before, started = common.machine_busy_cpu_seconds(), time.process_time(), time.perf_counter()
    asyncio.run(phase_requests(service.url, phase, longs, clips, clip_gap, max_clips))
    phase.wall = time.perf_counter() - started
    phase.cpu_seconds = common.process_cpu_seconds(service.process.pid) - cpu_before
    own = time.process_time() - own_before
    phase.other_cpu_seconds = max(0.0, common.machine_busy_cpu_seconds() - machine_before - phase.cpu_seconds - own)
    return phase


async def phase_requests(
    url: str, phase: Phase, longs: list[Path], clips: list[bytes], clip_gap: float, max_clips: int
) -> None:
    async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT_SECONDS) as client:
        if not longs:  # idle: clips one after another
            for clip in clips:
                await send_clip(client, url, clip, phase)
            return
        started = time.perf_counter()
        uploads = asyncio.ensure_future(all_answered(client, url, longs, phase))
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
        cpu = phase.cpu_seconds / (phase.long_seconds + phase.clip_seconds)
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
    return [phase.name, *clips, *longs, *cores, len(phase.errors)]


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
    args = parser.parse_args(argv)

    tracks = ensure_music()
    longs = [long_upload(i, args.long_minutes, tracks) for i in range(max(args.long_uploads))]
    if len({hashlib.sha256(path.read_bytes()).digest() for path in longs}) != len(longs):
        raise SystemExit("two long uploads have the same bytes: the service would compute them once")
    clips = make_clips(tracks, args.idle_clips + args.max_clips)
    idle_clips, stream_clips = clips[: args.idle_clips], clips[args.idle_clips :]
    gap = args.clip_gap_ms / 1000
    phases: list[tuple[Phase, Phase | None]] = []
    with common.running_service(
        args.port, args.model, memory_cache_bytes=0, request_timeout_seconds=SERVICE_REQUEST_TIMEOUT_SECONDS
    ) as service:
        run_phase(service, "warm-up", [], idle_clips[:2], gap, 0)
        idle = run_phase(service, "idle: clips alone", [], idle_clips, gap, 0)
        phases.append((idle, None))
        for n in args.long_uploads:
            alone, mixed = Phase(f"{n} long uploads alone"), Phase(f"{n} long uploads + clip stream")
            for repeat in range(args.repeats):
                alone_once = run_phase(service, alone.name, longs[:n], [], gap, 0)
                mixed_once = run_phase(service, mixed.name, longs[:n], stream_clips, gap, args.max_clips)
                mixed.repeat_ratios.append(mixed_once.long_throughput / alone_once.long_throughput)
                alone.absorb(alone_once)
                mixed.absorb(mixed_once)
                print(
                    f"N={n} repeat {repeat + 1}: alone {alone_once.long_throughput:.1f} audio s/s; mixed "
                    f"{mixed_once.long_throughput:.1f} ({mixed.repeat_ratios[-1]:.2f}×); clips p99 "
                    f"{common.percentile(mixed_once.clip_latencies, 99):.2f} s; other work "
                    f"{alone_once.other_cpu_seconds / alone_once.wall:.2f} / "
                    f"{mixed_once.other_cpu_seconds / mixed_once.wall:.2f} cores",
                    file=sys.stderr,
                )
            phases += [(alone, alone), (mixed, alone)]
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
            f"- long uploads: {args.long_minutes:g} min WAV each ({LONG_RATE_HZ} Hz stereo 16-bit, real music "
            f"looped) to /embed; clips: {CLIP_SECONDS:g} s ogg/vorbis to /suggest-subgenres, "
            f"{args.clip_gap_ms:g} ms apart, one at "
            f"a time; cache off; one service process; alone and mixed alternate {args.repeats}× per N and are pooled "
            "(audio over wall time summed; the clips' percentiles over every mixed phase)",
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
        common.update_report(args.section, body)


if __name__ == "__main__":
    main()
