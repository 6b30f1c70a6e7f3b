"""`taggram check-catalog`: before a backfill, find out which files of a catalog decode, how, and which the service
would refuse, without running any model.

Each file goes through the service's own refusal rules: the upload size limit (``backfill.refusal``, as
``read_upload``), the decoders (``service.decode``: FFmpeg, then libsndfile), the duration limits and the damaged-
audio policy. It is decoded in full, in worker processes (spawned: a crash in a decoder takes down a worker, not the
check), and only the decode facts come back: no audio crosses a process boundary.

Output, sized for a million-file catalog: a summary on the terminal (counts by outcome, decoder, warning and
refusal code, a few example paths per code, throughput) and one detail row per file in ``--output`` (``.jsonl`` or
``.parquet``). ``--json`` prints the summary as one JSON object instead of the table.

A worker that dies on a file (a crash inside a decoder) loses every file it was given since the pool broke; those
are checked again one at a time in a fresh single-worker pool, so the file that crashes it is named
``decoder_crashed`` and the others get their real outcome.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path

from service.config import DamagedAudio, Settings
from service.decode import SAMPLE_RATE, DecodeError, iter_decoded, refuse_damaged
from service.engine.analysis import check_min_duration
from service.engine.cpus import usable_cpus
from service.offline.arguments import add_audio_limit_arguments, positive_int
from service.offline.backfill.catalog import Track, catalog, refusal
from service.offline.codes import DECODER_CRASHED, EXIT_OK, INTERNAL_ERROR, UNREADABLE_FILE, UsageError

EXAMPLES_PER_CODE = 3  # example paths the terminal summary shows for each warning and refusal code
TASKS_PER_WORKER = 4  # files submitted ahead per worker: keeps workers busy, bounds memory for huge catalogs
CHUNK_SAMPLES = 30 * SAMPLE_RATE  # 30 s of decoded audio per step: the check keeps no audio, only counts it
OUTPUT_SUFFIXES = (".jsonl", ".parquet")


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    max_seconds: float
    min_seconds: float
    damaged_audio: DamagedAudio


@dataclass
class FileReport:
    """One file's outcome: decoded (with facts and warnings) or refused (code and message, as the API's)."""

    track_id: str
    path: str
    status: str  # "ok" or "refused"
    code: str | None = None  # refusal code (the API's problem code, or the backfill's own for unreadable files)
    message: str | None = None
    decoder: str | None = None
    codec: str | None = None
    duration_seconds: float | None = None
    declared_duration_seconds: float | None = None
    warnings: list[str] = field(default_factory=list)
    bytes: int | None = None
    check_seconds: float = 0.0


def check_file(track: Track, limits: Limits) -> FileReport:
    """What the service would do with this file, short of running the model. Runs in a worker process."""
    started = time.perf_counter()
    report = FileReport(track.track_id, track.path, "refused")
    try:
        report.bytes = os.stat(track.path).st_size
        refused = refusal(track.path, limits.max_bytes)
        if refused is not None:
            report.code, report.message = refused
            return report
        with open(track.path, "rb") as f:
            chunks = iter_decoded(f, max_seconds=limits.max_seconds, chunk_samples=CHUNK_SAMPLES)
            samples = sum(chunk.size for chunk in chunks)
        facts = chunks.facts
        report.decoder, report.codec = facts.decoder, facts.codec
        report.duration_seconds, report.declared_duration_seconds = (
            facts.duration_seconds,
            facts.declared_duration_seconds,
        )
        report.warnings = [w.code for w in facts.warnings]
        if limits.damaged_audio is DamagedAudio.REFUSE:
            refuse_damaged(facts)
        check_min_duration(samples, SAMPLE_RATE, limits.min_seconds)
        report.status = "ok"
    except DecodeError as error:
        report.code, report.message = error.code, error.detail
    except OSError as error:
        report.code, report.message = UNREADABLE_FILE, f"cannot read the file: {error.strerror or error}"
    except Exception as error:  # noqa: BLE001 - one file's surprise must not stop the check
        report.code, report.message = INTERNAL_ERROR, f"{type(error).__name__}: {error}"
    finally:
        report.check_seconds = time.perf_counter() - started
    return report


# ---- running over a catalog ---------------------------------------------------------------------------------------


def _pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


def _crashed(track: Track) -> FileReport:
    return FileReport(
        track.track_id,
        track.path,
        "refused",
        DECODER_CRASHED,
        "the decoder process died on this file (a crash inside the decoder)",
    )


def _isolate(tracks: list[Track], limits: Limits) -> Iterator[FileReport]:
    """Check files one at a time, each in a fresh process, to tell which one crashes the decoder."""
    for track in tracks:
        with _pool(1) as pool:
            try:
                yield pool.submit(check_file, track, limits).result()
            except BrokenProcessPool:
                yield _crashed(track)


def check_catalog(tracks: Iterable[Track], limits: Limits, workers: int) -> Iterator[FileReport]:
    """Reports for every track, in completion order, with at most ``workers * TASKS_PER_WORKER`` files in flight."""
    pending = iter(tracks)
    in_flight: dict[Future, Track] = {}
    suspects: list[Track] = []
    pool = _pool(workers)
    try:
        while True:
            while len(in_flight) < workers * TASKS_PER_WORKER and (track := next(pending, None)) is not None:
                try:
                    in_flight[pool.submit(check_file, track, limits)] = track
                except BrokenProcessPool:
                    suspects.append(track)
            if not in_flight:
                break
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            broken = False
            for future in done:
                track = in_flight.pop(future)
                try:
                    yield future.result()
                except BrokenProcessPool:
                    suspects.append(track)
                    broken = True
            if broken:  # every file in flight is lost with the pool: start a new one, re-check them one by one
                suspects.extend(in_flight.values())
                in_flight.clear()
                pool.shutdown(wait=False, cancel_futures=True)
                yield from _isolate(suspects, limits)
                suspects = []
                pool = _pool(workers)
        yield from _isolate(suspects, limits)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


# ---- output -------------------------------------------------------------------------------------------------------


@dataclass
class Summary:
    files: int = 0
    ok: int = 0
    refused: int = 0
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    by_decoder: Counter = field(default_factory=Counter)
    warnings: Counter = field(default_factory=Counter)
    refusals: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def add(self, report: FileReport) -> None:
        self.files += 1
        if report.status == "ok":
            self.ok += 1
            self.by_decoder[report.decoder] += 1
            self.audio_seconds += report.duration_seconds or 0.0
        else:
            self.refused += 1
            self.refusals[report.code] += 1
            self._example(report.code, report.path)
        for code in report.warnings:
            self.warnings[code] += 1
            self._example(code, report.path)

    def _example(self, code: str, path: str) -> None:
        if len(self.examples[code]) < EXAMPLES_PER_CODE:
            self.examples[code].append(path)

    @property
    def files_per_second(self) -> float:
        return self.files / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def as_json(self) -> dict:
        return {
            "files": self.files,
            "ok": self.ok,
            "refused": self.refused,
            "audio_hours": round(self.audio_seconds / 3600, 3),
            "wall_seconds": round(self.wall_seconds, 2),
            "files_per_second": round(self.files_per_second, 2),
            "decoders": dict(self.by_decoder),
            "warnings": dict(self.warnings),
            "refusals": dict(self.refusals),
            "examples": dict(self.examples),
        }


def format_summary(summary: Summary, output: Path) -> str:
    s = summary
    lines = [
        f"{s.files} files checked in {s.wall_seconds:.1f} s ({s.files_per_second:.1f} files/s), "
        f"{s.audio_seconds / 3600:.2f} h of audio",
        f"  would be analysed: {s.ok}" + "".join(f"\n    by {d}: {n}" for d, n in s.by_decoder.most_common()),
        f"  would be refused:  {s.refused}",
    ]
    for title, counts in (("refusals", s.refusals), ("warnings (analysed, but flagged)", s.warnings)):
        if counts:
            lines.append(f"  {title}:")
            for code, n in counts.most_common():
                lines.append(f"    {code:<24} {n:>8}   e.g. {', '.join(s.examples[code])}")
    lines.append(f"  one row per file: {output}")
    return "\n".join(lines)


class DetailWriter:
    """Writes reports as they come: JSON lines, or Parquet in row groups (bounded memory either way)."""

    PARQUET_ROWS_PER_GROUP = 10_000

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict] = []  # Parquet rows not yet written
        self._jsonl = path.open("w") if path.suffix == ".jsonl" else None
        self._parquet = None

    def write(self, report: FileReport) -> None:
        row = asdict(report)
        if self._jsonl is not None:
            self._jsonl.write(json.dumps(row) + "\n")
            return
        self.rows.append(row)
        if len(self.rows) >= self.PARQUET_ROWS_PER_GROUP:
            self._flush_parquet()

    def _flush_parquet(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(self.rows, schema=_parquet_schema())
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self.path, table.schema)
        self._parquet.write_table(table)
        self.rows = []

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            return
        if self.rows or self._parquet is None:
            self._flush_parquet()
        self._parquet.close()


def _parquet_schema():
    import pyarrow as pa

    return pa.schema([
        ("track_id", pa.string()), ("path", pa.string()), ("status", pa.string()), ("code", pa.string()),
        ("message", pa.string()), ("decoder", pa.string()), ("codec", pa.string()),
        ("duration_seconds", pa.float64()), ("declared_duration_seconds", pa.float64()),
        ("warnings", pa.list_(pa.string())), ("bytes", pa.int64()), ("check_seconds", pa.float64()),
    ])  # fmt: skip


# ---- command line -------------------------------------------------------------------------------------------------


def build_parser(settings: Settings) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="taggram check-catalog",
        description="Decode every file of a catalog (no model) and report which would be analysed, by which decoder, "
        "with which warnings, and which the service would refuse and why. Limits default to the "
        "TAGGRAM_* settings the service reads.",
        epilog="Exit status: 0 when the check ran (whatever it found), 2 for bad arguments.",
    )
    p.add_argument(
        "source",
        type=Path,
        help="a directory tree of audio files, or a .csv/.jsonl manifest (track_id, path), as for taggram backfill",
    )
    p.add_argument("--output", type=Path, required=True, help="one row per file: a .jsonl or .parquet path")
    p.add_argument(
        "--workers", type=positive_int, default=usable_cpus(), help="decode processes (default: usable CPUs)"
    )
    add_audio_limit_arguments(p, settings)
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object instead of a table")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(Settings())
    args = parser.parse_args(argv)
    if args.output.suffix not in OUTPUT_SUFFIXES:
        parser.error(f"--output must end in one of {OUTPUT_SUFFIXES}")
    limits = Limits(args.max_bytes, args.max_seconds, args.min_seconds, args.damaged_audio)
    summary, writer = Summary(), DetailWriter(args.output)
    started = time.monotonic()
    try:
        # The catalog is listed lazily: a million-file manifest is never held in memory.
        for report in check_catalog(catalog(args.source), limits, args.workers):
            summary.add(report)
            writer.write(report)
    except (UsageError, OSError) as error:
        parser.error(str(error))
    finally:
        writer.close()
    summary.wall_seconds = time.monotonic() - started
    print(json.dumps(summary.as_json()) if args.json else format_summary(summary, args.output), file=sys.stdout)
    return EXIT_OK
