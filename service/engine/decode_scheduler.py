"""Decode scheduling: every request's decoder shares the few decode threads, one chunk at a time.

A request's decoding is a sequence of steps (one decoded chunk each, ≈10 s of audio, a few patches). The decode
threads run steps, not whole decodes: after each step the thread goes back to the scheduler, which picks the next
step to run. So a decoder never holds a thread while it waits, and a new request starts decoding within one step
of arriving, however many long uploads are in flight.

Credits bound memory: a task may run a step only while it has credits (patches it may still hand to inference
before the earlier ones are computed: ``service.engine.pipeline.PATCHES_AHEAD``). A task without credits is *parked* —
it holds no thread — and becomes runnable again as soon as inference hands a credit back. A step that starts with
credits emits all the patches of its chunk, so a task is at most ``ahead_patches`` + one chunk's patches ahead of
inference.

Policy (which runnable task's step runs next): lowest ``(priority class, audio decoded so far)``, i.e. interactive
requests first, and within a class *least decoded first* ("least attained service"). That needs no knowledge of a
track's length, which is unknown until it is decoded: a new request has decoded nothing and goes first, a short
one is done before it has decoded much, and long uploads share the threads evenly. Strict priority between
classes could starve bulk decoding under an endless stream of interactive requests; each interactive request is
short, and their number is bounded by ``TAGGRAM_MAX_CONCURRENT_ANALYSES``, so bulk work waits at most a few steps.
"""

from __future__ import annotations

import itertools
import threading
from concurrent.futures import Future

INTERACTIVE = 0  # priority class served first: e.g. a signup form waiting for /suggest-subgenres
BULK = 1  # everything else: long uploads, batch clients


class Abandoned(Exception):
    """The request went away (deadline, disconnect, failure): its decoding stopped early."""


class DecodeTask:
    """One request's decoding, as steps. Subclasses implement ``step`` (decode one chunk, emit its patches, return
    False once the decode is complete), ``result`` and ``close`` (release the decoder; called once, on a decode
    thread, whether the task completed, failed or was abandoned)."""

    def __init__(self, priority: int, credits: int) -> None:
        self.priority = priority
        # Patches this task may still emit = allowance + returned − emitted. Two counters, one writer each (the
        # decode thread running a step emits; inference returns credits under the scheduler's lock), so no race.
        self.allowance = credits
        self.emitted = 0
        self.returned = 0
        self.progress = 0  # samples decoded so far: the policy's "attained service"
        self.future: Future = Future()  # set by the scheduler: the task's result or its exception
        self.abandoned = False
        self._parked = False
        self._queued = False

    def step(self) -> bool:
        raise NotImplementedError

    def result(self) -> object:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    @property
    def credits(self) -> int:
        return self.allowance + self.returned - self.emitted

    def spend_credit(self) -> None:
        """Called by ``step`` for every patch it emits (from a decode thread)."""
        self.emitted += 1


class DecodeScheduler:
    """``threads`` decode threads stepping the submitted tasks; see the module docstring for the policy."""

    def __init__(self, threads: int, name: str = "decode") -> None:
        self._lock = threading.Condition()
        self._runnable: list[DecodeTask] = []  # small (≤ concurrent analyses): a linear scan picks the next step
        self._order = itertools.count()  # ties (same class, same progress) go to the earlier submission
        self._live: dict[DecodeTask, int] = {}  # submitted, not finished → submission order
        self._stopping = False
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(threads)]
        for thread in self._threads:
            thread.start()

    def submit(self, task: DecodeTask) -> Future:
        with self._lock:
            if self._stopping:
                raise RuntimeError("the decode scheduler is shut down")
            self._live[task] = next(self._order)
            self._make_runnable(task)
        return task.future

    def credit(self, task: DecodeTask, patches: int = 1) -> None:
        """Inference computed ``patches`` of the task's patches: it may emit as many more (resumes a parked task)."""
        with self._lock:
            task.returned += patches
            if task._parked and task.credits > 0:
                task._parked = False
                self._make_runnable(task)

    def abandon(self, task: DecodeTask) -> None:
        """Stop the task at its next step boundary; its decoder is closed on a decode thread."""
        with self._lock:
            if task.abandoned or task.future.done():
                return
            task.abandoned = True
            if task._parked:
                task._parked = False
                self._make_runnable(task)

    def shutdown(self) -> None:
        """Stop the threads once they finish their current step, then end every unfinished task as abandoned."""
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        for thread in self._threads:
            thread.join()
        for task in list(self._live):
            self._finish(task, Abandoned("the service is shutting down"))

    # ---- decode threads ----------------------------------------------------------------------------------------

    def _make_runnable(self, task: DecodeTask) -> None:
        if not task._queued:
            task._queued = True
            self._runnable.append(task)
            self._lock.notify()

    def _rank(self, task: DecodeTask) -> tuple[int, int, int]:
        # An abandoned task goes first: closing it frees its decoder's memory at once.
        return (-1 if task.abandoned else task.priority, task.progress, self._live[task])

    def _next_task(self) -> DecodeTask | None:
        with self._lock:
            while not self._runnable and not self._stopping:
                self._lock.wait()
            if self._stopping:
                return None
            task = min(self._runnable, key=self._rank)
            self._runnable.remove(task)
            task._queued = False
            return task

    def _work(self) -> None:
        while (task := self._next_task()) is not None:
            if task.abandoned:
                self._finish(task, Abandoned("the request was abandoned"))
                continue
            try:
                more = task.step()
            except BaseException as error:  # noqa: BLE001 - the task's failure (bad audio, ...) goes to its request
                self._finish(task, error)
                continue
            if not more:
                self._finish(task, None)
                continue
            with self._lock:
                if task.abandoned or task.credits > 0 or self._stopping:
                    self._make_runnable(task)  # (an abandoned or stopping task is finished on its next pick)
                else:
                    task._parked = True

    def _finish(self, task: DecodeTask, error: BaseException | None) -> None:
        try:
            task.close()
        except Exception as close_error:  # noqa: BLE001 - a failing close must not lose the task's own outcome
            error = error or close_error
        with self._lock:
            self._live.pop(task, None)
        if task.future.done():
            return
        if error is None:
            task.future.set_result(task.result())
        else:
            task.future.set_exception(error)
