"""The run: the parent's loop feeding decode workers, patching and batching their chunks, running the model,
building each track's analysis and row, committing parts; plus progress reporting and cache warming.

Determinism: ONNX Runtime's outputs for a patch depend, in the last bits, on the batch it ran in (its size and the
patch's position: different kernels handle different rows). So a track's patches are batched only with each other,
``--batch-patches`` at a time from its first patch: its batches are a function of the track alone, and a resumed
or sharded run writes bit-identical numbers to one clean run, however tracks were interleaved.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import signal
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from prometheus_client import REGISTRY
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from service.analysis import TrackAnalyser, mean_over_segments
from service.backfill.catalog import Track, catalog, refusal, select_shard
from service.backfill.codes import DECODER_CRASHED, UNREADABLE_FILE, UsageError
from service.backfill.output import ErrorRow, OutputDir, ResultRow, RunIdentity
from service.backfill.workers import DecodeLimits, WorkerPool, unreadable_message
from service.cache import RedisCache, cache_key
from service.config import Settings
from service.decode import SAMPLE_RATE, DecodeError, DecodeFacts, refuse_damaged
from service.manifest import ModelFileError
from service.patch import PatchGeometry, StreamingPatcher
from service.registry import load_models
from service.taxonomy import suggest

log = logging.getLogger("taggram.backfill")

POLL_SECONDS = 0.5  # how often the parent re-checks stop requests and dead workers while waiting


class _Batch:
    """One track's next patches (see the module doc: a batch never mixes tracks)."""

    def __init__(self, size: int, patch_samples: int) -> None:
        self.data = np.empty((size, patch_samples), np.float32)
        self.count = 0

    def __len__(self) -> int:
        return self.count

    @property
    def full(self) -> bool:
        return self.count == self.data.shape[0]

    def add(self, patch: np.ndarray) -> None:
        self.data[self.count] = patch  # copied: the patcher's views are not kept
        self.count += 1

    def clear(self) -> None:
        self.count = 0


@dataclass(eq=False)
class _TrackState:
    track: Track
    seq: int
    patcher: StreamingPatcher
    batch: _Batch | None = None  # allocated with the first patch, dropped when the track fails
    tags: list[np.ndarray] = field(default_factory=list)  # per-segment rows, in order
    embeddings: list[np.ndarray] = field(default_factory=list)
    num_samples: int = 0
    sha256: str = ""
    decode: DecodeFacts = field(default_factory=DecodeFacts)


@dataclass
class Options:
    """One run: the service's ``Settings`` (copied with the command line's overrides: model, folders, limits, device,
    threads, Redis, batching) and the fields only a backfill has."""

    settings: Settings
    source: Path
    out: Path
    hop_seconds: float | None
    top_k: int
    taggram: bool
    shard_index: int
    shard_count: int
    workers: int  # decode processes
    tracks_per_part: int
    part_seconds: float
    chunk_seconds: float
    warm_cache: bool
    progress: str
    progress_seconds: float
    segment_embeddings: bool = False

    @property
    def model(self) -> str:
        return self.settings.default_model


@dataclass
class Summary:
    shard_index: int
    shard_count: int
    tracks_in_shard: int = 0
    already_done: int = 0
    analysed: int = 0
    errors: int = 0
    errors_by_code: Counter = field(default_factory=Counter)
    warnings_by_code: Counter = field(default_factory=Counter)  # analysed tracks with a decode warning
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    inference_seconds: float = 0.0  # wall time inside Runner.run: near wall_seconds = the decoders keep up
    cache_writes: int = 0
    cache_write_failures: int = 0
    parts_committed: int = 0
    interrupted_by: str | None = None

    @property
    def speed(self) -> float:
        """Audio hours tagged per wall-clock hour."""
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def as_json(self) -> dict:
        return {"shard_index": self.shard_index, "shard_count": self.shard_count,
                "tracks_in_shard": self.tracks_in_shard, "already_done": self.already_done,
                "analysed": self.analysed, "errors": self.errors, "errors_by_code": dict(self.errors_by_code),
                "warnings_by_code": dict(self.warnings_by_code),
                "remaining": self.tracks_in_shard - self.already_done - self.analysed - self.errors,
                "audio_hours": round(self.audio_seconds / 3600, 4), "wall_seconds": round(self.wall_seconds, 2),
                "audio_hours_per_hour": round(self.speed, 2),
                "inference_busy": round(self.inference_seconds / self.wall_seconds, 3) if self.wall_seconds else 0.0,
                "cache_writes": self.cache_writes,
                "cache_write_failures": self.cache_write_failures, "parts_committed": self.parts_committed,
                "interrupted_by": self.interrupted_by}


