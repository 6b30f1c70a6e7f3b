"""Latency of one request on an idle service, by inference configuration: the signup form's case.

Several ``taggram serve`` processes run at once, one per configuration (cache off), and take turns: every clip is
sent to each of them in turn (the order rotates), one request at a time, so no two requests overlap and other load
on the machine hits every configuration alike. Clips are real music cut without re-encoding (``corpus.music``) at a
few offsets of every file, in each length of ``--seconds``.

Configurations: ``default`` is the service as shipped; the others override settings (``--config NAME:key=value,...``;
without any, a built-in set compares ONNX Runtime's one-run-per-batch default with the shipped workers at several
batch sizes).

A decision study (inference configuration for one request at a time): its section is docs/benchmarks.md, "One
request at a time, by inference configuration".
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time

import httpx

from bench import common
from corpus.music import cut_clip, music_files

SECTION = "single_request"
OFFSETS_SECONDS = (10.0, 41.3, 77.7)  # where clips start in each file (full-length requests start at 0)
DEFAULT_CONFIGS = {
    "default": {},
    "one run per batch on 2 threads, batch ≤ 16 (before)": {
        "inference_workers": 1,
        "intra_op_threads": 2,
        "max_batch_patches": 16,
    },
    "2 workers, batch ≤ 8": {"max_batch_patches": 8},
    "2 workers, batch ≤ 2": {"max_batch_patches": 2},
    "2 workers, batch ≤ 1": {"max_batch_patches": 1},
}


def parse_config(text: str) -> tuple[str, dict[str, str]]:
    name, _, pairs = text.partition(":")
    return name, dict(pair.split("=", 1) for pair in pairs.split(",") if pair)


def clips_of(files, seconds: float) -> list[tuple[bytes, str]]:
    offsets = OFFSETS_SECONDS if seconds < 100 else (0.0,)
    return [(cut_clip(path, offset, seconds), common.content_type(path)) for path in files for offset in offsets]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="python -m bench.studies.single_request", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--seconds", default="8,30,120", help="comma-separated clip lengths")
    parser.add_argument("--formats", default="ogg,mp3,m4a")
    parser.add_argument("--rounds", type=int, default=2, help="passes over the clips")
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="NAME:key=value,...",
        help="a configuration to compare with the default (repeatable)",
    )
    common.add_service_arguments(parser)
    args = parser.parse_args(argv)
    configs = {"default": {}, **dict(map(parse_config, args.config))} if args.config else DEFAULT_CONFIGS
    lengths = [float(s) for s in args.seconds.split(",")]
    files = music_files(tuple(args.formats.split(",")))
    clips = {seconds: clips_of(files, seconds) for seconds in lengths}
    latency: dict[tuple[str, float], list[float]] = {(name, s): [] for name in configs for s in lengths}

    with contextlib.ExitStack() as stack:
        clients = {}
        for name, overrides in configs.items():
            service = stack.enter_context(common.running_service(0, args.model, memory_cache_bytes=0, **overrides))
            clients[name] = stack.enter_context(httpx.Client(base_url=service.url, timeout=300.0))
        names = list(configs)
        for client in clients.values():  # warm-up request each
            data, content_type = clips[lengths[0]][0]
            client.post("/taggram", content=data, headers={"content-type": content_type})
        turn = 0
        for round_index in range(args.rounds):
            for seconds in lengths:
                for data, content_type in clips[seconds]:
                    turn += 1
                    for name in names[turn % len(names) :] + names[: turn % len(names)]:
                        started = time.perf_counter()
                        response = clients[name].post("/taggram", content=data, headers={"content-type": content_type})
                        elapsed = time.perf_counter() - started
                        if response.status_code != 200:
                            raise RuntimeError(f"{name}: HTTP {response.status_code}: {response.text[:300]}")
                        latency[(name, seconds)].append(elapsed)
            print(f"round {round_index + 1} done", file=sys.stderr)

    def median_ms(name: str, seconds: float) -> float:
        return 1000 * statistics.median(latency[(name, seconds)])

    rows = []
    for name in names:
        cells = []
        for seconds in lengths:
            cells += [
                f"{median_ms(name, seconds):.0f}",
                f"{median_ms(name, seconds) / median_ms('default', seconds):.2f}",
            ]
        settings = ", ".join(f"{k}={v}" for k, v in configs[name].items()) or "shipped defaults"
        rows.append([name, settings, *cells])
    header = ["configuration", "settings"]
    for seconds in lengths:
        header += [f"{seconds:g} s clip: median ms", "÷ default"]
    text = "\n".join(
        [
            "## One request at a time, by inference configuration (`bench/studies/single_request.py`)",
            "",
            *common.environment_lines(["bench.studies.single_request", *argv]),
            f"- input: clips of {', '.join(f'{s:g}' for s in lengths)} s cut from {len(files)} files ({args.formats}), "
            f"{args.rounds} round(s); `POST /taggram`, cache off; every clip goes to every configuration in turn",
            "",
            common.markdown_table(header, rows, "ll" + "r" * (2 * len(lengths))),
            "",
            'Latency from sending the request to the whole response, on an otherwise idle service. "÷ default" below '
            "1 means faster than the shipped default.",
        ]
    )
    print(text)
    if not args.no_write:
        common.update_report(SECTION, text)


if __name__ == "__main__":
    main()
