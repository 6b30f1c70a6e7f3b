"""End-to-end speed in the container against the bare service, on the same real files, in one run (#21: >= 0.95).

    flock /tmp/taggram-bench.lock .venv/bin/python -m bench.container --image taggram:image-test

The bare service is ``taggram serve`` from this checkout's venv on the host's models; the container is the image
run as tests/system/test_image.py runs it (compose's hardening, a 1 GiB memory limit, no CPU limit). Both serve one
model with the cache off and get the same uploads: the real tracks (``corpus.music``) cut from a different offset
each round, so every request is computed, all tracks of a round sent at once (both CPUs busy). Rounds alternate
which side goes first, so a machine that is busier early or late weighs on both; one side runs at a time.
Reported: audio seconds analysed per wall second on each side, per round and pooled, and container / bare; and,
because wall time on a shared machine moves with other work, each side's own CPU time per audio second (the bare
process from /proc, the container from its cgroup): bare / container CPU per audio second is the speed ratio a
dedicated machine would see.
Also the image's size and its time from `docker run` to ready. Writes docs/benchmarks.md's "container" section.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import httpx

from bench import common
from corpus.music import cut_clip, duration_seconds, ensure_music
from tests.support import containers

SECTION = "container"
NAME = "taggram-bench-container"
ROUND_OFFSET_SECONDS = 1.37  # each round's clips start this much later: distinct bytes, not a codec-frame multiple


def round_clips(round_index: int) -> list[bytes]:
    offset = round_index * ROUND_OFFSET_SECONDS
    return [cut_clip(track, offset, duration_seconds(track) - offset - 1.0) for track in ensure_music()]


async def analyse_all(url: str, model: str, clips: list[bytes]) -> tuple[float, float]:
    """(audio seconds analysed, wall seconds) for the clips sent at once."""
    async with httpx.AsyncClient(timeout=900) as client:
        started = time.perf_counter()
        responses = await asyncio.gather(
            *(
                client.post(
                    f"{url}/embed", params={"model": model}, content=clip, headers={"content-type": "audio/ogg"}
                )
                for clip in clips
            )
        )
        wall = time.perf_counter() - started
    for response in responses:
        response.raise_for_status()
        if response.json()["cached"]:
            raise RuntimeError("a bench request hit the cache: every request must be computed")
    return sum(r.json()["duration_seconds"] for r in responses), wall


SIDES = ("bare", "container")
HEADER = [
    "round",
    "order",
    "bare audio s/s",
    "container audio s/s",
    "container / bare (wall)",
    "bare CPU ms / audio s",
    "container CPU ms / audio s",
    "bare / container (CPU)",
]


def row(label: object, order: str, speeds: dict, cpu_per_audio: dict, bold: bool = False) -> list[object]:
    wall_ratio = f"{speeds['container'] / speeds['bare']:.3f}"
    cpu_ratio = f"{cpu_per_audio['bare'] / cpu_per_audio['container']:.3f}"
    if bold:
        wall_ratio, cpu_ratio = f"**{wall_ratio}**", f"**{cpu_ratio}**"
    return [
        label,
        order,
        f"{speeds['bare']:.1f}",
        f"{speeds['container']:.1f}",
        wall_ratio,
        f"{1000 * cpu_per_audio['bare']:.1f}",
        f"{1000 * cpu_per_audio['container']:.1f}",
        cpu_ratio,
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", default=containers.CPU_IMAGE)
    parser.add_argument("--model", default=common.DEFAULT_MODEL)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args(argv)
    containers.require_engine()
    settings = {"TAGGRAM_MODELS": args.model, "TAGGRAM_DEFAULT_MODEL": args.model, "TAGGRAM_MEMORY_CACHE_BYTES": "0"}
    totals = {side: {"audio": 0.0, "wall": 0.0, "cpu": 0.0} for side in SIDES}
    rows = []
    with (
        common.running_service(model=args.model, memory_cache_bytes=0) as bare,
        containers.running(args.image, NAME, env=settings) as box,
    ):
        ready_seconds = box.wait_ready()
        urls = {"bare": bare.url, "container": box.url}
        cpu_clock = {"bare": lambda: common.process_cpu_seconds(bare.process.pid), "container": box.cpu_seconds}
        for index in range(args.rounds):
            clips = round_clips(index)
            order = SIDES if index % 2 == 0 else SIDES[::-1]
            speeds, cpu_per_audio = {}, {}
            for side in order:
                cpu_before = cpu_clock[side]()
                audio, wall = asyncio.run(analyse_all(urls[side], args.model, clips))
                cpu = cpu_clock[side]() - cpu_before
                for key, value in (("audio", audio), ("wall", wall), ("cpu", cpu)):
                    totals[side][key] += value
                speeds[side], cpu_per_audio[side] = audio / wall, cpu / audio
            rows.append(row(index + 1, " then ".join(order), speeds, cpu_per_audio))
            print(rows[-1], flush=True)
    speeds = {side: t["audio"] / t["wall"] for side, t in totals.items()}
    cpu_per_audio = {side: t["cpu"] / t["audio"] for side, t in totals.items()}
    rows.append(row("pooled", "", speeds, cpu_per_audio, bold=True))
    size_mb = containers.image_size_bytes(args.image) / 1e6
    body = "\n".join(
        [
            f"## Container vs bare (`bench/container.py`, {args.model}, {args.rounds} rounds of the "
            f"{len(clips)} real tracks sent at once)",
            "",
            *common.environment_lines(["bench.container", *(sys.argv[1:] if argv is None else argv)]),
            "",
            f"Image `{args.image}`: {size_mb:.0f} MB; `docker run` to ready (1 model): {ready_seconds:.1f} s.",
            "",
            common.markdown_table(HEADER, rows),
        ]
    )
    print(body)
    common.update_report(SECTION, body)


if __name__ == "__main__":
    main()
