"""Response bodies (the OpenAPI schema) and how each is made from one cached Analysis."""

from __future__ import annotations

from pydantic import BaseModel, Field

from service.pool import Analysis, mean_over_segments
from service.taxonomy import Taxonomy, suggest


class TagSegment(BaseModel):
    start: float = Field(description="Segment start, seconds from the start of the track")
    end: float = Field(description="Segment end, seconds (clipped to the track's duration)")
    scores: list[float] = Field(description="Tag probabilities, in the order of `labels`")


class TaggramResponse(BaseModel):
    model: str
    labels: list[str]
    patch_seconds: float = Field(description="Audio each segment stands for (187 STFT frames)")
    hop_seconds: float = Field(description="Seconds between segment starts")
    duration_seconds: float
    segments: list[TagSegment]
    mean: list[float] = Field(description="Mean of the segments' scores: the track-level tag probabilities")
    cached: bool


class EmbeddingSegment(BaseModel):
    start: float
    end: float
    embedding: list[float]


class EmbedResponse(BaseModel):
    model: str
    dim: int
    embedding: list[float] = Field(description="Mean over segments of the per-segment embeddings")
    duration_seconds: float
    cached: bool
    segments: list[EmbeddingSegment] | None = Field(None, description="Per-segment embeddings, with ?segments=true")


class Suggestion(BaseModel):
    subgenre: str
    score: float = Field(description="Highest track-level mean probability among the subgenre's tags")


class SuggestResponse(BaseModel):
    model: str
    taxonomy: str
    suggestions: list[Suggestion]
    duration_seconds: float
    cached: bool


class ModelInfo(BaseModel):
    name: str
    manifest: dict
    taxonomy: dict
    provider: str
    index: dict | None = Field(None, description="The similarity index loaded for this model (null: none)")


class ModelsResponse(BaseModel):
    default: str
    models: list[ModelInfo]


def taggram(model: str, labels: list[str], analysis: Analysis, cached: bool) -> TaggramResponse:
    segments = [
        TagSegment(start=start, end=end, scores=row)
        for (start, end), row in zip(analysis.segment_bounds(), analysis.tags.tolist())
    ]
    return TaggramResponse(
        model=model,
        labels=labels,
        patch_seconds=analysis.patch_samples / analysis.sample_rate,
        hop_seconds=analysis.hop_samples / analysis.sample_rate,
        duration_seconds=analysis.duration_seconds,
        segments=segments,
        mean=mean_over_segments(analysis.tags).tolist(),
        cached=cached,
    )


def embed(model: str, analysis: Analysis, cached: bool, with_segments: bool) -> EmbedResponse:
    segments = None
    if with_segments:
        segments = [
            EmbeddingSegment(start=start, end=end, embedding=row)
            for (start, end), row in zip(analysis.segment_bounds(), analysis.embedding.tolist())
        ]
    return EmbedResponse(
        model=model,
        dim=int(analysis.embedding.shape[1]),
        embedding=mean_over_segments(analysis.embedding).tolist(),
        duration_seconds=analysis.duration_seconds,
        cached=cached,
        segments=segments,
    )


def suggestions(model: str, taxonomy: Taxonomy, analysis: Analysis, cached: bool, k: int) -> SuggestResponse:
    ranked = suggest(taxonomy, mean_over_segments(analysis.tags), k)
    return SuggestResponse(
        model=model,
        taxonomy=taxonomy.name,
        suggestions=[Suggestion(subgenre=name, score=score) for name, score in ranked],
        duration_seconds=analysis.duration_seconds,
        cached=cached,
    )
