"""``models/<name>.parity.npz``: the export's reference patches, shipped next to the graph for the bf16 parity guard.

The export measures its parity with the TF graphs on the committed fixtures (tests/fixtures/reference: real music
and test signals); it writes the same patch windows here so a service, which never has the tests folder, can run
them through both precisions before it serves bf16 (service/engine/precision.py). int16 keeps the file small: the
fixtures' audio is int16 and the windows are exact slices of it (plus zeros), so nothing is lost.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

PARITY_SUFFIX = ".parity.npz"
INT16_SCALE = 32768.0  # the fixtures' float32 audio is audio_int16 / 32768 (model_export/parity.py)


def parity_patches_path(onnx_file: Path) -> Path:
    return onnx_file.with_name(onnx_file.stem + PARITY_SUFFIX)


def encode_parity_patches(windows: np.ndarray) -> bytes:
    """The file's bytes for ``windows`` [patches, patch_samples] float32, each a multiple of 1/32768 in [-1, 1)."""
    as_int16 = np.round(windows * INT16_SCALE)
    info = np.iinfo(np.int16)
    if not np.array_equal(as_int16 / INT16_SCALE, windows) or as_int16.min() < info.min or as_int16.max() > info.max:
        raise ValueError("parity windows must be int16 audio / 32768 (the reference fixtures' audio)")
    buffer = io.BytesIO()
    np.savez_compressed(buffer, waveform_int16=as_int16.astype(np.int16))
    return buffer.getvalue()


def load_parity_patches(path: Path) -> np.ndarray | None:
    """[patches, patch_samples] float32, or None where the model was exported without them."""
    try:
        with np.load(path) as data:
            return data["waveform_int16"].astype(np.float32) / np.float32(INT16_SCALE)
    except FileNotFoundError:
        return None
