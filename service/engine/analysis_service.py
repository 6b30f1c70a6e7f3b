"""The one owner of an upload's way to its analysis: admission, cache, single-flight, the pipeline.

Every audio route asks it in two steps, so that a refusal costs nothing:

    async with service.admit(model, hop=hop, priority=priority) as admission:  # Overloaded before the body is read
        upload = await read_upload(...)                                          # the API layer reads and hashes it
        analysis, cached = await service.analyse(admission, upload)

``admit`` starts the request's deadline, refuses when the model's queue or the concurrent-analyses limit is full
(``Overloaded``, with the configured Retry-After) and counts the upload as in flight until the block ends. ``analyse``
serves the analysis from the cache, joins an identical one already computing (``SingleFlight``), or runs the
pipeline (``service.engine.pipeline.analyse``) and stores the result. It knows nothing of HTTP: the upload comes as a
plain :class:`Upload`, the priority is a decode-scheduler class the caller chose, failures are ``service.errors``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from service import metrics
from service.config import DamagedAudio, Settings
from service.decode import refuse_damaged
from service.engine.analysis import Analysis, TrackAnalyser
from service.engine.batch import Batcher
from service.engine.cache import Cache, SingleFlight, cache_key, get_or_compute, make_cache
from service.engine.decode_scheduler import BULK, DecodeScheduler
from service.engine.early import BackgroundAnalyses, TrackIsShort, sample_analysis
from service.engine.pipeline import analyse
from service.errors import Overloaded

if TYPE_CHECKING:
    from service.artefacts.registry import LoadedModel

log = logging.getLogger("taggram")


@dataclass
class Upload:
    """Received audio: every byte already read (into ``file``, at its start) and hashed."""

    file: BinaryIO
    size: int
    sha256: str

    def close(self) -> None:
        self.file.close()


@dataclass(frozen=True)
class EarlyAnswer:
    """An analysis for ``/suggest-subgenres`` and what it covers (``complete``: the whole track, as ever)."""

    analysis: Analysis
    cached: bool
    complete: bool
    coverage: float  # seconds analysed ÷ the track's duration
    sampling: str | None = None  # why the sample was decoded in order instead of by seeking, when it was


@dataclass(frozen=True)
class Admission:
    """One admitted request: what its analysis runs with."""

    model: LoadedModel
    analyser: TrackAnalyser
    batcher: Batcher
    deadline: float  # time.monotonic() by which the analysis must be done
    priority: int  # a service.engine.decode_scheduler class


class AnalysisService:
    """Built with the loaded models; ``start`` (before serving) warms a batcher per model and opens the cache."""

    def __init__(self, settings: Settings, models: dict[str, LoadedModel]) -> None:
        self.settings = settings
        self.models = models
        self.batchers: dict[str, Batcher] = {}
        self.flight = SingleFlight()
        self.in_flight = 0  # uploads admitted and not yet answered
        self.background = BackgroundAnalyses(settings.max_background_analyses)
        self._cache: Cache | None = None
        self._decoder: DecodeScheduler | None = None

    @property
    def cache(self) -> Cache:
        if self._cache is None:
            raise RuntimeError("the analysis service is not started")
        return self._cache

    async def start(self) -> None:
        settings = self.settings
        self._decoder = DecodeScheduler(settings.decode_threads)
        self._cache = make_cache(settings)
        for name, model in self.models.items():
            batcher = Batcher(
                model.runner,
                model=name,
                policy=model.batch_policy,
                max_queue_patches=settings.max_queue_patches,
                retry_after_seconds=settings.retry_after_seconds,
            )
            await batcher.warm_up(model.manifest.patch_samples)
            batcher.start()
            self.batchers[name] = batcher

    async def close(self) -> None:
        await self.background.drop_all()
        for batcher in self.batchers.values():
            await batcher.close()
        if self._cache is not None:
            await self._cache.close()
        if self._decoder is not None:
            self._decoder.shutdown()

    @asynccontextmanager
    async def admit(self, model: LoadedModel, *, hop: float | None, priority: int) -> AsyncIterator[Admission]:
        """Refuse (``Overloaded``) before the upload is read when the model's queue or the concurrent-analyses limit
        is full; otherwise the upload counts as in flight until the block ends."""
        settings = self.settings
        deadline = time.monotonic() + settings.request_timeout_seconds
        geometry = model.manifest.geometry
        hop_frames = geometry.hop_frames(hop)
        batcher = self.batchers[model.name]
        try:
            self._check_room(batcher)
        except Overloaded:
            if not await self.background.drop_all():  # background analyses give way first
                raise
            self._check_room(batcher)
        self.in_flight += 1
        try:
            analyser = TrackAnalyser(geometry, hop_frames, settings.min_audio_seconds)
            yield Admission(model, analyser, batcher, deadline, priority)
        finally:
            self.in_flight -= 1

    def _check_room(self, batcher: Batcher) -> None:
        """Background analyses count against the concurrent-analyses limit: they hold decoders and queue places
        until a request needs them (``admit`` drops them then)."""
        batcher.admit()
        running = self.in_flight + len(self.background)
        if running >= self.settings.max_concurrent_analyses:
            raise Overloaded(f"{running} uploads are already being analysed", self.settings.retry_after_seconds)

    def _key(self, admission: Admission, upload: Upload) -> str:
        model, analyser = admission.model, admission.analyser
        hop_samples = analyser.hop_frames * analyser.geometry.frame_hop
        return cache_key(
            upload.sha256, model.name, model.manifest.onnx.sha256, hop_samples, precision=model.runner.precision
        )

    async def early(self, admission: Admission, upload: Upload) -> EarlyAnswer:
        """The cached analysis, or one of ``early_answer_patches`` spread patches with the complete analysis left to
        the background (service.engine.early); the complete analysis for a short track, at another hop than the
        default, or with early answers off. Takes ownership of the upload."""
        analyser = admission.analyser
        patches = self.settings.early_answer_patches
        if not patches or analyser.hop_frames != analyser.geometry.patch_frames:
            return self._whole(*await self.analyse(admission, upload))
        key = self._key(admission, upload)
        cached = await self.cache.get(key)
        if cached is not None:
            upload.close()
            metrics.CACHE_HITS.labels(backend=self.cache.name).inc()
            return self._whole(cached, True)
        try:
            analysis, sample = await sample_analysis(
                upload.file,
                analyser=analyser,
                batcher=admission.batcher,
                decoder=self._decoder,
                patches=patches,
                max_seconds=self.settings.max_audio_seconds,
                deadline=admission.deadline,
                priority=admission.priority,
            )
            if self.settings.damaged_audio is DamagedAudio.REFUSE:
                refuse_damaged(analysis.decode)  # what the sample already shows (a cut container, damaged regions)
        except TrackIsShort:
            return self._whole(*await self.analyse(admission, upload))
        except BaseException:
            upload.close()
            raise
        self.background.submit(key, lambda: self._complete_in_background(admission, upload, key), upload.close)
        metrics.EARLY_ANSWERS.inc()
        return EarlyAnswer(analysis, False, False, sample.coverage, sample.fallback_reason)

    @staticmethod
    def _whole(analysis: Analysis, cached: bool) -> EarlyAnswer:
        return EarlyAnswer(analysis, cached, True, 1.0)

    async def _complete_in_background(self, admission: Admission, upload: Upload, key: str) -> None:
        background = Admission(
            admission.model,
            admission.analyser,
            admission.batcher,
            time.monotonic() + self.settings.request_timeout_seconds,
            BULK,
        )
        await self._analyse_keyed(background, upload, key)

    async def analyse(self, admission: Admission, upload: Upload) -> tuple[Analysis, bool]:
        return await self._analyse_keyed(admission, upload, self._key(admission, upload))

    async def _analyse_keyed(self, admission: Admission, upload: Upload, key: str) -> tuple[Analysis, bool]:
        """``(analysis, cached)`` for the upload; takes ownership of it (closed however the call ends)."""
        analyser = admission.analyser
        # The upload's file belongs to this call until a computation takes it (the pipeline closes what it was
        # given): calls sharing that computation may then come and go without pulling the file from under the decoder.
        handed_over = False
        try:

            async def compute() -> Analysis:
                nonlocal handed_over
                handed_over = True
                return await analyse(
                    upload.file,
                    analyser=analyser,
                    batcher=admission.batcher,
                    decoder=self._decoder,
                    max_seconds=self.settings.max_audio_seconds,
                    deadline=admission.deadline,
                    priority=admission.priority,
                    damaged_audio=self.settings.damaged_audio,
                )

            return await get_or_compute(self.cache, self.flight, key, compute)
        finally:
            if not handed_over:
                upload.close()
