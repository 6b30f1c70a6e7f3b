"""Property-based tests over HTTP: whatever a client sends, the answer is a 2xx or a 4xx problem+json, never a 5xx,
and the server keeps serving.

* Hypothesis over the upload path: arbitrary bytes, mutations of real files in every allowed container,
  arbitrary Content-Type values and arbitrary multipart envelopes.
* Schemathesis over the whole OpenAPI schema (`/openapi.json` of the live server): every operation with
  generated parameters and bodies, check ``not_a_server_error`` plus "every 4xx is problem+json".

The decoder's own properties (any bytes → audio or DecodeError) are in tests/unit/test_decode.py.
"""

from __future__ import annotations

from functools import cache

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode

from tests.support.audio_factory import chord, encode_audio, noise
from tests.support.live_server import live_server, server_settings
from tests.support.mutations import mutated

PROBLEM = "application/problem+json"
HTTP_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def server(models_dir):
    with live_server(server_settings(models_dir, max_batch_wait_ms=1, max_upload_bytes=2_000_000)) as live:
        yield live


@pytest.fixture(scope="module")
def http(server):
    with server.client(timeout=60.0) as client:
        yield client


def assert_2xx_or_problem_4xx(response: httpx.Response) -> None:
    assert 200 <= response.status_code < 300 or 400 <= response.status_code < 500, (response.status_code, response.text)
    if response.status_code >= 400:
        assert response.headers["content-type"] == PROBLEM, response.headers
        body = response.json()
        assert body["status"] == response.status_code and body["code"] and body["detail"], body


# ---- seeds: 1.5 s of music in every container the decoder allows, long enough to reach inference when intact ----


@cache
def seed_files() -> tuple[bytes, ...]:
    signal = chord((440.0, 660.0), 1.5, 22_050, channels=2) + noise(1.5, 22_050, seed=3, amplitude=0.05, channels=2)
    formats = ("wav", "wav_f32", "flac", "mp3", "ogg", "opus", "m4a", "aiff", "caf", "w64", "mka", "aac")
    return tuple(encode_audio(signal, 22_050, fmt) for fmt in formats)


def test_the_seeds_are_analysed_when_intact(http):
    """Control: every seed is a real, complete upload, so mutations start from the 200 path."""
    for data in seed_files():
        response = http.post("/embed", content=data, headers={"content-type": "application/octet-stream"})
        assert response.status_code == 200, response.text


# ---- hypothesis over the upload path -----------------------------------------------------------------------------


@HTTP_SETTINGS
@given(data=st.binary(max_size=16_384), endpoint=st.sampled_from(["/taggram", "/embed", "/suggest-subgenres"]))
def test_arbitrary_bytes_get_a_2xx_or_a_problem_4xx(http, data, endpoint):
    assert_2xx_or_problem_4xx(http.post(endpoint, content=data, headers={"content-type": "application/octet-stream"}))


@HTTP_SETTINGS
@given(
    data=mutated(seed_files(), max_edits=6, header_bytes=80, max_delete=512, max_insert=128, duplicate=True),
    as_multipart=st.booleans(),
)
def test_mutated_real_files_get_a_2xx_or_a_problem_4xx(http, data, as_multipart):
    if as_multipart:
        response = http.post("/suggest-subgenres", files={"file": ("upload", data, "application/octet-stream")})
    else:
        response = http.post("/suggest-subgenres", content=data, headers={"content-type": "application/octet-stream"})
    assert_2xx_or_problem_4xx(response)


HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=120)


@HTTP_SETTINGS
@given(
    content_type=st.one_of(
        HEADER_TEXT,
        st.builds(lambda sub, params: f"audio/{sub}{params}", HEADER_TEXT, HEADER_TEXT),
        st.builds(lambda params: f"multipart/form-data{params}", HEADER_TEXT),
    )
)
def test_arbitrary_content_types_get_a_2xx_or_a_problem_4xx(http, content_type):
    data = seed_files()[0]
    assert_2xx_or_problem_4xx(http.post("/embed", content=data, headers={"content-type": content_type.strip()}))


TOKEN = st.text(st.characters(codec="ascii", exclude_characters="\r\n"), min_size=0, max_size=40)


