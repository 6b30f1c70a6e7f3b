"""Cross-request batching: one batcher per model gathers patches from concurrent requests.

The batcher follows the model's ``BatchPolicy`` (``service.engine.run.batch_policy``). A batch runs when a full one
(``max_batch_patches``) is queued or when the oldest queued patch has waited ``max_wait_seconds`` (measured from when
that patch was added, so a worker that was busy meanwhile does not add a second wait).
Patches are taken round-robin, one per request per turn, interactive requests' jobs before bulk ones (the same
classes as decoding, ``service.engine.decode_scheduler``): a 30 s clip is never stuck behind an hour-long track. The
queue is bounded in patches; each request carries a deadline. Inference runs in ``inference_workers`` threads per
model (ONNX Runtime releases the GIL), so the event loop keeps serving while batches compute. Each batch takes one
worker's share of the queue, ``ceil(queued / workers)`` patches, at most ``max_batch``: a batch gains nothing per
patch on CPU (see ``service.engine.run``), and this way one short request uses every worker and the last patches of a
track are spread over the workers instead of left to one.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from service import metrics
from service.engine.decode_scheduler import BULK, INTERACTIVE
from service.engine.run import SERVED_OUTPUTS, BatchPolicy, Runner
from service.errors import DeadlineExceeded, Overloaded

PRIORITY_CLASSES = (INTERACTIVE, BULK)  # rotations, served in this order


@dataclass(eq=False)
class Job:
    """One request's patches. They may keep arriving (decoding overlaps inference) until ``close``."""

    future: asyncio.Future
    priority: int = BULK
    patches: list[np.ndarray | None] = field(default_factory=list)  # None once computed
    ready_at: list[float] = field(default_factory=list)  # time.monotonic() each patch was added: its queue wait's start
    rows: dict[str, list[np.ndarray | None]] = field(default_factory=lambda: {name: [] for name in SERVED_OUTPUTS})
    on_patch_done: Callable[[], None] | None = None  # lets a producer keep a bounded number of patches ahead
    next_patch: int = 0
    completed: int = 0
    closed: bool = False
    abandoned: bool = False
    in_rotation: bool = False  # in the batcher's round-robin deque

    @property
    def unscheduled(self) -> int:
        return len(self.patches) - self.next_patch

    def finished(self) -> bool:
        return self.closed and self.completed == len(self.patches)

    def results(self) -> dict[str, np.ndarray]:
        return {name: np.stack(rows) for name, rows in self.rows.items()}


@dataclass
class BatchRecord:
    """What one batch held and when it ran: kept (bounded) for tests and debugging; ids are per-job identities."""

    job_ids: list[int] = field(default_factory=list)
    started_at: float = 0.0  # time.monotonic() when handed to an inference thread
    finished_at: float | None = None  # when its outputs came back (or it failed); None while computing


