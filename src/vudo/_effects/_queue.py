"""The bounded job queue that runs effects off the Spirit's thread and delivers their results.

Each Spirit has its own FIFO drained by one task at a time on the executor, so its results
arrive in emission order while different Spirits run in parallel. The queue is bounded twice:
jobs per Spirit (``max_queued``) and payload bytes held by all queued jobs (``max_queued_bytes``);
a job over either bound is refused with ERROR before anything is queued.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor

from ..abi import ResultCode
from ._base import EffectTarget, message_cap
from ._outcome import Failed, log
from ._wire import encode_result

__all__ = [
    "DEFAULT_MAX_QUEUED",
    "DEFAULT_MAX_QUEUED_BYTES",
    "DEFAULT_MAX_WORKERS",
    "Job",
    "JobQueue",
]

#: Worker threads of the pool a handler creates for itself.
DEFAULT_MAX_WORKERS = 4
#: Effects one Spirit may have accepted and not yet finished.
DEFAULT_MAX_QUEUED = 64
#: Payload bytes all queued effects of a handler may hold together (64 MiB).
DEFAULT_MAX_QUEUED_BYTES = 64 * 1024 * 1024

#: A checked effect, ready to run on a worker: returns the result envelope.
Job = Callable[[], bytes]
_Entry = tuple[EffectTarget, str, Job, int]


class JobQueue:
    """Per-Spirit FIFOs of effect jobs on an executor, bounded in jobs and bytes."""

    def __init__(
        self,
        executor: Executor | None,
        *,
        max_workers: int = DEFAULT_MAX_WORKERS,
        max_queued: int = DEFAULT_MAX_QUEUED,
        max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES,
    ) -> None:
        if max_queued < 1 or max_queued_bytes < 1:
            raise ValueError("max_queued and max_queued_bytes must be >= 1")
        self._owns_executor = executor is None
        self._executor: Executor = executor or ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix="vudo-effect"
        )
        self.max_queued = max_queued
        self.max_queued_bytes = max_queued_bytes
        # cond guards everything below; waiters use it to see _pending fall to zero.
        self.cond = threading.Condition()
        self._queues: dict[int, deque[_Entry]] = {}
        self._per_spirit: dict[int, int] = {}  # accepted, not finished (queued or running)
        self._pending = 0
        self._bytes = 0
        self.closed = False

    @property
    def pending(self) -> int:
        """Jobs accepted whose result has not been delivered (or dropped) yet."""
        with self.cond:
            return self._pending

    @property
    def queued_bytes(self) -> int:
        """Payload bytes held by accepted jobs that have not finished."""
        with self.cond:
            return self._bytes

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every accepted job has finished; False on timeout."""
        with self.cond:
            return self.cond.wait_for(lambda: self._pending == 0, timeout)

    def submit(self, spirit: EffectTarget, sender: str, job: Job, size: int) -> int:
        """Queue ``job`` (holding ``size`` payload bytes) for ``spirit``: OK, or ERROR when the
        queue is closed or full (logged at WARNING)."""
        key = id(spirit)
        with self.cond:
            if self.closed:
                log.warning("Spirit %r: %s after the handler was closed", spirit.name, sender)
                return ResultCode.ERROR
            count = self._per_spirit.get(key, 0)
            if count >= self.max_queued:
                log.warning(
                    "Spirit %r: %s refused: %d effects already queued (max_queued)",
                    spirit.name,
                    sender,
                    count,
                )
                return ResultCode.ERROR
            if self._bytes + size > self.max_queued_bytes:
                log.warning(
                    "Spirit %r: %s refused: queued effects would hold %d bytes, over "
                    "max_queued_bytes %d",
                    spirit.name,
                    sender,
                    self._bytes + size,
                    self.max_queued_bytes,
                )
                return ResultCode.ERROR
            self._per_spirit[key] = count + 1
            self._pending += 1
            self._bytes += size
            queue = self._queues.get(key)
            start = queue is None
            if queue is None:
                queue = self._queues[key] = deque()
            queue.append((spirit, sender, job, size))
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

    def _done(self, key: int, entries: list[_Entry]) -> None:
        """Account for finished or dropped ``entries`` of Spirit ``key`` (caller holds cond)."""
        if not entries:
            return
        self._pending -= len(entries)
        self._bytes -= sum(e[3] for e in entries)
        left = self._per_spirit.get(key, 0) - len(entries)
        if left > 0:
            self._per_spirit[key] = left
        else:
            self._per_spirit.pop(key, None)
        self.cond.notify_all()

    def _abandon(self, key: int) -> None:
        with self.cond:
            self._done(key, list(self._queues.pop(key, ())))

    def _drain(self, key: int) -> None:
        while True:
            with self.cond:
                queue = self._queues[key]
                if not queue or self.closed:
                    del self._queues[key]
                    self._done(key, list(queue))
                    return
                entry = queue.popleft()
            try:
                _run(*entry[:3])
            finally:
                with self.cond:
                    self._done(key, [entry])


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
    cap = message_cap(spirit)
    if cap is not None and len(result) > cap:
        # The Spirit could never receive it: say so in a result it can receive.
        message = f"result of {len(result)} bytes exceeds max_message_size ({cap} bytes)"
        log.warning("Spirit %r: %s %s", spirit.name, sender, message)
        body = message.encode("utf-8")[: max(cap - 4, 0)]
        result = encode_result(ResultCode.BUFFER_TOO_SMALL, body)
    try:
        delivered = spirit.deliver(sender, result)
    except Exception:  # a failing inbox must not stall this Spirit's queue
        log.exception("Spirit %r: delivering the %s result raised", spirit.name, sender)
        return
    if not delivered:
        log.warning("Spirit %r: inbox full or closed, %s result dropped", spirit.name, sender)
