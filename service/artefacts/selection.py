"""What ``?taxonomy=`` and ``?head=`` choose among, per model: every choice is a :class:`Ranking`.

A model's rankings are its tag taxonomy (``service.artefacts.taxonomy``), the taxonomy's calibrated variant when
a calibration file exists (``service.artefacts.tag_calibration``) and its trained heads (``service.artefacts.heads``).
All three answer ``rank(analysis, k)``: the k best (name, score) pairs for one cached ``Analysis``, best first. The
default per model comes from ``TAGGRAM_DEFAULT_TAXONOMIES`` ("model=name,..."), else the tag taxonomy; a default
naming nothing the model has stops the start (``ModelFileError``). A name the model does not have, asked in a
request, is ``UnknownTaxonomy``.

``/suggest-subgenres`` ranks through a :class:`Suggester`: one model's ranking (:class:`ModelRanking`) or the
platform taxonomy (``service.artefacts.platform``), which ranks from several models' analyses. A request naming
neither a model nor a taxonomy gets the platform taxonomy, unless ``TAGGRAM_DEFAULT_TAXONOMIES`` names the default
model's default (an operator's choice, a trained head say, wins); ``?taxonomy=platform`` asks for it by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from service import metrics
from service.artefacts.heads import LoadedHead, load_heads
from service.artefacts.platform import PlatformTaxonomy, load_platform
from service.artefacts.registry import LoadedModel
from service.artefacts.tag_calibration import load_calibration
from service.engine.analysis import Analysis
from service.errors import InvalidParameter, ModelFileError, UnknownTaxonomy


class Ranking(Protocol):
    """A tag taxonomy, its calibrated variant or a head: ranks a track's classes."""

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...  # "tags" (ranked by the model's tag scores) or "head" (by a trained classifier)

    def rank(self, analysis: Analysis, k: int) -> list[tuple[str, float]]: ...


class Suggester(Protocol):
    """What ``/suggest-subgenres`` ranks with: the models whose analyses it needs, and the ranking over them."""

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def models(self) -> tuple[str, ...]: ...

    def rank(self, analyses: Mapping[str, Analysis], k: int) -> list[tuple[str, float]]: ...


@dataclass(frozen=True)
class ModelRanking:
    """One model's ranking as a :class:`Suggester`."""

    model: str
    ranking: Ranking

    @property
    def name(self) -> str:
        return self.ranking.name

    @property
    def kind(self) -> str:
        return self.ranking.kind

    @property
    def models(self) -> tuple[str, ...]:
        return (self.model,)

    def rank(self, analyses: Mapping[str, Analysis], k: int) -> list[tuple[str, float]]:
        return self.ranking.rank(analyses[self.model], k)


@dataclass(frozen=True)
class ModelSelection:
    """One model's choices."""

    taxonomies: tuple[Ranking, ...]  # the tag taxonomy, then its calibrated variant when there is one
    heads: dict[str, LoadedHead]
    default: str

    def rankings(self) -> dict[str, Ranking]:
        return {ranking.name: ranking for ranking in (*self.taxonomies, *self.heads.values())}


@dataclass(frozen=True)
class Selection:
    """Every model's choices, by model name."""

    by_model: dict[str, ModelSelection]
    platform: PlatformTaxonomy | None = None
    configured_defaults: frozenset[str] = frozenset()  # models TAGGRAM_DEFAULT_TAXONOMIES gives a default

    def ranking(self, model: str, name: str | None) -> Ranking:
        """?taxonomy=NAME for this model (None: its default): a head, the tag taxonomy or its calibrated variant."""
        choices = self.by_model[model]
        name = name or choices.default
        rankings = choices.rankings()
        ranking = rankings.get(name)
        if ranking is None:
            raise UnknownTaxonomy(f"model {model} has no taxonomy or head {name!r}; choose one of {sorted(rankings)}")
        return ranking

    def suggester(self, model: str, taxonomy: str | None, *, model_named: bool) -> Suggester:
        """What ``/suggest-subgenres`` ranks with for ``model`` (the request's, or the default one when
        ``model_named`` is false) and ``?taxonomy=`` (None: the default, module docstring)."""
        platform = self.platform
        if platform is not None and taxonomy == platform.name:
            if model_named:
                raise InvalidParameter(
                    f"taxonomy {platform.name!r} ranks from its own models ({', '.join(platform.models)}): "
                    "leave out ?model="
                )
            return platform
        if platform is not None and taxonomy is None and not model_named and model not in self.configured_defaults:
            return platform
        return ModelRanking(model, self.ranking(model, taxonomy))

    def platform_info(self, default_model: str) -> dict | None:
        """GET /models' ``platform_taxonomy``: its vocabulary, the models it runs, and whether it is the default."""
        if self.platform is None:
            return None
        return self.platform.info(is_default=default_model not in self.configured_defaults)

    def head(self, model: str, name: str) -> LoadedHead:
        """?head=NAME: a head of this model (a tag taxonomy is not a head)."""
        heads = self.by_model[model].heads
        head = heads.get(name)
        if head is None:
            raise UnknownTaxonomy(f"model {model} has no head {name!r}; heads: {sorted(heads)}")
        return head

    def model_info(self, model: str) -> dict:
        """GET /models fields for one model: its heads (with metrics and the default flag) and tag taxonomies."""
        choices = self.by_model[model]
        return {
            "heads": [head.info(choices.default == head.name) for head in choices.heads.values()],
            "taxonomies": [taxonomy.name for taxonomy in choices.taxonomies],
            "default_taxonomy": choices.default,
        }


def load_selection(
    heads_dir: Path | None,
    default_taxonomies: Mapping[str, str],
    models: dict[str, LoadedModel],
    taxonomy_dir: Path | None = None,
) -> Selection:
    """Every model's heads, calibrated taxonomy and default, checked: a bad file or default stops the start."""
    heads = load_heads(heads_dir, models)
    calibrated = {name: load_calibration(model, taxonomy_dir) for name, model in models.items()}
    defaults = dict(default_taxonomies)
    by_model = {}
    for name, model in models.items():
        taxonomies = (model.taxonomy, *([calibrated[name]] if calibrated[name] is not None else []))
        by_model[name] = ModelSelection(taxonomies, heads[name], defaults.get(name, model.taxonomy.name))
    for model_name, default in defaults.items():
        if model_name not in models:
            raise ModelFileError(f"TAGGRAM_DEFAULT_TAXONOMIES names model {model_name!r}, which is not loaded")
        if default not in by_model[model_name].rankings():
            raise ModelFileError(
                f"TAGGRAM_DEFAULT_TAXONOMIES: {model_name} has no head or taxonomy {default!r} "
                f"(heads folder: {heads_dir})"
            )
    for model_name, loaded in heads.items():
        metrics.HEADS_LOADED.labels(model_name).set(len(loaded))
    platform = load_platform({name: model.taxonomy for name, model in models.items()}, taxonomy_dir)
    return Selection(by_model, platform, frozenset(defaults))
