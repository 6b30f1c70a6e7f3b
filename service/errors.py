"""RFC 9457 problem details with a stable ``code`` per failure; bad input never becomes a 500."""

from __future__ import annotations

from http import HTTPStatus

from fastapi.responses import JSONResponse

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://taggram.dev/problems/"  # documentation anchors, see docs/api.md


class Problem(Exception):
    """An error the client can act on; rendered as problem+json."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}


def problem_response(problem: Problem, instance: str | None = None) -> JSONResponse:
    body = {
        "type": PROBLEM_TYPE_BASE + problem.code,
        "title": HTTPStatus(problem.status).phrase,
        "status": problem.status,
        "detail": problem.detail,
        "code": problem.code,
    }
    if instance:
        body["instance"] = instance
    return JSONResponse(body, status_code=problem.status, headers=problem.headers, media_type=PROBLEM_MEDIA_TYPE)


def body_too_large(limit: int) -> Problem:
    return Problem(413, "body_too_large", f"the request body exceeds the limit of {limit} bytes")


def empty_body() -> Problem:
    return Problem(422, "empty_body", "the request carried no audio bytes")


def unsupported_media_type(content_type: str) -> Problem:
    return Problem(
        415,
        "unsupported_media_type",
        f"Content-Type {content_type!r} is not accepted: send the audio as multipart/form-data in a "
        "field named 'file', or as the raw body with an audio/* or application/octet-stream type",
    )


def overloaded(retry_after_seconds: int, detail: str) -> Problem:
    return Problem(503, "overloaded", detail, {"Retry-After": str(retry_after_seconds)})


def deadline_exceeded(detail: str) -> Problem:
    return Problem(504, "deadline_exceeded", detail)
