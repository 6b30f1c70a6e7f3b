"""Throughput of `taggram check-catalog` on a real collection: files/s and audio hours/s, wall and per CPU second.

Runs the real CLI (worker processes, full decodes, no model) over a manifest of the first ``--limit`` tracks of the
corpus (``/work/corpus/corpus.csv``, built by ``corpus/build.py``), and reads the CPU time its process tree used, so
the figure per CPU second holds on a machine shared with other work, where the wall figure does not.

Usage: .venv/bin/python -m bench.catalog_check [--corpus CSV] [--limit N] [--workers N] [--no-write]
Writes its section into docs/decode.md.

Writes docs/decode.md, "Catalog check throughput on a real collection".
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REPO_ROOT, environment_lines, markdown_table, update_report

DECODE_DOC = REPO_ROOT / "docs" / "decode.md"
DEFAULT_CORPUS = Path("/work/corpus/corpus.csv")


def write_manifest(corpus: Path, limit: int, dest: Path) -> int:
    with corpus.open() as f:
        rows = list(csv.DictReader(f))[:limit]
    with dest.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["track_id", "path"])
        writer.writerows([row["track_id"], row["path"]] for row in rows)
    return len(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--limit", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "tracks.csv"
        files = write_manifest(args.corpus, args.limit, manifest)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "service",
                "check-catalog",
                str(manifest),
                "--output",
                str(Path(tmp) / "rows.parquet"),
                "--workers",
                str(args.workers),
                "--json",
            ],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        wall = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    summary = json.loads(result.stdout)
    hours = summary["audio_hours"]
    body = "\n".join([
        "### Catalog check throughput on a real collection", "",
        *environment_lines(["bench.catalog_check", *(argv if argv is not None else sys.argv[1:])]), "",
        markdown_table(["files", "audio h", "workers", "wall s", "CPU s", "files/s (wall)", "files per CPU s",
                        "audio h per CPU h", "analysed", "refused", "by decoder", "warnings"],
                       [[files, f"{hours:.2f}", args.workers, f"{wall:.0f}", f"{cpu:.0f}", f"{files / wall:.2f}",
                         f"{files / cpu:.2f}", f"{hours / (cpu / 3600):.0f}", summary["ok"], summary["refused"],
                         summary["decoders"], summary["warnings"] or "none"]]),
        "",
        "A full decode per file (both decoders' chain: demux, decode, mean mono, soxr HQ to 16 kHz), no model. The "
        "CPU figure is what the check costs; wall time on an idle machine is about CPU time / workers.",
    ])  # fmt: skip
    print(body)
    if not args.no_write:
        update_report("catalog_check", body, DECODE_DOC)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
