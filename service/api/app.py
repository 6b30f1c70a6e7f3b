"""The app factory and its lifespan: load every artefact, start the engine, install the problem handlers, the
middleware, the routers (``service.api.routes``) and the page."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from service.api.docs import install_docs
from service.api.middleware.lingering_close import CloseUnreadBodyMiddleware
from service.api.middleware.metrics import MetricsMiddleware
from service.api.page import install_page
from service.api.problems import install_problem_handlers
from service.api.routes import artists, audio, catalog, models, probes, similar
from service.api.state import State
from service.artefacts.registry import load_models
from service.artefacts.selection import load_selection
from service.artefacts.similar.serving import Indexes
from service.config import Settings
from service.engine.analysis_service import AnalysisService

__all__ = ["ROUTERS", "State", "create_app"]

log = logging.getLogger("taggram")

ROUTERS = (
    audio.router,
    models.router,
    similar.router,
    catalog.router,
    artists.router,
    probes.router,
)  # a new route module: add its router here


def create_app(settings: Settings | None = None) -> FastAPI:
    """Loads every model now (a bad model file fails here, before serving); starts batchers on start-up."""
    settings = settings or Settings()
    models_loaded = load_models(settings)
    selection = load_selection(settings.heads_dir, settings.default_taxonomies, models_loaded, settings.taxonomy_dir)
    indexes = Indexes(settings.index_dir, models_loaded)
    indexes.load_all()  # an index for another model or onnx file stops the start here (IndexFileError)
    interactive = settings.interactive_endpoints
    state = State(
        settings=settings,
        models=models_loaded,
        analysis=AnalysisService(settings, models_loaded),
        selection=selection,
        indexes=indexes,
        interactive_endpoints=interactive,
    )

    app = FastAPI(
        title="taggram",
        version="0.1.0",
        description="Music tagging: subgenre suggestions, embeddings and taggrams from uploaded audio.",
        lifespan=lifespan,
        docs_url=None,  # /docs and /redoc are served offline by install_docs
        redoc_url=None,
    )
    app.state.taggram = state
    install_problem_handlers(app)
    # Added last = outermost: metrics sit inside the lingering close, so they time the answer, not the drain.
    app.add_middleware(MetricsMiddleware)
    app.add_middleware(CloseUnreadBodyMiddleware)
    install_routes(app, ROUTERS)
    install_page(app, settings.catalog_audio_url)
    install_docs(app)
    return app


def install_routes(app: FastAPI, routers: tuple[APIRouter, ...]) -> None:
    """Each router's routes onto the app itself, exactly as routes declared on the app (a router's dependencies are
    part of its routes already): ``app.routes`` then lists every route, which tests walk to check that each one
    needs the API key. ``include_router`` would list one opaque entry per router instead (FastAPI 0.165)."""
    for router in routers:
        app.router.routes.extend(router.routes)


@asynccontextmanager
async def lifespan(app: FastAPI):
    state: State = app.state.taggram
    settings = state.settings
    await state.analysis.start()
    watcher = asyncio.create_task(state.indexes.watch(settings.index_poll_seconds)) if settings.index_dir else None
    state.ready = True
    log.info("ready: models %s, cache %s", sorted(state.models), state.cache.name)
    try:
        yield
    finally:
        state.ready = False
        if watcher is not None:
            watcher.cancel()
        await state.analysis.close()