class _CacheWarmer:
    """Writes analyses into the service's cache (service.cache's RedisCache, the service's key scheme)."""

    def __init__(self, options: Options) -> None:

        self._loop = asyncio.new_event_loop()
        # Offline writes have no latency budget: allow a slow Redis more than the service's per-request timeout.
        settings = options.settings
        timeout = max(settings.redis_timeout_seconds, 5.0)
        try:
            self.cache = RedisCache(settings.redis_url, settings.cache_ttl_seconds, timeout)
        except ValueError as error:
            raise UsageError(f"--redis-url is not a valid Redis URL: {error}") from None
        if not self._loop.run_until_complete(self.cache.ping()):
            self.close()
            raise UsageError("--warm-cache: Redis does not answer PING at the given URL")

    def store(self, key: str, analysis) -> bool:
        """True when stored; the cache itself logs and counts a failure (the run goes on)."""
        before = self._failures()
        self._loop.run_until_complete(self.cache.set(key, analysis))
        return self._failures() == before

    def _failures(self) -> float:
        value = REGISTRY.get_sample_value("taggram_cache_errors_total", {"backend": self.cache.name, "op": "set"})
        return value or 0.0

    def close(self) -> None:
        self._loop.run_until_complete(self.cache.close())
        self._loop.close()


class _Progress:
    """A tqdm bar on a terminal, the same line logged every ``interval`` seconds otherwise (Kubernetes logs)."""

    def __init__(self, total: int, mode: str, interval: float) -> None:
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "log"
        self.mode = mode
        self.interval = interval
        self._devnull = open(os.devnull, "w") if mode != "bar" else None  # noqa: SIM115 - closed in close()
        self.bar = tqdm(total=total, unit="track", desc="backfill", dynamic_ncols=True, smoothing=0.05,
                        file=sys.stderr if mode == "bar" else self._devnull, mininterval=0.5)
        self._redirect = contextlib.ExitStack()
        if mode == "bar":  # log lines (warnings) above the bar instead of through it

            self._redirect.enter_context(logging_redirect_tqdm())
        self._last_log = time.monotonic()

    def update(self, summary: Summary, started: float) -> None:
        elapsed = time.monotonic() - started
        speed = summary.audio_seconds / elapsed if elapsed > 0 else 0.0
        self.bar.set_postfix_str(f"{summary.audio_seconds / 3600:.2f} h audio, {speed:.1f} audio h/h, "
                                 f"{summary.errors} errors", refresh=False)
        self.bar.update(1)
        if self.mode == "log" and time.monotonic() - self._last_log >= self.interval:
            self._last_log = time.monotonic()
            log.info("%s", self.bar)

    def close(self) -> None:
        if self.mode == "log":
            log.info("%s", self.bar)
        self.bar.close()
        self._redirect.close()
        if self._devnull is not None:
            self._devnull.close()


