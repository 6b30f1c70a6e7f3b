"""The early answer (issue #22): analyse a few patches spread over the track now, the whole track in the background.

* **The sample**: ``early_answer_patches`` default-hop patches spread evenly over the track
  (``patch.spread_patch_offsets``), reached by seeking (``service.decode.sample``) in one decode-scheduler step at the
  request's priority (``decode_sample``), then inferred by the model's batcher like any request's patches
  (``infer_sample``); several models of one patch geometry share one sample. They are a subset of the full
  analysis's patches, so a taxonomy or head ranks them exactly as it ranks a full analysis. How many: docs/signup.md.
* **A track of no more patches than that** (``TrackIsShort``) gets the complete analysis: the early answer would be it.
* **The background**: the complete analysis then runs at bulk priority through the cache and single-flight
  (``BackgroundAnalyses``), so the same bytes on any audio endpoint afterwards are a cache hit, and a request for them
  meanwhile joins it. At most ``max_background_analyses`` run; beyond, a new one is dropped, and an interactive request
  that finds the service overloaded drops them all first (``drop_all``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import BinaryIO

import numpy as np

from service import metrics
from service.decode.facts import warnings_for
from service.decode.sample import Sample, sample_track
from service.engine.analysis import Analysis, TrackAnalyser
from service.engine.batch import Batcher
from service.engine.decode_scheduler import DecodeScheduler, DecodeTask
from service.engine.patch import PatchGeometry, spread_patch_offsets
from service.errors import DeadlineExceeded

log = logging.getLogger("taggram")


class TrackIsShort(Exception):
    """The track has no more patches than the sample would take: analyse it whole."""


class SampleDecoding(DecodeTask):
    """The sample's decoding as one scheduler step (a few seconds of audio per patch, whatever the track's length).
    Does not close the source: the background analysis takes it next."""

    def __init__(self, source: BinaryIO, geometry: PatchGeometry, patches: int, max_seconds: float, priority: int):
        super().__init__(priority, credits=0)
        self.source, self.geometry, self.patches, self.max_seconds = source, geometry, patches, max_seconds
        self.sample: Sample | None = None

    def starts_for(self, num_samples: int) -> list[int]:
        if num_samples <= self.patches * self.geometry.covered_samples:
            raise TrackIsShort()
        return spread_patch_offsets(num_samples, self.geometry, self.patches)

    def step(self) -> bool:
        self.source.seek(0)  # another geometry's sample may have read it before
        self.sample = sample_track(
            self.source, self.starts_for, self.geometry.patch_samples, max_seconds=self.max_seconds
        )
        return False

    def result(self) -> Sample:
        return self.sample

    def close(self) -> None:
        pass


async def decode_sample(
    source: BinaryIO,
    *,
    geometry: PatchGeometry,
    decoder: DecodeScheduler,
    patches: int,
    max_seconds: float,
    deadline: float,
    priority: int,
) -> Sample:
    """The spread patches of one geometry; raises ``TrackIsShort`` (analyse it whole) and the decoder's errors."""
    task = SampleDecoding(source, geometry, patches, max_seconds, priority)
    decoding = asyncio.wrap_future(decoder.submit(task))
    try:
        sample = await asyncio.wait_for(asyncio.shield(decoding), timeout=max(deadline - time.monotonic(), 0.0))
    except TimeoutError:
        raise DeadlineExceeded("the deadline passed while sampling") from None
    finally:
        decoder.abandon(task)
    metrics.EARLY_SAMPLE_PATCHES.observe(len(sample.regions))
    return sample


async def infer_sample(
    sample: Sample, *, analyser: TrackAnalyser, batcher: Batcher, deadline: float, priority: int
) -> Analysis:
    """One model's analysis of the sampled patches, by its batcher like any request's patches."""
    job = batcher.open_job(priority)
    try:
        for region in sample.regions:
            batcher.add_patch(job, region)
        batcher.close_job(job)
        outputs = await batcher.wait_for(job, deadline - time.monotonic())
    finally:
        batcher.abandon(job)
    facts = replace(sample.facts, duration_seconds=sample.duration_seconds)
    facts.warnings = warnings_for(facts)  # what the container already shows (a cut), and the sampled regions' damage
    return Analysis(
        duration_seconds=sample.duration_seconds,
        sample_rate=analyser.geometry.sample_rate,
        patch_samples=analyser.geometry.covered_samples,
        hop_samples=analyser.hop_frames * analyser.geometry.frame_hop,
        tags=np.ascontiguousarray(outputs["tags"], np.float32),
        embedding=np.ascontiguousarray(outputs["embedding"], np.float32),
        decode=facts,
    )


class BackgroundAnalyses:
    """Complete analyses that run after their early answer was sent: bounded, dropped first under overload."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._tasks: dict[str, asyncio.Task] = {}
        self._unstarted: dict[asyncio.Task, Callable[[], None]] = {}  # a task cancelled before it ran: its on_drop

    def __len__(self) -> int:
        return len(self._tasks)

    def submit(self, key: str, run: Callable[[], Awaitable[object]], on_drop: Callable[[], None]) -> bool:
        """Start ``run`` unless one for ``key`` runs already or ``limit`` are running (then ``on_drop`` is called
        and False returned: the caller still owns what ``run`` would have used)."""
        if key in self._tasks:
            on_drop()
            return True
        if len(self._tasks) >= self.limit:
            metrics.BACKGROUND_ANALYSES.labels("dropped").inc()
            on_drop()
            return False
        task = asyncio.create_task(self._run(run))
        self._tasks[key] = task
        self._unstarted[task] = on_drop
        metrics.BACKGROUND_PENDING.set(len(self._tasks))
        task.add_done_callback(lambda _task, key=key: self._finished(key, _task))
        return True

    async def _run(self, run: Callable[[], Awaitable[object]]) -> None:
        self._unstarted.pop(asyncio.current_task(), None)  # from here on, ``run`` owns what it uses
        try:
            await run()
        except asyncio.CancelledError:
            metrics.BACKGROUND_ANALYSES.labels("dropped").inc()
            raise
        except Exception as error:  # noqa: BLE001 - nobody awaits it: its failure is logged and counted
            metrics.BACKGROUND_ANALYSES.labels("failed").inc()
            log.info("background analysis failed: %s: %s", type(error).__name__, error)
        else:
            metrics.BACKGROUND_ANALYSES.labels("completed").inc()

    def _finished(self, key: str, task: asyncio.Task) -> None:
        on_drop = self._unstarted.pop(task, None)
        if on_drop is not None:  # cancelled before its first step: ``run`` never took over
            metrics.BACKGROUND_ANALYSES.labels("dropped").inc()
            on_drop()
        if self._tasks.get(key) is task:
            del self._tasks[key]
        metrics.BACKGROUND_PENDING.set(len(self._tasks))

    async def drop_all(self) -> int:
        """Cancel every background analysis and wait until they have let go of their queue places."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        return len(tasks)

    async def wait_idle(self) -> None:
        """Until no background analysis runs (tests, shutdown)."""
        while self._tasks:
            await asyncio.wait(list(self._tasks.values()))
