"""Run an exported graph with ONNX Runtime: CPU by default, CUDA when onnxruntime-gpu sees a GPU.

On CPU a model runs ``inference_workers`` batches at once, each on its own single-threaded ``session.run`` (one
session, shared: ``run`` is thread-safe); ``batch_policy`` decides those numbers, for the service and the backfill.
One multi-threaded run per batch is what ONNX Runtime does by default, but its threads meet at a barrier after
every operator: when decoding takes a core from one of them, the other waits, and the whole batch slows.
Independent single-threaded runs lose nothing to that, and batching gains nothing per patch on CPU (the same cost
per patch at batch 1 as at batch 16). Measured in docs/benchmarks.md ("Inference parallelism").
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.config import Device, Settings
from service.engine.cpus import usable_cpus
from service.engine.device import CUDA_PROVIDER, resolve_device
from service.errors import DeviceUnavailable, ModelFileError

log = logging.getLogger(__name__)

SERVED_OUTPUTS = ("tags", "embedding")
CPU_PROVIDER = "CPUExecutionProvider"


def choose_providers(device: Device) -> list[str]:
    """ONNX Runtime providers for the setting ``device`` (service.engine.device decides whether CUDA is usable)."""
    if resolve_device(device) == Device.CUDA:
        # HEURISTIC: EXHAUSTIVE re-searches conv algorithms per new shape (hundreds of ms); fixed batch sizes
        # plus warm-up make that a start-up cost only.
        return [(CUDA_PROVIDER, {"cudnn_conv_algo_search": "HEURISTIC"}), CPU_PROVIDER]  # type: ignore[list-item]
    return [CPU_PROVIDER]


@dataclass(frozen=True)
class BatchPolicy:
    """How a model's patches are batched and run, for the service's batcher and the backfill alike."""

    max_batch_patches: int  # the largest batch handed to one run
    max_wait_seconds: float  # how long a batch waits to fill, from its oldest patch (the service's batcher only)
    inference_workers: int  # batches run at once, each on its own thread
    intra_op_threads: int  # ONNX Runtime threads per run; 0 = the runtime's own default


def batch_policy(settings: Settings, on_cuda: bool) -> BatchPolicy:
    """The one place batch sizes, workers and threads are decided, from ``settings`` (0 = "choose" for
    ``inference_workers`` and ``intra_op_threads``) and the provider.

    CPU: one worker per usable CPU, and the CPUs shared out between the workers (so one thread each by default);
    batches of up to ``max_batch_patches``. Decoding (the service's decode threads, the backfill's decode processes)
    takes its CPU time from these workers without a core of its own: single-threaded runs do not wait for each
    other, so a core shared with a decoder is only that much slower (docs/backfill.md measures it).
    CUDA: one worker (the GPU runs one batch at a time anyway), ONNX Runtime's own thread default, and batches of up
    to the largest of ``cuda_batch_sizes`` (every batch is padded to one of them anyway).
    """
    max_wait_seconds = settings.max_batch_wait_ms / 1000
    if on_cuda:
        return BatchPolicy(
            max(settings.cuda_batch_sizes), max_wait_seconds, settings.inference_workers or 1, settings.intra_op_threads
        )
    cpus = usable_cpus()
    workers = settings.inference_workers or cpus
    return BatchPolicy(
        settings.max_batch_patches, max_wait_seconds, workers, settings.intra_op_threads or max(1, cpus // workers)
    )


class CpuSlots:
    """At most one single-threaded CPU run per usable core at once, process-wide, whatever the number of models.

    Each model has its own inference threads (one per core), so with four models eight runs could compute at once on
    two cores: no faster than two, but the shared arena would then have to hold eight runs' activations (the
    per-session figure again). Capped at the cores, the arena's peak is the cores' worth of runs, which warm-up
    reaches, so it does not grow under load after ready.
    """

    _lock = threading.Lock()
    _semaphore: threading.BoundedSemaphore | None = None

    @classmethod
    def get(cls) -> threading.BoundedSemaphore:
        with cls._lock:
            if cls._semaphore is None:
                cls._semaphore = threading.BoundedSemaphore(usable_cpus())
            return cls._semaphore


@dataclass
class Runner:
    """One InferenceSession; `run` is thread-safe and releases the GIL while it computes."""

    session: ort.InferenceSession
    provider: str
    fixed_batch_sizes: tuple[int, ...]  # empty on CPU: any batch size runs as is
    # On CPU with single-threaded runs: the process-wide CpuSlots; None on CUDA or with multi-threaded runs.
    slots: threading.BoundedSemaphore | None = None
    runtime: str = "onnxruntime"  # with ``precision``: what /models, /metrics and every cache key record
    precision: str = "fp32"  # service.engine.precision.Precision.FP32: today's path

    def padded_size(self, batch: int) -> int:
        fitting = [size for size in self.fixed_batch_sizes if size >= batch]
        return min(fitting) if fitting else batch

    def run(self, patches: np.ndarray) -> dict[str, np.ndarray]:
        """patches [n, patch_samples] → {"tags": [n, labels], "embedding": [n, dim]}, float32."""
        n = len(patches)
        size = self.padded_size(n)
        if size != n:
            patches = np.concatenate([patches, np.zeros((size - n, patches.shape[1]), np.float32)])
        if self.slots is None:
            outputs = self.session.run(list(SERVED_OUTPUTS), {"waveform": patches})
        else:
            with self.slots:
                outputs = self.session.run(list(SERVED_OUTPUTS), {"waveform": patches})
        return {name: value[:n] for name, value in zip(SERVED_OUTPUTS, outputs)}


# One CPU arena for every session of the process instead of one per session: the four models' arenas each grow to
# their own peak, where one shared arena holds the largest at any moment, at the same speed (docs/benchmarks.md,
# "Memory: four models, per-session vs shared ONNX Runtime arena"). Sessions opt in with this session config entry.
USE_ENV_ALLOCATORS = "session.use_env_allocators"
_shared_arena_lock = threading.Lock()
_shared_arena_registered = False


def share_cpu_arena() -> None:
    """Register the process-wide CPU arena with ONNX Runtime's environment (once; later calls do nothing)."""
    global _shared_arena_registered
    with _shared_arena_lock:
        if _shared_arena_registered:
            return
        memory = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        # 0 / -1: no cap, ONNX Runtime's default growth, chunk size and dead-bytes threshold.
        ort.create_and_register_allocator(memory, ort.OrtArenaCfg(0, -1, -1, -1))
        _shared_arena_registered = True


