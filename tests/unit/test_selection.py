"""Selection by one protocol: a tag taxonomy and its calibrated variant (and a trained head, tests/system/
test_heads_serving.py) answer ``rank(analysis, k)``; ``?taxonomy=`` picks one per model, and the response body is
built from whichever was picked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.api.responses import suggestions
from service.artefacts.selection import ModelRanking, ModelSelection, Selection
from service.artefacts.tag_calibration import CalibratedTaxonomy
from service.artefacts.taxonomy import Taxonomy
from service.engine.analysis import Analysis
from service.errors import UnknownTaxonomy

SAMPLE_RATE = 16_000
# Mean tag scores 0.2, 0.5, 0.9, 0.1 over two segments.
TAGS = np.array([[0.1, 0.4, 0.8, 0.0], [0.3, 0.6, 1.0, 0.2]], np.float32)
TAXONOMY = Taxonomy("platform", Path("platform.json"), ("Rock", "Jazz", "Ambient"), ((0,), (1, 2), (3,)))
# Tag 0 runs low across the catalog (0.2 is its top percentile); the others are spread over [0, 1].
CALIBRATED = CalibratedTaxonomy(
    TAXONOMY, np.array([[0.0, 0.1], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]]), Path("platform.calibration.json"), {}
)


def analysis() -> Analysis:
    return Analysis(
        duration_seconds=6.0,
        sample_rate=SAMPLE_RATE,
        patch_samples=3 * SAMPLE_RATE,
        hop_samples=3 * SAMPLE_RATE,
        tags=TAGS,
        embedding=np.zeros((2, 3), np.float32),
    )


def selection() -> Selection:
    return Selection({"m": ModelSelection((TAXONOMY, CALIBRATED), heads={}, default="platform")})


def test_a_tag_taxonomy_ranks_subgenres_by_their_best_tag_mean():
    assert TAXONOMY.kind == "tags"
    assert TAXONOMY.rank(analysis(), 2) == [("Jazz", pytest.approx(0.9)), ("Rock", pytest.approx(0.2))]


def test_its_calibrated_variant_ranks_the_same_subgenres_by_catalog_percentile():
    assert (CALIBRATED.name, CALIBRATED.kind) == ("platform-calibrated", "tags")
    assert CALIBRATED.rank(analysis(), 2) == [("Rock", pytest.approx(1.0)), ("Jazz", pytest.approx(0.9))]


def test_the_request_picks_a_ranking_by_name_or_gets_the_models_default():
    choices = selection()
    assert choices.ranking("m", None) is TAXONOMY
    assert choices.ranking("m", "platform-calibrated") is CALIBRATED
    assert choices.model_info("m") == {
        "heads": [],
        "taxonomies": ["platform", "platform-calibrated"],
        "default_taxonomy": "platform",
    }


def test_a_name_the_model_does_not_have_is_unknown_taxonomy_listing_the_choices():
    with pytest.raises(UnknownTaxonomy) as refused:
        selection().ranking("m", "nope")
    assert (refused.value.status, refused.value.code) == (422, "unknown_taxonomy")
    assert "['platform', 'platform-calibrated']" in refused.value.detail
    with pytest.raises(UnknownTaxonomy):
        selection().head("m", "platform")  # a tag taxonomy is not a head


def test_the_suggestions_body_comes_from_whichever_ranking_was_picked():
    body = suggestions(ModelRanking("m", CALIBRATED), [analysis()], cached=True, k=1)
    assert (body.model, body.models, body.taxonomy, body.kind, body.cached) == (
        "m",
        ["m"],
        "platform-calibrated",
        "tags",
        True,
    )
    assert [(s.subgenre, s.score) for s in body.suggestions] == [("Rock", pytest.approx(1.0))]
