"""`taggram backfill`'s command line: arguments (defaults from the service's TAGGRAM_* settings), sharding from
the environment, signals, the summary line and the exit status."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
from pathlib import Path

from service.config import Device, HopSeconds, Precision, ResultCount, Settings
from service.engine.run import BatchPolicy, batch_policy, usable_cpus
from service.logs import configure_logging
from service.offline.arguments import add_audio_limit_arguments, as_the_api, positive_float, positive_int
from service.offline.backfill.options import Options, Summary
from service.offline.backfill.run import Backfill
from service.offline.codes import EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageError

log = logging.getLogger("taggram.backfill")

DEFAULT_CHUNK_SECONDS = 30.0
# ONNX Runtime (CPU) holds the activations of every patch of a batch: 2 keeps the parent's memory small, and on CPU,
# with one inference thread, larger batches are not faster (docs/backfill.md, "Usage" and "Design"). On CUDA
# batch_policy takes the largest TAGGRAM_CUDA_BATCH_SIZES instead.
DEFAULT_BATCH_PATCHES = 2
DEFAULT_TRACKS_PER_PART = 500
DEFAULT_PART_SECONDS = 300.0
DEFAULT_TOP_K = 5  # /suggest-subgenres' default k
SHARD_INDEX_ENV = "JOB_COMPLETION_INDEX"  # set by Kubernetes in the pods of an Indexed Job
SHARD_COUNT_ENV = "TAGGRAM_BACKFILL_SHARD_COUNT"


def default_workers() -> int:
    """A quarter of the CPUs, at least one: decoding costs 15-35 CPU-s per audio hour, CPU inference ~80."""
    return max(1, usable_cpus() // 4)


def backfill_settings(settings: Settings, batch_patches: int) -> Settings:
    """The service's settings with the backfill's batch size (``batch_patches`` patches of one track: see
    ``service.offline.backfill.tracks``); ``service.engine.run.batch_policy`` decides workers and threads as for the
    service."""
    return settings.model_copy(update={"max_batch_patches": batch_patches})


def default_batch_policy(settings: Settings) -> BatchPolicy:
    """The backfill's batch policy on CPU with the default batch size (for the help text and bench/backfill.py)."""
    return batch_policy(backfill_settings(settings, DEFAULT_BATCH_PATCHES), on_cuda=False)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"environment variable {name}={value!r} is not an integer") from None


def build_parser(settings) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="taggram backfill",
        description="Tag a catalog offline into Parquet: per-tag mean scores, top-k subgenres and the embedding of "
                    "every track, with the service's analysis. Resumable (rerun with the same arguments), "
                    "shardable across machines. Defaults come from the TAGGRAM_* settings the service reads.",
        epilog="Exit status: 0 when the catalog (shard) is done, even if some files were error rows; 1 when the run "
               "failed midway (rerun to resume); 2 for bad arguments, a missing model or an unusable output "
               "directory; 128+N when stopped by signal N after committing the finished tracks. See docs/backfill.md.",
    )  # fmt: skip
    p.add_argument(
        "source",
        type=Path,
        help="a directory tree of audio files (id = relative path), or a manifest "
        ".csv/.jsonl/.ndjson with track_id and path (relative paths: to the manifest's directory)",
    )
    p.add_argument("--out", type=Path, required=True, help="output directory (created; shared by all shards)")
    p.add_argument("--model", default=settings.default_model, help="model name (default: %(default)s)")
    p.add_argument("--models-dir", type=Path, default=settings.models_dir, help="default: %(default)s")
    p.add_argument(
        "--taxonomy-dir",
        type=Path,
        default=settings.taxonomy_dir,
        help="taxonomy override folder, as TAGGRAM_TAXONOMY_DIR (default: the shipped taxonomies)",
    )
    p.add_argument(
        "--hop",
        type=as_the_api(HopSeconds),
        default=None,
        metavar="SECONDS",
        help="seconds between segment starts, as the API's ?hop= (default: one patch, no overlap)",
    )
    p.add_argument(
        "--top-k",
        type=as_the_api(ResultCount),
        default=DEFAULT_TOP_K,
        help="subgenres kept per track, as the API's ?k= (default: %(default)s)",
    )
    p.add_argument("--taggram", action="store_true", help="also write the per-segment tag scores")
    p.add_argument(
        "--segment-embeddings",
        action="store_true",
        help="also write the per-segment embeddings (what `taggram train-head` trains on)",
    )
    p.add_argument(
        "--shard-index",
        type=int,
        default=None,
        help=f"this machine's shard, 0-based (default: ${SHARD_INDEX_ENV}, else 0)",
    )
    p.add_argument(
        "--shard-count", type=positive_int, default=None, help=f"number of shards (default: ${SHARD_COUNT_ENV}, else 1)"
    )
    p.add_argument(
        "--workers",
        type=positive_int,
        default=default_workers(),
        help="decode processes = tracks in flight (default: a quarter of the CPUs, %(default)s here)",
    )
    p.add_argument(
        "--batch-patches",
        type=positive_int,
        default=DEFAULT_BATCH_PATCHES,
        help="patches per inference batch on CPU (one track's patches only); ~31 MB of memory each "
        "(default: %(default)s); on CUDA the largest TAGGRAM_CUDA_BATCH_SIZES, as the service",
    )
    p.add_argument(
        "--tracks-per-part",
        type=positive_int,
        default=DEFAULT_TRACKS_PER_PART,
        help="commit a part file after this many finished tracks (default: %(default)s)",
    )
    p.add_argument(
        "--part-seconds",
        type=positive_float,
        default=DEFAULT_PART_SECONDS,
        help="... or after this many seconds with any finished track (default: %(default)s)",
    )
    p.add_argument(
        "--chunk-seconds",
        type=positive_float,
        default=DEFAULT_CHUNK_SECONDS,
        help="decoded audio per worker message; bounds memory (default: %(default)s)",
    )
    add_audio_limit_arguments(p, settings)  # what the service would refuse becomes an error row
    p.add_argument(
        "--warm-cache",
        action="store_true",
        help="also store every analysis in the service's Redis cache (same key scheme)",
    )
    p.add_argument("--redis-url", default=settings.redis_url, help="for --warm-cache (default: $TAGGRAM_REDIS_URL)")
    p.add_argument("--device", type=Device, choices=tuple(Device), default=settings.device)
    p.add_argument(
        "--precision",
        type=Precision,
        choices=tuple(Precision),
        default=settings.precision,
        help="CPU inference precision, as TAGGRAM_PRECISION (docs/precision.md; default: %(default)s); "
        "recorded in the output: a catalog is never half fp32, half bf16",
    )
    policy = default_batch_policy(settings)
    p.add_argument(
        "--inference-workers",
        type=positive_int,
        default=settings.inference_workers or None,
        help="batches computed at once, each on its own thread (default: TAGGRAM_INFERENCE_WORKERS if "
        f"set, else one per usable CPU, {policy.inference_workers} here; 1 on CUDA)",
    )
    p.add_argument(
        "--intra-op-threads",
        type=positive_int,
        default=settings.intra_op_threads or None,
        help="ONNX Runtime threads per batch (default: TAGGRAM_INTRA_OP_THREADS if set, else the CPUs "
        f"shared out between the inference workers, {policy.intra_op_threads} here; on CUDA the "
        "runtime's default)",
    )
    p.add_argument(
        "--progress",
        choices=("auto", "bar", "log"),
        default="auto",
        help="auto: a bar on a terminal, else a log line every --progress-seconds",
    )
    p.add_argument("--progress-seconds", type=positive_float, default=30.0)
    return p


