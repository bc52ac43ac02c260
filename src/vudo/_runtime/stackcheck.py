"""Refusing a Spirit call on a thread whose native stack cannot hold the wasm stack budget.

wasmtime's wasm stack budget (``max_wasm_stack``) is fixed when the engine is created
(:func:`.safety.wasm_stack_budget` sizes it from ``ulimit -s`` and ``threading.stack_size``
then); wasmtime has no per-store or per-call budget. A thread made later with a smaller stack
would let deep wasm recursion run past the end of that thread's stack (SIGSEGV), so every call
first checks the calling thread: its stack must hold the budget plus :data:`HOST_MARGIN` for
the host functions called from the deepest wasm frame. The native call path checks what is
left of the stack below the current frame (a thread-local bound, a few nanoseconds); the
Python path checks the thread's whole stack size once per thread.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from typing import Any, NoReturn

from ..errors import StackExhausted

__all__ = ["HOST_MARGIN", "check", "checked", "needed", "record_budget", "refuse",
           "thread_stack_size"]

#: Native stack kept for host functions under the deepest wasm frame, beyond the budget.
HOST_MARGIN = 128 * 1024

_budget = 512 * 1024  # wasmtime's default until the engine records its own


class _Checked(threading.local):
    """Per thread: whether its stack was found big enough (the Python path reads ``ok``)."""

    ok = False


#: The generated Python call path calls :func:`check` only while ``checked.ok`` is false.
checked = _Checked()


def record_budget(budget: int) -> int:
    """Remember the engine's ``max_wasm_stack`` (returns it, for the engine's config)."""
    global _budget
    _budget = budget
    return budget


def needed() -> int:
    """Bytes of native stack a thread needs to call a Spirit."""
    return _budget + HOST_MARGIN


def _load_pthread() -> Any:
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or None)
        for fn in ("pthread_self", "pthread_getattr_np", "pthread_attr_getstack",
                   "pthread_attr_destroy"):
            getattr(lib, fn)
    except (OSError, AttributeError):  # not glibc: no check (the engine's budget stands)
        return None
    lib.pthread_self.restype = ctypes.c_ulong
    lib.pthread_getattr_np.argtypes = [ctypes.c_ulong, ctypes.c_void_p]
    lib.pthread_attr_getstack.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    lib.pthread_attr_destroy.argtypes = [ctypes.c_void_p]
    return lib


_pthread = _load_pthread()


def thread_stack_size() -> int | None:
    """The calling thread's native stack size in bytes, or ``None`` when unknown."""
    if _pthread is None:
        return None
    attr = ctypes.create_string_buffer(256)  # pthread_attr_t is 56 bytes on x86-64 glibc
    if _pthread.pthread_getattr_np(_pthread.pthread_self(), attr) != 0:
        return None
    addr, size = ctypes.c_void_p(), ctypes.c_size_t()
    try:
        if _pthread.pthread_attr_getstack(attr, ctypes.byref(addr), ctypes.byref(size)) != 0:
            return None
    finally:
        _pthread.pthread_attr_destroy(attr)
    return size.value


def refuse(state: Any, function: str, left: int) -> NoReturn:
    """Raise the :class:`~vudo.errors.StackExhausted` of a call refused for its thread."""
    raise StackExhausted(
        f"cannot call {function!r} on Spirit {getattr(state, 'name', '?')!r} from thread "
        f"{threading.current_thread().name!r}: it has only {left // 1024} KiB of native stack, "
        f"a Spirit call needs {needed() // 1024} KiB (the engine's wasm stack budget of "
        f"{_budget // 1024} KiB, fixed when it was created, plus {HOST_MARGIN // 1024} KiB for "
        f"host functions); give the thread more (threading.stack_size) or set it before the "
        f"first Spirit is loaded"
    )


def check(state: Any, function: str) -> None:
    """The Python call path's check: refuse, or mark the calling thread as checked."""
    size = thread_stack_size()
    if size is not None and size < needed():
        refuse(state, function, size)
    checked.ok = True
