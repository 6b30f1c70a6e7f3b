"""Classification heads (``taggram train-head``) served on a base model's per-segment embeddings.

A head is ``TAGGRAM_HEADS_DIR/<name>.onnx`` + ``<name>.json``. At start-up every manifest is validated: its base
model must be loaded and be the very graph the head was trained on (same onnx sha256), the head's own .onnx must
match its sha256, and the graph must take ``[batch, embedding_dim]`` and give one score per class. Any failure
stops the start with one ``ModelFileError`` naming the file (exit 2), as for models and taxonomies.

Heads run on the cached ``Analysis``'s per-segment embeddings, never on audio: a cached analysis answers any head
exactly as an uncached one, and adding or replacing a head needs no re-inference. Track-level scores follow the
manifest's pooling: ``mean_embedding`` (the head on the mean segment embedding, which is what it was trained on)
or ``mean_scores`` (the mean of its per-segment scores).

A head ranks its classes like a tag taxonomy ranks subgenres (``rank``): ``?taxonomy=`` chooses among both
(``service.artefacts.selection``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.artefacts.manifest import sha256_file
from service.artefacts.tag_calibration import SUFFIX as CALIBRATED_SUFFIX
from service.engine.analysis import Analysis
from service.errors import ModelFileError

log = logging.getLogger(__name__)

SUPPORTED_FORMAT = 1
POOLINGS = ("mean_embedding", "mean_scores")
HEAD_THREADS = 1  # a head is a few small matrix products per request: more threads only add hand-off cost


class BaseModelRef(BaseModel):
    name: str
    onnx_sha256: str = Field(pattern="^[0-9a-f]{64}$")
    embedding_output: str
    embedding_dim: int = Field(gt=0)


class HeadOnnx(BaseModel):
    file: str
    sha256: str = Field(pattern="^[0-9a-f]{64}$")
    opset: int
    input: str
    output: str


class HeadManifest(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    format: int
    name: str = Field(pattern="^[a-z0-9][a-z0-9._-]*$")
    classes: list[str] = Field(min_length=1)
    hierarchy: dict[str, list[str]] = {}
    base_model: BaseModelRef
    pooling: str
    metrics: dict = {}
    onnx: HeadOnnx


@dataclass
class LoadedHead:
    manifest: HeadManifest
    session: object  # onnxruntime.InferenceSession

    @property
    def name(self) -> str:
        return self.manifest.name

    def segment_scores(self, embeddings: np.ndarray) -> np.ndarray:
        """[segments, dim] → [segments, classes] probabilities (float32)."""
        m = self.manifest.onnx
        return self.session.run([m.output], {m.input: np.ascontiguousarray(embeddings, np.float32)})[0]

    def track_scores(self, embeddings: np.ndarray, segment_scores: np.ndarray | None = None) -> np.ndarray:
        """Track-level probabilities under the manifest's pooling (computed in float64, returned as float32)."""
        if self.manifest.pooling == "mean_embedding":
            pooled = embeddings.astype(np.float64).mean(axis=0, keepdims=True).astype(np.float32)
            return self.segment_scores(pooled)[0]
        scores = self.segment_scores(embeddings) if segment_scores is None else segment_scores
        return scores.astype(np.float64).mean(axis=0).astype(np.float32)

    kind = "head"  # what it ranks by: a trained classifier's probabilities (service.artefacts.selection.Ranking)

    def rank(self, analysis: Analysis, k: int) -> list[tuple[str, float]]:
        """The k most probable classes, best first; ties keep the manifest's class order."""
        scores = self.track_scores(analysis.embedding)
        order = np.argsort(-scores, kind="stable")[:k]
        return [(self.manifest.classes[i], float(scores[i])) for i in order]

    def info(self, default: bool) -> dict:
        m = self.manifest
        cv = m.metrics.get("cv", {})
        return {
            "name": m.name,
            "classes": m.classes,
            "hierarchy": m.hierarchy,
            "pooling": m.pooling,
            "metrics": {
                "macro": cv.get("macro"),
                "per_class": cv.get("per_class"),
                "grouped_by": m.metrics.get("grouped_by"),
                "folds": m.metrics.get("folds"),
            },
            "default": default,
            "onnx_sha256": m.onnx.sha256,
        }


