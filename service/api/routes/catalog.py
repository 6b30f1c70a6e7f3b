"""``GET /catalog/map``: every indexed track's place on the catalog map, its artist and label (docs/catalog.md)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.api.catalog_payload import COMPACT_MEDIA_TYPE, MapBodyCache, encode, points_document
from service.api.dependencies import PROTECTED, CatalogAudioUrl, Models, SimilarIndexes
from service.api.openapi import PROBLEM_RESPONSES, problem_response_doc
from service.api.parameters import ModelQuery
from service.api.routes.similar import index_for
from service.errors import NoCatalogMap

router = APIRouter(dependencies=PROTECTED)
BODIES = MapBodyCache()


def wants_points(request: Request) -> bool:
    """``Accept: application/json`` asks for one object per point; anything else gets the compact columns."""
    return any(
        part.split(";")[0].strip() == "application/json" for part in request.headers.get("accept", "").split(",")
    )


@router.get(
    "/catalog/map",
    response_class=Response,
    summary="Every indexed track's position on the catalog map",
    responses={
        **PROBLEM_RESPONSES,
        200: {
            "description": "Compact columns (default) or, on Accept: application/json, points",
            "content": {COMPACT_MEDIA_TYPE: {}, "application/json": {}},
        },
        503: problem_response_doc("No index, or an index built without a map (code no_index, no_map)"),
    },
)
async def catalog_map(
    request: Request, models: Models, indexes: SimilarIndexes, audio: CatalogAudioUrl, model: ModelQuery = None
):
    chosen = models.pick(model)
    index = index_for(indexes, chosen.name)
    if index.catalog_map is None:
        raise NoCatalogMap(chosen.name)
    if wants_points(request):
        body = await asyncio.to_thread(lambda: encode(points_document(chosen.name, index, audio)))
        return Response(body, media_type="application/json")
    bodies = await asyncio.to_thread(BODIES.get, chosen.name, index, audio)
    headers = {"Vary": "Accept, Accept-Encoding", "Cache-Control": "no-cache"}
    if "gzip" in request.headers.get("accept-encoding", ""):
        return Response(
            bodies.compact_gzip, media_type=COMPACT_MEDIA_TYPE, headers={**headers, "Content-Encoding": "gzip"}
        )
    return Response(bodies.compact, media_type=COMPACT_MEDIA_TYPE, headers=headers)
