"""``GET /models``: the loaded models, their taxonomies, heads and similarity indexes."""

from __future__ import annotations

from fastapi import APIRouter

from service.api import responses as respond
from service.api.dependencies import PROTECTED, Models, Rankings, SimilarIndexes

router = APIRouter(dependencies=PROTECTED)


@router.get("/models", response_model=respond.ModelsResponse, summary="Loaded models")
async def list_models(models: Models, selection: Rankings, indexes: SimilarIndexes):
    return respond.ModelsResponse(
        default=models.default,
        models=[
            respond.ModelInfo(
                name=m.name,
                manifest=m.manifest.model_dump(),
                provider=m.runner.provider,
                runtime=m.runner.runtime,
                precision=m.runner.precision,
                taxonomy=m.taxonomy.as_dict(m.manifest.labels),
                **selection.model_info(m.name),
                index=(index.describe() if (index := indexes.get(m.name)) else None),
            )
            for m in models.models.values()
        ],
        platform_taxonomy=selection.platform_info(models.default),
    )
