"""The audio routes: ``POST /taggram``, ``/embed`` and ``/suggest-subgenres``, each served from one analysis."""

from __future__ import annotations

from fastapi import APIRouter, Query

from service.api import responses as respond
from service.api.dependencies import PROTECTED, AnalyseUpload, Models, Rankings
from service.api.openapi import AUDIO_BODY, PROBLEM_RESPONSES
from service.api.parameters import HopQuery, ModelQuery, SubgenreCountQuery

router = APIRouter(dependencies=PROTECTED)


@router.post(
    "/taggram",
    response_model=respond.TaggramResponse,
    openapi_extra=AUDIO_BODY,
    responses=PROBLEM_RESPONSES,
    summary="Tag probabilities over time",
)
async def taggram(
    models: Models,
    selection: Rankings,
    analyse: AnalyseUpload,
    model: ModelQuery = None,
    hop: HopQuery = None,
    head: str | None = Query(None, description="Also return this head's scores per segment"),
):
    chosen = models.pick(model)
    picked = selection.head(chosen.name, head) if head else None  # refused before the upload is read
    analysis, cached = await analyse(chosen, hop)
    body = respond.taggram(chosen.name, chosen.manifest.labels, analysis, cached)
    if picked is not None:
        body.head = respond.head_scores(picked, analysis)
    return body


@router.post(
    "/embed",
    response_model=respond.EmbedResponse,
    response_model_exclude_none=True,
    openapi_extra=AUDIO_BODY,
    responses=PROBLEM_RESPONSES,
    summary="Track embedding (mean over segments)",
)
async def embed(
    models: Models,
    analyse: AnalyseUpload,
    model: ModelQuery = None,
    hop: HopQuery = None,
    segments: bool = Query(False, description="Also return per-segment embeddings"),
):
    chosen = models.pick(model)
    analysis, cached = await analyse(chosen, hop)
    return respond.embed(chosen.name, analysis, cached, segments)


@router.post(
    "/suggest-subgenres",
    response_model=respond.SuggestResponse,
    openapi_extra=AUDIO_BODY,
    responses=PROBLEM_RESPONSES,
    summary="Top-k platform subgenres",
)
async def suggest_subgenres(
    models: Models,
    selection: Rankings,
    analyse: AnalyseUpload,
    model: ModelQuery = None,
    hop: HopQuery = None,
    k: SubgenreCountQuery = 5,
    taxonomy: str | None = Query(
        None,
        description="A head or tag taxonomy of the model, or 'platform' (GET /models); default: the platform "
        "taxonomy when no model is named and TAGGRAM_DEFAULT_TAXONOMIES names none for the default model, else the "
        "model's default",
    ),
    complete: bool = Query(
        False, description="Wait for the whole track's analysis instead of answering early from a spread sample"
    ),
):
    chosen = models.pick(model)
    suggester = selection.suggester(chosen.name, taxonomy, model_named=model is not None)  # refused before reading
    needed = [models.pick(name) for name in suggester.models]
    if complete or hop is not None:
        results = await analyse.each(needed, hop)
        return respond.suggestions(suggester, [a for a, _ in results], all(c for _, c in results), k)
    answers = await analyse.early(needed)
    early = {"complete": all(answer.complete for answer in answers)}
    early["coverage"] = round(min(answer.coverage for answer in answers), 4)
    if not early["complete"]:
        early["unsampled_integrity"] = "unknown"
        early["sampling"] = next((answer.sampling for answer in answers if answer.sampling), None)
    return respond.suggestions(
        suggester, [answer.analysis for answer in answers], all(answer.cached for answer in answers), k, **early
    )
