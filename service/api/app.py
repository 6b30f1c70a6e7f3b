"""The HTTP API: routes, start-up and shutdown. Each route: upload → cache or pipeline → response body."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from service import metrics
from service.api import responses as respond
from service.engine.analysis import Analysis, TrackAnalyser
from service.engine.batch import Batcher, Overloaded
from service.engine.cache import SingleFlight, cache_key, get_or_compute, make_cache
from service.config import Settings
from service.decode import DecodeError
from service.engine.decode_scheduler import BULK, INTERACTIVE, DecodeScheduler
from service.errors import Problem, overloaded, problem_response
from service.artefacts.heads import Heads, head_scores, load_heads
from service.api.docs import install_docs
from service.api.page import install_page
from service.api.parameters import HopQuery, ModelQuery, SubgenreCountQuery
from service.engine.pipeline import analyse
from service.artefacts.registry import LoadedModel, load_models
from service.api import similar_routes
from service.artefacts.similar.serving import Indexes
from service.api.upload import read_upload

log = logging.getLogger("taggram")

AUDIO_ENDPOINTS = ("/taggram", "/embed", "/suggest-subgenres")
METRIC_ENDPOINTS = (*AUDIO_ENDPOINTS, "/similar", "/similar/{track_id}", "/models", "/healthz", "/readyz", "/metrics")

AUDIO_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "required": ["file"],
                           "properties": {"file": {"type": "string", "format": "binary"}}}
            },
            "audio/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
PROBLEM_RESPONSES = {
    status: {"description": text, "content": {"application/problem+json": {}}}
    for status, text in {
        401: "Missing or wrong API key (only when TAGGRAM_API_KEY is set)",
        413: "Body too large (code body_too_large)",
        415: "Not decodable audio or unsupported Content-Type",
        422: "Too short, too long, empty, non-finite audio, or bad parameters",
        503: "Overloaded: retry after the Retry-After header",
        504: "Deadline passed",
    }.items()
}


@dataclass
class State:
    settings: Settings
    models: dict[str, LoadedModel]
    batchers: dict[str, Batcher] = field(default_factory=dict)
    cache: object = None
    flight: SingleFlight = field(default_factory=SingleFlight)
    decoder: DecodeScheduler | None = None
    heads: Heads | None = None
    indexes: Indexes | None = None
    in_flight: int = 0
    ready: bool = False


def create_app(settings: Settings | None = None) -> FastAPI:
    """Loads every model now (a bad model file fails here, before serving); starts batchers on start-up."""
    settings = settings or Settings()
    state = State(settings=settings, models=load_models(settings))
    state.heads = load_heads(settings.heads_dir, settings.default_taxonomies, state.models, settings.taxonomy_dir)
    state.indexes = Indexes(settings.index_dir, state.models)
    state.indexes.load_all()  # an index for another model or onnx file stops the start here (IndexFileError)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.decoder = DecodeScheduler(settings.decode_threads)
        state.cache = make_cache(settings)
        for name, model in state.models.items():
            batcher = Batcher(model.runner, model=name, policy=model.batch_policy,
                              max_queue_patches=settings.max_queue_patches)
            await batcher.warm_up(model.manifest.patch_samples)
            batcher.start()
            state.batchers[name] = batcher
        watcher = asyncio.create_task(state.indexes.watch(settings.index_poll_seconds)) if settings.index_dir else None
        state.ready = True
        log.info("ready: models %s, cache %s", sorted(state.models), state.cache.name)
        try:
            yield
        finally:
            state.ready = False
            if watcher is not None:
                watcher.cancel()
            for batcher in state.batchers.values():
                await batcher.close()
            await state.cache.close()
            state.decoder.shutdown()

    app = FastAPI(
        title="taggram",
        version="0.1.0",
        description="Music tagging: subgenre suggestions, embeddings and taggrams from uploaded audio.",
        lifespan=lifespan,
        docs_url=None, redoc_url=None,  # served offline by install_docs
    )
    app.state.taggram = state
    install_error_handlers(app)
    # Added last = outermost: metrics sit inside the lingering close, so they time the answer, not the drain.
    app.add_middleware(MetricsMiddleware)
    app.add_middleware(CloseUnreadBodyMiddleware)
    declare_routes(app, state)
    install_page(app)
    install_docs(app)
    return app


# ---- errors ----------------------------------------------------------------------------------------------------


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def on_problem(request: Request, problem: Problem) -> JSONResponse:
        metrics.REJECTIONS.labels(problem.code).inc()
        return problem_response(problem, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        details = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        return await on_problem(request, Problem(422, "invalid_parameter", details))

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        problem = Problem(error.status_code, code, str(error.detail), dict(error.headers or {}))
        return problem_response(problem, request.url.path)

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return problem_response(Problem(500, "internal_error", "an unexpected error occurred"), request.url.path)


class MetricsMiddleware:
    """Counts requests by endpoint and status and times them (pure ASGI: no body buffering).

    A request is timed until its answer's last byte is handed on, not until the ASGI call returns: a refusal sent
    before its body was read is followed by a lingering close (``CloseUnreadBodyMiddleware``), up to
    ``LINGER_SECONDS`` of draining that the client does not wait for.
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = "/similar/{track_id}" if scope["path"].startswith("/similar/") else scope["path"]
        endpoint = path if path in METRIC_ENDPOINTS else "other"
        status = {"code": 500}
        started = time.perf_counter()
        answered: list[float] = []  # when the answer's last body message was handed on

        async def send_with_status(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False) and not answered:
                answered.append(time.perf_counter())
            await send(message)

        metrics.IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, send_with_status)
        finally:
            metrics.IN_FLIGHT.dec()
            metrics.REQUESTS.labels(endpoint, str(status["code"])).inc()
            ended = answered[0] if answered else time.perf_counter()
            metrics.REQUEST_LATENCY.labels(endpoint).observe(ended - started)


