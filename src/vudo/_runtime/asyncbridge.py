"""Running ``async def`` host functions for a Spirit that WebAssembly calls synchronously.

While an async host function runs, the Spirit call that made it waits on its own thread
holding the Spirit's lock. The Spirit calls the coroutine awaits (``AsyncSeance.invoke``) are
handed to that waiting thread (:class:`Waiter`) and run there, re-entrantly, exactly as a
synchronous host function's calls would: an async host function may call back into its own
Spirit. The wait is registered in the lock's waits-for graph, so a blocking call from the
event loop into the waiting Spirit is refused as a deadlock, and it ends when the call times
out, is cancelled or the Spirit is dismissed.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextvars
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from . import spiritlock
from .callstate import CallState

__all__ = ["AsyncBridge", "Waiter", "current_waiter"]

_serving: contextvars.ContextVar[Waiter | None] = contextvars.ContextVar(
    "vudo_async_host_waiter", default=None)


def current_waiter() -> Waiter | None:
    """The waiting Spirit call whose async host function is running this code, or ``None``."""
    return _serving.get()


class Waiter:
    """The thread of a Spirit call blocked on one async host function, serving the calls
    that function makes (see the module doc)."""

    __slots__ = ("_guard", "_jobs", "_open", "_wake", "thread")

    def __init__(self) -> None:
        self.thread = threading.get_ident()
        self._jobs: collections.deque[tuple[Callable[[], Any], concurrent.futures.Future[Any]]]
        self._jobs = collections.deque()
        self._open = True
        self._guard = threading.Lock()
        self._wake = threading.Event()

    def submit(self, job: Callable[[], Any]) -> concurrent.futures.Future[Any] | None:
        """Run ``job`` on the waiting thread; ``None`` once the host function has returned
        (the caller then runs it elsewhere)."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._guard:
            if not self._open:
                return None
            self._jobs.append((job, future))
        self._wake.set()
        return future

    def _drain(self) -> None:
        while self._jobs:
            job, future = self._jobs.popleft()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job())
            except BaseException as exc:  # the awaiting coroutine gets it, as from a thread
                future.set_exception(exc)

    def serve(self, done: concurrent.futures.Future[Any], other: int | None,
              state: CallState | None) -> Any:
        """Wait for ``done`` (computed on thread ``other``), running submitted jobs meanwhile
        and stopping when ``state``'s call is interrupted; its result."""
        done.add_done_callback(lambda _: self._wake.set())
        try:
            with spiritlock.waiting_for_thread(other):
                self._wait(done, state)
        finally:
            with self._guard:
                self._open = False
            self._drain()  # jobs submitted before it closed still run, here
        return done.result()

    def _wait(self, done: concurrent.futures.Future[Any], state: CallState | None) -> None:
        while not done.done():
            self._wake.wait(spiritlock.WAIT_SLICE)
            self._wake.clear()
            if self._jobs:
                with spiritlock.not_waiting():  # running a call is not waiting
                    self._drain()
            if state is not None and not done.done():
                try:
                    state.check_waiting()
                except BaseException:
                    done.cancel()  # the coroutine is cancelled, not left running
                    raise


async def _served_by(waiter: Waiter, coro: Coroutine[Any, Any, Any]) -> Any:
    _serving.set(waiter)  # this task's context (and its child tasks') only
    return await coro


class AsyncBridge:
    """Where one Spirit's coroutine host functions run.

    ``loop`` is a running event loop to hand coroutines to (an ``AsyncSeance`` sets it);
    otherwise a private loop is created on first use and closed by :meth:`close`.
    """

    __slots__ = ("_private", "loop", "state")

    def __init__(self, state: CallState | None = None) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self._private: asyncio.AbstractEventLoop | None = None
        #: The Spirit's call state: a timeout, cancellation or dismissal ends the wait.
        self.state = state

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run ``coro`` to completion and return its result (called on the Spirit's thread)."""
        loop = self.loop
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        waiter = Waiter()
        if loop is not None and loop.is_running() and running is not loop:
            done = asyncio.run_coroutine_threadsafe(_served_by(waiter, coro), loop)
            return waiter.serve(done, getattr(loop, "_thread_id", None), self.state)
        private = self._private
        if running is not None or (private is not None and private.is_running()):
            # Called from code already inside an event loop (e.g. spirit.call in a coroutine,
            # or a re-entrant call): that loop is blocked on this call, so run on a helper.
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                helper = pool.submit(threading.get_ident).result()
                done = pool.submit(asyncio.run, _served_by(waiter, coro))
                return waiter.serve(done, helper, self.state)
        if private is None:
            private = self._private = asyncio.new_event_loop()
        # On this very thread: calls the coroutine makes run inline (Waiter.thread is us).
        return private.run_until_complete(_served_by(waiter, coro))

    def close(self) -> None:
        """Close the private loop, if one was made."""
        private, self._private = self._private, None
        if private is not None and not private.is_running():
            private.close()