def _fail(path: Path, reason: str) -> ModelFileError:
    return ModelFileError(f"head {path}: {reason}")


def read_head_manifest(path: Path) -> HeadManifest:
    import json

    try:
        manifest = HeadManifest.model_validate(json.loads(path.read_text()))
    except (OSError, ValueError, ValidationError) as error:
        raise _fail(path, f"invalid manifest: {' '.join(str(error).splitlines()[:3])}") from None
    if manifest.format != SUPPORTED_FORMAT:
        raise _fail(path, f"format {manifest.format} is not supported (expected {SUPPORTED_FORMAT})")
    if path.stem != manifest.name:
        raise _fail(path, f"names head {manifest.name!r}, not {path.stem!r}")
    if manifest.pooling not in POOLINGS:
        raise _fail(path, f"pooling {manifest.pooling!r} is not one of {POOLINGS}")
    return manifest


def load_head(path: Path, models: dict) -> LoadedHead:
    """The head at ``path`` (its .json), checked against the loaded model it was trained on."""
    manifest = read_head_manifest(path)
    base = manifest.base_model
    model = models.get(base.name)
    if model is None:
        raise _fail(path, f"base model {base.name!r} is not loaded (loaded: {sorted(models)})")
    return open_head(path, manifest, model.manifest.onnx.sha256, model.manifest.embedding_dim)


def open_head(path: Path, manifest: HeadManifest, onnx_sha256: str, embedding_dim: int) -> LoadedHead:
    """The head's graph, once its base is the graph (``onnx_sha256``) whose ``embedding_dim`` embeddings it will
    score: the service's loaded model, or the model a backfill ran (``taggram index build --label-head``)."""
    import onnxruntime as ort

    base = manifest.base_model
    if onnx_sha256 != base.onnx_sha256:
        raise _fail(
            path,
            f"trained on {base.name} graph {base.onnx_sha256[:12]}…, but the loaded one is "
            f"{onnx_sha256[:12]}…: retrain the head on this model's embeddings",
        )
    if base.embedding_output != "embedding" or base.embedding_dim != embedding_dim:
        raise _fail(
            path,
            f"expects {base.embedding_output}[{base.embedding_dim}], the model gives embedding[{embedding_dim}]",
        )
    onnx_file = path.parent / manifest.onnx.file
    try:
        actual = sha256_file(onnx_file)
    except OSError as error:
        raise _fail(path, f"graph {onnx_file} cannot be read: {error.strerror or error}") from None
    if actual != manifest.onnx.sha256:
        raise _fail(
            path, f"graph {onnx_file} is corrupt or replaced: sha256 {actual[:12]}… != {manifest.onnx.sha256[:12]}…"
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = HEAD_THREADS
    options.inter_op_num_threads = HEAD_THREADS
    try:
        session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
        head = LoadedHead(manifest, session)
        probe = head.segment_scores(np.zeros((1, base.embedding_dim), np.float32))
    except Exception as error:  # noqa: BLE001 - ONNX Runtime raises several types for a bad graph
        raise _fail(path, f"graph {onnx_file} does not run on [1, {base.embedding_dim}] embeddings: {error}") from None
    if probe.shape != (1, len(manifest.classes)):
        raise _fail(path, f"graph gives {probe.shape[1:]} scores for {len(manifest.classes)} classes")
    return head


def load_heads(heads_dir: Path | None, models: dict) -> dict[str, dict[str, LoadedHead]]:
    """Every head in the folder (sorted by file name), by base model: {model: {head name: head}}."""
    by_model: dict[str, dict[str, LoadedHead]] = {name: {} for name in models}
    if heads_dir is None:
        return by_model
    if not heads_dir.is_dir():
        raise ModelFileError(f"heads folder {heads_dir} does not exist")
    for path in sorted(heads_dir.glob("*.json")):
        head = load_head(path, models)
        model = models[head.manifest.base_model.name]
        if head.name in (model.taxonomy.name, model.taxonomy.name + CALIBRATED_SUFFIX):
            raise _fail(path, f"has the name of {model.name}'s tag taxonomy; rename the head")
        by_model[model.name][head.name] = head
        log.info(
            "loaded head %s on %s (%d classes, pooling %s)",
            head.name,
            model.name,
            len(head.manifest.classes),
            head.manifest.pooling,
        )
    return by_model
