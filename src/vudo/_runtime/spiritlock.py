"""The Spirit lock's contended path: deadlock detection and waits a call can interrupt.

Every Spirit call (and every host operation on its store) holds the Spirit's re-entrant lock:
the native ``RLock`` (``_native/lock.c``) or :class:`SpiritLock` without the native core. An
uncontended acquire never leaves C (or ``threading.Lock.acquire``); a contended one comes
here, on both paths:

* **Deadlock detection.** This module keeps the waits-for graph (thread -> the lock it waits
  for, or the thread it waits for; lock -> the thread holding it). A thread about to wait for
  a lock whose holder waits, through any chain, for this thread is refused at once with
  :class:`~vudo.errors.DeadlockError`: the *second* waiter of a cycle fails, its Spirit call
  unwinds and releases its lock, and the first waiter proceeds. A waiter re-checks at every
  slice, for a cycle closed by a thread wait (a call waiting for its async host function on
  an event loop, which records no lock) registered after it started waiting.
* **Interruptible waits.** The wait runs in slices of one epoch tick; between slices it ends
  with the caller's own exception when a Spirit whose call this thread is inside times out, is
  cancelled (``cancel_call``) or is dismissed (``interrupt``/``dismiss``). (The holder of the
  lock waited for is itself stopped by its own Spirit's interruptions, so dismissing that
  Spirit ends the wait too: its call unwinds and the waiter's call is refused.)
"""

from __future__ import annotations

import re
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import DeadlockError
from .callstate import CallState

__all__ = ["SpiritLock", "contended_wait", "new_spirit_lock", "not_waiting", "owner_of",
           "waiting_for_thread"]

#: Seconds between two checks of a waiting call's interruptions (one epoch tick).
WAIT_SLICE = 0.005

_graph = threading.Lock()
#: thread ident -> the Spirit lock it is waiting for (contended waits), or the ident of the
#: thread it waits for (a call waiting for its async host function on an event loop).
_waiting: dict[int, Any] = {}
#: every Spirit lock -> its Spirit's CallState (weakly: the lock must not keep a Spirit alive).
_states: weakref.WeakKeyDictionary[Any, weakref.ref[CallState]] = weakref.WeakKeyDictionary()
_get_ident = threading.get_ident


