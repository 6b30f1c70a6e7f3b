"""RFC 9457 problem details: every ``service.errors.TaggramError`` rendered in one place, with its stable ``code``.

``install_problem_handlers`` maps the domain errors (one handler), the framework's own failures (a query parameter
out of range, an unknown route or method) and anything unexpected (500, logged, never blamed on the request) to
``application/problem+json``. Bad input never becomes a 500.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service import metrics
from service.errors import HttpError, InternalError, InvalidParameter, MethodNotAllowed, NotFound, TaggramError

log = logging.getLogger("taggram")

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://taggram.dev/problems/"  # documentation anchors, see docs/api.md
FRAMEWORK_ERRORS = {404: NotFound, 405: MethodNotAllowed}  # the router's own refusals; any other status: HttpError


def problem_response(error: TaggramError, instance: str | None = None) -> JSONResponse:
    body = {
        "type": PROBLEM_TYPE_BASE + error.code,
        "title": HTTPStatus(error.status).phrase,
        "status": error.status,
        "detail": error.detail,
        "code": error.code,
    }
    if instance:
        body["instance"] = instance
    return JSONResponse(body, status_code=error.status, headers=error.headers, media_type=PROBLEM_MEDIA_TYPE)


async def on_refusal(request: Request, error: TaggramError) -> JSONResponse:
    """A refusal or failure of the service's own: counted by code."""
    metrics.REJECTIONS.labels(error.code).inc()
    return problem_response(error, request.url.path)


async def on_invalid_parameter(request: Request, error: RequestValidationError) -> JSONResponse:
    details = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
    return await on_refusal(request, InvalidParameter(details))


async def on_http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
    framework_error = FRAMEWORK_ERRORS.get(error.status_code)
    headers = dict(error.headers or {})
    if framework_error is None:
        problem = HttpError(error.status_code, str(error.detail), headers)
    else:
        problem = framework_error(str(error.detail), headers)
    return problem_response(problem, request.url.path)


async def on_unexpected(request: Request, error: Exception) -> JSONResponse:
    log.exception("unexpected error on %s", request.url.path)
    return problem_response(InternalError(), request.url.path)


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(TaggramError, on_refusal)
    app.add_exception_handler(RequestValidationError, on_invalid_parameter)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
