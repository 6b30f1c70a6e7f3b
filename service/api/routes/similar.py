"""``POST /similar`` (an upload's nearest catalog tracks) and ``GET /similar/{track_id}`` (a catalog track's)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from service.api.dependencies import PROTECTED, AnalyseUpload, Models, SimilarIndexes
from service.api.openapi import AUDIO_BODY, PROBLEM_RESPONSES, problem_response_doc
from service.api.parameters import HopQuery, ModelQuery, NeighbourCountQuery
from service.api.responses import DecodeReport, decode_report
from service.artefacts.similar.serving import Indexes, LoadedIndex, Neighbour
from service.engine.analysis import mean_over_segments
from service.errors import InvalidParameter, NoIndex, UnknownTrack

DEFAULT_K = 10
RESPONSES = {**PROBLEM_RESPONSES, 503: problem_response_doc("Overloaded, or no index for the model (code no_index)")}

router = APIRouter(dependencies=PROTECTED)


class SimilarTrack(BaseModel):
    track_id: str
    score: float = Field(description="Cosine similarity of the centred, unit-length mean embeddings (1 = same)")
    duplicate: bool = Field(description="score ≥ the index's duplicate_threshold (GET /models)")
    artist_id: str | None
    title: str | None


class SimilarResponse(BaseModel):
    model: str
    neighbours: list[SimilarTrack]
    duplicate: bool = Field(description="Any neighbour is flagged a duplicate")


class MapPosition(BaseModel):
    x: float
    y: float


class SimilarUploadResponse(SimilarResponse, DecodeReport):
    cached: bool
    duration_seconds: float
    position: MapPosition | None = Field(
        description="The upload's place on the catalog map (GET /catalog/map), with "
        "the index's fitted projection; null when the index has no map"
    )


def index_for(indexes: Indexes, model: str) -> LoadedIndex:
    index = indexes.get(model)
    if index is None:
        raise NoIndex(model)
    return index


def answer(model: str, index: LoadedIndex, found: list[Neighbour]) -> dict:
    threshold = index.manifest.duplicate_threshold
    neighbours = [
        SimilarTrack(
            track_id=index.track_ids[n.row],
            score=n.score,
            duplicate=n.score >= threshold,
            artist_id=index.artists[n.row],
            title=index.titles[n.row],
        )
        for n in found
    ]
    return {"model": model, "neighbours": neighbours, "duplicate": any(n.duplicate for n in neighbours)}


@router.post(
    "/similar",
    response_model=SimilarUploadResponse,
    openapi_extra=AUDIO_BODY,
    responses=RESPONSES,
    summary="Catalog tracks most similar to an upload; duplicate flags",
)
async def similar_upload(
    models: Models,
    indexes: SimilarIndexes,
    analyse: AnalyseUpload,
    model: ModelQuery = None,
    hop: HopQuery = None,
    k: NeighbourCountQuery = DEFAULT_K,
    artist_id: str | None = Query(None, description="The upload's artist, for exclude_artist"),
    exclude_artist: bool = Query(False, description="Drop neighbours by artist_id's tracks"),
):
    chosen = models.pick(model)
    if exclude_artist and artist_id is None:
        raise InvalidParameter("exclude_artist=true needs the upload's artist_id")
    index_for(indexes, chosen.name)  # refuse before reading and analysing the upload
    analysis, cached = await analyse(chosen, hop)
    index = index_for(indexes, chosen.name)  # the newest generation, if one was swapped in meanwhile
    query = index.query_vector(mean_over_segments(analysis.embedding))
    found = await asyncio.to_thread(index.neighbours, query, k, None, artist_id if exclude_artist else None)
    position = await asyncio.to_thread(index.position, query)
    return {
        **answer(chosen.name, index, found),
        "cached": cached,
        "duration_seconds": analysis.duration_seconds,
        "position": None if position is None else MapPosition(x=position[0], y=position[1]),
        **decode_report(analysis.decode),
    }


@router.get(
    "/similar/{track_id:path}",
    response_model=SimilarResponse,
    responses={**RESPONSES, 404: problem_response_doc("Unknown track (code unknown_track)")},
    summary="Catalog tracks most similar to a catalog track",
)
async def similar_track(
    models: Models,
    indexes: SimilarIndexes,
    track_id: str = Path(description="A track id of the backfill catalog"),
    model: ModelQuery = None,
    k: NeighbourCountQuery = DEFAULT_K,
    exclude_artist: bool = Query(False, description="Drop neighbours by the track's artist"),
):
    chosen = models.pick(model)
    index = index_for(indexes, chosen.name)
    row = index.rows.get(track_id)
    if row is None:
        raise UnknownTrack(track_id, chosen.name)
    artist = index.artists[row] if exclude_artist else None
    found = await asyncio.to_thread(index.neighbours, index.searcher.vector(row), k, row, artist)
    return answer(chosen.name, index, found)
