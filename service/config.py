"""Settings from environment variables (prefix ``TAGGRAM_``); every field is listed in the README."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, TypeAdapter, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024

# Request parameters the API (and the backfill, which mirrors it) accepts, each declared once: FastAPI checks the
# query parameters against these types (a 422 problem), the backfill its arguments with ``parse_parameter``.
MIN_HOP_SECONDS = 0.5  # 6× the patches of the default hop: the most work one request may ask for per second
MAX_HOP_SECONDS = 30.0
MAX_K = 50
DAMAGED_AUDIO_POLICIES = ("warn", "refuse")  # TAGGRAM_DAMAGED_AUDIO, and --damaged-audio of the offline commands
HopSeconds = Annotated[float, Field(ge=MIN_HOP_SECONDS, le=MAX_HOP_SECONDS)]
ResultCount = Annotated[int, Field(ge=1, le=MAX_K)]  # k: subgenres or similar tracks in an answer


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
    models: str = Field("", description="Comma-separated model names to load; empty = every manifest in models_dir")
    default_model: str = Field("msd-musicnn", description="Model used when a request names none")
    taxonomy_dir: Path | None = Field(None, description="Folder of <model>.json taxonomies overriding the shipped ones")
    heads_dir: Path | None = Field(None, description="Folder of <head>.onnx + <head>.json classification heads (`taggram train-head`); unset = none")
    default_taxonomies: str = Field("", description="Default ?taxonomy= per model, e.g. 'msd-musicnn=my-head' (a head or the tag taxonomy); unset = the tag taxonomy")
    index_dir: Path | None = Field(None, description="Folder of similarity indexes (<model>.json + files); unset = no /similar")
    index_poll_seconds: float = Field(10.0, ge=0, description="How often a changed index manifest is looked for and swapped in (0 = only on SIGHUP)")

    max_upload_bytes: int = Field(100 * MIB, description="Largest accepted request body, enforced while reading")
    max_audio_seconds: float = Field(20 * 60.0, description="Longest accepted track, enforced while decoding")
    min_audio_seconds: float = Field(1.0, description="Shortest accepted track; shorter than one patch is repeat-padded")
    damaged_audio: str = Field("warn", pattern=f"^({'|'.join(DAMAGED_AUDIO_POLICIES)})$",
                               description="Damaged or truncated audio: analyse it with a warning, or refuse it (422 damaged_audio)")

    max_batch_patches: int = Field(4, ge=1, description="Largest inference batch (patches); each worker runs one")
    max_batch_wait_ms: float = Field(5.0, ge=0, description="How long a batch waits to fill before it runs")
    max_queue_patches: int = Field(4096, ge=1, description="Patches queued per model before new requests get 503")
    request_timeout_seconds: float = Field(120.0, gt=0, description="Deadline per request; past it: 504")
    retry_after_seconds: int = Field(2, ge=1, description="Retry-After sent with 503")
    max_concurrent_analyses: int = Field(32, ge=1, description="Uploads decoded or analysed at once; beyond: 503")
    early_answer_patches: int = Field(12, ge=0, description="/suggest-subgenres answers from this many spread patches of a longer track and completes it in the background (0 = always the complete analysis; docs/signup.md)")
    max_background_analyses: int = Field(8, ge=1, description="Complete analyses running after early answers; beyond, new ones are dropped")
    decode_threads: int = Field(2, ge=1, description="Threads decoding uploads, shared chunk by chunk by every upload in flight")
    interactive_endpoints: str = Field("/suggest-subgenres", description="Comma-separated endpoints whose uploads are decoded and inferred first (empty = one class: least-decoded first)")
    inference_workers: int = Field(0, ge=0, description="Batches one model computes at once (0 = one per usable CPU; 1 on CUDA)")
    intra_op_threads: int = Field(0, ge=0, description="ONNX Runtime intra-op threads per batch (0 = usable CPUs ÷ inference workers; on CUDA the runtime default)")
    device: str = Field("auto", pattern="^(auto|cpu|cuda)$", description="Inference device; auto = CUDA when available")
    cuda_batch_sizes: str = Field("1,4,16", description="On CUDA: fixed batch sizes batches are padded to")

    redis_url: str | None = Field(None, description="redis:// or rediss:// URL; unset = in-process LRU cache")
    redis_timeout_seconds: float = Field(0.25, gt=0, description="Per-operation Redis timeout; on timeout: bypass")
    cache_ttl_seconds: int = Field(30 * 24 * 3600, ge=0, description="Cache entry lifetime (0 = no expiry)")
    memory_cache_bytes: int = Field(256 * MIB, ge=0, description="In-process LRU size bound")

    api_key: str | None = Field(None, description="If set, every endpoint but health/metrics needs 'Authorization: Bearer <key>'")
    shutdown_grace_seconds: float = Field(30.0, ge=0, description="Time to drain in-flight requests on SIGTERM")
    shutdown_drain_seconds: float = Field(0.0, ge=0, description="On SIGTERM: keep serving this long with /readyz answering 503 before the listening socket closes (load balancers stop routing here meanwhile)")
    log_level: str = Field("info", description="Python logging level")

    @field_validator("cuda_batch_sizes")
    @classmethod
    def _positive_sizes(cls, text: str) -> str:
        parts = [part.strip() for part in text.split(",") if part.strip()]
        if not parts or not all(part.isdigit() and int(part) >= 1 for part in parts):
            raise ValueError(f"must be comma-separated whole numbers >= 1 (e.g. 1,4,16), got {text!r}")
        return text

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return url
