"""The decode scheduler: a task out of credits holds no thread; interactive and least-decoded tasks go first."""

from __future__ import annotations

import threading

import pytest

from service.engine.decode_scheduler import BULK, INTERACTIVE, Abandoned, DecodeScheduler, DecodeTask

WAIT_SECONDS = 10.0


class Steps(DecodeTask):
    """``steps`` steps of one emitted patch each, logging each step's name into a shared list."""

    def __init__(
        self,
        name: str,
        steps: int,
        log: list[str],
        *,
        priority: int = BULK,
        credits: int = 100,
        gate: threading.Event | None = None,
        fail_at: int | None = None,
    ) -> None:
        super().__init__(priority, credits)
        self.name, self.left, self.log, self.gate, self.fail_at = name, steps, log, gate, fail_at
        self.closed = 0
        self.started = threading.Event()

    def step(self) -> bool:
        self.started.set()
        if self.gate is not None:
            self.gate.wait(WAIT_SECONDS)
        if self.fail_at is not None and len(self.log) >= self.fail_at:
            raise ValueError(f"{self.name} failed")
        self.log.append(self.name)
        self.spend_credit()
        self.progress += 1
        self.left -= 1
        return self.left > 0

    def result(self) -> str:
        return self.name

    def close(self) -> None:
        self.closed += 1


@pytest.fixture
def scheduler():
    made = []

    def make(threads: int) -> DecodeScheduler:
        made.append(DecodeScheduler(threads, name="test-decode"))
        return made[-1]

    yield make
    for one in made:
        one.shutdown()


def test_a_task_out_of_credits_is_parked_without_holding_the_only_thread(scheduler):
    decoder = scheduler(1)
    log: list[str] = []
    long = Steps("long", 1000, log, credits=3)  # never credited: stops after 3 steps
    short = Steps("short", 5, log)
    decoder.submit(long)
    assert decoder.submit(short).result(WAIT_SECONDS) == "short"
    assert log.count("long") == 3 and long.credits == 0 and not long.future.done()
    decoder.credit(long, 2)  # inference caught up by two patches: two more steps, then parked again
    probe = Steps("probe", 1, log)
    probe.progress = 10**9  # least-decoded first: the probe steps after long's two
    decoder.submit(probe).result(WAIT_SECONDS)
    assert log.count("long") == 5


def test_interactive_tasks_step_before_bulk_and_least_decoded_first_within_a_class(scheduler):
    decoder = scheduler(1)
    log: list[str] = []
    gate = threading.Event()
    blocker = Steps("blocker", 1, log, gate=gate)  # holds the thread while the others are queued
    decoder.submit(blocker)
    assert blocker.started.wait(WAIT_SECONDS)
    bulk_a, bulk_b = Steps("a", 3, log), Steps("b", 3, log)
    bulk_a.progress = 10  # a has decoded more than b already: b goes first
    clip = Steps("clip", 2, log, priority=INTERACTIVE)
    for task in (bulk_a, bulk_b, clip):
        decoder.submit(task)
    gate.set()
    for task in (bulk_a, bulk_b, clip):
        task.future.result(WAIT_SECONDS)
    assert log == ["blocker", "clip", "clip", "b", "b", "b", "a", "a", "a"]


def test_abandoning_a_parked_task_closes_it_and_fails_its_future(scheduler):
    decoder = scheduler(1)
    log: list[str] = []
    task = Steps("t", 100, log, credits=1)
    decoder.submit(task)
    decoder.submit(Steps("probe", 1, log)).result(WAIT_SECONDS)  # t has run its one step and is parked
    decoder.abandon(task)
    with pytest.raises(Abandoned):
        task.future.result(WAIT_SECONDS)
    assert task.closed == 1 and log.count("t") == 1


def test_a_failing_step_fails_only_its_task_and_closes_it(scheduler):
    decoder = scheduler(2)
    log: list[str] = []
    bad = Steps("bad", 10, log, fail_at=2)
    with pytest.raises(ValueError, match="bad failed"):
        decoder.submit(bad).result(WAIT_SECONDS)
    assert bad.closed == 1
    assert decoder.submit(Steps("good", 3, log)).result(WAIT_SECONDS) == "good"


def test_shutdown_ends_parked_tasks_as_abandoned(scheduler):
    decoder = DecodeScheduler(1, name="test-decode")
    task = Steps("t", 100, [], credits=1)
    decoder.submit(task)
    decoder.submit(Steps("probe", 1, [])).result(WAIT_SECONDS)
    decoder.shutdown()
    with pytest.raises(Abandoned):
        task.future.result(WAIT_SECONDS)
    assert task.closed == 1
