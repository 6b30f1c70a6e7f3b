"""The platform taxonomy: the sign-up form's one vocabulary of subgenres, scored from several models (issue #22).

``platform.json`` (shipped beside the models' taxonomies, or in ``TAGGRAM_TAXONOMY_DIR``) lists models in order of
preference. The **vocabulary** is every subgenre their tag taxonomies name (in that order, each once), whatever is
loaded, so the form's choices do not depend on the deployment. Each subgenre is **scored** by the first *loaded*
listed model whose taxonomy names it, from that model's tags exactly as its own taxonomy scores it
(``service.artefacts.taxonomy``); a subgenre no loaded model names is ``unscored``: listed by ``GET /models``,
never suggested. A listed model that scores no subgenre (every one it names is scored by an earlier model) is not
run. Why this list and order: the quality table in docs/signup.md.

In an override folder the file is optional (absent: no platform taxonomy, each model's default as before); the
shipped one always exists. A listed model's taxonomy file must be readable even when the model is not loaded: the
vocabulary comes from it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.artefacts.taxonomy import Taxonomy, subgenre_scores, taxonomy_path
from service.engine.analysis import Analysis, mean_over_segments
from service.errors import ModelFileError

PLATFORM_FILE_STEM = "platform"


@dataclass(frozen=True)
class PlatformTaxonomy:
    """One ranking over several models' analyses; ``parts`` are (model, the subgenres it scores)."""

    name: str
    path: Path
    vocabulary: tuple[str, ...]
    parts: tuple[tuple[str, Taxonomy], ...]

    kind = "tags"  # ranked by the models' tag scores, as a tag taxonomy is

    @property
    def models(self) -> tuple[str, ...]:
        """The models whose analyses ``rank`` needs, in the file's order of preference."""
        return tuple(model for model, _ in self.parts)

    @property
    def unscored(self) -> tuple[str, ...]:
        scored = {subgenre for _, part in self.parts for subgenre in part.subgenres}
        return tuple(subgenre for subgenre in self.vocabulary if subgenre not in scored)

    def scores(self, analyses: Mapping[str, Analysis]) -> dict[str, float]:
        """Every scored subgenre's score, in the vocabulary's order."""
        found: dict[str, float] = {}
        for model, part in self.parts:
            values = subgenre_scores(part, mean_over_segments(analyses[model].tags))
            found.update(zip(part.subgenres, values.tolist(), strict=True))
        return {subgenre: found[subgenre] for subgenre in self.vocabulary if subgenre in found}

    def rank(self, analyses: Mapping[str, Analysis], k: int) -> list[tuple[str, float]]:
        """The k best scored subgenres, best first; ties keep the vocabulary's order."""
        scores = self.scores(analyses)
        names = list(scores)
        values = np.array([scores[name] for name in names], np.float32)
        order = np.argsort(-values, kind="stable")[:k]
        return [(names[i], float(values[i])) for i in order]

    def info(self, is_default: bool) -> dict:
        """GET /models' ``platform_taxonomy``."""
        return {
            "name": self.name,
            "models": list(self.models),
            "subgenres": list(self.vocabulary),
            "unscored": list(self.unscored),
            "default": is_default,
        }


def platform_parts(
    preference: list[str], named: Mapping[str, tuple[str, ...]], loaded: Mapping[str, Taxonomy]
) -> tuple[tuple[str, ...], tuple[tuple[str, Taxonomy], ...]]:
    """(vocabulary, parts) from the models in order of preference, the subgenres each model's taxonomy names and
    the loaded models' parsed taxonomies. Pure: the rule of the module docstring."""
    vocabulary = tuple(dict.fromkeys(subgenre for model in preference for subgenre in named[model]))
    taken: set[str] = set()
    parts = []
    for model in preference:
        taxonomy = loaded.get(model)
        if taxonomy is None:
            continue
        picked = [i for i, subgenre in enumerate(taxonomy.subgenres) if subgenre not in taken]
        if not picked:
            continue
        taken.update(taxonomy.subgenres[i] for i in picked)
        part = Taxonomy(
            taxonomy.name,
            taxonomy.path,
            tuple(taxonomy.subgenres[i] for i in picked),
            tuple(taxonomy.tag_indices[i] for i in picked),
        )
        parts.append((model, part))
    return vocabulary, tuple(parts)


def _read(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ModelFileError(f"taxonomy {path} cannot be read: {error}") from None


def _preference(document: object, path: Path) -> tuple[str, list[str]]:
    if not isinstance(document, dict):
        raise ModelFileError(f"platform taxonomy {path}: expected an object with 'name' and 'models'")
    name, models = document.get("name", PLATFORM_FILE_STEM), document.get("models")
    if not isinstance(name, str) or not name.strip():
        raise ModelFileError(f"platform taxonomy {path}: 'name' must be a non-empty string")
    if (
        not isinstance(models, list)
        or not models
        or not all(isinstance(m, str) and m for m in models)
        or len(set(models)) != len(models)
    ):
        raise ModelFileError(f"platform taxonomy {path}: 'models' must be a non-empty list of distinct model names")
    return name, models


def _named_subgenres(model: str, taxonomy_dir: Path | None) -> tuple[str, ...]:
    path = taxonomy_path(model, taxonomy_dir)
    document = _read(path)
    if not isinstance(document, dict) or not isinstance(document.get("subgenres"), dict) or not document["subgenres"]:
        raise ModelFileError(f"taxonomy {path}: expected an object with a non-empty 'subgenres' mapping")
    return tuple(document["subgenres"])


def load_platform(loaded: Mapping[str, Taxonomy], taxonomy_dir: Path | None) -> PlatformTaxonomy | None:
    """The platform taxonomy over the loaded models' taxonomies (``loaded``: model → its parsed taxonomy); None when
    an override folder has no platform file or no listed model is loaded. A bad file stops the start."""
    path = taxonomy_path(PLATFORM_FILE_STEM, taxonomy_dir)
    if taxonomy_dir is not None and not path.exists():
        return None
    name, preference = _preference(_read(path), path)
    named = {
        model: loaded[model].subgenres if model in loaded else _named_subgenres(model, taxonomy_dir)
        for model in preference
    }
    vocabulary, parts = platform_parts(preference, named, loaded)
    if not parts:
        return None
    return PlatformTaxonomy(name, path, vocabulary, parts)
