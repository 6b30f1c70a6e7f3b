"""The platform taxonomy (issue #22): one vocabulary for the sign-up form whatever models are loaded, each subgenre
scored by the first loaded model of the file's list that names it, and the default of ``/suggest-subgenres`` when
neither a model nor a taxonomy is asked for (an operator's configured default wins)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from service.api.responses import suggestions
from service.artefacts.platform import PlatformTaxonomy, load_platform, platform_parts
from service.artefacts.selection import ModelRanking, ModelSelection, Selection
from service.artefacts.taxonomy import SHIPPED_DIR, Taxonomy
from service.decode import DecodeFacts, DecodeWarning
from service.engine.analysis import Analysis
from service.errors import InvalidParameter, ModelFileError

SAMPLE_RATE = 16_000
# "msd": Rock, Jazz, Ambient from tags 0, 1, 2; "mtt": Classical, Rock, Ambient from tags 0, 1, 2.
MSD = Taxonomy("msd", Path("msd.json"), ("Rock", "Jazz", "Ambient"), ((0,), (1,), (2,)))
MTT = Taxonomy("mtt", Path("mtt.json"), ("Classical", "Rock", "Ambient"), ((0,), (1,), (2,)))
NAMED = {"msd": MSD.subgenres, "mtt": MTT.subgenres, "vgg": ("Rock", "Opera")}


def analysis(mean_tags: list[float], warnings: tuple[str, ...] = ()) -> Analysis:
    tags = np.array([mean_tags, mean_tags], np.float32)
    facts = DecodeFacts(decoder="ffmpeg", codec="vorbis", duration_seconds=6.0)
    facts.warnings = [DecodeWarning(code, f"{code} here") for code in warnings]
    return Analysis(6.0, SAMPLE_RATE, 3 * SAMPLE_RATE, 3 * SAMPLE_RATE, tags, np.zeros((2, 3), np.float32), facts)


def platform(loaded: dict[str, Taxonomy]) -> PlatformTaxonomy:
    vocabulary, parts = platform_parts(["msd", "mtt", "vgg"], NAMED, loaded)
    return PlatformTaxonomy("platform", Path("platform.json"), vocabulary, parts)


def test_the_vocabulary_is_every_listed_models_subgenres_whatever_is_loaded():
    both, only_msd = platform({"msd": MSD, "mtt": MTT}), platform({"msd": MSD})
    assert both.vocabulary == only_msd.vocabulary == ("Rock", "Jazz", "Ambient", "Classical", "Opera")


def test_each_subgenre_is_scored_by_the_first_loaded_model_that_names_it():
    both = platform({"msd": MSD, "mtt": MTT})
    assert both.models == ("msd", "mtt")
    assert [(model, part.subgenres) for model, part in both.parts] == [
        ("msd", ("Rock", "Jazz", "Ambient")),
        ("mtt", ("Classical",)),
    ]
    assert both.unscored == ("Opera",)
    scores = both.scores({"msd": analysis([0.2, 0.5, 0.1]), "mtt": analysis([0.9, 0.8, 0.7])})
    assert scores == pytest.approx({"Rock": 0.2, "Jazz": 0.5, "Ambient": 0.1, "Classical": 0.9})


def test_a_model_that_is_not_loaded_leaves_its_subgenres_to_the_next_one_or_unscored():
    only_mtt = platform({"mtt": MTT})
    assert only_mtt.models == ("mtt",)
    assert only_mtt.unscored == ("Jazz", "Opera")
    assert [s for s, _ in only_mtt.rank({"mtt": analysis([0.1, 0.6, 0.3])}, 5)] == ["Rock", "Ambient", "Classical"]


def test_a_later_model_whose_subgenres_are_all_taken_is_not_run():
    assert platform({"msd": MSD, "mtt": MTT, "vgg": Taxonomy("v", Path("v"), ("Rock",), ((0,),))}).models == (
        "msd",
        "mtt",
    )


def test_it_ranks_over_both_analyses_ties_in_the_vocabularys_order():
    both = platform({"msd": MSD, "mtt": MTT})
    ranked = both.rank({"msd": analysis([0.5, 0.5, 0.1]), "mtt": analysis([0.7, 0.0, 0.0])}, 3)
    assert ranked == [("Classical", pytest.approx(0.7)), ("Rock", pytest.approx(0.5)), ("Jazz", pytest.approx(0.5))]


def test_the_answer_names_every_model_used_and_every_models_warnings_once():
    both = platform({"msd": MSD, "mtt": MTT})
    analyses = [analysis([0.9, 0.0, 0.0], ("audio_damaged",)), analysis([0.0, 0.0, 0.0], ("audio_damaged", "x"))]
    body = suggestions(both, analyses, cached=False, k=2)
    assert (body.model, body.models, body.taxonomy, body.kind) == ("msd", ["msd", "mtt"], "platform", "tags")
    assert [w.code for w in body.warnings] == ["audio_damaged", "x"]
    assert body.suggestions[0].subgenre == "Rock"


def selection(configured: frozenset[str] = frozenset()) -> Selection:
    by_model = {
        "msd": ModelSelection((MSD,), heads={}, default="msd"),
        "mtt": ModelSelection((MTT,), heads={}, default="mtt"),
    }
    return Selection(by_model, platform({"msd": MSD, "mtt": MTT}), configured)


def test_a_request_naming_neither_model_nor_taxonomy_gets_the_platform_taxonomy():
    assert isinstance(selection().suggester("msd", None, model_named=False), PlatformTaxonomy)
    assert selection().platform_info("msd")["default"] is True


def test_an_operators_configured_default_for_the_default_model_wins():
    chosen = selection(frozenset({"msd"})).suggester("msd", None, model_named=False)
    assert chosen == ModelRanking("msd", MSD)
    assert selection(frozenset({"msd"})).platform_info("msd")["default"] is False


def test_naming_a_model_keeps_that_models_own_rankings():
    assert selection().suggester("mtt", None, model_named=True) == ModelRanking("mtt", MTT)
    assert selection().suggester("msd", "msd", model_named=True).models == ("msd",)


def test_the_platform_taxonomy_by_name_refuses_a_model_it_would_ignore():
    assert isinstance(selection().suggester("msd", "platform", model_named=False), PlatformTaxonomy)
    with pytest.raises(InvalidParameter) as refused:
        selection().suggester("mtt", "platform", model_named=True)
    assert "leave out ?model=" in refused.value.detail


def write(folder: Path, name: str, document: object) -> None:
    (folder / f"{name}.json").write_text(json.dumps(document))


def test_the_shipped_file_lists_every_shipped_taxonomys_model_musicnn_first():
    document = json.loads((SHIPPED_DIR / "platform.json").read_text())
    assert document["models"][:2] == ["msd-musicnn", "mtt-musicnn"]
    shipped = {p.stem for p in SHIPPED_DIR.glob("*.json") if "." not in p.stem and p.stem != "platform"}
    assert set(document["models"]) == shipped


def test_an_override_folder_without_a_platform_file_has_none(tmp_path: Path):
    write(tmp_path, "msd", {"subgenres": {"Rock": ["rock"]}})
    assert load_platform({"msd": MSD}, tmp_path) is None


def test_an_override_platform_file_reads_unloaded_models_taxonomies_for_the_vocabulary(tmp_path: Path):
    write(tmp_path, "platform", {"name": "ours", "models": ["msd", "mtt"]})
    write(tmp_path, "msd", {"subgenres": {s: ["t"] for s in MSD.subgenres}})
    write(tmp_path, "mtt", {"subgenres": {s: ["t"] for s in MTT.subgenres}})
    loaded = load_platform({"msd": MSD}, tmp_path)
    assert (loaded.name, loaded.models, loaded.unscored) == ("ours", ("msd",), ("Classical",))


@pytest.mark.parametrize(
    "document",
    [[], {"models": []}, {"models": ["msd", "msd"]}, {"models": [3]}, {"name": "", "models": ["msd"]}],
)
def test_a_bad_platform_file_stops_the_start_naming_it(tmp_path: Path, document: object):
    write(tmp_path, "platform", document)
    write(tmp_path, "msd", {"subgenres": {"Rock": ["rock"]}})
    with pytest.raises(ModelFileError, match="platform"):
        load_platform({"msd": MSD}, tmp_path)


def test_a_listed_model_without_a_readable_taxonomy_stops_the_start(tmp_path: Path):
    write(tmp_path, "platform", {"models": ["msd", "gone"]})
    write(tmp_path, "msd", {"subgenres": {"Rock": ["rock"]}})
    with pytest.raises(ModelFileError, match="gone"):
        load_platform({"msd": MSD}, tmp_path)
