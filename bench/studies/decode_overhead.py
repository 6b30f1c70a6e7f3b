"""Where decoding time goes: FFmpeg's codec vs the per-frame Python work around it in ``service.decode``.

For each file, interleaved, best of ``--reps``:

* **codec only** — PyAV demux + decode, frames dropped: the floor for any PyAV-based decoder;
* **service.decode** — the service's decoder as it is (frames converted, mixed, checked and resampled in groups of
  ``service.decode.GROUP_SAMPLES``, then rechunked). An earlier version of this script prototyped that grouping
  against a per-frame decoder; the grouping is now the service's own;
* **librosa.load** — ``librosa.load(path, sr=16000)`` (libsndfile for ogg/mp3, audioread + ffmpeg for m4a).

Then a cProfile of ``service.decode`` on one file: the functions with the most own time.

A decision study (where decode time goes, what is worth optimising): its section is docs/benchmarks.md, "Decode:
codec vs per-frame overhead".
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
import warnings
from pathlib import Path

import av
import numpy as np

from bench import common
from corpus.music import check_librosa_reads, music_files
from service import decode as service_decode

SECTION = "decode"
MAX_SECONDS = 3600.0


def codec_only(data: bytes) -> int:
    with av.open(io.BytesIO(data)) as container:
        return sum(frame.samples for frame in container.decode(container.streams.audio[0]))


def service(data: bytes) -> np.ndarray:
    return service_decode.decode(io.BytesIO(data), max_seconds=MAX_SECONDS).samples


def librosa_load(path: Path) -> np.ndarray:
    import librosa

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return librosa.load(path, sr=service_decode.SAMPLE_RATE)[0]


def profile(data: bytes, top: int) -> list[list[object]]:
    profiler = cProfile.Profile()
    profiler.enable()
    service(data)
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = stats.total_tt
    rows = []
    for (filename, line, name), (_, calls, own, cumulative, _) in sorted(
        stats.stats.items(), key=lambda item: item[1][2], reverse=True
    )[:top]:
        where = f"{Path(filename).name}:{line} {name}" if filename != "~" else name
        rows.append([f"`{where}`", calls, f"{own:.3f}", f"{own / total:.0%}", f"{cumulative:.3f}"])
    return rows


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.studies.decode_overhead",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--formats", default="ogg,mp3,m4a")
    parser.add_argument("--tracks", type=int, default=0, help="use only the first N files (0 = all)")
    parser.add_argument("--reps", type=int, default=2, help="repetitions; the best counts")
    parser.add_argument("--no-librosa", action="store_true", help="skip librosa.load")
    parser.add_argument("--profile-top", type=int, default=12)
    parser.add_argument("--no-write", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if not args.no_librosa:
        check_librosa_reads(tuple(args.formats.split(",")))
    files = music_files(tuple(args.formats.split(",")), limit=args.tracks)
    methods = {
        "codec only": lambda path, data: codec_only(data),
        "service.decode": lambda path, data: service(data),
    }
    if not args.no_librosa:
        methods["librosa.load"] = lambda path, data: librosa_load(path)
    names = list(methods)
    rows, totals, audio = [], dict.fromkeys(names, 0.0), 0.0
    for index, path in enumerate(files):
        data = path.read_bytes()
        reference = service(data)  # also a warm-up
        best = dict.fromkeys(names, float("inf"))
        for rep in range(args.reps):
            shift = (index + rep) % len(names)
            for name in names[shift:] + names[:shift]:
                started = time.perf_counter()
                methods[name](path, data)
                best[name] = min(best[name], time.perf_counter() - started)
        seconds = len(reference) / service_decode.SAMPLE_RATE
        audio += seconds
        for name in names:
            totals[name] += best[name]
        rows.append([path.name, f"{seconds:.0f}", *(f"{best[n]:.2f}" for n in names)])
        print(f"{path.name}: " + ", ".join(f"{n} {best[n]:.2f} s" for n in names), file=sys.stderr)
    rows.append(["**all**", f"{audio:.0f}", *(f"{totals[n]:.2f}" for n in names)])
    speed = ", ".join(f"{n} {audio / totals[n]:.0f}×" for n in names)
    profiled = next((f for f in files if f.suffix == ".mp3"), files[0])
    text = "\n".join(
        [
            "## Decode: codec vs per-frame overhead (`bench/studies/decode_overhead.py`)",
            "",
            *common.environment_lines(["bench.studies.decode_overhead", *argv]),
            f"- input: {len(files)} full-length files ({args.formats}); seconds per file = best of {args.reps}, "
            "methods interleaved",
            "",
            common.markdown_table(["file", "audio s", *(f"{n} s" for n in names)], rows),
            "",
            f"- real-time factors over all files: {speed}",
            "",
            f"cProfile of `service.decode` on {profiled.name} (own time; cProfile inflates per-call overhead):",
            "",
            common.markdown_table(
                ["function", "calls", "own s", "share", "cumulative s"],
                profile(profiled.read_bytes(), args.profile_top),
            ),
        ]
    )
    print(text)
    if not args.no_write:
        common.update_report(SECTION, text)


if __name__ == "__main__":
    main()