def parse_options(argv: list[str] | None) -> Options:
    settings = Settings()
    parser = build_parser(settings)
    args = parser.parse_args(argv)
    try:
        shard_count = args.shard_count if args.shard_count is not None else _env_int(SHARD_COUNT_ENV, 1)
        shard_index = args.shard_index if args.shard_index is not None else _env_int(SHARD_INDEX_ENV, 0)
    except UsageError as error:
        parser.error(str(error))
    if shard_count < 1 or not 0 <= shard_index < shard_count:
        parser.error(f"shard index {shard_index} is not in [0, {shard_count}) (shard count {shard_count})")
    if args.warm_cache and not args.redis_url:
        parser.error("--warm-cache needs --redis-url or TAGGRAM_REDIS_URL (the service's Redis)")
    overrides = {
        "default_model": args.model,
        "models_dir": args.models_dir,
        "taxonomy_dir": args.taxonomy_dir,
        "max_audio_seconds": args.max_seconds,
        "min_audio_seconds": args.min_seconds,
        "max_upload_bytes": args.max_bytes,
        "damaged_audio": args.damaged_audio,
        "redis_url": args.redis_url,
        "device": args.device,
        "precision": args.precision,
        "inference_workers": args.inference_workers or 0,  # 0: batch_policy chooses
        "intra_op_threads": args.intra_op_threads or 0,
    }
    return Options(
        settings=backfill_settings(settings.model_copy(update=overrides), args.batch_patches),
        source=args.source, out=args.out, hop_seconds=args.hop,
        top_k=args.top_k, taggram=args.taggram, segment_embeddings=args.segment_embeddings,
        shard_index=shard_index, shard_count=shard_count,
        workers=args.workers, tracks_per_part=args.tracks_per_part,
        part_seconds=args.part_seconds, chunk_seconds=args.chunk_seconds, warm_cache=args.warm_cache,
        progress=args.progress, progress_seconds=args.progress_seconds,
    )  # fmt: skip


def log_summary(summary: Summary) -> None:
    s = summary
    log.info(
        "shard %d/%d: %d tracks, %d already finished, %d analysed (%.2f h of audio), %d errors%s; "
        "%.1f s wall (inference threads busy %.0f%% of it), %.1f audio hours per hour; %d part(s) committed%s%s",
        s.shard_index, s.shard_count, s.tracks_in_shard, s.already_done, s.analysed, s.audio_seconds / 3600, s.errors,
        f" {dict(s.errors_by_code)}" if s.errors else "", s.wall_seconds,
        100 * s.as_json()["inference_busy"], s.speed, s.parts_committed,
        f"; cache: {s.cache_writes} written, {s.cache_write_failures} failed"
        if s.cache_writes or s.cache_write_failures else "",
        f"; analysed with decode warnings: {dict(s.warnings_by_code)}" if s.warnings_by_code else "",
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``taggram backfill``; prints the summary as one JSON line on stdout."""
    configure_logging("info")
    options = parse_options(argv)
    backfill = Backfill(options)

    def request_stop(signum, _frame) -> None:
        backfill.stop_signal = signum  # acted on by the loop within POLL_SECONDS or one batch

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        summary = backfill.run()
    except UsageError as error:
        log.error("%s", error)
        return EXIT_USAGE
    except Exception:
        log.exception("backfill failed; committed parts are kept, rerun the same command to resume")
        return EXIT_FAILED
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log_summary(summary)
    print(json.dumps(summary.as_json()), flush=True)
    if summary.interrupted_by is not None:
        return 128 + signal.Signals[summary.interrupted_by].value
    return EXIT_OK
