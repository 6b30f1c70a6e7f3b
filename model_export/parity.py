"""Parity of an exported graph with the original TF graphs (committed fixtures) and with librosa's mel."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from model_export import frontend
from model_export.tagger import ModelSpec

INT16_SCALE = 32768.0
# The TF output that each of our outputs reproduces, by architecture.
REFERENCE_OUTPUTS = {
    "musicnn": {"tags": "tags", "embedding": "penultimate", "mean_pool": "mean_pool", "max_pool": "max_pool"},
    "vgg": {"tags": "tags", "embedding": "pool5"},
}


def load_clip(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(float32 audio at 16 kHz, the fixture's reference arrays)."""
    with np.load(path) as data:
        arrays = {key: data[key] for key in data.files}
    return arrays.pop("audio_int16").astype(np.float32) / INT16_SCALE, arrays


def patch_windows(audio: np.ndarray, patches: int) -> np.ndarray:
    """[patches, PATCH_SAMPLES]: patch i = frames [187·i, 187·i + 187) of librosa's centred, zero-padded STFT."""
    context = frontend.N_FFT // 2
    padded = np.concatenate([np.zeros(context, np.float32), audio, np.zeros(frontend.PATCH_SAMPLES, np.float32)])
    step = frontend.PATCH_FRAMES * frontend.HOP_LENGTH
    return np.stack([padded[i * step : i * step + frontend.PATCH_SAMPLES] for i in range(patches)])


def reference_windows(spec: ModelSpec, fixtures_dir: Path) -> np.ndarray:
    """[patches, PATCH_SAMPLES]: every fixture's patches, as ``measure`` runs them (the service's bf16 parity guard
    runs the same ones: service/artefacts/parity_patches.py)."""
    windows = []
    for clip in sorted(fixtures_dir.glob("*.npz")):
        audio, reference = load_clip(clip)
        windows.append(patch_windows(audio, len(reference[f"{spec.folder}.tags"])))
    return np.concatenate(windows)


def librosa_logmel(audio: np.ndarray) -> np.ndarray:
    """[frames, 96]: musicnn's features computed in float32 (musicnn itself wrongly went through float16)."""
    import librosa

    mel = librosa.feature.melspectrogram(
        y=audio, sr=frontend.SAMPLE_RATE, n_fft=frontend.N_FFT, hop_length=frontend.HOP_LENGTH, n_mels=frontend.N_MELS
    )
    return np.log10(np.float32(frontend.LOG_SCALE) * mel + np.float32(1)).T


def max_relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """Worst patch's max |actual − expected| relative to that patch's largest |expected|."""
    scale = np.maximum(np.abs(expected).max(axis=1), np.finfo(np.float32).tiny)
    return float((np.abs(actual - expected).max(axis=1) / scale).max())


def measure(onnx_bytes: bytes, spec: ModelSpec, fixtures_dir: Path) -> dict:
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    clips = sorted(fixtures_dir.glob("*.npz"))
    if not clips:
        raise FileNotFoundError(f"no reference fixtures in {fixtures_dir}")
    tags_err, embedding_err, logmel_err, patches = 0.0, 0.0, 0.0, 0
    for clip in clips:
        audio, reference = load_clip(clip)
        expected_tags = reference[f"{spec.folder}.tags"]
        windows = patch_windows(audio, len(expected_tags))
        outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"waveform": windows})))
        names = REFERENCE_OUTPUTS[spec.architecture]
        tags_err = max(tags_err, float(np.abs(outputs["tags"] - expected_tags).max()))
        embedding_err = max(
            embedding_err, max_relative_error(outputs["embedding"], reference[f"{spec.folder}.{names['embedding']}"])
        )
        expected_logmel = librosa_logmel(audio)[: len(windows) * frontend.PATCH_FRAMES]
        logmel_err = max(
            logmel_err, float(np.abs(outputs["logmel"].reshape(-1, frontend.N_MELS) - expected_logmel).max())
        )
        patches += len(windows)
    return {
        "reference": "original TF1 graphs fed float32 log-mel (tests/fixtures/reference)",
        "clips": len(clips),
        "patches": patches,
        "tags_max_abs_error": tags_err,
        "embedding_max_rel_error": embedding_err,
        "logmel_max_abs_error_vs_librosa": logmel_err,
    }