class Backfill:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.stop_signal: int | None = None
        self.summary = Summary(options.shard_index, options.shard_count)

    # -- set-up --------------------------------------------------------------------------------------------------
    def _load_model(self):
        o = self.options
        settings = o.settings.model_copy(update={"models": o.model})
        try:
            model = load_models(settings, cpus_for_decoding=o.workers)[o.model]
        except (ModelFileError, RuntimeError) as error:
            raise UsageError(f"cannot load model {o.model!r}: {error}") from None
        return model

    def _identity(self, model, hop_frames: int) -> RunIdentity:
        o = self.options
        manifest, taxonomy = model.manifest, model.taxonomy
        mapping = json.dumps(taxonomy.as_dict(manifest.labels), sort_keys=True).encode()
        return RunIdentity(
            model=manifest.name, onnx_sha256=manifest.onnx.sha256, labels=tuple(manifest.labels),
            embedding_dim=manifest.embedding_dim, hop_samples=hop_frames * manifest.frame_hop, top_k=o.top_k,
            taggram=o.taggram, taxonomy_name=taxonomy.name, taxonomy_sha256=hashlib.sha256(mapping).hexdigest(),
            max_seconds=o.settings.max_audio_seconds, min_seconds=o.settings.min_audio_seconds,
            max_bytes=o.settings.max_upload_bytes, damaged_audio=o.settings.damaged_audio,
            segment_embeddings=o.segment_embeddings,
        )

    # -- main loop -----------------------------------------------------------------------------------------------
    def run(self) -> Summary:
        o = self.options
        started = time.monotonic()
        model = self._load_model()
        geometry = model.manifest.geometry
        hop_frames = geometry.hop_frames(o.hop_seconds)
        identity = self._identity(model, hop_frames)
        output = OutputDir(o.out, identity, o.shard_index, o.shard_count)
        output.open()
        warmer = None
        try:
            warmer = _CacheWarmer(o) if o.warm_cache else None
            tracks = select_shard(catalog(o.source), o.shard_index, o.shard_count)
            done = output.finished_ids()
            todo = deque(t for t in tracks if t.track_id not in done)
            self.summary.tracks_in_shard = len(tracks)
            self.summary.already_done = len(tracks) - len(todo)
            log.info("shard %d/%d: %d tracks, %d already finished, %d to analyse with %s (%s)", o.shard_index,
                     o.shard_count, len(tracks), self.summary.already_done, len(todo), model.name, model.runner.provider)
            loop = _Loop(self, model.runner, model, geometry, hop_frames, identity, output, warmer, todo, started)
            loop.run()
        finally:
            if warmer is not None:
                warmer.close()
            output.close()
        self.summary.wall_seconds = time.monotonic() - started
        return self.summary