class SpiritLock:
    """A re-entrant lock with ``threading.RLock``'s API whose contended acquire goes through
    :func:`contended_wait` (the pure-Python counterpart of the native ``RLock``).

    It wraps a ``threading.RLock``: an uncontended or re-entrant acquire is one non-blocking C
    acquire, and ``release`` is the RLock's own."""

    __slots__ = ("__weakref__", "_is_owned", "_rlock", "release", "try_acquire")

    def __init__(self) -> None:
        self._rlock = threading.RLock()
        #: Release once (``RuntimeError`` if the calling thread does not hold it).
        self.release = self._rlock.release
        #: ``try_acquire(False)``: the RLock's own non-blocking acquire, for the generated call
        #: path (which calls :meth:`acquire` only when it fails).
        self.try_acquire = self._rlock.acquire
        self._is_owned = self._rlock._is_owned  # type: ignore[attr-defined]

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Acquire (re-entrantly); ``False`` if not acquired within ``timeout``."""
        if self._rlock.acquire(False):
            return True
        if not blocking or timeout == 0:
            return False
        return contended_wait(self, timeout)

    def _wait(self, seconds: float) -> bool:
        return self._rlock.acquire(timeout=max(seconds, 0.0))

    @property
    def _owner(self) -> int:
        # Only the contended path asks; RLock tells its owner only in its repr.
        match = _OWNER.search(repr(self._rlock))
        return int(match.group(1)) if match else 0

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


_OWNER = re.compile(r"owner=(\d+)")


def owner_of(lock: Any) -> int:
    """Ident of the thread holding ``lock``, or 0."""
    return int(lock._owner)


def new_spirit_lock(state: CallState, native: Any) -> Any:
    """The lock of the Spirit whose call state is ``state``: ``native`` (the native RLock
    from ``cnative.rlock()``) when it can take the contended-path hook, else a
    :class:`SpiritLock`."""
    kind = type(native)
    hook = getattr(kind, "_set_wait_hook", None)
    if hook is not None:
        hook(contended_wait)  # idempotent: the same function for every lock
        lock = native
    else:
        lock = SpiritLock()
    _states[lock] = weakref.ref(state)
    state.lock = lock
    return lock


def _state_of(lock: Any) -> CallState | None:
    ref = _states.get(lock)
    return ref() if ref is not None else None


def _cycle(target: Any, me: int) -> list[Any] | None:
    """The locks of a waits-for cycle that waiting for ``target`` would close, or ``None``.
    Called with ``_graph`` held."""
    chain = [target]
    seen = set()
    lock = target
    while True:
        owner = owner_of(lock)
        if owner == me:
            return chain
        if owner == 0 or owner in seen:
            return None
        seen.add(owner)
        lock = _waiting.get(owner)
        while isinstance(lock, int):  # that thread waits for a thread, not a lock
            if lock == me:
                return chain
            if lock in seen:
                return None
            seen.add(lock)
            lock = _waiting.get(lock)
        if lock is None:
            return None
        chain.append(lock)


def _deadlock(target: Any, chain: list[Any], me: int) -> DeadlockError:
    wanted = _state_of(target)
    wanted_name = wanted.name if wanted is not None else "?"
    held = _held_states(me)
    mine = held[-1] if held else None  # no Spirit held: an event loop its Spirit waits for
    names = [repr(getattr(_state_of(lk), "name", "?")) for lk in chain]
    here = repr(mine.name) if mine is not None else "this thread"
    return DeadlockError(
        mine.name if mine is not None else wanted_name,
        mine.current_function if mine is not None else "<host>",
        wanted_name,
        " -> ".join([here, *names, here]),
    )


def _held_states(me: int) -> list[CallState]:
    """The call states of the Spirits whose lock this thread holds (the calls it is in)."""
    out = []
    for lock, ref in list(_states.items()):
        state = ref()
        if state is not None and owner_of(lock) == me:
            out.append(state)
    return out


@contextmanager
def waiting_for_thread(other: int | None) -> Iterator[None]:
    """Record, for the deadlock check, that this thread waits for thread ``other``."""
    me = _get_ident()
    if other is None or other == me:
        yield
        return
    with _graph:
        previous = _waiting.get(me)
        _waiting[me] = other
    try:
        yield
    finally:
        with _graph:
            _restore(me, previous)


@contextmanager
def not_waiting() -> Iterator[None]:
    """Suspend this thread's waits-for record (it runs a call meanwhile)."""
    me = _get_ident()
    with _graph:
        previous = _waiting.pop(me, None)
    try:
        yield
    finally:
        with _graph:
            _restore(me, previous)


def _restore(me: int, previous: Any) -> None:
    if previous is None:
        _waiting.pop(me, None)
    else:
        _waiting[me] = previous


def contended_wait(lock: Any, timeout: float) -> bool:
    """Wait for ``lock`` held by another thread: refuse a deadlock at once, stop when the
    calling thread's calls are interrupted, give up after ``timeout`` (< 0: never)."""
    me = _get_ident()
    with _graph:
        chain = _cycle(lock, me)
        if chain is not None:
            raise _deadlock(lock, chain, me)
        previous = _waiting.get(me)
        _waiting[me] = lock
    try:
        held = _held_states(me)
        give_up = None if timeout < 0 else time.monotonic() + timeout
        while True:
            step = WAIT_SLICE if give_up is None else min(WAIT_SLICE, give_up - time.monotonic())
            if lock._wait(step):
                return True
            with _graph:  # a thread's wait for this one may have closed a cycle since
                chain = _cycle(lock, me)
            if chain is not None:
                raise _deadlock(lock, chain, me)
            for state in held:
                state.check_waiting()
            if give_up is not None and time.monotonic() >= give_up:
                return False
    finally:
        with _graph:
            _restore(me, previous)
