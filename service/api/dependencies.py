"""Typed FastAPI dependencies: what a route may ask for. Each reads the app's ``State`` (``request.app``), none
closes over it, so a route module needs nothing but these and ``APIRouter``.

- ``PROTECTED``: the API key check (``TAGGRAM_API_KEY``), for a router's ``dependencies=``.
- ``Models``: the loaded models; ``pick(name)`` is the request's model (the default for None) or ``UnknownModel``.
- ``AnalyseUpload``: ``await analyse(model, hop) -> (Analysis, cached)`` for the request's upload, through the
  engine's ``AnalysisService`` (admission before the body is read, cache, single-flight, pipeline);
  ``each(models, hop)`` and ``early(models)`` for a ranking over several models' analyses.
- ``Rankings``: per model, its tag taxonomies and heads (``?taxonomy=``, ``?head=``), each a ``Ranking``.
- ``SimilarIndexes``: the similarity indexes, current generation per model.
- ``CatalogAudioUrl``: TAGGRAM_CATALOG_AUDIO_URL, the operator's catalog audio URL template (None: unset).

The model is picked in the route body, not by a dependency: dependencies run before the query parameters are
validated, so ``?model=nope&k=0`` would answer ``unknown_model`` instead of ``invalid_parameter``.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from service.api.state import State
from service.api.upload import read_upload
from service.artefacts.registry import LoadedModel
from service.artefacts.selection import Selection
from service.artefacts.similar.serving import Indexes
from service.engine.analysis import Analysis
from service.engine.analysis_service import AnalysisService, EarlyAnswer
from service.engine.decode_scheduler import BULK, INTERACTIVE
from service.errors import Unauthorized, UnknownModel


def app_state(request: Request) -> State:
    return request.app.state.taggram


AppState = Annotated[State, Depends(app_state)]


async def require_api_key(request: Request, state: AppState) -> None:
    api_key = state.settings.api_key
    if api_key is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), api_key.encode()):
        raise Unauthorized()


PROTECTED = [Depends(require_api_key)]


@dataclass(frozen=True)
class ModelChoice:
    models: dict[str, LoadedModel]
    default: str

    def pick(self, name: str | None) -> LoadedModel:
        model = self.models.get(name or self.default)
        if model is None:
            raise UnknownModel(name, sorted(self.models))
        return model


def model_choice(state: AppState) -> ModelChoice:
    return ModelChoice(state.models, state.settings.default_model)


Models = Annotated[ModelChoice, Depends(model_choice)]


@dataclass(frozen=True)
class UploadAnalysis:
    """The request's upload → its analysis, asked of the engine's analysis service."""

    request: Request
    service: AnalysisService
    max_upload_bytes: int
    priority: int  # a service.engine.decode_scheduler class

    async def __call__(self, model: LoadedModel, hop: float | None) -> tuple[Analysis, bool]:
        (result,) = await self.each([model], hop)
        return result

    async def each(self, models: Sequence[LoadedModel], hop: float | None) -> list[tuple[Analysis, bool]]:
        """The upload's analysis by each model, in the order given."""
        async with self.service.admit(models, hop=hop, priority=self.priority) as admissions:  # refuse before reading
            upload = await read_upload(self.request, self.max_upload_bytes)
            return await self.service.analyse(admissions, upload)

    async def early(self, models: Sequence[LoadedModel]) -> list[EarlyAnswer]:
        """Early answers' analyses (service.engine.early): a sample now, the whole track in the background."""
        async with self.service.admit(models, hop=None, priority=self.priority) as admissions:
            upload = await read_upload(self.request, self.max_upload_bytes)
            return await self.service.early(admissions, upload)


def upload_analysis(request: Request, state: AppState) -> UploadAnalysis:
    priority = INTERACTIVE if request.url.path in state.interactive_endpoints else BULK
    return UploadAnalysis(request, state.analysis, state.settings.max_upload_bytes, priority)


AnalyseUpload = Annotated[UploadAnalysis, Depends(upload_analysis)]


def model_selection(state: AppState) -> Selection:
    return state.selection


Rankings = Annotated[Selection, Depends(model_selection)]


def similar_indexes(state: AppState) -> Indexes:
    return state.indexes


SimilarIndexes = Annotated[Indexes, Depends(similar_indexes)]


def catalog_audio_url(state: AppState) -> str | None:
    return state.settings.catalog_audio_url


CatalogAudioUrl = Annotated[str | None, Depends(catalog_audio_url)]