class _Loop:
    """The parent's event loop: feed workers, patch and batch their chunks, run the model, finalize, commit."""

    def __init__(self, backfill: Backfill, runner, model, geometry: PatchGeometry, hop_frames: int,
                 identity: RunIdentity, output: OutputDir, warmer: _CacheWarmer | None, todo: deque[Track],
                 started: float) -> None:
        o = backfill.options
        self.backfill = backfill
        self.options = o
        self.summary = backfill.summary
        self.runner = runner
        self.model = model
        self.geometry = geometry
        self.analyser = TrackAnalyser(geometry, hop_frames, o.settings.min_audio_seconds)
        self.identity = identity
        self.output = output
        self.warmer = warmer
        self.todo = todo
        self.started = started
        self.limits = DecodeLimits(o.settings.max_audio_seconds, max(1, round(o.chunk_seconds * SAMPLE_RATE)))
        self.results: list[ResultRow] = []
        self.errors: list[ErrorRow] = []
        self.last_commit = time.monotonic()
        self.seq = 0

    def run(self) -> None:
        if not self.todo:
            return
        progress = _Progress(len(self.todo), self.options.progress, self.options.progress_seconds)
        pool = WorkerPool(min(self.options.workers, len(self.todo)))
        try:
            self._loop(pool, progress)
        finally:
            pool.close()
            progress.close()
            # Whatever finished is committed, also when stopping on a signal or an error.
            self._commit()

    def _loop(self, pool: WorkerPool, progress: _Progress) -> None:
        self.progress = progress
        while True:
            if self.backfill.stop_signal is not None:
                self.summary.interrupted_by = signal.Signals(self.backfill.stop_signal).name
                log.warning("stopping on %s: committing finished tracks; unfinished ones are redone on restart",
                            self.summary.interrupted_by)
                return
            for worker in pool.with_room():
                state = self._next_track()
                if state is None:
                    break
                try:
                    pool.assign(worker, state, self.limits)
                except OSError:  # the worker died holding files: receive() reports it below
                    self.todo.appendleft(state.track)
            if not pool.busy():
                return
            for worker, message in pool.receive(POLL_SECONDS):
                state = worker.tasks[0]
                if message is None:  # the worker died decoding tasks[0]; the files queued behind it never started
                    pid, code = worker.process.pid, worker.process.exitcode
                    self.todo.extendleft(reversed([s.track for s in list(worker.tasks)[1:]]))
                    worker.tasks.clear()
                    pool.replace(worker)
                    self._fail(state, DECODER_CRASHED, f"the decoder process (pid {pid}) died (exit code {code})")
                    continue
                if message[1] != state.seq:
                    raise AssertionError(f"message for file {message[1]} while expecting file {state.seq}")
                kind = message[0]
                if kind == "chunk":
                    self._add_patches(state, state.patcher.push(message[2]))
                elif kind == "end":
                    worker.tasks.popleft()
                    self._end(state, num_samples=message[2], sha256=message[3], facts=message[4])
                else:  # "error"
                    worker.tasks.popleft()
                    self._fail(state, message[2], message[3])
            self._maybe_commit()

    # -- per track -----------------------------------------------------------------------------------------------
    def _next_track(self) -> _TrackState | None:
        """The next track to decode; tracks the service would refuse before decoding become error rows here."""
        while self.todo:
            self.seq += 1
            state = _TrackState(self.todo.popleft(), self.seq, self.analyser.patcher())
            try:
                refused = refusal(state.track.path, self.options.settings.max_upload_bytes)
            except OSError as error:
                refused = (UNREADABLE_FILE, unreadable_message(error))
            if refused is None:
                return state
            self._fail(state, *refused)
        return None

    def _add_patches(self, state: _TrackState, patches: list[np.ndarray]) -> None:
        if state.batch is None:
            state.batch = _Batch(self.model.batch_policy.max_batch_patches, self.geometry.patch_samples)
        for patch in patches:
            state.batch.add(patch)
            if state.batch.full:
                self._run_batch(state)

    def _end(self, state: _TrackState, *, num_samples: int, sha256: str, facts: DecodeFacts) -> None:
        try:
            if self.options.settings.damaged_audio == "refuse":
                refuse_damaged(facts)
            tail = self.analyser.finish(state.patcher)
        except DecodeError as error:  # damaged_audio (when refused), AudioTooShort
            self._fail(state, error.code, error.detail)
            return
        state.num_samples, state.sha256, state.decode = num_samples, sha256, facts
        self._add_patches(state, tail)
        if len(state.batch):
            self._run_batch(state)  # the track's last, partial batch: not padded, not shared with another track
        self._finalize(state)

    def _fail(self, state: _TrackState, code: str, message: str) -> None:
        state.batch = None
        state.tags.clear()
        state.embeddings.clear()
        self.errors.append(ErrorRow(state.track, code, message))
        self.summary.errors += 1
        self.summary.errors_by_code[code] += 1
        log.debug("track %s: %s: %s", state.track.track_id, code, message)
        self.progress.update(self.summary, self.started)

    def _run_batch(self, state: _TrackState) -> None:
        batch = state.batch
        started = time.perf_counter()
        outputs = self.runner.run(batch.data[: len(batch)])
        self.summary.inference_seconds += time.perf_counter() - started
        state.tags.extend(outputs["tags"])
        state.embeddings.extend(outputs["embedding"])
        batch.clear()

    def _finalize(self, state: _TrackState) -> None:
        outputs = {"tags": np.stack(state.tags), "embedding": np.stack(state.embeddings)}
        state.tags, state.embeddings = [], []
        analysis = self.analyser.analysis(state.num_samples, outputs, state.decode)
        tag_scores = mean_over_segments(analysis.tags)
        row = ResultRow(
            track=state.track, audio_sha256=state.sha256, duration_seconds=analysis.duration_seconds,
            tag_scores=tag_scores, top=suggest(self.model.taxonomy, tag_scores, self.options.top_k),
            embedding=mean_over_segments(analysis.embedding),
            taggram=analysis.tags if self.options.taggram else None, segments=analysis.segments,
            decode=analysis.decode,
            segment_embeddings=analysis.embedding if self.options.segment_embeddings else None,
        )
        self.summary.warnings_by_code.update(w.code for w in analysis.decode.warnings)
        if self.warmer is not None:
            key = cache_key(state.sha256, self.identity.model, self.identity.onnx_sha256, analysis.hop_samples)
            if self.warmer.store(key, analysis):
                self.summary.cache_writes += 1
            else:
                self.summary.cache_write_failures += 1
        self.results.append(row)
        self.summary.analysed += 1
        self.summary.audio_seconds += analysis.duration_seconds
        self.progress.update(self.summary, self.started)

    # -- commits -------------------------------------------------------------------------------------------------
    def _maybe_commit(self) -> None:
        pending = len(self.results) + len(self.errors)
        if pending >= self.options.tracks_per_part or (
            pending and time.monotonic() - self.last_commit >= self.options.part_seconds
        ):
            self._commit()

    def _commit(self) -> None:
        if not self.results and not self.errors:
            return
        self.output.commit(self.results, self.errors)
        self.summary.parts_committed += 1
        self.results, self.errors = [], []
        self.last_commit = time.monotonic()