@st.composite
def multipart_envelope(draw) -> tuple[bytes, str]:
    """A multipart body built part by part, with every framing choice left to hypothesis."""
    boundary = draw(st.text(st.sampled_from("abcXYZ0129'()+_,-./:=? "), min_size=1, max_size=72))
    declared = draw(st.one_of(st.just(boundary), st.just(f'"{boundary}"'), HEADER_TEXT)).strip()
    newline = draw(st.sampled_from([b"\r\n", b"\n"]))
    b = boundary.encode()
    body = draw(st.binary(max_size=64))  # preamble
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.one_of(st.sampled_from(["file", "other", "FILE", ""]), TOKEN))
        disposition = f'form-data; name="{name}"'
        if draw(st.booleans()):
            disposition += f'; filename="{draw(TOKEN)}"'
        headers = [b"Content-Disposition: " + disposition.encode()]
        if draw(st.booleans()):
            headers.append(b"Content-Type: " + draw(TOKEN).encode())
        if draw(st.booleans()):
            headers.append(draw(TOKEN).encode() + b": " + draw(TOKEN).encode())
        content = draw(st.one_of(st.sampled_from(seed_files()), st.binary(max_size=512)))
        body += b"--" + b + newline + newline.join(headers) + newline + newline + content + newline
    if draw(st.booleans()):
        body += b"--" + b + b"--" + newline
    return body, f"multipart/form-data; boundary={declared}".strip()


@HTTP_SETTINGS
@given(envelope=multipart_envelope())
def test_arbitrary_multipart_envelopes_get_a_2xx_or_a_problem_4xx(http, envelope):
    body, content_type = envelope
    assert_2xx_or_problem_4xx(http.post("/embed", content=body, headers={"content-type": content_type}))


def test_the_server_still_serves_after_the_fuzzing(server, http):
    assert http.get("/healthz").status_code == 200 and http.get("/readyz").status_code == 200
    assert server.state.in_flight == 0 and server.state.batchers["msd-musicnn"].queued_patches == 0


# ---- schemathesis over the OpenAPI schema ---------------------------------------------------------------------------


# Schemathesis's pytest plugin (`schemathesis.pytest.from_fixture`) needs a pytest internal that pytest 9 removed
# (``Node._nodeid``), and ``from_url`` at import time needs a server before any fixture runs. So the schema is loaded
# from the live server inside the test and each operation's schemathesis strategy is run by Hypothesis directly:
# the same generation and the same checks, one Hypothesis run per operation.
OPERATIONS = {
    "POST /taggram",
    "POST /embed",
    "POST /suggest-subgenres",
    "GET /models",
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
}
SCHEMA_EXAMPLES_PER_OPERATION_AND_MODE = 25
# Need a loaded index to answer anything but 503 no_index: fuzzed the same way against one in
# tests/integration/test_similar.py (the catalog map and artists come with the index, docs/catalog.md).
SIMILAR_OPERATIONS = {"POST /similar", "GET /similar/{track_id}", "GET /catalog/map", "GET /artists/{artist_id}"}


def problem_json_for_every_4xx(ctx, response, case) -> None:
    """A schemathesis check: a refusal is always RFC 9457 problem+json with the stable fields."""
    if 400 <= response.status_code < 500:
        assert response.headers.get("content-type") == [PROBLEM], (response.status_code, response.headers)
        body = response.json()
        assert body["status"] == response.status_code and body["code"], body


def assert_no_server_error(operation, mode: GenerationMode, examples: int) -> None:
    """Run ``examples`` schemathesis cases of one operation and mode against the live server: never a 5xx, every
    4xx a problem+json. Failures name the operation and the mode."""

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def no_server_error(case):
        case.call_and_validate(checks=[not_a_server_error, problem_json_for_every_4xx], timeout=60)

    try:
        no_server_error()
    except Exception as error:
        raise AssertionError(f"{operation.label} ({mode.value}): {error}") from error


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_no_request_generated_from_the_openapi_schema_makes_the_server_fail(server, mode):
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} == OPERATIONS | SIMILAR_OPERATIONS
    operations = [op for op in operations if op.label not in SIMILAR_OPERATIONS]
    if mode == GenerationMode.NEGATIVE:  # only operations with inputs can be sent invalid ones
        operations = [op for op in operations if len(op.query) or len(op.body)]
        assert {op.label for op in operations} == {label for label in OPERATIONS if label.startswith("POST")}
    for operation in operations:
        assert_no_server_error(operation, mode, SCHEMA_EXAMPLES_PER_OPERATION_AND_MODE)
