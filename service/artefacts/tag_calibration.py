"""A tag taxonomy ranked by catalog percentiles instead of raw probabilities (head_training/tag_calibration.py).

``<taxonomies folder>/<model>.calibration.json``, when present, adds the tag taxonomy ``<name>-calibrated`` to the
model: each tag's mean score becomes its percentile over the reference collection (linear interpolation between
the stored quantiles), and a subgenre's score is the highest percentile among its tags. Raw probabilities carry the
base model's training priors (on MSD tags, "rock" and "electronic" run high on everything); percentiles do not.
The file is checked at start-up against the model (labels and onnx sha256): a mismatch stops the start.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.artefacts.taxonomy import SHIPPED_DIR, Taxonomy, suggest
from service.engine.analysis import Analysis, mean_over_segments
from service.errors import ModelFileError

SUPPORTED_FORMAT = 1
SUFFIX = "-calibrated"


@dataclass(frozen=True)
class CalibratedTaxonomy:
    taxonomy: Taxonomy
    quantiles: np.ndarray  # float64 [labels, points], each row non-decreasing
    path: Path
    reference: dict

    kind = "tags"  # what it ranks by: the tags' catalog percentiles (service.artefacts.selection.Ranking)

    @property
    def name(self) -> str:
        return self.taxonomy.name + SUFFIX

    def rank(self, analysis: Analysis, k: int) -> list[tuple[str, float]]:
        """The k best subgenres for the track's mean tag scores as catalog percentiles, best first."""
        return self.suggest(mean_over_segments(analysis.tags), k)

    def percentiles(self, mean_scores: np.ndarray) -> np.ndarray:
        levels = np.linspace(0.0, 1.0, self.quantiles.shape[1])
        return np.array([np.interp(float(s), q, levels) for s, q in zip(mean_scores, self.quantiles)])

    def suggest(self, mean_scores: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The tag taxonomy's ranking (``taxonomy.suggest``) over the tags' percentiles instead of their scores."""
        return suggest(self.taxonomy, self.percentiles(mean_scores), k)


def calibration_path(model: str, override_dir: Path | None) -> Path:
    return (override_dir or SHIPPED_DIR) / f"{model}.calibration.json"


def load_calibration(model, override_dir: Path | None) -> CalibratedTaxonomy | None:
    """The model's calibrated tag taxonomy, or None when no calibration file exists."""
    path = calibration_path(model.name, override_dir)
    if not path.exists():
        return None
    try:
        document = json.loads(path.read_text())
        quantiles = np.asarray(document["quantiles"], np.float64)
        labels, sha = document["labels"], document["onnx_sha256"]
        fmt = document["format"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ModelFileError(f"tag calibration {path} cannot be read: {error}") from None
    if fmt != SUPPORTED_FORMAT:
        raise ModelFileError(f"tag calibration {path}: format {fmt} is not supported")
    if labels != model.manifest.labels or sha != model.manifest.onnx.sha256:
        raise ModelFileError(
            f"tag calibration {path} was made with another {model.name} graph or label set: "
            "rebuild it from a backfill of this model"
        )
    if quantiles.shape != (len(labels), quantiles.shape[1]) or quantiles.shape[1] < 2 or (np.diff(quantiles) < 0).any():
        raise ModelFileError(f"tag calibration {path}: quantiles must be [labels, points] and non-decreasing")
    return CalibratedTaxonomy(model.taxonomy, quantiles, path, document.get("reference", {}))
