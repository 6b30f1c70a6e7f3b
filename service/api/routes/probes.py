"""Probes and metrics, public even with an API key: ``GET /healthz``, ``/readyz``, ``/metrics``."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.api.dependencies import AppState

router = APIRouter()


@router.get("/healthz", summary="Liveness: the process serves HTTP")
async def healthz():
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: models loaded and warmed, not shutting down",
    responses={503: {"description": "Not ready"}},
)
async def readyz(state: AppState):
    # Deliberately not the cache's health (Cache.ping, which the backfill's cache warming uses): requests are
    # served with Redis down (the cache is bypassed), and a Redis outage must not take every replica out.
    if not state.ready:
        return JSONResponse({"status": "not ready"}, status_code=503)
    return {"status": "ready", "models": sorted(state.models)}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def prometheus_metrics():
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
