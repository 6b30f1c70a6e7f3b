"""Which device inference runs on: ``TAGGRAM_DEVICE`` (auto, cpu, cuda) against what this machine really has.

onnxruntime-gpu lists ``CUDAExecutionProvider`` as available whether or not a GPU is there (the provider is built
in; the driver is looked for only when a session starts, and a session that cannot use it quietly runs on CPU). So
the GPU is looked for here, once, through the CUDA driver itself (``libcuda.so.1``, which the NVIDIA container
toolkit mounts from the node): ``auto`` without a usable GPU serves on CPU and says why in one log line; ``cuda``
without one refuses to start with one line (``DeviceUnavailable``, which ``taggram serve`` turns into exit 2).
"""

from __future__ import annotations

import ctypes
import functools
import logging

import onnxruntime as ort

from service.config import Device
from service.errors import DeviceUnavailable

__all__ = ["CUDA_PROVIDER", "DeviceUnavailable", "preload_cuda_libraries", "resolve_device", "visible_gpus"]

log = logging.getLogger(__name__)

CUDA_PROVIDER = "CUDAExecutionProvider"
CUDA_DRIVER = "libcuda.so.1"
CUDA_SUCCESS = 0


def visible_gpus() -> tuple[int, str]:
    """GPUs the CUDA driver sees, and, when none, why (no driver, or the driver's error code)."""
    try:
        driver = ctypes.CDLL(CUDA_DRIVER)
    except OSError:
        return 0, f"no NVIDIA driver ({CUDA_DRIVER} cannot be loaded: no GPU passed to this container or machine)"
    status = driver.cuInit(0)
    if status != CUDA_SUCCESS:
        return 0, f"the NVIDIA driver sees no usable GPU (cuInit returned CUDA error {status})"
    count = ctypes.c_int(0)
    status = driver.cuDeviceGetCount(ctypes.byref(count))
    if status != CUDA_SUCCESS or count.value == 0:
        return 0, f"the NVIDIA driver sees no GPU (cuDeviceGetCount: error {status}, {count.value} devices)"
    return count.value, ""


def preload_cuda_libraries() -> None:
    """onnxruntime-gpu finds the CUDA and cuDNN runtimes installed as NVIDIA's Python wheels (the GPU image) only
    once they are loaded: ``onnxruntime.preload_dlls`` is the runtime's own way (1.21+). Where they come from the
    system instead (a CUDA base image), the default library search finds them and this changes nothing."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        preload(cuda=True, cudnn=True, msvc=False)


@functools.cache
def resolve_device(device: Device) -> Device:
    """``Device.CPU`` or ``Device.CUDA`` for the setting ``device``; decided once per process, logged once."""
    if device == Device.CPU:
        return Device.CPU
    cuda_build = CUDA_PROVIDER in ort.get_available_providers()
    if not cuda_build:
        reason = "this onnxruntime has no CUDA provider (install onnxruntime-gpu, as the GPU image does)"
    else:
        gpus, reason = visible_gpus()
        if gpus:
            preload_cuda_libraries()
            log.info("TAGGRAM_DEVICE=%s: %d GPU(s) visible, inference on CUDA", device, gpus)
            return Device.CUDA
    if device == Device.CUDA:
        raise DeviceUnavailable(f"TAGGRAM_DEVICE=cuda but {reason}")
    # A GPU build without a GPU is worth a warning (a node without the device, a missing toolkit); the CPU build is
    # simply where auto means CPU.
    log.log(logging.WARNING if cuda_build else logging.INFO, "TAGGRAM_DEVICE=auto: %s; serving on CPU", reason)
    return Device.CPU
