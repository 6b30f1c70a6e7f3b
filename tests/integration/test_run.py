"""Running a graph (service/engine/run.py): outputs per patch, the fixed-size padding used on CUDA, and the batch
policy: how large batches are and how many run at once on how many threads."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnxruntime as ort
import pytest

from service.config import Device, Settings
from service.engine.cpus import usable_cpus
from service.engine.device import visible_gpus
from service.engine.run import BatchPolicy, Runner, batch_policy, choose_providers, load_runner
from service.errors import DeviceUnavailable


@pytest.fixture(scope="module")
def cpu_runner(models_dir) -> Runner:
    threads = batch_policy(Settings(), on_cuda=False).intra_op_threads
    return load_runner(models_dir / "msd-musicnn.onnx", "cpu", threads)


def workers_and_threads(on_cuda: bool, workers: int, intra_op_threads: int) -> tuple[int, int]:
    """(inference workers, intra-op threads) of the policy for these settings (0 = "choose")."""
    settings = Settings(inference_workers=workers, intra_op_threads=intra_op_threads)
    policy = batch_policy(settings, on_cuda)
    return policy.inference_workers, policy.intra_op_threads


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


def test_cpu_is_chosen_unless_a_gpu_is_usable_and_an_unavailable_cuda_is_refused():
    assert choose_providers(Device.CPU) == ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in ort.get_available_providers() and visible_gpus()[0]:
        assert choose_providers(Device.AUTO)[0][0] == "CUDAExecutionProvider"
    else:
        assert choose_providers(Device.AUTO) == ["CPUExecutionProvider"]
        with pytest.raises(DeviceUnavailable, match="TAGGRAM_DEVICE=cuda but"):
            choose_providers(Device.CUDA)


# ---- parallelism chosen from the machine -------------------------------------------------------------------------


def test_on_cpu_each_usable_cpu_gets_a_single_threaded_worker_unless_told_otherwise():
    cpus = usable_cpus()
    assert workers_and_threads(on_cuda=False, workers=0, intra_op_threads=0) == (cpus, 1)
    assert workers_and_threads(on_cuda=False, workers=1, intra_op_threads=0) == (1, cpus)
    assert workers_and_threads(on_cuda=False, workers=2 * cpus, intra_op_threads=0) == (2 * cpus, 1)
    assert workers_and_threads(on_cuda=False, workers=3, intra_op_threads=4) == (3, 4)


def test_on_cuda_one_worker_and_onnx_runtimes_own_thread_default_unless_told_otherwise():
    assert workers_and_threads(on_cuda=True, workers=0, intra_op_threads=0) == (1, 0)
    assert workers_and_threads(on_cuda=True, workers=2, intra_op_threads=1) == (2, 1)


def test_the_backfill_runs_under_the_services_policy_with_its_own_batch_size():
    """One policy: the backfill changes the batch size only (its batches hold one track's patches)."""
    from service.offline.backfill.cli import DEFAULT_BATCH_PATCHES, backfill_settings, default_batch_policy

    service = batch_policy(Settings(), on_cuda=False)
    backfill = default_batch_policy(Settings())
    assert backfill.max_batch_patches == DEFAULT_BATCH_PATCHES
    assert (backfill.inference_workers, backfill.intra_op_threads) == (
        service.inference_workers,
        service.intra_op_threads,
    )
    told = backfill_settings(Settings(inference_workers=1, intra_op_threads=2), batch_patches=3)
    assert batch_policy(told, on_cuda=False) == BatchPolicy(3, told.max_batch_wait_ms / 1000, 1, 2)


def test_batches_are_the_configured_size_on_cpu_and_the_largest_padded_size_on_cuda():
    settings = Settings(max_batch_patches=8, max_batch_wait_ms=5, cuda_batch_sizes="4,1,16")
    assert batch_policy(settings, on_cuda=False).max_batch_patches == 8
    assert batch_policy(settings, on_cuda=True).max_batch_patches == 16
    assert batch_policy(settings, on_cuda=False).max_wait_seconds == pytest.approx(0.005)


def test_the_policy_is_a_frozen_value():
    policy = batch_policy(Settings(), on_cuda=False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.inference_workers = 99  # type: ignore[misc]


def test_the_runners_session_uses_the_policys_thread_count(models_dir):
    policy = batch_policy(Settings(inference_workers=2), on_cuda=False)
    assert policy.inference_workers == 2
    runner = load_runner(models_dir / "msd-musicnn.onnx", "cpu", policy.intra_op_threads)
    assert runner.session.get_session_options().intra_op_num_threads == max(1, usable_cpus() // 2)