class Batcher:
    def __init__(
        self,
        runner: Runner,
        *,
        model: str,
        policy: BatchPolicy,
        max_queue_patches: int,
        retry_after_seconds: int | None = None,
        history: int = 256,
    ) -> None:
        self.runner = runner
        self.retry_after_seconds = retry_after_seconds  # what an Overloaded refusal tells the caller
        self.model = model
        self.max_batch = policy.max_batch_patches
        self.max_wait_seconds = policy.max_wait_seconds
        self.workers = policy.inference_workers
        self.max_queue_patches = max_queue_patches
        self.recent_batches: deque[BatchRecord] = deque(maxlen=history)
        # Per priority class, the jobs with patches not yet scheduled, in round-robin order.
        self._rotations: dict[int, deque[Job]] = {priority: deque() for priority in PRIORITY_CLASSES}
        self._queued = 0
        self._arrived = asyncio.Event()
        self._idle_workers = asyncio.Semaphore(self.workers)
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix=f"infer-{model}")
        self._task: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()  # batches being computed

    @property
    def queued_patches(self) -> int:
        return self._queued

    async def warm_up(self, patch_samples: int) -> None:
        """Before serving: every batch size this batcher will run (on CPU: ``max_batch``), on all its inference
        threads at once. ONNX Runtime's arena and each serving thread's own buffers reach their peak now, not under
        the first load (the executor starts one thread per task submitted while the others are busy)."""
        loop = asyncio.get_running_loop()
        for size in self.runner.fixed_batch_sizes or (self.max_batch,):
            batch = np.zeros((size, patch_samples), np.float32)
            await asyncio.gather(
                *(loop.run_in_executor(self._executor, self.runner.run, batch) for _ in range(self.workers))
            )

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"batcher-{self.model}")

    async def close(self) -> None:
        tasks = [self._task, *self._running] if self._task else [*self._running]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._executor.shutdown(wait=True)

    def admit(self) -> None:
        """Raise Overloaded when the queue is full: checked before an upload is read, and again when it opens a job."""
        if self._queued >= self.max_queue_patches:
            raise Overloaded(f"{self._queued} patches already queued for {self.model}", self.retry_after_seconds)

    def open_job(self, priority: int = BULK) -> Job:
        """A job to ``add_patch`` to as patches are decoded; ``close_job`` when the last one is in."""
        self.admit()
        return Job(future=asyncio.get_running_loop().create_future(), priority=priority)

    def add_patch(self, job: Job, patch: np.ndarray) -> None:
        if job.abandoned or job.future.done():
            return
        job.patches.append(patch)
        job.ready_at.append(time.monotonic())
        for rows in job.rows.values():
            rows.append(None)
        self._queued += 1
        if not job.in_rotation:
            job.in_rotation = True
            self._rotations[job.priority].append(job)
        metrics.QUEUE_DEPTH.labels(self.model).set(self._queued)
        self._arrived.set()

    def close_job(self, job: Job) -> None:
        """No more patches will come; the job completes when the added ones are computed."""
        job.closed = True
        if job.finished() and not job.future.done():
            job.future.set_result(job.results())

    async def wait_for(self, job: Job, timeout_seconds: float) -> dict[str, np.ndarray]:
        """Outputs for every patch of a closed job, in order; raises DeadlineExceeded past the timeout."""
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), timeout=max(timeout_seconds, 0.0))
        except TimeoutError:
            raise DeadlineExceeded(f"deadline of {timeout_seconds:.1f} s passed") from None
        finally:
            self.abandon(job)

    def abandon(self, job: Job) -> None:
        """Drop whatever of a finished, failed, timed-out or cancelled job is still queued."""
        if job.abandoned:
            return
        job.abandoned = True
        self._queued -= job.unscheduled
        job.next_patch = len(job.patches)
        metrics.QUEUE_DEPTH.labels(self.model).set(self._queued)

    def _batch_size(self) -> int:
        """This worker's share of the queue, at most max_batch ("guided self-scheduling"): a long queue goes out in
        full batches, a short one in ever smaller shares, so the workers finish the last patches together instead
        of one computing a full last batch while the others wait."""
        return max(1, min(self.max_batch, math.ceil(self._queued / self.workers)))

    def _take(self, size: int) -> list[tuple[Job, int]]:
        """Up to ``size`` (job, patch index) pairs: interactive jobs first, one per job per turn within a class."""
        picks: list[tuple[Job, int]] = []
        for priority in PRIORITY_CLASSES:
            jobs = self._rotations[priority]
            while jobs and len(picks) < size:
                job = jobs.popleft()
                if job.abandoned or job.unscheduled == 0:
                    job.in_rotation = False  # re-enters the rotation when its next patch is added
                    continue
                picks.append((job, job.next_patch))
                job.next_patch += 1
                self._queued -= 1
                if job.unscheduled > 0:
                    jobs.append(job)
                else:
                    job.in_rotation = False
        metrics.QUEUE_DEPTH.labels(self.model).set(self._queued)
        return picks

    def _oldest_ready_at(self) -> float:
        """When the longest-waiting queued patch was added (now, with none queued)."""
        return min(
            (
                job.ready_at[job.next_patch]
                for jobs in self._rotations.values()
                for job in jobs
                if not job.abandoned and job.unscheduled > 0
            ),
            default=time.monotonic(),
        )

    async def _wait_to_fill(self) -> None:
        """Until a full batch is queued, give concurrent requests what remains of the oldest queued patch's
        max_wait to add patches."""
        deadline = self._oldest_ready_at() + self.max_wait_seconds
        while self._queued < self.max_batch:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return

    def _compute(self, picks: list[tuple[Job, int]]) -> tuple[dict[str, np.ndarray], float]:
        batch = np.stack([job.patches[index] for job, index in picks])
        started = time.perf_counter()
        outputs = self.runner.run(batch)
        return outputs, time.perf_counter() - started

    async def _loop(self) -> None:
        while True:
            await self._idle_workers.acquire()
            try:
                picks = await self._next_batch()
            except BaseException:
                self._idle_workers.release()
                raise
            task = asyncio.create_task(self._run_batch(picks), name=f"batch-{self.model}")
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _next_batch(self) -> list[tuple[Job, int]]:
        """Wait for patches (and up to max_wait for a full batch), then take this worker's batch."""
        while True:
            if self._queued == 0:
                self._arrived.clear()
                await self._arrived.wait()
            await self._wait_to_fill()
            picks = self._take(self._batch_size())
            if picks:
                return picks

    async def _run_batch(self, picks: list[tuple[Job, int]]) -> None:
        """Compute one batch in an inference thread and hand each row to its job; frees the worker at the end."""
        record = BatchRecord([id(job) for job, _ in picks], started_at=time.monotonic())
        try:
            for job, index in picks:
                metrics.QUEUE_WAIT_SECONDS.labels(self.model).observe(record.started_at - job.ready_at[index])
            metrics.BATCH_SIZE.labels(self.model).observe(len(picks))
            self.recent_batches.append(record)
            try:
                loop = asyncio.get_running_loop()
                outputs, seconds = await loop.run_in_executor(self._executor, self._compute, picks)
            except Exception as error:  # noqa: BLE001 - an inference failure fails this batch's requests, not the batcher
                for job, _ in picks:
                    if not job.future.done():
                        job.future.set_exception(error)
                return
            metrics.INFERENCE_SECONDS.labels(self.model).observe(seconds)
            self._scatter(picks, outputs)
        finally:
            record.finished_at = time.monotonic()
            self._idle_workers.release()

    @staticmethod
    def _scatter(picks: list[tuple[Job, int]], outputs: dict[str, np.ndarray]) -> None:
        for row, (job, index) in enumerate(picks):
            if job.future.done():
                continue
            for name, values in outputs.items():
                job.rows[name][index] = values[row]
            job.patches[index] = None  # computed: the job no longer holds its samples
            if job.on_patch_done is not None:
                job.on_patch_done()
            job.completed += 1
            if job.finished():
                job.future.set_result(job.results())
