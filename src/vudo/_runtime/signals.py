"""Signals (Ctrl-C, SIGTERM...) while a Spirit runs on the main thread: deferred to safe points.

CPython runs a Python signal handler at the next bytecode of the main thread. While a Spirit
call is under way that bytecode may be the first one of a ctypes callback (a host function
trampoline, the epoch callback) *before* its ``try``: an exception raised there escapes into
wasmtime, which then crashes (SIGSEGV, ``free(): invalid size``) or carries on with garbage.
The same spot also lets a handler call into the running Spirit between a call's return and
the read of its results.

So vudo wraps every Python-level handler installed when a Spirit is created (``protect``).
The wrapper checks the interrupted frame stack: outside vudo's call paths it runs the original
handler at once, as Python would; inside one it only records the signal (a Spirit sleeping in
``vudo_sleep`` sees it within a few milliseconds) and returns. The recorded handlers then run
at the first *safe* point, where whatever they raise is handled like any exception of a host
function:

- the next epoch tick of a Spirit running on the main thread (every few milliseconds while
  wasm runs, limits or not): a ``KeyboardInterrupt`` or ``SystemExit`` there stops the call,
  which raises it; a handler that returns lets the Spirit carry on;
- the end of a host function (a Ctrl-C while it ran makes the call raise ``KeyboardInterrupt``);
- ``vudo_sleep`` after its wake-up;
- otherwise as soon as the main thread has left the call path (the signal is re-delivered).

The Spirit stays usable afterwards. A handler installed *after* the first Spirit was created
is wrapped by the next :func:`protect` (every load calls it) or an explicit call.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any

__all__ = [
    "CALL_PATH_FILE", "PENDING", "has_pending", "interruptible_wait", "pending", "protect",
    "register", "run_deferred",
]

#: The file name given to vudo's generated call paths and trampolines (see ``compile``).
CALL_PATH_FILE = "<vudo-generated"  # the prefix of every generated call path's file name
_REDELIVER_POLL = 0.002
# How often a Spirit in vudo_sleep looks for interrupt(), cancel_call() and deferred signals.
_SLEEP_SLICE = 0.002

_codes: set[CodeType] = set()
_previous: dict[int, Callable[[int, FrameType | None], Any]] = {}
# Signals whose handler waits for a safe point, in arrival order. The handler only appends
# (atomic under the GIL) and writes a byte to a pipe: it takes no lock, starts no thread and
# sets no Event, since a second signal may interrupt it (a storm nests handlers) or land while
# the main thread holds the very lock it would need. Never rebound: trampolines hold it.
_pending: list[int] = []
#: The list itself, for generated code: ``if PENDING: run_deferred()`` costs one truth test.
PENDING = _pending
_lock = threading.Lock()  # between run_deferred and the re-deliverer, never in the handler
_main = threading.main_thread()
_pipe: tuple[int, int] | None = None


def register(fn: Callable[..., Any]) -> None:
    """Mark ``fn`` (a method or function entered from wasm) as part of the call path."""
    code = getattr(fn, "__code__", None)
    if code is not None:
        _codes.add(code)


def pending() -> tuple[int, ...]:
    """The signals waiting for a safe point (for tests and diagnostics)."""
    return tuple(_pending)


def has_pending() -> bool:
    """Whether a deferred handler waits (cheap: checked on every epoch tick)."""
    return bool(_pending)


def in_call_path(frame: FrameType | None) -> bool:
    """Whether ``frame`` or a caller of it is one of vudo's call paths."""
    while frame is not None:
        code = frame.f_code
        if code.co_filename.startswith(CALL_PATH_FILE) or code in _codes:
            return True
        frame = frame.f_back
    return False


def protect() -> None:
    """Wrap the Python-level handlers now installed (main thread only; idempotent)."""
    if threading.current_thread() is not _main:
        return
    for signum in signal.valid_signals():
        try:
            current = signal.getsignal(signum)
        except (OSError, ValueError):
            continue
        if current is _handler or not callable(current):
            continue  # ours already, or SIG_DFL / SIG_IGN / not set from Python
        _start_redeliverer()
        try:
            signal.signal(signum, _handler)
        except (OSError, ValueError, RuntimeError):
            continue
        _previous[signum] = current


def _handler(signum: int, frame: FrameType | None) -> None:
    """The wrapper: defer inside a call path, else run the original handler now."""
    if in_call_path(frame):
        if signum not in _pending:  # a storm of one signal is one handler run
            _pending.append(signum)
        if _pipe is not None:
            try:
                os.write(_pipe[1], b"!")  # the re-deliverer waits for a safe point
            except OSError:
                pass  # pipe full: it is awake already
        return
    _run_original(signum, frame)


def _run_original(signum: int, frame: FrameType | None) -> None:
    original = _previous.get(signum)
    if original is not None:
        original(signum, frame)


def _take() -> list[int]:
    signals: list[int] = []
    with _lock:
        while _pending:  # pop by pop: a handler may append between two bytecodes
            signals.append(_pending.pop(0))
    return signals


def run_deferred() -> None:
    """Run the deferred handlers now: call only at a safe point, inside a ``try``.

    A no-op off the main thread or with nothing pending (the cost on the epoch tick).
    """
    if not _pending or threading.current_thread() is not _main:
        return
    signals = _take()
    for i, signum in enumerate(signals):
        try:
            _run_original(signum, sys._getframe(1))
        except BaseException:
            rest = [s for s in signals[i + 1:] if s not in _pending]
            _pending[:0] = rest  # they run at the next safe point
            raise


def _main_frame() -> FrameType | None:
    return sys._current_frames().get(_main.ident or 0)


def _start_redeliverer() -> None:
    global _pipe
    if _pipe is not None:
        return
    r, w = os.pipe()
    os.set_blocking(w, False)
    _pipe = (r, w)
    threading.Thread(target=_redeliver, args=(r,), name="vudo-signals", daemon=True).start()
    from . import cnative  # it waits in read(): the native auto GIL policy need not count it

    cnative.add_quiet_thread()


def _redeliver(fd: int) -> None:
    """Once the main thread has left the call path, deliver again what no safe point ran
    (then the original handler runs there)."""
    while True:
        try:
            os.read(fd, 512)
        except OSError:
            return
        while _pending and _main.is_alive():
            if in_call_path(_main_frame()):
                time.sleep(_REDELIVER_POLL)
                continue
            for signum in _take():
                signal.pthread_kill(_main.ident or 0, signum)  # handled afresh, outside
            break


def interruptible_wait(state: Any, seconds: float) -> None:
    """``vudo_sleep``'s wait (``state`` is the Spirit's call state, with ``cancelled`` and
    ``aborting``): ends early on ``interrupt()``, ``cancel_call()`` or a deferred signal, whose
    handler then runs here (inside the host function, so what it raises stops the call).

    It sleeps in short slices and looks at those flags in between, instead of waiting on a
    ``threading.Event``: a storm of signals could otherwise land inside the Event's lock (a
    handler that raises there leaves it held), and the next sleep would hang for good.
    """
    run_deferred()
    end = time.monotonic() + seconds
    while not _pending and not state.cancelled and not getattr(state, "aborting", False):
        left = end - time.monotonic()
        if left <= 0:
            break
        time.sleep(left if left < _SLEEP_SLICE else _SLEEP_SLICE)
    run_deferred()
