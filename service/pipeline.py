"""decode → patch → batch → pool for one upload: the analysis every endpoint serves from."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from functools import partial
from typing import BinaryIO

import numpy as np

from service import metrics
from service.batch import Batcher, DeadlineExceeded
from service.decode import decode
from service.errors import Problem, deadline_exceeded
from service.patch import PatchGeometry, patch_track
from service.pool import Analysis


def build_analysis(num_samples: int, geometry: PatchGeometry, hop_frames: int, outputs: dict[str, np.ndarray]) -> Analysis:
    return Analysis(
        duration_seconds=num_samples / geometry.sample_rate,
        sample_rate=geometry.sample_rate,
        patch_samples=geometry.covered_samples,
        hop_samples=hop_frames * geometry.frame_hop,
        tags=np.ascontiguousarray(outputs["tags"], dtype=np.float32),
        embedding=np.ascontiguousarray(outputs["embedding"], dtype=np.float32),
    )


def check_min_duration(num_samples: int, sample_rate: int, min_seconds: float) -> None:
    if num_samples < min_seconds * sample_rate:
        raise Problem(422, "audio_too_short",
                      f"the audio lasts {num_samples / sample_rate:.3f} s; at least {min_seconds:g} s is needed")


async def analyse(source: BinaryIO, *, geometry: PatchGeometry, hop_frames: int, batcher: Batcher,
                  decode_pool: Executor, max_seconds: float, min_seconds: float, deadline: float) -> Analysis:
    """deadline: time.monotonic() by which the analysis must be done (else 504)."""
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    try:
        decoded = await asyncio.wait_for(
            loop.run_in_executor(decode_pool, partial(decode, source, max_seconds=max_seconds)),
            timeout=max(deadline - time.monotonic(), 0.0),
        )
    except TimeoutError:
        raise deadline_exceeded("the deadline passed while decoding") from None
    metrics.DECODE_SECONDS.observe(time.perf_counter() - started)
    samples = decoded.samples
    check_min_duration(len(samples), geometry.sample_rate, min_seconds)
    patches = patch_track(samples, geometry, hop_frames)
    try:
        outputs = await batcher.submit(patches, timeout_seconds=deadline - time.monotonic())
    except DeadlineExceeded as error:
        raise deadline_exceeded(f"the deadline passed during inference: {error}") from None
    metrics.AUDIO_SECONDS.labels(batcher.model).inc(len(samples) / geometry.sample_rate)
    return build_analysis(len(samples), geometry, hop_frames, outputs)
