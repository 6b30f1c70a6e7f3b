"""Platform subgenres → model tags, and top-k suggestions from a track's mean tag scores.

A subgenre's score is the highest track-level mean probability among the tags it maps to: a track described
by any of them is described by the subgenre.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.engine.analysis import Analysis, mean_over_segments
from service.errors import ModelFileError

SHIPPED_DIR = Path(__file__).parent / "taxonomies"


@dataclass(frozen=True)
class Taxonomy:
    name: str
    path: Path
    subgenres: tuple[str, ...]
    tag_indices: tuple[tuple[int, ...], ...]  # per subgenre, indices into the model's labels

    kind = "tags"  # what it ranks by: the model's tag scores (service.artefacts.selection.Ranking)

    def rank(self, analysis: Analysis, k: int) -> list[tuple[str, float]]:
        """The k best subgenres for the track's mean tag scores, best first."""
        return suggest(self, mean_over_segments(analysis.tags), k)

    def as_dict(self, labels: list[str]) -> dict:
        return {
            "name": self.name,
            "subgenres": {s: [labels[i] for i in idx] for s, idx in zip(self.subgenres, self.tag_indices)},
        }


def taxonomy_path(model: str, override_dir: Path | None) -> Path:
    if override_dir is not None:
        return override_dir / f"{model}.json"
    return SHIPPED_DIR / f"{model}.json"


def parse_taxonomy(document: object, labels: list[str], path: Path) -> Taxonomy:
    """Validate against the model's labels; every problem names the file."""
    if not isinstance(document, dict) or not isinstance(document.get("subgenres"), dict) or not document["subgenres"]:
        raise ModelFileError(f"taxonomy {path}: expected an object with a non-empty 'subgenres' mapping")
    index = {label: i for i, label in enumerate(labels)}
    names, indices = [], []
    for subgenre, tags in document["subgenres"].items():
        if not subgenre.strip() or not isinstance(tags, list) or not tags:
            raise ModelFileError(f"taxonomy {path}: subgenre {subgenre!r} needs a non-empty list of tags")
        unknown = [t for t in tags if t not in index]
        if unknown:
            raise ModelFileError(
                f"taxonomy {path}: subgenre {subgenre!r} maps to tags the model does not have: {unknown}"
            )
        names.append(subgenre)
        indices.append(tuple(index[t] for t in tags))
    return Taxonomy(str(document.get("name", path.stem)), path, tuple(names), tuple(indices))


def load_taxonomy(model: str, labels: list[str], override_dir: Path | None) -> Taxonomy:
    path = taxonomy_path(model, override_dir)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelFileError(f"taxonomy {path} does not exist") from None
    except (OSError, ValueError) as error:
        raise ModelFileError(f"taxonomy {path} cannot be read: {error}") from None
    return parse_taxonomy(document, labels, path)


def subgenre_scores(taxonomy: Taxonomy, mean_scores: np.ndarray) -> np.ndarray:
    """float32 [..., subgenres] from track-level tag scores [..., labels] (one track or a catalog's rows)."""
    return np.stack([mean_scores[..., list(idx)].max(axis=-1) for idx in taxonomy.tag_indices], axis=-1).astype(
        np.float32
    )


def suggest(taxonomy: Taxonomy, mean_scores: np.ndarray, k: int) -> list[tuple[str, float]]:
    """The k best subgenres, best first; ties keep the taxonomy's order."""
    scores = subgenre_scores(taxonomy, mean_scores)
    order = np.argsort(-scores, kind="stable")[:k]
    return [(taxonomy.subgenres[i], float(scores[i])) for i in order]
