"""The batcher's inference workers (service/engine/batch.py, service/engine/run.py): how queued patches become batches,
and that batches run side by side on a multi-worker runner. Cross-request sharing, fairness, the queue bound and
deadlines are specified over real HTTP in tests/system/test_api.py and tests/system/test_reliability.py."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from service.config import Settings
from service.engine.batch import Batcher, BatchRecord
from service.engine.run import BatchPolicy, Runner, batch_policy, load_runner

PATCH_SAMPLES = 48_128


def policy(workers: int, max_batch: int) -> BatchPolicy:
    """The service's policy for these settings, with batches taken as soon as a worker is free (no wait to fill)."""
    settings = Settings(inference_workers=workers, max_batch_patches=max_batch, max_batch_wait_ms=0)
    return batch_policy(settings, on_cuda=False)


@pytest.fixture(scope="module")
def two_worker_runner(models_dir) -> Runner:
    """A runner with the threads of the two-worker policy (each worker's run gets its share of the CPUs)."""
    return load_runner(models_dir / "msd-musicnn.onnx", "cpu", policy(workers=2, max_batch=1).intra_op_threads)


@pytest.fixture(scope="module")
def one_worker_runner(models_dir) -> Runner:
    return load_runner(models_dir / "msd-musicnn.onnx", "cpu", policy(workers=1, max_batch=1).intra_op_threads)


def patches(n: int, seed: int = 0) -> np.ndarray:
    return (0.3 * np.random.default_rng(seed).standard_normal((n, PATCH_SAMPLES))).astype(np.float32)


def run_one_job(
    runner: Runner, rows: np.ndarray, workers: int, max_batch: int
) -> tuple[dict[str, np.ndarray], list[BatchRecord]]:
    """Queue every row of one job before the batcher starts, so the batches it forms depend on the policy alone."""

    async def scenario():
        batcher = Batcher(runner, model="msd-musicnn", policy=policy(workers, max_batch), max_queue_patches=1024)
        job = batcher.open_job()
        for row in rows:
            batcher.add_patch(job, row)
        batcher.close_job(job)
        batcher.start()
        try:
            results = await batcher.wait_for(job, timeout_seconds=60.0)
        finally:
            await batcher.close()
        return results, list(batcher.recent_batches)

    return asyncio.run(scenario())


def sizes(records: list[BatchRecord]) -> list[int]:
    return [len(record.job_ids) for record in records]


def overlap(first: BatchRecord, second: BatchRecord) -> bool:
    return second.started_at < first.finished_at and first.started_at < second.finished_at


# ---- how queued patches become batches ---------------------------------------------------------------------------


def test_each_batch_is_one_workers_share_of_the_queue_and_the_workers_compute_at_the_same_time(two_worker_runner):
    rows = patches(16, seed=1)
    results, records = run_one_job(two_worker_runner, rows, workers=2, max_batch=8)
    assert sizes(records) == [8, 4, 2, 1, 1]  # ceil(queued / 2) each time
    assert overlap(records[0], records[1]), records
    expected = two_worker_runner.run(rows)  # one batch of 16: rows agree to float32 rounding whatever the batching
    for name in ("tags", "embedding"):
        np.testing.assert_allclose(results[name], expected[name], rtol=0, atol=1e-5)


def test_a_short_request_is_spread_over_the_workers(two_worker_runner):
    _, records = run_one_job(two_worker_runner, patches(6, seed=2), workers=2, max_batch=8)
    assert sizes(records) == [3, 2, 1]
    assert overlap(records[0], records[1]), records


def test_a_long_queue_goes_out_in_full_batches_and_only_its_end_in_smaller_shares(two_worker_runner):
    _, records = run_one_job(two_worker_runner, patches(20, seed=3), workers=2, max_batch=4)
    assert sizes(records) == [4, 4, 4, 4, 2, 1, 1]


def test_a_single_worker_takes_full_batches_one_after_another(one_worker_runner):
    _, records = run_one_job(one_worker_runner, patches(12, seed=4), workers=1, max_batch=8)
    assert sizes(records) == [8, 4]
    assert not overlap(*records), records


def test_warm_up_runs_a_full_batch_on_every_inference_thread_before_serving(two_worker_runner):
    """So each serving thread's first batch (its buffers, ONNX Runtime's arena at full size) is paid before ready."""

    async def scenario():
        batcher = Batcher(
            two_worker_runner, model="warm-up-check", policy=policy(workers=2, max_batch=4), max_queue_patches=16
        )
        try:
            await batcher.warm_up(PATCH_SAMPLES)
            return sorted(t.name for t in threading.enumerate() if t.name.startswith("infer-warm-up-check"))
        finally:
            await batcher.close()

    assert len(asyncio.run(scenario())) == 2


def queue_wait(model: str) -> tuple[float, float]:
    from prometheus_client import REGISTRY

    total = REGISTRY.get_sample_value("taggram_queue_wait_seconds_sum", {"model": model}) or 0.0
    count = REGISTRY.get_sample_value("taggram_queue_wait_seconds_count", {"model": model}) or 0.0
    return total, count


def test_queue_wait_runs_from_when_each_patch_was_added_not_from_when_its_job_opened(one_worker_runner):
    decoding_seconds = 2.0  # a job opened this long before its patches arrive (as a decoding request's does)
    model = "queue-wait-check"

    async def scenario():
        batcher = Batcher(one_worker_runner, model=model, policy=policy(workers=1, max_batch=2), max_queue_patches=64)
        batcher.start()
        try:
            job = batcher.open_job()
            await asyncio.sleep(decoding_seconds)
            for row in patches(4, seed=7):
                batcher.add_patch(job, row)
            batcher.close_job(job)
            await batcher.wait_for(job, timeout_seconds=60.0)
        finally:
            await batcher.close()

    before_sum, before_count = queue_wait(model)
    asyncio.run(scenario())
    waited, count = queue_wait(model)[0] - before_sum, queue_wait(model)[1] - before_count
    assert count == 4
    # Each patch waited for at most the batches ahead of it (one worker), never the time before it existed.
    assert waited / count < decoding_seconds, waited / count