def load_runner(
    path: Path, device: Device, intra_op_threads: int, cuda_batch_sizes: tuple[int, ...] = (), shared_arena: bool = True
) -> Runner:
    """A Runner for ``path`` with ``intra_op_threads`` ONNX Runtime threads per run (0 = the runtime's default; the
    service's and the backfill's come from ``batch_policy``); ``shared_arena``: CPU memory from the process-wide
    arena (False: the session's own, for comparison)."""
    providers = choose_providers(device)
    options = ort.SessionOptions()
    if shared_arena:
        share_cpu_arena()
        options.add_session_config_entry(USE_ENV_ALLOCATORS, "1")
    options.intra_op_num_threads = intra_op_threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # The memory-pattern planner keeps an arena per input shape; off, the same batches use much less memory at the
    # same speed (docs/backfill.md, "Design").
    options.enable_mem_pattern = False
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as error:  # noqa: BLE001 - onnxruntime raises its own types for unreadable graphs
        raise ModelFileError(f"model file {path} cannot be loaded by onnxruntime: {error}") from None
    provider = session.get_providers()[0]
    if providers[0] != CPU_PROVIDER and provider != CUDA_PROVIDER:
        # A GPU is visible, yet the CUDA provider did not start (onnxruntime logged why: a missing CUDA or cuDNN
        # library, an old driver). Serving on CPU with the CUDA batch policy would be slow and silent: refuse.
        raise DeviceUnavailable(
            f"{path}: the CUDA provider could not start on the visible GPU (onnxruntime's "
            "error above says why); set TAGGRAM_DEVICE=cpu to serve on CPU"
        )
    fixed = tuple(sorted(cuda_batch_sizes)) if provider == CUDA_PROVIDER else ()
    single_threaded_cpu = provider == CPU_PROVIDER and intra_op_threads == 1
    return Runner(session, provider, fixed, CpuSlots.get() if single_threaded_cpu else None)
