"""Response bodies (the OpenAPI schema) and how each is made from one cached Analysis (and, for suggestions, the
ranking the request chose: ``service.artefacts.selection``)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from service.artefacts.heads import LoadedHead
from service.artefacts.selection import Suggester
from service.decode import DecodeFacts
from service.engine.analysis import Analysis, mean_over_segments
from service.engine.representative import representative


class DecodeWarningOut(BaseModel):
    code: str = Field(
        description="Stable code: audio_damaged (the decoder met errors) or audio_truncated "
        "(much shorter than declared, or the container shows the file was cut)"
    )
    detail: str


class DecodeInfo(BaseModel):
    decoder: str = Field(description="ffmpeg, or libsndfile for files FFmpeg cannot read")
    codec: str
    duration_seconds: float = Field(description="Decoded duration")
    declared_duration_seconds: float | None = Field(description="Duration the file declares, when it declares one")


class DecodeReport(BaseModel):
    """Fields every audio response carries: how the upload decoded, and what the analysis may be missing."""

    warnings: list[DecodeWarningOut] = Field(description="Empty when the audio decoded cleanly")
    decode: DecodeInfo


def decode_report(facts: DecodeFacts) -> dict:
    return {
        "warnings": [DecodeWarningOut(code=w.code, detail=w.detail) for w in facts.warnings],
        "decode": DecodeInfo(
            decoder=facts.decoder,
            codec=facts.codec,
            duration_seconds=facts.duration_seconds,
            declared_duration_seconds=facts.declared_duration_seconds,
        ),
    }


class TagSegment(BaseModel):
    start: float = Field(description="Segment start, seconds from the start of the track")
    end: float = Field(description="Segment end, seconds (clipped to the track's duration)")
    scores: list[float] = Field(description="Tag probabilities, in the order of `labels`")


class HeadScores(BaseModel):
    name: str
    classes: list[str]
    segments: list[list[float]] = Field(description="Per segment, one probability per class (order of `classes`)")
    mean: list[float] = Field(description="Track-level probabilities, pooled as the head's manifest says")


class Representative(BaseModel):
    start_seconds: float
    end_seconds: float = Field(description="At most the track's duration")


class TaggramResponse(DecodeReport):
    model: str
    labels: list[str]
    patch_seconds: float = Field(description="Audio each segment stands for (187 STFT frames)")
    hop_seconds: float = Field(description="Seconds between segment starts")
    duration_seconds: float
    segments: list[TagSegment]
    mean: list[float] = Field(description="Mean of the segments' scores: the track-level tag probabilities")
    representative: Representative = Field(
        description="The ~30 s window that stands for the whole track: the one "
        "whose mean embedding is closest to the track's (docs/catalog.md)"
    )
    cached: bool
    head: HeadScores | None = Field(None, description="With ?head=NAME: the head's probabilities per segment")


class EmbeddingSegment(BaseModel):
    start: float
    end: float
    embedding: list[float]


class EmbedResponse(DecodeReport):
    model: str
    dim: int
    embedding: list[float] = Field(description="Mean over segments of the per-segment embeddings")
    duration_seconds: float
    cached: bool
    segments: list[EmbeddingSegment] | None = Field(None, description="Per-segment embeddings, with ?segments=true")


class Suggestion(BaseModel):
    subgenre: str
    score: float = Field(
        description="kind 'head': the head's calibrated probability; kind 'tags': the highest "
        "track-level mean probability among the subgenre's tags"
    )


class SuggestResponse(DecodeReport):
    model: str = Field(description="The (first) model whose analysis the ranking used; `models` lists them all")
    models: list[str] = Field(
        description="Every model whose analysis the ranking used: one, or several for the platform taxonomy"
    )
    taxonomy: str
    kind: str = Field("tags", description="'head' (a trained classification head) or 'tags' (a tag taxonomy)")
    suggestions: list[Suggestion]
    duration_seconds: float
    cached: bool
    complete: bool = Field(
        True,
        description="false: an early answer, from `coverage` of the track (issue #22); "
        "?complete=true waits for the whole track",
    )
    coverage: float = Field(1.0, description="Seconds of audio analysed ÷ the track's duration")
    unsampled_integrity: str | None = Field(
        None,
        description="'unknown' on an early answer: the decode warnings cover the sampled parts and what the "
        "container shows; the complete analysis's warnings come with the next request for the same "
        "file (cached)",
    )
    sampling: str | None = Field(None, description="Why the sample was decoded in order instead of by seeking")


class ModelInfo(BaseModel):
    name: str
    manifest: dict
    taxonomy: dict
    provider: str
    runtime: str = Field(
        description="Inference runtime this model serves with: onnxruntime or openvino (docs/precision.md)"
    )
    precision: str = Field(description="Inference precision this model serves with: fp32 or bf16 (docs/precision.md)")
    heads: list[dict] = Field([], description="Classification heads on this model: name, classes, CV metrics, default")
    taxonomies: list[str] = Field([], description="Tag taxonomies of this model (?taxonomy= also accepts head names)")
    default_taxonomy: str | None = None
    index: dict | None = Field(None, description="The similarity index loaded for this model (null: none)")


class PlatformTaxonomyInfo(BaseModel):
    name: str = Field(description="Its ?taxonomy= name on /suggest-subgenres")
    models: list[str] = Field(description="The models it runs, each scoring the subgenres no earlier one names")
    subgenres: list[str] = Field(description="The form's vocabulary: the same whatever models are loaded")
    unscored: list[str] = Field(description="Subgenres no loaded model names: never suggested")
    default: bool = Field(description="Whether /suggest-subgenres without ?model= and ?taxonomy= ranks with it")


class ModelsResponse(BaseModel):
    default: str
    models: list[ModelInfo]
    platform_taxonomy: PlatformTaxonomyInfo | None = Field(
        None, description="The platform taxonomy (docs/signup.md); null when none is configured or loadable"
    )


def representative_window(analysis: Analysis) -> Representative:
    start, end = representative(analysis)
    return Representative(start_seconds=start, end_seconds=end)


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
        representative=representative_window(analysis),
        cached=cached,
        **decode_report(analysis.decode),
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
        **decode_report(analysis.decode),
    )


def suggestions(suggester: Suggester, analyses: list[Analysis], cached: bool, k: int, **early) -> SuggestResponse:
    """The k best of any suggester (a model's tag taxonomy, calibrated variant or head; the platform taxonomy over
    several models), best first; ``analyses`` in ``suggester.models``' order; ``early``: the early answer's fields
    (complete, coverage, unsampled_integrity, sampling). Duration and decode facts are the first model's, with every
    model's warnings (one analysis may be complete and cached while another is a sample)."""
    primary = analyses[0]
    report = decode_report(primary.decode)
    for analysis in analyses[1:]:
        report["warnings"] += [w for w in decode_report(analysis.decode)["warnings"] if w not in report["warnings"]]
    return SuggestResponse(
        model=suggester.models[0],
        models=list(suggester.models),
        taxonomy=suggester.name,
        kind=suggester.kind,
        suggestions=[
            Suggestion(subgenre=name, score=score)
            for name, score in suggester.rank(dict(zip(suggester.models, analyses, strict=True)), k)
        ],
        duration_seconds=primary.duration_seconds,
        cached=cached,
        **report,
        **early,
    )


def head_scores(head: LoadedHead, analysis: Analysis) -> HeadScores:
    """?head=NAME on /taggram: the head's probabilities per segment and pooled."""
    segments = head.segment_scores(analysis.embedding)
    return HeadScores(
        name=head.name,
        classes=head.manifest.classes,
        segments=segments.tolist(),
        mean=head.track_scores(analysis.embedding, segments).tolist(),
    )
