"""Peak RSS of ``taggram serve`` with every model loaded: at ready, and under concurrent uploads to every model.

The service runs as a subprocess (``bench.common.running_service``, cache off); its RSS is sampled every 10 ms
from /proc while ``--requests-per-model`` uploads of ``--clip-seconds`` of real music (``corpus.music``) go to each
model at once. Reported: RSS when ready, peak RSS under the load, and RSS after it.

Writes docs/benchmarks.md, "Memory of the service: four models, ready and under load".
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading

import httpx
import psutil

from bench import common
from corpus.music import cut_clip, ensure_music

SECTION = "service_memory"
MODELS = ("msd-musicnn", "mtt-musicnn", "msd-vgg", "mtt-vgg")
SAMPLE_SECONDS = 0.01
CLIP_OFFSET_STEP_SECONDS = 1.37  # between the uploads of one model: not a multiple of a codec frame


async def load(url: str, clips: dict[str, list[bytes]]) -> list[int]:
    async with httpx.AsyncClient(timeout=900.0) as client:
        responses = await asyncio.gather(
            *(
                client.post(
                    f"{url}/embed", params={"model": model}, content=clip, headers={"content-type": "audio/ogg"}
                )
                for model, model_clips in clips.items()
                for clip in model_clips
            )
        )
    return [response.status_code for response in responses]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests-per-model", type=int, default=4)
    parser.add_argument("--clip-seconds", type=float, default=60.0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    tracks = ensure_music()
    # A distinct offset per upload: with three tracks, a track repeats within a model's uploads, and identical bytes
    # would be computed once for both (cache.SingleFlight), i.e. fewer analyses in flight than the table says.
    clips = {
        model: [
            cut_clip(
                tracks[(m * args.requests_per_model + i) % len(tracks)],
                5.0 + 7.0 * m + CLIP_OFFSET_STEP_SECONDS * i,
                args.clip_seconds,
            )
            for i in range(args.requests_per_model)
        ]
        for m, model in enumerate(MODELS)
    }
    if len({clip for model_clips in clips.values() for clip in model_clips}) != len(MODELS) * args.requests_per_model:
        raise SystemExit("two uploads have the same bytes: the service would compute them once")
    with common.running_service(
        0, MODELS[0], models=",".join(MODELS), memory_cache_bytes=0, request_timeout_seconds=900
    ) as service:
        process = psutil.Process(service.process.pid)
        ready = process.memory_info().rss
        peak, stop = [ready], threading.Event()

        def sample() -> None:
            while not stop.wait(SAMPLE_SECONDS):
                peak[0] = max(peak[0], process.memory_info().rss)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        statuses = asyncio.run(load(service.url, clips))
        stop.set()
        sampler.join()
        after = process.memory_info().rss
    mib = 2**20
    table = common.markdown_table(
        ["models", "uploads at once", "RSS ready MiB", "peak RSS under load MiB", "RSS after MiB", "answers"],
        [
            [
                len(MODELS),
                len(MODELS) * args.requests_per_model,
                f"{ready / mib:.0f}",
                f"{peak[0] / mib:.0f}",
                f"{after / mib:.0f}",
                ", ".join(f"{s}×{statuses.count(s)}" for s in sorted(set(statuses))),
            ]
        ],
    )
    body = "\n".join(
        [
            "## Memory of the service: four models, ready and under load",
            "",
            *common.environment_lines(["bench.service_memory", *(argv if argv is not None else sys.argv[1:])]),
            f"- `taggram serve` with {', '.join(MODELS)} (defaults: shared ONNX Runtime arena, warm-up at the largest "
            f"batch on every inference thread), cache off; {args.requests_per_model} uploads of "
            f"{args.clip_seconds:g} s "
            "real music (ogg/vorbis) to /embed per model, all at once; RSS of the service process sampled every 10 ms",
            "",
            table,
            "",
        ]
    )
    print(body)
    if not args.no_write:
        common.update_report(SECTION, body)


if __name__ == "__main__":
    main()
