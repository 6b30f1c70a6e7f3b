"""Build models/<name>.onnx and models/<name>.json (the manifest: the only thing the service reads besides the
graph)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from model_export import frontend, parity, source
from model_export.checkpoint import read_checkpoint
from model_export.graph import OPSET
from model_export.tagger import MODELS, ModelSpec, build_tagger, output_shape
from service.artefacts.parity_patches import encode_parity_patches, parity_patches_path

MANIFEST_FORMAT = 1
# bump when the export changes in a way the source digest below would not show. 3: graphs built with onnx.helper
# from the checkpoint (model_export/graph.py), no longer traced from torch modules.
EXPORT_REVISION = 3
# Every op type the exported graphs may contain: all have CUDA EP kernels (no STFT/DFT, no control flow).
ALLOWED_OPS = frozenset({
    "Add", "BatchNormalization", "Concat", "Conv", "Gemm", "Log", "MatMul", "MaxPool", "Mul", "ReduceMax",
    "ReduceMean", "Relu", "Reshape", "Sigmoid", "Slice", "Squeeze", "Transpose", "Unsqueeze",
})  # fmt: skip
PACKAGE_DIR = Path(__file__).resolve().parent
FIXTURES_DIR = PACKAGE_DIR.parent / "tests" / "fixtures" / "reference"
MODEL_FILE_MODE = 0o644  # models are built by one user and served by another (the image's non-root user)
# A build whose measured parity misses these is refused, never written.
PARITY_LIMITS = {"tags_max_abs_error": 1e-4, "embedding_max_rel_error": 1e-3, "logmel_max_abs_error_vs_librosa": 1e-4}


def log(message: str) -> None:
    print(f"[model_export] {message}", file=sys.stderr, flush=True)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_key(spec: ModelSpec) -> str:
    """Digest of everything a build depends on: pinned weights, this package's code, the exporter's versions."""
    from importlib.metadata import version

    tools = [version(name) for name in ("onnx", "onnxruntime", "librosa", "numpy")]
    digest = hashlib.sha256()
    digest.update(
        json.dumps(
            [MANIFEST_FORMAT, EXPORT_REVISION, OPSET, spec.name, tools, source.CHECKPOINT_SHA256[spec.folder]]
        ).encode()
    )
    for path in sorted(PACKAGE_DIR.glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    for path in sorted(FIXTURES_DIR.glob("*.npz")):  # parity figures in the manifest are measured on these
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def is_up_to_date(onnx_path: Path, manifest_path: Path, key: str) -> bool:
    if not (onnx_path.exists() and manifest_path.exists() and parity_patches_path(onnx_path).exists()):
        return False
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        return False
    return manifest.get("build_key") == key and manifest["onnx"]["sha256"] == source.sha256_file(onnx_path)


def export_onnx(spec: ModelSpec, tensors: dict[str, np.ndarray]) -> bytes:
    """The tagger as ONNX bytes with a dynamic batch axis, checked with full shape inference."""
    import onnx

    model = build_tagger(spec, tensors)
    model.producer_name, model.producer_version = "taggram.model_export", str(EXPORT_REVISION)
    onnx.checker.check_model(model, full_check=True)
    ops = {node.op_type for node in model.graph.node}
    if not ops <= ALLOWED_OPS:
        raise ValueError(f"{spec.name}: op types outside the allow-list: {sorted(ops - ALLOWED_OPS)}")
    return model.SerializeToString(deterministic=True)


def manifest_for(
    spec: ModelSpec, checkpoint: source.Checkpoint, onnx_bytes: bytes, onnx_file: str, key: str, figures: dict
) -> dict:
    return {
        "format": MANIFEST_FORMAT,
        "name": spec.name,
        "version": f"{source.PACKAGE}-{source.PACKAGE_VERSION}+export.{EXPORT_REVISION}",
        "architecture": spec.architecture,
        "dataset": spec.dataset,
        "source": {
            "package": source.PACKAGE,
            "version": source.PACKAGE_VERSION,
            "licence": source.LICENCE,
            "wheel_sha256": source.WHEEL_SHA256,
            "checkpoint": spec.folder,
            "files_sha256": checkpoint.sha256,
            "published_test_roc_auc": spec.published_roc_auc,
            "published_test_pr_auc": spec.published_pr_auc,
        },
        "onnx": {"file": onnx_file, "sha256": sha256_bytes(onnx_bytes), "opset": OPSET},
        "labels": spec.labels,
        "sample_rate": frontend.SAMPLE_RATE,
        "patch_samples": frontend.PATCH_SAMPLES,
        "patch_frames": frontend.PATCH_FRAMES,
        "frame_hop": frontend.HOP_LENGTH,
        "default_patch_hop_frames": frontend.PATCH_FRAMES,
        "input": {
            "name": "waveform",
            "dtype": "float32",
            "shape": ["batch", frontend.PATCH_SAMPLES],
            "meaning": "mono 16 kHz samples of one patch: 256 samples of context before its first frame's "
            "centre and after its last; patch i of a track starts at sample 187·256·i of the "
            "track left-padded with 256 zeros",
        },
        "outputs": {
            name: {"dim": out.dim, "dtype": "float32", "shape": output_shape(name, out.dim), "meaning": out.meaning}
            for name, out in spec.outputs.items()
        },
        "frontend": {
            "n_fft": frontend.N_FFT,
            "hop_length": frontend.HOP_LENGTH,
            "window": "hann (periodic)",
            "power": 2.0,
            "n_mels": frontend.N_MELS,
            "fmin": frontend.F_MIN,
            "fmax": frontend.F_MAX,
            "mel_scale": "slaney",
            "mel_norm": "slaney",
            "compression": "log10(1 + 10000·mel), float32",
            "center_padding_samples": frontend.N_FFT // 2,
            "center_pad_mode": "constant (zeros)",
        },
        "short_audio": {"training_padding": "repeat-pad"},
        "parity": figures,
        "build_key": key,
    }


def build_model(spec: ModelSpec, wheel: Path, out_dir: Path, cache_dir: Path, force: bool = False) -> bool:
    """Build one model; returns False when it was already up to date."""
    onnx_path, manifest_path = out_dir / f"{spec.name}.onnx", out_dir / f"{spec.name}.json"
    key = build_key(spec)
    if not force and is_up_to_date(onnx_path, manifest_path, key):
        log(f"{spec.name}: up to date")
        return False
    log(f"{spec.name}: reading checkpoint {spec.folder}")
    checkpoint = source.extract_checkpoint(wheel, spec.folder, cache_dir)
    tensors = read_checkpoint(checkpoint.prefix)
    log(f"{spec.name}: exporting ONNX (opset {OPSET})")
    onnx_bytes = export_onnx(spec, tensors)
    log(f"{spec.name}: measuring parity against the TF reference fixtures")
    figures = parity.measure(onnx_bytes, spec, FIXTURES_DIR)
    missed = {name: figures[name] for name, limit in PARITY_LIMITS.items() if not figures[name] <= limit}
    if missed:
        raise ValueError(f"{spec.name}: parity with the TF reference misses its limits {PARITY_LIMITS}: {missed}")
    manifest = manifest_for(spec, checkpoint, onnx_bytes, onnx_path.name, key, figures)
    out_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write(onnx_path, onnx_bytes)
    _atomic_write(parity_patches_path(onnx_path), encode_parity_patches(parity.reference_windows(spec, FIXTURES_DIR)))
    _atomic_write(manifest_path, (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode())
    log(f"{spec.name}: wrote {onnx_path} ({len(onnx_bytes) / 1e6:.1f} MB) and {manifest_path.name}")
    return True


def _atomic_write(path: Path, data: bytes) -> None:
    """Readers (a starting service) never see a half-written model."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as tmp:
        tmp.write(data)
    os.chmod(tmp.name, MODEL_FILE_MODE)
    Path(tmp.name).replace(path)


def build_all(names: list[str], out_dir: Path, cache_dir: Path, force: bool = False) -> list[str]:
    wheel = source.download_wheel(cache_dir)
    return [name for name in names if build_model(MODELS[name], wheel, out_dir, cache_dir, force)]
