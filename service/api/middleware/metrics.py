"""Request counts and latency per endpoint and status (``taggram_requests_total``, ``..._request_duration_seconds``)."""

from __future__ import annotations

import time

from service import metrics

AUDIO_ENDPOINTS = ("/taggram", "/embed", "/suggest-subgenres")
# The endpoint label's values: a path not listed here is counted as "other" (bounded label cardinality).
METRIC_ENDPOINTS = (
    *AUDIO_ENDPOINTS,
    "/similar",
    "/similar/{track_id}",
    "/catalog/map",
    "/artists/{artist_id}",
    "/models",
    "/healthz",
    "/readyz",
    "/metrics",
)
# Paths with an id in them, counted under their route's template.
TEMPLATED = (("/similar/", "/similar/{track_id}"), ("/artists/", "/artists/{artist_id}"))


def endpoint_label(path: str) -> str:
    for prefix, template in TEMPLATED:
        if path.startswith(prefix):
            return template
    return path if path in METRIC_ENDPOINTS else "other"


class MetricsMiddleware:
    """Counts requests by endpoint and status and times them (pure ASGI: no body buffering).

    A request is timed until its answer's last byte is handed on, not until the ASGI call returns: a refusal sent
    before its body was read is followed by a lingering close (``service.api.middleware.lingering_close``), up to
    ``LINGER_SECONDS`` of draining that the client does not wait for.
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = endpoint_label(scope["path"])
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
