"""Prometheus metrics, one prefix, base units (seconds, bytes)."""

from prometheus_client import Counter, Gauge, Histogram

PREFIX = "taggram"

# Latency buckets from a 30 s clip on a hot cache (ms) to an hour-long track on CPU (minutes).
LATENCY_BUCKETS_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)

REQUESTS = Counter(f"{PREFIX}_requests_total", "HTTP requests by endpoint and status", ["endpoint", "status"])
REQUEST_LATENCY = Histogram(
    f"{PREFIX}_request_duration_seconds", "End-to-end request latency", ["endpoint"], buckets=LATENCY_BUCKETS_SECONDS
)
DECODE_SECONDS = Histogram(
    f"{PREFIX}_decode_duration_seconds", "Time to decode and resample one upload", buckets=LATENCY_BUCKETS_SECONDS
)
QUEUE_WAIT_SECONDS = Histogram(
    f"{PREFIX}_queue_wait_seconds",
    "Time a patch waits in the batcher queue",
    ["model"],
    buckets=LATENCY_BUCKETS_SECONDS,
)
BATCH_SIZE = Histogram(
    f"{PREFIX}_batch_size_patches", "Patches per inference batch", ["model"], buckets=BATCH_SIZE_BUCKETS
)
INFERENCE_SECONDS = Histogram(
    f"{PREFIX}_inference_duration_seconds", "ONNX Runtime time per batch", ["model"], buckets=LATENCY_BUCKETS_SECONDS
)
DECODES = Counter(
    f"{PREFIX}_decodes_total", "Uploads decoded, by the decoder that read them (ffmpeg, libsndfile)", ["decoder"]
)
DECODE_WARNINGS = Counter(
    f"{PREFIX}_decode_warnings_total",
    "Decoded uploads with a warning, by code (audio_damaged, audio_truncated)",
    ["code"],
)
AUDIO_SECONDS = Counter(
    f"{PREFIX}_audio_processed_seconds_total", "Seconds of audio analysed (cache misses)", ["model"]
)
CACHE_HITS = Counter(f"{PREFIX}_cache_hits_total", "Analysis cache hits", ["backend"])
CACHE_MISSES = Counter(f"{PREFIX}_cache_misses_total", "Analysis cache misses", ["backend"])
CACHE_ERRORS = Counter(
    f"{PREFIX}_cache_errors_total", "Cache backend errors (request served anyway)", ["backend", "op"]
)
REJECTIONS = Counter(f"{PREFIX}_rejections_total", "Requests refused, by reason (problem code)", ["reason"])
QUEUE_DEPTH = Gauge(f"{PREFIX}_queue_depth_patches", "Patches waiting in the batcher", ["model"])
IN_FLIGHT = Gauge(f"{PREFIX}_requests_in_flight", "Requests being processed")
INDEX_VECTORS = Gauge(f"{PREFIX}_index_vectors", "Tracks in the loaded similarity index", ["model"])
INDEX_BUILT = Gauge(f"{PREFIX}_index_built_timestamp_seconds", "When the loaded index was built (unix time)", ["model"])
INDEX_LOAD_SECONDS = Gauge(f"{PREFIX}_index_load_duration_seconds", "Time the loaded index took to load", ["model"])
INDEX_RELOADS = Counter(f"{PREFIX}_index_reloads_total", "Index reloads by result (ok, failed)", ["model", "result"])
MODEL_INFO = Gauge(
    f"{PREFIX}_model_info", "Loaded models (value is always 1)", ["model", "version", "onnx_sha256", "provider"]
)
MODEL_RUNTIME_INFO = Gauge(
    f"{PREFIX}_model_runtime_info",
    "Runtime and precision each loaded model serves with (value is always 1; docs/precision.md)",
    ["model", "runtime", "precision"],
)
HEADS_LOADED = Gauge(f"{PREFIX}_heads_loaded", "Classification heads loaded per base model", ["model"])
# The early answer (issue #22, service/engine/early.py)
EARLY_ANSWERS = Counter(f"{PREFIX}_early_answers_total", "/suggest-subgenres answered from a sample of the track")
EARLY_SAMPLE_PATCHES = Histogram(
    f"{PREFIX}_early_sample_patches", "Patches analysed for an early answer", buckets=BATCH_SIZE_BUCKETS
)
BACKGROUND_ANALYSES = Counter(
    f"{PREFIX}_background_analyses_total",
    "Complete analyses run after an early answer, by outcome (completed, dropped, failed)",
    ["outcome"],
)
BACKGROUND_PENDING = Gauge(f"{PREFIX}_background_analyses_pending", "Complete analyses running after an early answer")
