"""What the app serves with, built once by ``service.api.app.create_app``; routes reach it through
``service.api.dependencies``."""

from __future__ import annotations

from dataclasses import dataclass

from service.artefacts.registry import LoadedModel
from service.artefacts.selection import Selection
from service.artefacts.similar.serving import Indexes
from service.config import Settings
from service.engine.analysis_service import AnalysisService
from service.engine.batch import Batcher
from service.engine.cache import Cache, SingleFlight


@dataclass
class State:
    settings: Settings
    models: dict[str, LoadedModel]
    analysis: AnalysisService
    selection: Selection  # per model: its tag taxonomies and heads (?taxonomy=, ?head=)
    indexes: Indexes
    interactive_endpoints: frozenset[str]  # their uploads decode and infer first (TAGGRAM_INTERACTIVE_ENDPOINTS)
    ready: bool = False

    # The analysis service's parts, for probes and tests.
    @property
    def cache(self) -> Cache:
        return self.analysis.cache

    @property
    def batchers(self) -> dict[str, Batcher]:
        return self.analysis.batchers

    @property
    def flight(self) -> SingleFlight:
        return self.analysis.flight

    @property
    def in_flight(self) -> int:
        return self.analysis.in_flight