class CloseUnreadBodyMiddleware:
    """A response sent before the request body was fully read (413, 401, 503, 415, ...) closes the connection,
    after a bounded lingering close.

    Without this, uvicorn keeps such a connection alive and goes on receiving and discarding the rest of the body,
    so a client could stream an endless upload through one refused request. Closing at once is no better: a socket
    closed with unread bytes sends a TCP reset, which destroys the answer on its way (the client sees a read error
    instead of its 503). So, like nginx's lingering close: the answer goes out with ``Connection: close``, the rest
    of the body is read and discarded for at most ``LINGER_SECONDS``, then the connection is closed. A client that
    has finished sending gets its answer; one still sending after that is cut off.
    """

    LINGER_SECONDS = 2.0

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        state = {
            "pending": b"transfer-encoding" in headers or headers.get(b"content-length", b"0").strip() not in (b"0", b""),
            # A client that sent "Expect: 100-continue" sends no body until the app first reads it: nothing to drain
            # then (and reading would make uvicorn send a late "100 Continue").
            "body_requested": b"expect" not in headers,
            "early": False,
        }

        async def receive_tracking():
            state["body_requested"] = True
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                state["pending"] = False
            return message

        async def send_lingering(message) -> None:
            if message["type"] == "http.response.start" and state["pending"]:
                state["early"] = True
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            elif message["type"] == "http.response.body" and state["early"] and not message.get("more_body", False):
                await send({**message, "more_body": True})  # the whole answer is out; the connection stays open
                await self._drain(receive_tracking, state)
                message = {"type": "http.response.body", "body": b"", "more_body": False}  # now uvicorn closes
            await send(message)

        await self.app(scope, receive_tracking, send_lingering)

    async def _drain(self, receive, state: dict) -> None:
        if not state["body_requested"]:
            return
        try:
            async with asyncio.timeout(self.LINGER_SECONDS):
                while state["pending"]:
                    await receive()
        except TimeoutError:
            pass


# ---- routes ----------------------------------------------------------------------------------------------------


