"""decode → patch → batch → analysis for one upload: the analysis every endpoint serves from.

Decoding is a task of the shared decode scheduler (``service.engine.decode_scheduler``): a decode thread steps it one
chunk at a time and hands each patch to the model's batcher as soon as its samples are decoded, so inference
overlaps decoding. At most PATCHES_AHEAD patches are queued ahead of inference per request (plus at most one
chunk's patches held back) — memory per request stays bounded whatever the track's length — and while it is that
far ahead the decoding is parked, holding no thread, so other requests' decoding goes on. It stops as soon as the
request is abandoned.

The analysis owns its input: the decoding task closes the source when it ends (the scheduler closes every task it
finishes, on a decode thread), so whoever started the analysis (one request among several sharing it, see
cache.SingleFlight) may go away without pulling the file from under the decoder. The analysis carries the decode
facts; with ``DamagedAudio.REFUSE`` a file whose decode raised warnings fails with ``damaged_audio`` instead.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import BinaryIO

import numpy as np

from service import metrics
from service.config import DamagedAudio
from service.decode import DecodeFacts, iter_decoded, refuse_damaged
from service.engine.analysis import Analysis, TrackAnalyser
from service.engine.batch import Batcher, Job
from service.engine.decode_scheduler import DecodeScheduler, DecodeTask
from service.errors import DeadlineExceeded

PATCHES_AHEAD = 64  # ≈3 min of audio, 12 MB: how far decoding may run ahead of inference per request


class TrackDecoding(DecodeTask):
    """One upload's decoding as scheduler steps: a decoded chunk → patches → the batcher (through the event loop)."""

    def __init__(
        self,
        source: BinaryIO,
        analyser: TrackAnalyser,
        max_seconds: float,
        *,
        priority: int,
        loop: asyncio.AbstractEventLoop,
        batcher: Batcher,
        job: Job,
        damaged_audio: DamagedAudio = DamagedAudio.WARN,
    ) -> None:
        super().__init__(priority, credits=PATCHES_AHEAD)
        self.analyser, self.loop, self.batcher, self.job = analyser, loop, batcher, job
        self.source, self.damaged_audio = source, damaged_audio
        self.patcher = analyser.patcher()
        self.chunks = iter_decoded(source, max_seconds=max_seconds)
        self.pending: deque[np.ndarray] = deque()  # patches decoded but not yet handed on (at most one chunk's)
        self.decoded = False  # the decoder is exhausted and the tail patches are in ``pending``
        self.decode_seconds = 0.0  # time inside the decoder, excluding time parked

    def step(self) -> bool:
        """Decode the next chunk (once the patches in hand are all handed on), then hand on what credits allow."""
        if not self.pending and not self.decoded:
            started = time.perf_counter()
            chunk = next(self.chunks, None)
            self.decode_seconds += time.perf_counter() - started
            if chunk is None:
                self._decode_ended(self.chunks.facts)
                self.decoded = True
                self.pending.extend(self.analyser.finish(self.patcher))
            else:
                self.pending.extend(self.patcher.push(chunk))
                self.progress = self.patcher.num_samples
        self._send_allowed()
        if self.decoded and not self.pending:
            # Scheduled after every add_patch, so the job is closed only once all its patches are in.
            self.loop.call_soon_threadsafe(self.batcher.close_job, self.job)
            return False
        return True  # more to decode, or out of credits with patches in hand (parked until inference catches up)

    def _send_allowed(self) -> None:
        while self.pending and self.credits > 0:
            self.spend_credit()
            self.loop.call_soon_threadsafe(self.batcher.add_patch, self.job, self.pending.popleft())

    def _decode_ended(self, facts: DecodeFacts) -> None:
        count_decode(facts)
        if self.damaged_audio is DamagedAudio.REFUSE:
            refuse_damaged(facts)

    def result(self) -> int:
        """The track's length in samples."""
        return self.patcher.num_samples

    @property
    def facts(self) -> DecodeFacts:
        """What decoding learned; complete once the task finished."""
        return self.chunks.facts

    def close(self) -> None:
        try:
            self.chunks.close()
        finally:
            self.source.close()  # the analysis owns its input (module docstring)


def count_decode(facts: DecodeFacts) -> None:
    metrics.DECODES.labels(facts.decoder).inc()
    for warning in facts.warnings:
        metrics.DECODE_WARNINGS.labels(warning.code).inc()


async def analyse(
    source: BinaryIO,
    *,
    analyser: TrackAnalyser,
    batcher: Batcher,
    decoder: DecodeScheduler,
    max_seconds: float,
    deadline: float,
    priority: int,
    damaged_audio: DamagedAudio = DamagedAudio.WARN,
) -> Analysis:
    """deadline: time.monotonic() by which the analysis must be done (else 504); priority: a decode_scheduler
    class (INTERACTIVE requests decode and infer first). Takes ownership of ``source``: it is closed once decoding
    ends, however the analysis ends."""
    loop = asyncio.get_running_loop()
    job = batcher.open_job(priority)
    task = TrackDecoding(
        source,
        analyser,
        max_seconds,
        priority=priority,
        loop=loop,
        batcher=batcher,
        job=job,
        damaged_audio=damaged_audio,
    )
    job.on_patch_done = lambda: decoder.credit(task)
    decoding = asyncio.wrap_future(decoder.submit(task))
    try:
        num_samples = await asyncio.wait_for(asyncio.shield(decoding), timeout=max(deadline - time.monotonic(), 0.0))
        metrics.DECODE_SECONDS.observe(task.decode_seconds)
        outputs = await batcher.wait_for(job, deadline - time.monotonic())
    except TimeoutError:
        raise DeadlineExceeded("the deadline passed while decoding") from None
    except DeadlineExceeded as error:  # the batcher's, given the stage it passed in
        raise DeadlineExceeded(f"the deadline passed during inference: {error}") from None
    finally:
        decoder.abandon(task)
        batcher.abandon(job)
        if not decoding.done():  # a decode that ends after its request was abandoned has no one to report to
            decoding.add_done_callback(lambda future: future.cancelled() or future.exception())
    metrics.AUDIO_SECONDS.labels(batcher.model).inc(num_samples / analyser.geometry.sample_rate)
    return analyser.analysis(num_samples, outputs, task.facts)
