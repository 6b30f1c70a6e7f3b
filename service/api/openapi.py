"""OpenAPI snippets the routes share: the audio request body (which FastAPI cannot infer: the body is streamed by
``service.api.upload``, not declared as a parameter) and the problem+json answers of an audio route."""

from __future__ import annotations

AUDIO_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            },
            "audio/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def problem_response_doc(description: str) -> dict:
    """A problem+json answer for a route's ``responses``."""
    return {"description": description, "content": {"application/problem+json": {}}}


PROBLEM_RESPONSES = {
    status: problem_response_doc(text)
    for status, text in {
        401: "Missing or wrong API key (only when TAGGRAM_API_KEY is set)",
        413: "Body too large (code body_too_large)",
        415: "Not decodable audio or unsupported Content-Type",
        422: "Too short, too long, empty, non-finite audio, or bad parameters",
        503: "Overloaded: retry after the Retry-After header",
        504: "Deadline passed",
    }.items()
}