def declare_routes(app: FastAPI, state: State) -> None:
    settings = state.settings

    async def require_api_key(request: Request) -> None:
        if settings.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), settings.api_key.encode()):
            raise Problem(401, "unauthorized", "a valid 'Authorization: Bearer <key>' header is required",
                          {"WWW-Authenticate": "Bearer"})

    def pick_model(name: str | None) -> LoadedModel:
        model = state.models.get(name or settings.default_model)
        if model is None:
            raise Problem(422, "unknown_model", f"model {name!r} is not loaded; choose one of {sorted(state.models)}")
        return model

    interactive = {path.strip() for path in settings.interactive_endpoints.split(",") if path.strip()}

    async def analysis_for(request: Request, model: LoadedModel, hop: float | None) -> tuple[Analysis, bool]:
        deadline = time.monotonic() + settings.request_timeout_seconds
        geometry = model.manifest.geometry
        hop_frames = geometry.hop_frames(hop)
        batcher = state.batchers[model.name]
        try:
            batcher.admit()  # refuse before reading a large body
        except Overloaded as error:
            raise overloaded(settings.retry_after_seconds, str(error)) from None
        if state.in_flight >= settings.max_concurrent_analyses:
            raise overloaded(settings.retry_after_seconds, f"{state.in_flight} uploads are already being analysed")
        state.in_flight += 1
        try:
            analyser = TrackAnalyser(geometry, hop_frames, settings.min_audio_seconds)
            priority = INTERACTIVE if request.url.path in interactive else BULK
            return await analyse_upload(request, model, analyser, batcher, deadline, priority)
        finally:
            state.in_flight -= 1

    async def analyse_upload(request, model, analyser, batcher, deadline, priority) -> tuple[Analysis, bool]:
        upload = await read_upload(request, settings.max_upload_bytes)
        # The upload's file belongs to this request until a computation takes it (analyse closes what it was given):
        # requests sharing that computation may then come and go without pulling the file from under the decoder.
        handed_over = False
        try:
            hop_samples = analyser.hop_frames * analyser.geometry.frame_hop
            key = cache_key(upload.sha256, model.name, model.manifest.onnx.sha256, hop_samples)

            async def compute() -> Analysis:
                nonlocal handed_over
                handed_over = True
                return await analyse(upload.file, analyser=analyser, batcher=batcher, decoder=state.decoder,
                                     max_seconds=settings.max_audio_seconds, deadline=deadline, priority=priority,
                                     damaged_audio=settings.damaged_audio)

            return await get_or_compute(state.cache, state.flight, key, compute)
        except DecodeError as error:
            raise Problem(error.status, error.code, error.detail) from None
        except Overloaded as error:
            raise overloaded(settings.retry_after_seconds, str(error)) from None
        finally:
            if not handed_over:
                upload.close()

    protected = [Depends(require_api_key)]

    @app.post("/taggram", response_model=respond.TaggramResponse, dependencies=protected,
              openapi_extra=AUDIO_BODY, responses=PROBLEM_RESPONSES, summary="Tag probabilities over time")
    async def taggram(request: Request, model: ModelQuery = None, hop: HopQuery = None,
                      head: str | None = Query(None, description="Also return this head's scores per segment")):
        chosen = pick_model(model)
        picked = state.heads.head(chosen, head) if head else None  # refused before the upload is read
        analysis, cached = await analysis_for(request, chosen, hop)
        body = respond.taggram(chosen.name, chosen.manifest.labels, analysis, cached)
        if picked is not None:
            body.head = head_scores(picked, analysis)
        return body

    @app.post("/embed", response_model=respond.EmbedResponse, response_model_exclude_none=True,
              dependencies=protected, openapi_extra=AUDIO_BODY, responses=PROBLEM_RESPONSES,
              summary="Track embedding (mean over segments)")
    async def embed(request: Request, model: ModelQuery = None, hop: HopQuery = None,
                    segments: bool = Query(False, description="Also return per-segment embeddings")):
        chosen = pick_model(model)
        analysis, cached = await analysis_for(request, chosen, hop)
        return respond.embed(chosen.name, analysis, cached, segments)

    @app.post("/suggest-subgenres", response_model=respond.SuggestResponse, dependencies=protected,
              openapi_extra=AUDIO_BODY, responses=PROBLEM_RESPONSES, summary="Top-k platform subgenres")
    async def suggest_subgenres(request: Request, model: ModelQuery = None, hop: HopQuery = None, k: SubgenreCountQuery = 5,
                                taxonomy: str | None = Query(None, description="A head or tag taxonomy of the model "
                                                             "(GET /models); default: TAGGRAM_DEFAULT_TAXONOMIES")):
        chosen = pick_model(model)
        answer = state.heads.resolve(chosen, taxonomy)  # refused before the upload is read
        analysis, cached = await analysis_for(request, chosen, hop)
        return answer(analysis, cached, k)

    @app.get("/models", response_model=respond.ModelsResponse, dependencies=protected, summary="Loaded models")
    async def list_models():
        return respond.ModelsResponse(
            default=settings.default_model,
            models=[
                respond.ModelInfo(name=m.name, manifest=m.manifest.model_dump(), provider=m.runner.provider,
                                  taxonomy=m.taxonomy.as_dict(m.manifest.labels), **state.heads.model_info(m),
                                  index=(index.describe() if (index := state.indexes.get(m.name)) else None))
                for m in state.models.values()
            ],
        )

    similar_routes.declare(app, state.indexes, pick_model, analysis_for, protected, AUDIO_BODY, PROBLEM_RESPONSES)

    @app.get("/healthz", summary="Liveness: the process serves HTTP")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: models loaded and warmed, not shutting down",
             responses={503: {"description": "Not ready"}})
    async def readyz():
        # Deliberately not the cache's health (Cache.ping, which the backfill's cache warming uses): requests are
        # served with Redis down (the cache is bypassed), and a Redis outage must not take every replica out.
        if not state.ready:
            return JSONResponse({"status": "not ready"}, status_code=503)
        return {"status": "ready", "models": sorted(state.models)}

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus_metrics():
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
