"""The HTTP routes, one module per concern, each exposing ``router = APIRouter(...)`` (``dependencies=PROTECTED``
unless public). A new module: add its router to ``service.api.app.ROUTERS`` (their order is the OpenAPI document's
order of paths) and its paths to ``service.api.middleware.metrics.METRIC_ENDPOINTS`` (else its requests are
counted under ``endpoint="other"``); ask for what it needs through ``service.api.dependencies``."""
