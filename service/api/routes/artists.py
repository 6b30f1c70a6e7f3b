"""``GET /artists/{artist_id}``: an artist's tracks, pooled subgenre scores and nearest artists, from the index."""

from __future__ import annotations

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from service.api.dependencies import PROTECTED, Models, SimilarIndexes
from service.api.openapi import PROBLEM_RESPONSES, problem_response_doc
from service.api.parameters import ModelQuery
from service.api.routes.similar import index_for
from service.errors import UnknownArtist

router = APIRouter(dependencies=PROTECTED)


class ArtistTrack(BaseModel):
    track_id: str
    title: str | None


class PooledSubgenre(BaseModel):
    subgenre: str
    score: float = Field(description="Mean over the artist's tracks of the track's subgenre score")
    spread: float = Field(description="Standard deviation of those scores over the tracks (0: they agree)")


class NearestArtist(BaseModel):
    artist_id: str
    score: float = Field(description="Cosine of the artists' pooled (mean) normalised track vectors")


class ArtistResponse(BaseModel):
    model: str
    artist_id: str
    tracks: list[ArtistTrack]
    taxonomy: str
    subgenres: list[PooledSubgenre] = Field(description="Best pooled score first")
    nearest_artists: list[NearestArtist] = Field(description="Best first, the artist itself excluded")


@router.get(
    "/artists/{artist_id:path}",
    response_model=ArtistResponse,
    responses={
        **PROBLEM_RESPONSES,
        404: problem_response_doc("Unknown artist (code unknown_artist)"),
        503: problem_response_doc("No index for the model (code no_index)"),
    },
    summary="An artist's pooled subgenres and nearest artists",
)
async def artist(
    models: Models,
    indexes: SimilarIndexes,
    artist_id: str = Path(description="An artist id of the index (its artists CSV or backfill column)"),
    model: ModelQuery = None,
):
    chosen = models.pick(model)
    index = index_for(indexes, chosen.name)
    entry = index.artist_table.entry(artist_id) if index.artist_table is not None else None
    if entry is None:
        raise UnknownArtist(artist_id, chosen.name)
    return ArtistResponse(
        model=chosen.name,
        artist_id=artist_id,
        tracks=[ArtistTrack(track_id=index.track_ids[r], title=index.titles[r]) for r in entry.rows],
        taxonomy=index.artist_table.taxonomy,
        subgenres=[PooledSubgenre(subgenre=s, score=m, spread=d) for s, m, d in entry.subgenres],
        nearest_artists=[NearestArtist(artist_id=a, score=s) for a, s in entry.nearest],
    )
