"""`taggram backfill`: tag a whole catalog offline into Parquet, with the service's own analysis code.

One implementation of the analysis: the same ``iter_decoded`` (decode), ``TrackAnalyser`` (patch, analysis), ONNX
graph and ``Runner`` (run), ``mean_over_segments`` (pooling), taxonomy and ``suggest`` (top-k), cache key and
value encoding (``--warm-cache``) as the service. What differs is only the
plumbing, built for throughput and bounded memory instead of latency::

    parent: list catalog → shard filter → skip committed → size checks ─┐
                                                                        ▼ up to 2 files queued per worker
    worker processes (spawn): sha256 → iter_decoded → 16 kHz chunks of --chunk-seconds ─────────────────────┐
                                                            Pipe: blocks until the parent reads (backpressure) │
    parent: StreamingPatcher per track ◀─────────────────────────────────────────────────────────────────────┘
            → batches of --batch-patches patches of that track → ONNX Runtime → per-track outputs
            → Analysis → mean pooling, top-k → row buffer → part file, committed by an atomic rename

Memory is bounded whatever the track lengths: a worker holds one decoded chunk (plus FFmpeg's state), the pipe
holds at most one chunk per worker, the parent holds per track at most one patch of audio plus its outputs
(1 KB per 3-s segment) and one batch. Nothing ever holds a whole track's samples.

Modules, one per step: ``catalog`` (tracks, shards, size checks), ``workers`` (decode processes), ``run`` (set-up:
model, output directory, the shard's unfinished tracks), ``loop`` (the parent's loop), ``tracks`` (a track's state
and batches; determinism is explained there), ``progress``, ``cache_warming`` (``--warm-cache``), ``output``
(Parquet parts, ``read_output``), ``options`` (a run's options and summary), ``cli`` (``taggram backfill``). The
usage error, exit and error codes are the offline commands' shared ones (``service.offline.codes``).

Output directory (see docs/backfill.md)::

    OUT/_backfill.json                                   settings the directory was started with (checked on resume)
    OUT/results/part-n{count}-i{index}-{seq}.parquet     analysed tracks
    OUT/errors/part-n{count}-i{index}-{seq}.parquet      tracks that could not be analysed (code + message)

A part is written to a hidden temporary file, fsynced, then renamed into place: a part either exists complete or
not at all. A track is finished when its id is in any committed part (results or errors); a restarted run skips
finished tracks, so at most the tracks of the uncommitted buffer are analysed again.

Decode worker processes are spawned and import ``service.offline.backfill.workers`` only (this package's ``__init__``
imports nothing), so they load numpy, PyAV and soxr, never pyarrow, ONNX Runtime, FastAPI or Redis.
"""

from __future__ import annotations

import importlib

# Public names → the module holding each, imported on first use (PEP 562): importing the package itself (as every
# spawned decode worker does) loads none of the heavy modules.
_EXPORTS = {
    "read_output": "output",
    "identity_precision": "output",
    "RESULTS_DIR": "output",
    "ERRORS_DIR": "output",
    "shard_of": "catalog",
    "main": "cli",
    "DEFAULT_BATCH_PATCHES": "cli",
    "default_batch_policy": "cli",
    "default_workers": "cli",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
