"""The GPU image without the vendor base: onnxruntime-gpu with NVIDIA's CUDA and cuDNN wheels on the same slim
Python base as the CPU image (no nvidia/cuda image, which cannot be pulled here anyway).

On a machine without a GPU (this one) it must still build, offer the CUDA provider, serve on CPU with one log line
under TAGGRAM_DEVICE=auto, and refuse to start with one line under TAGGRAM_DEVICE=cuda (the image's default): a GPU
node that lost its device must not quietly serve on CPU. On a GPU machine: bench/gpu.py.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from service.engine.device import CUDA_PROVIDER
from tests.support import containers

pytestmark = pytest.mark.slow

GPU_IMAGE = containers.CPU_IMAGE + "-gpu"
NAME = "taggram-gpu-image-test"
LOG_LINE = re.compile(r"^\S+ \S+ (INFO|WARNING|ERROR) ", re.M)  # service/logs.py's format: one record per line


@pytest.fixture(scope="module")
def gpu_image() -> str:
    containers.require_engine()
    containers.build_image("gpu", GPU_IMAGE)
    print(f"\n[image-test] {GPU_IMAGE}: {containers.image_size_bytes(GPU_IMAGE) / 1e6:.0f} MB")
    return GPU_IMAGE


def run(image: str, *command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    flags = [flag for key, value in (env or {}).items() for flag in ("--env", f"{key}={value}")]
    return containers.docker("run", "--rm", *flags, image, *command, check=False, timeout=300)


def test_the_cuda_provider_and_the_cuda_libraries_are_in_the_image(gpu_image):
    probe = (
        "import onnxruntime as ort; print(ort.get_available_providers()); "
        "ort.preload_dlls(cuda=True, cudnn=True, msvc=False); print('preloaded')"
    )
    result = run(gpu_image, "python", "-c", probe)
    assert result.returncode == 0 and CUDA_PROVIDER in result.stdout and "preloaded" in result.stdout, result.stderr


def test_auto_without_a_gpu_serves_on_cpu_and_says_so_in_one_line(gpu_image):
    with containers.running(gpu_image, NAME, env={"TAGGRAM_DEVICE": "auto", "TAGGRAM_MODELS": "msd-musicnn"}) as box:
        box.wait_ready()
        logs = box.logs()
    lines = [line for line in logs.splitlines() if "TAGGRAM_DEVICE=auto" in line]
    assert len(lines) == 1 and "serving on CPU" in lines[0] and "no NVIDIA driver" in lines[0], logs[-3000:]
    assert "CPUExecutionProvider" in logs and "Traceback" not in logs


def test_cuda_without_a_gpu_refuses_to_start_in_one_line(gpu_image):
    result = run(gpu_image)  # the image's default: TAGGRAM_DEVICE=cuda
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert len(LOG_LINE.findall(output)) == 1 and "cannot start: TAGGRAM_DEVICE=cuda but no NVIDIA driver" in output
    assert "Traceback" not in output
