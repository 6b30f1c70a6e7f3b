"""decode → patch → batch → pool for one upload: the analysis every endpoint serves from.

Decoding runs in a worker thread and hands each patch to the model's batcher as soon as its samples are decoded,
so inference overlaps decoding. The decoder stays at most PATCHES_AHEAD patches ahead of inference (memory per
request stays bounded whatever the track's length), and stops as soon as the request is abandoned.

The analysis owns its input: the decode thread closes the source when it is done with it, so whoever started the
analysis (one request among several sharing it, see cache.SingleFlight) may go away without pulling the file from
under the decoder. The analysis carries the decode facts; with ``damaged_audio="refuse"`` a file whose decode
raised warnings fails with ``damaged_audio`` instead of being analysed.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Executor
from typing import BinaryIO

import numpy as np

from service import metrics
from service.batch import Batcher, DeadlineExceeded, Job
from service.decode import DecodeFacts, iter_decoded, refuse_damaged
from service.errors import Problem, deadline_exceeded
from service.patch import PatchGeometry, StreamingPatcher
from service.pool import Analysis

PATCHES_AHEAD = 64  # ≈3 min of audio, 12 MB: how far decoding may run ahead of inference per request
CREDIT_POLL_SECONDS = 0.1  # how often a waiting decoder checks whether its request was abandoned


class Abandoned(Exception):
    """The request went away (deadline, disconnect, failure): decoding stops."""


def build_analysis(num_samples: int, geometry: PatchGeometry, hop_frames: int, outputs: dict[str, np.ndarray],
                   decode: DecodeFacts) -> Analysis:
    return Analysis(
        duration_seconds=num_samples / geometry.sample_rate,
        sample_rate=geometry.sample_rate,
        patch_samples=geometry.covered_samples,
        hop_samples=hop_frames * geometry.frame_hop,
        tags=np.ascontiguousarray(outputs["tags"], dtype=np.float32),
        embedding=np.ascontiguousarray(outputs["embedding"], dtype=np.float32),
        decode=decode,
    )


def count_decode(facts: DecodeFacts) -> None:
    metrics.DECODES.labels(facts.decoder).inc()
    for warning in facts.warnings:
        metrics.DECODE_WARNINGS.labels(warning.code).inc()


def check_min_duration(num_samples: int, sample_rate: int, min_seconds: float) -> None:
    if num_samples < min_seconds * sample_rate:
        raise Problem(422, "audio_too_short",
                      f"the audio lasts {num_samples / sample_rate:.3f} s; at least {min_seconds:g} s is needed")


class _Producer:
    """The decode thread's side: decoded chunks → patches → the batcher (through the event loop)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, batcher: Batcher, job: Job) -> None:
        self.loop, self.batcher, self.job = loop, batcher, job
        self.stop = threading.Event()
        self.credits = threading.Semaphore(PATCHES_AHEAD)
        self.decode_seconds = 0.0  # time inside the decoder, excluding waits for inference to catch up
        self.facts: DecodeFacts | None = None  # set once the whole file decoded
        job.on_patch_done = self.credits.release

    def send(self, patch: np.ndarray) -> None:
        while not self.credits.acquire(timeout=CREDIT_POLL_SECONDS):
            if self.stop.is_set():
                raise Abandoned
        self.loop.call_soon_threadsafe(self.batcher.add_patch, self.job, patch)

    def run(self, source: BinaryIO, geometry: PatchGeometry, hop_frames: int, max_seconds: float,
            min_seconds: float, damaged_audio: str) -> int:
        """Decode and send every patch; returns the track's length in samples. Closes ``source`` when done."""
        with source:
            return self._run(source, geometry, hop_frames, max_seconds, min_seconds, damaged_audio)

    def _run(self, source: BinaryIO, geometry: PatchGeometry, hop_frames: int, max_seconds: float,
             min_seconds: float, damaged_audio: str) -> int:
        patcher = StreamingPatcher(geometry, hop_frames)
        chunks = iter_decoded(source, max_seconds=max_seconds)
        try:
            while True:
                started = time.perf_counter()
                chunk = next(chunks, None)
                self.decode_seconds += time.perf_counter() - started
                if chunk is None:
                    break
                if self.stop.is_set():
                    raise Abandoned
                for patch in patcher.push(chunk):
                    self.send(patch)
        finally:
            chunks.close()
        self.facts = chunks.facts
        count_decode(chunks.facts)
        if damaged_audio == "refuse":
            refuse_damaged(chunks.facts)
        check_min_duration(patcher.num_samples, geometry.sample_rate, min_seconds)
        for patch in patcher.finish():
            self.send(patch)
        # Scheduled after every add_patch, so the job is closed only once all its patches are in.
        self.loop.call_soon_threadsafe(self.batcher.close_job, self.job)
        return patcher.num_samples


def _retrieve_exception(future: asyncio.Future) -> None:
    """A decode that ends after its request was abandoned has no one to report to."""
    if not future.cancelled():
        future.exception()


def _close_if_never_run(source: BinaryIO):
    def callback(future: asyncio.Future) -> None:
        if future.cancelled():  # the executor dropped the call before it started (shutdown): nobody else will
            source.close()
    return callback


async def analyse(source: BinaryIO, *, geometry: PatchGeometry, hop_frames: int, batcher: Batcher,
                  decode_pool: Executor, max_seconds: float, min_seconds: float, deadline: float,
                  damaged_audio: str = "warn") -> Analysis:
    """deadline: time.monotonic() by which the analysis must be done (else 504). Takes ownership of ``source``:
    it is closed once decoding ends, however the analysis ends."""
    loop = asyncio.get_running_loop()
    job = batcher.open_job()
    producer = _Producer(loop, batcher, job)
    decoding = loop.run_in_executor(decode_pool, producer.run, source, geometry, hop_frames, max_seconds, min_seconds,
                                    damaged_audio)
    decoding.add_done_callback(_retrieve_exception)
    decoding.add_done_callback(_close_if_never_run(source))
    try:
        num_samples = await asyncio.wait_for(asyncio.shield(decoding), timeout=max(deadline - time.monotonic(), 0.0))
        metrics.DECODE_SECONDS.observe(producer.decode_seconds)
        outputs = await batcher.wait_for(job, deadline - time.monotonic())
    except TimeoutError:
        raise deadline_exceeded("the deadline passed while decoding") from None
    except DeadlineExceeded as error:
        raise deadline_exceeded(f"the deadline passed during inference: {error}") from None
    finally:
        producer.stop.set()
        batcher.abandon(job)
    metrics.AUDIO_SECONDS.labels(batcher.model).inc(num_samples / geometry.sample_rate)
    return build_analysis(num_samples, geometry, hop_frames, outputs, producer.facts)
