"""Run the same exported ONNX graph with OpenVINO in bf16 (the ``cpu-bf16`` extra): the runner of
``TAGGRAM_PRECISION=bf16`` (and of ``auto`` where it wins), chosen in service/engine/precision.py.

It has ``Runner``'s interface (``run``, ``padded_size``, ``provider``, ``precision``), so the batcher, the backfill and
``batch_policy`` use it unchanged: ``inference_workers`` threads each run one batch at a time, each on an infer
request of its own (an OpenVINO infer request is not thread-safe; the compiled model is), inside the same
process-wide ``CpuSlots``. Why OpenVINO and not ONNX Runtime's OpenVINO execution provider: docs/precision.md.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import numpy as np

from service.engine.run import SERVED_OUTPUTS, CpuSlots
from service.errors import ModelFileError

OPENVINO_EXTRA = "cpu-bf16"  # pyproject.toml's optional dependency that brings the openvino package
OPENVINO_PROVIDER = "OpenVINO CPU"
OPENVINO_RUNTIME = "openvino"
HINTS = {"fp32": "f32", "bf16": "bf16"}  # our precision names → OpenVINO's INFERENCE_PRECISION_HINT values


def openvino_installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


def compile_config(precision: str, inference_workers: int, intra_op_threads: int) -> dict[str, str]:
    """OpenVINO CPU properties matching ``batch_policy``: one stream per inference worker, each with the worker's
    threads; no core pinning (decoding shares the cores, as with ONNX Runtime)."""
    return {
        "INFERENCE_PRECISION_HINT": HINTS[precision],
        "NUM_STREAMS": str(inference_workers),
        "INFERENCE_NUM_THREADS": str(inference_workers * max(1, intra_op_threads)),
        "ENABLE_CPU_PINNING": "NO",
    }


class OpenVinoRunner:
    """One compiled model; ``run`` is thread-safe (one infer request per calling thread) and releases the GIL."""

    fixed_batch_sizes: tuple[int, ...] = ()  # CPU only: any batch size runs as is
    provider = OPENVINO_PROVIDER
    runtime = OPENVINO_RUNTIME

    def __init__(self, path: Path, precision: str, inference_workers: int, intra_op_threads: int) -> None:
        import openvino as ov

        self.precision = precision
        try:
            self.compiled = ov.Core().compile_model(
                str(path), "CPU", compile_config(precision, inference_workers, intra_op_threads)
            )
        except Exception as error:  # noqa: BLE001 - OpenVINO raises its own RuntimeError subclasses for a bad graph
            raise ModelFileError(f"model file {path} cannot be compiled by openvino: {error}") from None
        self.outputs = [self.compiled.output(name) for name in SERVED_OUTPUTS]
        self._local = threading.local()
        self.slots = CpuSlots.get() if intra_op_threads == 1 else None

    def padded_size(self, batch: int) -> int:
        return batch

    def _request(self):
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        return request

    def run(self, patches: np.ndarray) -> dict[str, np.ndarray]:
        """patches [n, patch_samples] → {"tags": [n, labels], "embedding": [n, dim]}, float32 (bf16 inside)."""
        request = self._request()
        if self.slots is None:
            results = request.infer({"waveform": patches})
        else:
            with self.slots:
                results = request.infer({"waveform": patches})
        # Copies: the request's output tensors are overwritten by this thread's next run.
        return {name: np.array(results[output], np.float32) for name, output in zip(SERVED_OUTPUTS, self.outputs)}
