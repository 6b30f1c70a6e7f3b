"""The parent's loop of a run: feed the decode workers, patch and batch their chunks
(``service.offline.backfill.tracks``), run the model, build each track's analysis and row, commit parts.

Inference runs beside the loop on the batch policy's ``inference_workers`` threads (one single-threaded run per
usable CPU on CPU, as the service: ``service.engine.run``), so the parent keeps patching and feeding the decoders while
batches compute. A batch is a function of its track alone (``service.offline.backfill.tracks``), so which thread runs it
changes no bit. At most ``BATCHES_IN_FLIGHT_PER_WORKER`` batches per worker are submitted and not yet collected:
memory stays bounded and a stop waits for a few batches only.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from service.artefacts.registry import LoadedModel
from service.artefacts.taxonomy import suggest
from service.config import DamagedAudio
from service.decode import SAMPLE_RATE, DecodeError, DecodeFacts, refuse_damaged
from service.engine.analysis import TrackAnalyser, mean_over_segments
from service.engine.cache import cache_key
from service.engine.representative import representative
from service.offline.backfill.cache_warming import CacheWarmer
from service.offline.backfill.catalog import Track, refusal
from service.offline.backfill.options import Options, Summary
from service.offline.backfill.output import ErrorRow, OutputDir, ResultRow, RunIdentity
from service.offline.backfill.progress import Progress
from service.offline.backfill.tracks import TrackBatch, TrackState
from service.offline.backfill.workers import DecodeLimits, WorkerPool, unreadable_message
from service.offline.codes import DECODER_CRASHED, UNREADABLE_FILE

log = logging.getLogger("taggram.backfill")

POLL_SECONDS = 0.5  # how often the parent re-checks stop requests and dead workers while waiting
# Two batches per inference thread: one computing, one queued behind it, so a thread never waits for the parent.
BATCHES_IN_FLIGHT_PER_WORKER = 2


class RunLoop:
    """The parent's event loop: feed workers, patch and batch their chunks, run the model, finalize, commit."""

    def __init__(
        self,
        options: Options,
        summary: Summary,
        stop_signal: Callable[[], int | None],
        model: LoadedModel,
        hop_frames: int,
        identity: RunIdentity,
        output: OutputDir,
        warmer: CacheWarmer | None,
        todo: deque[Track],
        started: float,
    ) -> None:
        o = options
        self.options = o
        self.summary = summary
        self.stop_signal = stop_signal  # the signal that asked the run to stop, if one did
        self.runner = model.runner
        self.model = model
        self.geometry = model.manifest.geometry
        self.analyser = TrackAnalyser(self.geometry, hop_frames, o.settings.min_audio_seconds)
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
        self.inference_workers = summary.inference_workers = model.batch_policy.inference_workers
        self.executor = ThreadPoolExecutor(self.inference_workers, thread_name_prefix="backfill-inference")
        self.in_flight: deque[Future] = deque()  # submitted batches, oldest first
        self._timing = threading.Lock()  # the inference threads add to summary.inference_seconds

    def _compute(self, patches: np.ndarray) -> dict[str, np.ndarray]:
        """On an inference thread: one batch; its compute time goes to the summary."""
        started = time.perf_counter()
        outputs = self.runner.run(patches)
        with self._timing:
            self.summary.inference_seconds += time.perf_counter() - started
        return outputs

    def run(self) -> None:
        if not self.todo:
            return
        progress = Progress(len(self.todo), self.options.progress, self.options.progress_seconds)
        pool = WorkerPool(min(self.options.workers, len(self.todo)))
        try:
            self._loop(pool, progress)
        finally:
            pool.close()
            self.executor.shutdown(wait=True)  # at most a few batches: their tracks are redone on restart
            progress.close()
            # Whatever finished is committed, also when stopping on a signal or an error.
            self._commit()

    def _loop(self, pool: WorkerPool, progress: Progress) -> None:
        self.progress = progress
        while True:
            stop_signal = self.stop_signal()
            if stop_signal is not None:
                self.summary.interrupted_by = signal.Signals(stop_signal).name
                log.warning(
                    "stopping on %s: committing finished tracks; unfinished ones are redone on restart",
                    self.summary.interrupted_by,
                )
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
    def _next_track(self) -> TrackState | None:
        """The next track to decode; tracks the service would refuse before decoding become error rows here."""
        while self.todo:
            self.seq += 1
            state = TrackState(self.todo.popleft(), self.seq, self.analyser.patcher())
            try:
                refused = refusal(state.track.path, self.options.settings.max_upload_bytes)
            except OSError as error:
                refused = (UNREADABLE_FILE, unreadable_message(error))
            if refused is None:
                return state
            self._fail(state, *refused)
        return None

    def _add_patches(self, state: TrackState, patches: list[np.ndarray]) -> None:
        if state.batch is None:
            state.batch = TrackBatch(self.model.batch_policy.max_batch_patches, self.geometry.patch_samples)
        for patch in patches:
            state.batch.add(patch)
            if state.batch.full:
                self._run_batch(state)

    def _end(self, state: TrackState, *, num_samples: int, sha256: str, facts: DecodeFacts) -> None:
        try:
            if self.options.settings.damaged_audio is DamagedAudio.REFUSE:
                refuse_damaged(facts)
            tail = self.analyser.finish(state.patcher)
        except DecodeError as error:  # damaged_audio (when refused), AudioTooShort
            self._fail(state, error.code, error.detail)
            return
        state.num_samples, state.sha256, state.decode = num_samples, sha256, facts
        self._add_patches(state, tail)
        if len(state.batch):
            self._run_batch(state)  # the track's last, partial batch: not padded, not shared with another track
        for batch in state.batches:  # in the track's order, whichever thread computed them
            outputs = batch.result()
            state.tags.extend(outputs["tags"])
            state.embeddings.extend(outputs["embedding"])
        state.batches.clear()
        self._finalize(state)

    def _fail(self, state: TrackState, code: str, message: str) -> None:
        state.batch = None
        state.batches.clear()  # batches still computing finish unread
        state.tags.clear()
        state.embeddings.clear()
        self.errors.append(ErrorRow(state.track, code, message))
        self.summary.errors += 1
        self.summary.errors_by_code[code] += 1
        log.debug("track %s: %s: %s", state.track.track_id, code, message)
        self.progress.update(self.summary, self.started)

    def _run_batch(self, state: TrackState) -> None:
        """Hand the track's batch to an inference thread (after the oldest batch, when enough are in flight)."""
        while self.in_flight and (
            self.in_flight[0].done() or len(self.in_flight) >= BATCHES_IN_FLIGHT_PER_WORKER * self.inference_workers
        ):
            self.in_flight.popleft().result()  # waits for it; an inference failure stops the run, as before
        batch = state.batch
        future = self.executor.submit(self._compute, batch.data[: len(batch)].copy())
        self.in_flight.append(future)
        state.batches.append(future)
        batch.clear()

    def _finalize(self, state: TrackState) -> None:
        outputs = {"tags": np.stack(state.tags), "embedding": np.stack(state.embeddings)}
        state.tags, state.embeddings = [], []
        analysis = self.analyser.analysis(state.num_samples, outputs, state.decode)
        tag_scores = mean_over_segments(analysis.tags)
        row = ResultRow(
            track=state.track,
            audio_sha256=state.sha256,
            duration_seconds=analysis.duration_seconds,
            tag_scores=tag_scores,
            top=suggest(self.model.taxonomy, tag_scores, self.options.top_k),
            embedding=mean_over_segments(analysis.embedding),
            taggram=analysis.tags if self.options.taggram else None,
            segments=analysis.segments,
            decode=analysis.decode,
            segment_embeddings=analysis.embedding if self.options.segment_embeddings else None,
            representative=representative(analysis),
        )
        self.summary.warnings_by_code.update(w.code for w in analysis.decode.warnings)
        if self.warmer is not None:
            key = cache_key(
                state.sha256,
                self.identity.model,
                self.identity.onnx_sha256,
                analysis.hop_samples,
                precision=self.identity.precision,
            )
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
