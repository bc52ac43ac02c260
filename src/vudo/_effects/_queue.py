"""The job queue that runs effects off the Spirit's thread and delivers their results.

Each Spirit has its own FIFO drained by one task at a time on the executor, so its results
arrive in emission order while different Spirits run in parallel.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor

from ..abi import ResultCode
from ._base import EffectTarget
from ._outcome import Failed, log
from ._wire import encode_result

__all__ = ["DEFAULT_MAX_WORKERS", "Job", "JobQueue"]

#: Worker threads of the pool a handler creates for itself.
DEFAULT_MAX_WORKERS = 4

#: A checked effect, ready to run on a worker: returns the result envelope.
Job = Callable[[], bytes]
_Entry = tuple[EffectTarget, str, Job]


class JobQueue:
    """Per-Spirit FIFOs of effect jobs on an executor."""

    def __init__(
        self, executor: Executor | None, *, max_workers: int = DEFAULT_MAX_WORKERS
    ) -> None:
        self._owns_executor = executor is None
        self._executor: Executor = executor or ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix="vudo-effect"
        )
        # cond guards everything below; waiters use it to see _pending fall to zero.
        self.cond = threading.Condition()
        self._queues: dict[int, deque[_Entry]] = {}
        self._pending = 0
        self.closed = False

    @property
    def pending(self) -> int:
        """Jobs accepted whose result has not been delivered (or dropped) yet."""
        with self.cond:
            return self._pending

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every accepted job has finished; False on timeout."""
        with self.cond:
            return self.cond.wait_for(lambda: self._pending == 0, timeout)

    def submit(self, spirit: EffectTarget, sender: str, job: Job) -> int:
        """Queue ``job`` for ``spirit``: OK, or ERROR when the queue is closed."""
        key = id(spirit)
        with self.cond:
            if self.closed:
                log.warning("Spirit %r: %s after the handler was closed", spirit.name, sender)
                return ResultCode.ERROR
            self._pending += 1
            queue = self._queues.get(key)
            start = queue is None
            if queue is None:
                queue = self._queues[key] = deque()
            queue.append((spirit, sender, job))
        if start:
            # One drain task per Spirit keeps its results in emission order.
            try:
                future = self._executor.submit(self._drain, key)
            except RuntimeError:  # the (shared) executor was shut down
                self._abandon(key)
                return ResultCode.ERROR
            future.add_done_callback(lambda f: self._abandon(key) if f.cancelled() else None)
        return ResultCode.OK

    def close(self) -> None:
        """Refuse new jobs, let running ones finish and drop queued ones (idempotent)."""
        with self.cond:
            if self.closed:
                return
            self.closed = True
        if self._owns_executor:
            self._executor.shutdown(wait=True, cancel_futures=True)
        self.wait_idle()

    def _abandon(self, key: int) -> None:
        with self.cond:
            dropped = self._queues.pop(key, deque())
            self._pending -= len(dropped)
            self.cond.notify_all()

    def _drain(self, key: int) -> None:
        while True:
            with self.cond:
                queue = self._queues[key]
                if not queue or self.closed:
                    del self._queues[key]
                    self._pending -= len(queue)
                    self.cond.notify_all()
                    return
                spirit, sender, job = queue.popleft()
            try:
                _run(spirit, sender, job)
            finally:
                with self.cond:
                    self._pending -= 1
                    self.cond.notify_all()


def _run(spirit: EffectTarget, sender: str, job: Job) -> None:
    """Run one job and deliver its result; nothing a job or an inbox does escapes."""
    if spirit.terminated:
        log.debug("Spirit %r terminated: %s dropped", spirit.name, sender)
        return
    try:
        result = job()
    except Failed as exc:
        log.info("Spirit %r: %s failed: %s", spirit.name, sender, exc.message)
        result = encode_result(exc.status, exc.message.encode("utf-8"))
    except Exception as exc:  # a bug or an unforeseen error must not kill the worker
        log.exception("Spirit %r: %s raised", spirit.name, sender)
        result = encode_result(ResultCode.ERROR, f"{type(exc).__name__}: {exc}".encode())
    try:
        delivered = spirit.deliver(sender, result)
    except Exception:  # a failing inbox must not stall this Spirit's queue
        log.exception("Spirit %r: delivering the %s result raised", spirit.name, sender)
        return
    if not delivered:
        log.warning("Spirit %r: inbox full or closed, %s result dropped", spirit.name, sender)
