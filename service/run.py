"""Run an exported graph with ONNX Runtime: CPU by default, CUDA when onnxruntime-gpu sees a GPU."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.manifest import ModelFileError

log = logging.getLogger(__name__)

SERVED_OUTPUTS = ("tags", "embedding")
CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


def choose_providers(device: str) -> list[str]:
    available = ort.get_available_providers()
    if device == "cuda" and CUDA_PROVIDER not in available:
        raise RuntimeError("TAGGRAM_DEVICE=cuda but onnxruntime has no CUDA provider (install onnxruntime-gpu)")
    if device in ("cuda", "auto") and CUDA_PROVIDER in available:
        # HEURISTIC: EXHAUSTIVE re-searches conv algorithms per new shape (hundreds of ms); fixed batch sizes
        # plus warm-up make that a start-up cost only.
        return [(CUDA_PROVIDER, {"cudnn_conv_algo_search": "HEURISTIC"}), CPU_PROVIDER]  # type: ignore[list-item]
    return [CPU_PROVIDER]


@dataclass
class Runner:
    """One InferenceSession; `run` is thread-safe and releases the GIL while it computes."""

    session: ort.InferenceSession
    provider: str
    fixed_batch_sizes: tuple[int, ...]  # empty on CPU: any batch size runs as is

    def padded_size(self, batch: int) -> int:
        fitting = [size for size in self.fixed_batch_sizes if size >= batch]
        return min(fitting) if fitting else batch

    def run(self, patches: np.ndarray) -> dict[str, np.ndarray]:
        """patches [n, patch_samples] → {"tags": [n, labels], "embedding": [n, dim]}, float32."""
        n = len(patches)
        size = self.padded_size(n)
        if size != n:
            patches = np.concatenate([patches, np.zeros((size - n, patches.shape[1]), np.float32)])
        outputs = self.session.run(list(SERVED_OUTPUTS), {"waveform": patches})
        return {name: value[:n] for name, value in zip(SERVED_OUTPUTS, outputs)}

    def warm_up(self, patch_samples: int, max_batch: int) -> None:
        """Run every batch size the service will use (on CPU: the largest), so ONNX Runtime's memory arena reaches
        its peak before the service reports ready rather than under load, whenever a larger batch first forms."""
        for size in self.fixed_batch_sizes or (max_batch,):
            self.run(np.zeros((size, patch_samples), np.float32))


def load_runner(path: Path, device: str, intra_op_threads: int, cuda_batch_sizes: tuple[int, ...]) -> Runner:
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # The memory-pattern planner keeps an arena per input shape; off, the same batches use ~40% less memory
    # (batch 16: 916 → 571 MB) at the same speed (measured with bench/backfill.py).
    options.enable_mem_pattern = False
    providers = choose_providers(device)
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as error:  # onnxruntime raises its own exception types for unreadable graphs
        raise ModelFileError(f"model file {path} cannot be loaded by onnxruntime: {error}") from None
    provider = session.get_providers()[0]
    fixed = tuple(sorted(cuda_batch_sizes)) if provider == CUDA_PROVIDER else ()
    return Runner(session, provider, fixed)
