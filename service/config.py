"""Settings from environment variables (prefix ``TAGGRAM_``); every field is listed in the README."""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from pydantic import Field, TypeAdapter, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MIB = 1024 * 1024

# Request parameters the API (and the backfill, which mirrors it) accepts, each declared once: FastAPI checks the
# query parameters against these types (a 422 problem), the backfill its arguments with ``parse_parameter``.
MIN_HOP_SECONDS = 0.5  # 6× the patches of the default hop: the most work one request may ask for per second
MAX_HOP_SECONDS = 30.0
MAX_K = 50
HopSeconds = Annotated[float, Field(ge=MIN_HOP_SECONDS, le=MAX_HOP_SECONDS)]
ResultCount = Annotated[int, Field(ge=1, le=MAX_K)]  # k: subgenres or similar tracks in an answer


class DamagedAudio(StrEnum):
    """What happens to damaged or truncated audio (TAGGRAM_DAMAGED_AUDIO, --damaged-audio of the offline commands)."""

    WARN = "warn"  # analysed, and the answer's ``warnings`` say what was damaged
    REFUSE = "refuse"  # refused: 422 ``damaged_audio``, or the file's error row offline


class Device(StrEnum):
    """Where inference runs (TAGGRAM_DEVICE)."""

    AUTO = "auto"  # CUDA when onnxruntime-gpu sees a GPU, else CPU
    CPU = "cpu"
    CUDA = "cuda"


class Precision(StrEnum):
    """TAGGRAM_PRECISION and the backfill's --precision (docs/precision.md)."""

    AUTO = "auto"  # bf16 per model where the CPU has native bf16 and it measures faster and inside parity; else fp32
    FP32 = "fp32"  # ONNX Runtime fp32: the path before bf16 existed
    BF16 = "bf16"  # OpenVINO bf16 for every model, or the start fails


def comma_separated(value: Any) -> Any:
    """An environment value "a, b,,c" → ["a", "b", "c"] (blanks dropped); a value given in Python passes as is."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


# TAGGRAM_CATALOG_AUDIO_URL: where the page's catalog map fetches a track's audio to play its representative segment
# on hover (docs/catalog.md). An operator's template, never a path from a request; the track id is the only variable.
TRACK_ID_PLACEHOLDER = "{track_id}"
AUDIO_URL_SCHEMES = ("http", "https")
# A host name or an IPv4 address: the origin goes into the page's Content-Security-Policy header, so nothing that
# could end or extend a CSP directive (";", ",", quotes, spaces) may reach it.
HOST_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")


def audio_url_template_problem(template: str) -> str | None:
    """Why ``template`` is not a usable catalog audio URL template, or None when it is: an absolute http(s) URL with
    a host, no user:password@ (every visitor of the page would read it), no #fragment (never sent), and the
    ``{track_id}`` placeholder exactly once, in the path or the query (in the host it would change the origin the
    page's CSP allows), and no other ``{…}``."""
    if any(c.isspace() or ord(c) < 0x20 for c in template):
        return "must not contain spaces or control characters"
    count = template.count(TRACK_ID_PLACEHOLDER)
    if count != 1:
        return f"must contain {TRACK_ID_PLACEHOLDER} exactly once (found {count} times)"
    if "{" in template.replace(TRACK_ID_PLACEHOLDER, "") or "}" in template.replace(TRACK_ID_PLACEHOLDER, ""):
        return f"must contain no placeholder but {TRACK_ID_PLACEHOLDER}"
    try:
        parts = urlsplit(template)
        port = parts.port  # a ValueError for a port that is not a number in 0-65535
    except ValueError as error:
        return f"is not a URL ({error})"
    if parts.scheme.lower() not in AUDIO_URL_SCHEMES or not parts.netloc:
        return "must be an absolute http:// or https:// URL"
    if "@" in parts.netloc:
        return "must not carry user:password@ (the page shows the URL to every visitor)"
    if TRACK_ID_PLACEHOLDER in parts.netloc:
        return f"must have {TRACK_ID_PLACEHOLDER} in the path or the query, not in the host"
    if parts.fragment or template.endswith("#"):
        return "must not have a #fragment (it is never sent to the server)"
    if not HOST_NAME.match(parts.hostname or ""):
        return f"must name its host as a DNS name or an IPv4 address (got {parts.hostname!r})"
    if port == 0:
        return "must have a port between 1 and 65535"
    return None


def audio_origin(template: str) -> str:
    """The origin the template's URLs are fetched from, as the page's CSP ``media-src`` names it:
    ``scheme://host[:port]`` (host lower-cased; the port only when the template gives one)."""
    parts = urlsplit(template)
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme.lower()}://{parts.hostname.lower()}{port}"


