"""What a run is asked to do (``Options``) and what it did (``Summary``)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from service.config import Settings


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
    inference_seconds: float = 0.0  # inference threads' time inside Runner.run, summed over the threads
    inference_workers: int = 1  # the batch policy's inference threads (inference_busy's denominator)
    cache_writes: int = 0
    cache_write_failures: int = 0
    parts_committed: int = 0
    interrupted_by: str | None = None

    @property
    def speed(self) -> float:
        """Audio hours tagged per wall-clock hour."""
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def as_json(self) -> dict:
        return {
            "shard_index": self.shard_index,
            "shard_count": self.shard_count,
            "tracks_in_shard": self.tracks_in_shard,
            "already_done": self.already_done,
            "analysed": self.analysed,
            "errors": self.errors,
            "errors_by_code": dict(self.errors_by_code),
            "warnings_by_code": dict(self.warnings_by_code),
            "remaining": self.tracks_in_shard - self.already_done - self.analysed - self.errors,
            "audio_hours": round(self.audio_seconds / 3600, 4),
            "wall_seconds": round(self.wall_seconds, 2),
            "audio_hours_per_hour": round(self.speed, 2),
            "inference_busy": round(self.inference_seconds / self.wall_seconds / self.inference_workers, 3)
            if self.wall_seconds
            else 0.0,
            "cache_writes": self.cache_writes,
            "cache_write_failures": self.cache_write_failures,
            "parts_committed": self.parts_committed,
            "interrupted_by": self.interrupted_by,
        }
