"""Decode workers: separate processes (started with "spawn") that hash and decode one file at a time and stream its
16 kHz chunks to the parent through a pipe (which blocks while the parent is busy: the backpressure).

Spawned workers import this module and what it imports, and nothing else: numpy, PyAV and soxr (service.decode),
no pyarrow, ONNX Runtime, FastAPI or Redis (tests/integration/test_backfill.py checks it).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import multiprocessing.connection
import signal
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from service.decode import DecodeError, iter_decoded
from service.offline.codes import INTERNAL_ERROR, UNREADABLE_FILE

if TYPE_CHECKING:  # annotations only: a worker never imports the run loop's modules
    from service.offline.backfill.tracks import TrackState


@dataclass(frozen=True)
class DecodeLimits:
    """What a decode worker needs to decode one track (file-size refusals happen in the parent: ``refusal``)."""

    max_seconds: float
    chunk_samples: int


def decode_messages(seq: int, path: str, limits: DecodeLimits) -> Iterator[tuple]:
    """What a worker sends for one file: ("chunk", seq, samples)* then ("end", seq, n_samples, sha256, facts) or
    ("error", seq, code, detail). Size checks (``refusal``) are the parent's, done before the file is sent here."""
    try:
        with open(path, "rb") as f:
            sha256 = hashlib.file_digest(f, "sha256").hexdigest()
            samples = 0
            chunks = iter_decoded(f, max_seconds=limits.max_seconds, chunk_samples=limits.chunk_samples)
            for chunk in chunks:
                samples += chunk.size
                yield ("chunk", seq, chunk)
        yield ("end", seq, samples, sha256, chunks.facts)
    except DecodeError as error:
        yield ("error", seq, error.code, error.detail)
    except OSError as error:
        yield ("error", seq, UNREADABLE_FILE, unreadable_message(error))
    except Exception as error:  # noqa: BLE001 - one file's surprise must not stop the catalog
        yield ("error", seq, INTERNAL_ERROR, f"{type(error).__name__}: {error}")


def unreadable_message(error: OSError) -> str:
    return f"cannot read the file: {error.strerror or error}"


def worker_main(conn: multiprocessing.connection.Connection) -> None:
    """Worker loop: receive (seq, path, limits), send its messages; exit on None or when the parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        while True:
            task = conn.recv()  # EOFError once the parent's end is closed (it exited or was killed)
            if task is None:
                return
            seq, path, limits = task
            for message in decode_messages(seq, path, limits):
                conn.send(message)  # blocks while the parent is busy: this is the backpressure
    except (EOFError, BrokenPipeError, ConnectionResetError, KeyboardInterrupt):
        return


# Files queued per worker: the one it decodes and the next, so it starts on the next file (hashing, probing, the
# first chunk) while the parent still runs the model on the end of the current one. Tracks in flight: 2 × workers.
WORKER_QUEUE = 2


@dataclass(eq=False)
class _Worker:
    process: multiprocessing.process.BaseProcess
    conn: multiprocessing.connection.Connection
    tasks: deque = field(default_factory=deque)  # TrackState, in the order sent; tasks[0] is being decoded


class WorkerPool:
    """``size`` decode processes, each with one duplex pipe and at most ``WORKER_QUEUE`` files queued.

    A worker handles its files in order, so the parent always knows which track a message belongs to (the first
    queued one) and which one a dead worker (its pipe hits EOF) was decoding: that track is recorded as
    ``decoder_crashed``, the files queued behind it go back to the catalog, and a replacement worker starts.
    Workers are spawned (not forked from a parent already running ONNX Runtime threads), import only the decode
    stack, and exit when their pipe closes: a SIGKILLed parent leaves no decoder running for long.
    """

    def __init__(self, size: int) -> None:
        self._context = multiprocessing.get_context("spawn")
        self.workers: list[_Worker] = [self._start() for _ in range(size)]

    def _start(self) -> _Worker:
        parent_end, child_end = self._context.Pipe(duplex=True)
        process = self._context.Process(target=worker_main, args=(child_end,), name="taggram-decode", daemon=True)
        process.start()
        child_end.close()  # only the child holds it now: its death means EOF here
        return _Worker(process, parent_end)

    def with_room(self) -> list[_Worker]:
        """Workers that can queue another file, least loaded first (an idle worker gets work before a prefetch)."""
        return sorted((w for w in self.workers if len(w.tasks) < WORKER_QUEUE), key=lambda w: len(w.tasks))

    def busy(self) -> list[_Worker]:
        return [w for w in self.workers if w.tasks]

    def assign(self, worker: _Worker, state: TrackState, limits: DecodeLimits) -> None:
        """Queue ``state``'s file on ``worker``; an idle worker found dead is replaced first."""
        try:
            worker.conn.send((state.seq, state.track.path, limits))
        except OSError:
            if worker.tasks:
                raise  # a busy worker's death is reported by receive(), with its track
            worker = self.replace(worker)
            worker.conn.send((state.seq, state.track.path, limits))
        worker.tasks.append(state)

    def receive(self, timeout: float) -> list[tuple[_Worker, tuple | None]]:
        """One message from each busy worker that has one ready (None: the worker died)."""
        busy = {w.conn: w for w in self.busy()}
        ready = multiprocessing.connection.wait(list(busy), timeout)
        out: list[tuple[_Worker, tuple | None]] = []
        for conn in ready:
            worker = busy[conn]
            try:
                out.append((worker, conn.recv()))
            except (EOFError, OSError):
                out.append((worker, None))
        return out

    def replace(self, worker: _Worker) -> _Worker:
        """Reap a dead worker and start another in its place."""
        worker.conn.close()
        worker.process.join(timeout=5)
        fresh = self._start()
        self.workers[self.workers.index(worker)] = fresh
        return fresh

    def close(self) -> None:
        for worker in self.workers:
            try:
                if not worker.tasks:
                    worker.conn.send(None)
            except OSError:
                pass
            worker.conn.close()  # a busy worker gets BrokenPipe on its next send and exits
        deadline = time.monotonic() + 5
        for worker in self.workers:
            worker.process.join(timeout=max(deadline - time.monotonic(), 0))
            if worker.process.is_alive():
                worker.process.terminate()
                worker.process.join(timeout=5)
