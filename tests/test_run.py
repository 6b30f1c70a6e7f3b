"""Running a graph (service/run.py): outputs per patch, and the fixed-size padding used on CUDA."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from service.run import Runner, choose_providers, load_runner


@pytest.fixture(scope="module")
def cpu_runner(models_dir) -> Runner:
    return load_runner(models_dir / "msd-musicnn.onnx", "cpu", 0, ())


def patches(n: int, seed: int = 0) -> np.ndarray:
    return (0.3 * np.random.default_rng(seed).standard_normal((n, 48_128))).astype(np.float32)


def test_cpu_runs_any_batch_size_as_is(cpu_runner):
    assert cpu_runner.provider == "CPUExecutionProvider" and cpu_runner.fixed_batch_sizes == ()
    out = cpu_runner.run(patches(3))
    assert out["tags"].shape == (3, 50) and out["embedding"].shape == (3, 200)
    assert out["tags"].dtype == np.float32


def test_padding_to_fixed_batch_sizes_leaves_each_patchs_outputs_unchanged(cpu_runner):
    padded = Runner(cpu_runner.session, cpu_runner.provider, (1, 4, 16))
    assert [padded.padded_size(n) for n in (1, 2, 4, 5, 16, 17)] == [1, 4, 4, 16, 16, 17]
    batch = patches(5, seed=1)
    expected, actual = cpu_runner.run(batch), padded.run(batch)
    assert actual["tags"].shape == (5, 50)
    np.testing.assert_allclose(actual["tags"], expected["tags"], atol=1e-6)
    np.testing.assert_allclose(actual["embedding"], expected["embedding"], rtol=1e-5, atol=1e-5)


def test_cpu_is_chosen_unless_cuda_is_available_and_an_unavailable_cuda_is_refused():
    assert choose_providers("cpu") == ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert choose_providers("auto")[0][0] == "CUDAExecutionProvider"
    else:
        assert choose_providers("auto") == ["CPUExecutionProvider"]
        with pytest.raises(RuntimeError, match="onnxruntime-gpu"):
            choose_providers("cuda")