def audio_url(template: str, track_id: str) -> str:
    """The template with the track id substituted, percent-encoded as one URL component: every byte of its UTF-8
    but the unreserved ``A-Z a-z 0-9 - . _ ~`` (RFC 3986), so "/", "?", "#", "&" or "%" in an id stay inside the
    id. The page (catalog.js ``audioUrl``) encodes exactly the same way."""
    return template.replace(TRACK_ID_PLACEHOLDER, quote(track_id, safe=""), 1)


def parse_parameter(kind: Any, text: str) -> Any:
    """``text`` as a request parameter of type ``kind`` (e.g. ``HopSeconds``), checked as the API checks it; a
    ValueError with the API's reason otherwise."""
    try:
        return TypeAdapter(kind).validate_strings(text)
    except ValidationError as error:
        raise ValueError(error.errors()[0]["msg"]) from None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TAGGRAM_", frozen=True)

    host: str = Field("127.0.0.1", description="Address `taggram serve` binds (0.0.0.0 in containers)")
    port: int = Field(8000, ge=1, le=65535, description="Port `taggram serve` listens on")
    models_dir: Path = Field(Path("models"), description="Folder holding <name>.onnx + <name>.json manifests")
    models: Annotated[list[str], NoDecode] = Field(
        [], description="Comma-separated model names to load; empty = every manifest in models_dir"
    )
    default_model: str = Field("msd-musicnn", description="Model used when a request names none")
    taxonomy_dir: Path | None = Field(None, description="Folder of <model>.json taxonomies overriding the shipped ones")
    heads_dir: Path | None = Field(
        None,
        description="Folder of <head>.onnx + <head>.json classification heads (`taggram train-head`); unset = none",
    )
    default_taxonomies: Annotated[Mapping[str, str], NoDecode] = Field(
        {},
        description="Default ?taxonomy= per model, e.g. 'msd-musicnn=my-head' (a head or the tag taxonomy); "
        "unset = the tag taxonomy",
    )
    index_dir: Path | None = Field(
        None, description="Folder of similarity indexes (<model>.json + files); unset = no /similar"
    )
    index_poll_seconds: float = Field(
        10.0, ge=0, description="How often a changed index manifest is looked for and swapped in (0 = only on SIGHUP)"
    )
    catalog_audio_url: str | None = Field(
        None,
        description="URL template of a catalog track's audio, e.g. https://cdn.example.com/audio/{track_id}.mp3 "
        "({track_id} once, URL-encoded): the page's catalog map plays each track's representative segment on hover "
        "and its CSP allows media from that origin; unset = no playback",
    )

    max_upload_bytes: int = Field(100 * MIB, description="Largest accepted request body, enforced while reading")
    max_audio_seconds: float = Field(20 * 60.0, description="Longest accepted track, enforced while decoding")
    min_audio_seconds: float = Field(
        1.0, description="Shortest accepted track; shorter than one patch is repeat-padded"
    )
    damaged_audio: DamagedAudio = Field(
        DamagedAudio.WARN,
        description="Damaged or truncated audio: analyse it with a warning, or refuse it (422 damaged_audio)",
    )

    max_batch_patches: int = Field(4, ge=1, description="Largest inference batch (patches); each worker runs one")
    max_batch_wait_ms: float = Field(5.0, ge=0, description="How long a batch waits to fill before it runs")
    max_queue_patches: int = Field(4096, ge=1, description="Patches queued per model before new requests get 503")
    request_timeout_seconds: float = Field(120.0, gt=0, description="Deadline per request; past it: 504")
    retry_after_seconds: int = Field(2, ge=1, description="Retry-After sent with 503")
    max_concurrent_analyses: int = Field(32, ge=1, description="Uploads decoded or analysed at once; beyond: 503")
    early_answer_patches: int = Field(
        12,
        ge=0,
        description="/suggest-subgenres answers from this many spread patches of a longer track and completes it "
        "in the background (0 = always the complete analysis; docs/signup.md)",
    )
    max_background_analyses: int = Field(
        8, ge=1, description="Complete analyses running after early answers; beyond, new ones are dropped"
    )
    decode_threads: int = Field(
        2, ge=1, description="Threads decoding uploads, shared chunk by chunk by every upload in flight"
    )
    interactive_endpoints: Annotated[frozenset[str], NoDecode] = Field(
        frozenset({"/suggest-subgenres"}),
        description="Comma-separated endpoints whose uploads are decoded and inferred first "
        "(empty = one class: least-decoded first)",
    )
    inference_workers: int = Field(
        0, ge=0, description="Batches one model computes at once (0 = one per usable CPU; 1 on CUDA)"
    )
    intra_op_threads: int = Field(
        0,
        ge=0,
        description="ONNX Runtime intra-op threads per batch "
        "(0 = usable CPUs ÷ inference workers; on CUDA the runtime default)",
    )
    device: Device = Field(Device.AUTO, description="Inference device; auto = CUDA when available")
    precision: Precision = Field(
        Precision.AUTO,
        description="CPU inference precision: auto (bf16 per model where native bf16 measures faster and passes "
        "the parity guard), fp32, or bf16 (fails the start where unsupported); docs/precision.md",
    )
    cuda_batch_sizes: Annotated[tuple[int, ...], NoDecode] = Field(
        (1, 4, 16),
        description="On CUDA: fixed batch sizes batches are padded to (comma-separated; kept sorted, without repeats)",
    )

    redis_url: str | None = Field(None, description="redis:// or rediss:// URL; unset = in-process LRU cache")
    redis_timeout_seconds: float = Field(0.25, gt=0, description="Per-operation Redis timeout; on timeout: bypass")
    cache_ttl_seconds: int = Field(30 * 24 * 3600, ge=0, description="Cache entry lifetime (0 = no expiry)")
    memory_cache_bytes: int = Field(256 * MIB, ge=0, description="In-process LRU size bound")

    api_key: str | None = Field(
        None, description="If set, every endpoint but health/metrics needs 'Authorization: Bearer <key>'"
    )
    shutdown_grace_seconds: float = Field(30.0, ge=0, description="Time to drain in-flight requests on SIGTERM")
    shutdown_drain_seconds: float = Field(
        0.0,
        ge=0,
        description="On SIGTERM: keep serving this long with /readyz answering 503 before the listening socket closes "
        "(load balancers stop routing here meanwhile)",
    )
    log_level: str = Field("info", description="Python logging level")

    @field_validator("models", "interactive_endpoints", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return comma_separated(value)

    @field_validator("default_taxonomies", mode="before")
    @classmethod
    def _model_to_taxonomy(cls, value: Any) -> Any:
        """ "msd-musicnn=my-head,mtt-musicnn=platform-genres-mtt" → {model: taxonomy name}."""
        if not isinstance(value, str):
            return value
        defaults: dict[str, str] = {}
        for part in comma_separated(value):
            model, sep, name = part.partition("=")
            if not sep or not model.strip() or not name.strip():
                raise ValueError(f"{part!r} is not model=name")
            defaults[model.strip()] = name.strip()
        return defaults

    @field_validator("cuda_batch_sizes", mode="before")
    @classmethod
    def _positive_sizes(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        parts = comma_separated(value)
        if not parts or not all(part.isdigit() and int(part) >= 1 for part in parts):
            raise ValueError(f"must be comma-separated whole numbers >= 1 (e.g. 1,4,16), got {value!r}")
        return [int(part) for part in parts]

    @field_validator("cuda_batch_sizes")
    @classmethod
    def _sorted_sizes(cls, sizes: tuple[int, ...]) -> tuple[int, ...]:
        if not sizes or min(sizes) < 1:
            raise ValueError(f"must be whole numbers >= 1 (e.g. 1,4,16), got {sizes!r}")
        return tuple(sorted(set(sizes)))

    @field_validator("catalog_audio_url")
    @classmethod
    def _audio_url_template(cls, template: str | None) -> str | None:
        if template is None:
            return None
        problem = audio_url_template_problem(template)
        if problem is not None:
            raise ValueError(f"{template!r} {problem}")
        return template

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return url
