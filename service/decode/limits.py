"""The decoder's fixed limits and output format, shared by both decoders (FFmpeg and libsndfile)."""

SAMPLE_RATE = 16_000  # Hz: what every model consumes
MIN_SOURCE_RATE_HZ = 4_000  # Hz: below this there is no music left to tag (8 kHz telephony still passes)
MAX_SOURCE_RATE_HZ = 384_000  # Hz: highest rate of real PCM/FLAC masters (8× 48 kHz)
MAX_CHANNELS = 64  # channels: beyond ambisonics/22.2 layouts; bounds per-frame memory (64 ch × frame × 8 B)
# Largest sample magnitude accepted (only float sources can exceed full scale, 1.0): 120 dB above full scale, far
# beyond any real mix and far below where the graph's power spectrum overflows float32 (tags finite at ±1e16, NaN
# from ±1e17: the API would answer with nulls).
MAX_SAMPLE_MAGNITUDE = 1e6
DEFAULT_CHUNK_SAMPLES = 10 * SAMPLE_RATE  # samples at 16 kHz per yielded chunk: 10 s = 640 KB of float32

GROUP_SAMPLES = 65_536  # source samples converted and resampled per call (≈1.5 s at 44.1 kHz)
RESAMPLE_QUALITY = "HQ"  # soxr quality recipe; librosa.load's default res_type "soxr_hq" is the same recipe
