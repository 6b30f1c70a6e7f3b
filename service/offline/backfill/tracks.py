"""One track's state in the run loop, and its batches.

Determinism: ONNX Runtime's outputs for a patch depend, in the last bits, on the batch it ran in (its size and the
patch's position: different kernels handle different rows). So a track's patches are batched only with each other,
``--batch-patches`` at a time from its first patch (``TrackBatch``): its batches are a function of the track alone,
and a resumed or sharded run writes bit-identical numbers to one clean run, however tracks were interleaved.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from service.decode import DecodeFacts
from service.engine.patch import StreamingPatcher
from service.offline.backfill.catalog import Track


class TrackBatch:
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
class TrackState:
    track: Track
    seq: int
    patcher: StreamingPatcher
    batch: TrackBatch | None = None  # allocated with the first patch, dropped when the track fails
    batches: list[Future] = field(default_factory=list)  # submitted to inference, in order; collected at the end
    tags: list[np.ndarray] = field(default_factory=list)  # per-segment rows, in order
    embeddings: list[np.ndarray] = field(default_factory=list)
    num_samples: int = 0
    sha256: str = ""
    decode: DecodeFacts = field(default_factory=DecodeFacts)
