"""The one owner of an upload's way to its analysis: admission, cache, single-flight, the pipeline.

Every audio route asks it in two steps, so that a refusal costs nothing:

    async with service.admit(models, hop=hop, priority=priority) as admissions:  # Overloaded before the body is read
        upload = await read_upload(...)                                            # the API layer reads and hashes it
        results = await service.analyse(admissions, upload)                       # [(analysis, cached)], per model

``admit`` starts the request's deadline, refuses when a model's queue or the concurrent-analyses limit is full
(``Overloaded``, with the configured Retry-After) and counts the upload as in flight (once, whatever the number of
models) until the block ends. ``analyse`` serves each model's analysis from the cache, joins an identical one already
computing (``SingleFlight``), or runs the pipeline (``service.engine.pipeline.analyse``) and stores the result;
several models analyse one upload at once, each from its own copy of the bytes. It knows nothing of HTTP: the upload
comes as a plain :class:`Upload`, the priority is a decode-scheduler class the caller chose, failures are
``service.errors``.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, BinaryIO

from service import metrics
from service.config import DamagedAudio, Settings
from service.decode import refuse_damaged
from service.decode.sample import Sample
from service.engine.analysis import Analysis, TrackAnalyser
from service.engine.batch import Batcher
from service.engine.cache import Cache, SingleFlight, cache_key, get_or_compute, make_cache
from service.engine.decode_scheduler import BULK, DecodeScheduler
from service.engine.early import BackgroundAnalyses, TrackIsShort, decode_sample, infer_sample
from service.engine.patch import PatchGeometry
from service.engine.pipeline import analyse
from service.errors import Overloaded

if TYPE_CHECKING:
    from service.artefacts.registry import LoadedModel

log = logging.getLogger("taggram")

SPOOL_MEMORY_BYTES = 8 * 1024 * 1024  # an upload up to this size stays in memory; a larger one spills to a temp file


@dataclass
class Upload:
    """Received audio: every byte already read (into ``file``, at its start) and hashed."""

    file: BinaryIO
    size: int
    sha256: str

    def close(self) -> None:
        self.file.close()

    def copy(self) -> Upload:
        """An independent copy (its own file and position), for analysing the same bytes with another model at once."""
        clone = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES)  # noqa: SIM115 - closed by close()
        try:
            self.file.seek(0)
            shutil.copyfileobj(self.file, clone)
            self.file.seek(0)
            clone.seek(0)
        except BaseException:
            clone.close()
            raise
        return Upload(clone, self.size, self.sha256)


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
    async def admit(
        self, models: Sequence[LoadedModel], *, hop: float | None, priority: int
    ) -> AsyncIterator[list[Admission]]:
        """Refuse (``Overloaded``) before the upload is read when a model's queue or the concurrent-analyses limit
        is full; otherwise the upload counts as in flight until the block ends. One admission per model."""
        settings = self.settings
        deadline = time.monotonic() + settings.request_timeout_seconds
        batchers = [self.batchers[model.name] for model in models]
        try:
            self._check_room(batchers)
        except Overloaded:
            if not await self.background.drop_all():  # background analyses give way first
                raise
            self._check_room(batchers)
        self.in_flight += 1
        try:
            yield [
                Admission(model, self._analyser(model, hop), batcher, deadline, priority)
                for model, batcher in zip(models, batchers, strict=True)
            ]
        finally:
            self.in_flight -= 1

    def _analyser(self, model: LoadedModel, hop: float | None) -> TrackAnalyser:
        geometry = model.manifest.geometry
        return TrackAnalyser(geometry, geometry.hop_frames(hop), self.settings.min_audio_seconds)

    def _check_room(self, batchers: list[Batcher]) -> None:
        """Background analyses count against the concurrent-analyses limit: they hold decoders and queue places
        until a request needs them (``admit`` drops them then)."""
        for batcher in batchers:
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

    async def early(self, admissions: Sequence[Admission], upload: Upload) -> list[EarlyAnswer]:
        """Per model, the cached analysis, or one of ``early_answer_patches`` spread patches with the complete
        analysis left to the background (service.engine.early); the complete analyses for a short track, at another
        hop than the default, or with early answers off. Takes ownership of the upload."""
        patches = self.settings.early_answer_patches
        if not patches or any(a.analyser.hop_frames != a.analyser.geometry.patch_frames for a in admissions):
            return [self._whole(*result) for result in await self.analyse(admissions, upload)]
        keys = [self._key(admission, upload) for admission in admissions]
        try:
            cached = [await self.cache.get(key) for key in keys]
        except BaseException:
            upload.close()
            raise
        hits = [analysis for analysis in cached if analysis is not None]
        metrics.CACHE_HITS.labels(backend=self.cache.name).inc(len(hits))
        if len(hits) == len(admissions):
            upload.close()
            return [self._whole(analysis, True) for analysis in hits]
        missing = [i for i, analysis in enumerate(cached) if analysis is None]
        try:
            sampled = await self._sampled([admissions[i] for i in missing], upload)
        except TrackIsShort:
            return [self._whole(*result) for result in await self.analyse(admissions, upload)]
        except BaseException:
            upload.close()
            raise
        rest = [admissions[i] for i in missing]
        self.background.submit(
            "|".join(keys[i] for i in missing),
            lambda: self._complete_in_background(rest, upload, [keys[i] for i in missing]),
            upload.close,
        )
        metrics.EARLY_ANSWERS.inc()
        answers = [self._whole(analysis, True) if analysis is not None else None for analysis in cached]
        for i, (analysis, sample) in zip(missing, sampled, strict=True):
            answers[i] = EarlyAnswer(analysis, False, False, sample.coverage, sample.fallback_reason)
        return answers

    async def _sampled(self, admissions: list[Admission], upload: Upload) -> list[tuple[Analysis, Sample]]:
        """Each model's analysis of the spread patches: one sample per patch geometry, the models inferred at once;
        raises ``TrackIsShort`` and the decoder's and ``refuse_damaged``'s errors. The upload stays the caller's."""
        samples: dict[PatchGeometry, Sample] = {}
        for admission in admissions:
            geometry = admission.analyser.geometry
            if geometry not in samples:
                samples[geometry] = await decode_sample(
                    upload.file,
                    geometry=geometry,
                    decoder=self._decoder,
                    patches=self.settings.early_answer_patches,
                    max_seconds=self.settings.max_audio_seconds,
                    deadline=admission.deadline,
                    priority=admission.priority,
                )
        analyses = await _all(
            infer_sample(
                samples[a.analyser.geometry],
                analyser=a.analyser,
                batcher=a.batcher,
                deadline=a.deadline,
                priority=a.priority,
            )
            for a in admissions
        )
        if self.settings.damaged_audio is DamagedAudio.REFUSE:
            for analysis in analyses:
                refuse_damaged(analysis.decode)  # what the sample already shows (a cut container, damaged regions)
        return [(analysis, samples[a.analyser.geometry]) for analysis, a in zip(analyses, admissions, strict=True)]

    @staticmethod
    def _whole(analysis: Analysis, cached: bool) -> EarlyAnswer:
        return EarlyAnswer(analysis, cached, True, 1.0)

    async def _complete_in_background(self, admissions: list[Admission], upload: Upload, keys: list[str]) -> None:
        deadline = time.monotonic() + self.settings.request_timeout_seconds
        background = [replace(admission, deadline=deadline, priority=BULK) for admission in admissions]
        await self._analyse_keyed(background, upload, keys)

    async def analyse(self, admissions: Sequence[Admission], upload: Upload) -> list[tuple[Analysis, bool]]:
        """``(analysis, cached)`` per admission; takes ownership of the upload."""
        return await self._analyse_keyed(admissions, upload, [self._key(a, upload) for a in admissions])

    async def _analyse_keyed(
        self, admissions: Sequence[Admission], upload: Upload, keys: list[str]
    ) -> list[tuple[Analysis, bool]]:
        """Every model at once, each from its own copy of the upload (the first takes the upload itself); the first
        failure is raised once all have ended, so no analysis is left running unowned."""
        uploads = [upload]
        try:
            for _ in admissions[1:]:
                uploads.append(await asyncio.to_thread(upload.copy))
        except BaseException:
            for each in uploads:
                each.close()
            raise
        return await _all(
            self._analyse_one(admission, each, key)
            for admission, each, key in zip(admissions, uploads, keys, strict=True)
        )

    async def _analyse_one(self, admission: Admission, upload: Upload, key: str) -> tuple[Analysis, bool]:
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


async def _all(awaitables) -> list:
    """Await them together; the first failure is raised once every one has ended (none is left running)."""
    results = await asyncio.gather(*awaitables, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results
