"""The HTTP routes, one module per concern, each exposing ``router = APIRouter(...)``; ``service.api.app`` includes
them in ``ROUTERS`` order (which is the order of the OpenAPI document's paths)."""
