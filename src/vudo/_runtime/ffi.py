"""Raw wasmtime C API entry points for the fast paths, with lean ctypes prototypes.

The ``wasmtime`` package's own prototypes take typed pointers, which makes ctypes build pointer
objects on every call; these take plain addresses (``c_void_p``), which the call path keeps as
precomputed ints. Everything here is private: :mod:`vudo.spirit` is the only user.
"""

from __future__ import annotations

import ctypes
from typing import Any

import wasmtime
from wasmtime import _ffi as wffi

__all__ = [
    "EPOCH_CALLBACK",
    "HOST_CALLBACK",
    "ValRaw",
    "call_unchecked",
    "context_address",
    "error_message",
    "error_new",
    "func_new_unchecked",
    "set_epoch_callback",
    "take_trap",
    "trap_new",
]

_dll = wffi.dll


def _addr(symbol: Any) -> int:
    value = ctypes.cast(symbol, c_void_p).value
    assert value is not None, "wasmtime symbol missing"
    return value


ValRaw = wffi.wasmtime_val_raw
c_void_p = ctypes.c_void_p
c_size_t = ctypes.c_size_t

# wasmtime_error_t *wasmtime_func_call_unchecked(ctx, const wasmtime_func_t *func,
#     wasmtime_val_raw_t *args_and_results, size_t len, wasm_trap_t **trap)
# A private function pointer with no argtypes: callers pass ready ctypes objects
# (c_void_p/c_size_t), so ctypes converts nothing; a CDLL function releases the GIL while
# wasm runs.
call_unchecked = _dll._FuncPtr(("wasmtime_func_call_unchecked", _dll))
call_unchecked.restype = c_void_p

#: The callback type of an unchecked host function: (env, caller, args_and_results, len) -> trap.
HOST_CALLBACK = ctypes.CFUNCTYPE(c_size_t, c_void_p, c_void_p, c_void_p, c_size_t)
_FINALIZER = ctypes.CFUNCTYPE(None, c_void_p)

_func_new_unchecked = _dll.wasmtime_func_new_unchecked
_func_new_unchecked.restype = None
_func_new_unchecked.argtypes = [c_void_p, c_void_p, HOST_CALLBACK, c_void_p, _FINALIZER, c_void_p]

_trap_new = ctypes.CFUNCTYPE(c_void_p, ctypes.c_char_p, c_size_t)(_addr(_dll.wasmtime_trap_new))
_NULL_FINALIZER = _FINALIZER(0)

#: (context, env, *delta, *update_kind) -> wasmtime_error_t* (0: carry on).
EPOCH_CALLBACK = ctypes.CFUNCTYPE(
    c_size_t, c_void_p, c_void_p, ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(ctypes.c_uint8)
)
_set_epoch_callback = _dll.wasmtime_store_epoch_deadline_callback
_set_epoch_callback.restype = None
_set_epoch_callback.argtypes = [c_void_p, EPOCH_CALLBACK, c_void_p, _FINALIZER]
_error_new = ctypes.CFUNCTYPE(c_void_p, ctypes.c_char_p)(_addr(_dll.wasmtime_error_new))


def set_epoch_callback(store: wasmtime.Store, callback: Any) -> None:
    """Call ``callback`` whenever ``store`` reaches its epoch deadline (keep it alive)."""
    _set_epoch_callback(ctypes.cast(store.ptr(), c_void_p), callback, None, _NULL_FINALIZER)


def error_new(message: str) -> int:
    """A new ``wasmtime_error_t*`` (as an int): returned from an epoch callback, it traps."""
    return int(_error_new(message.encode("utf-8", "replace")) or 0)


def context_address(store: wasmtime.Store) -> int:
    """The address of ``store``'s context, valid for the store's lifetime."""
    value = ctypes.cast(store._context(), c_void_p).value
    assert value is not None
    return value


def func_new_unchecked(
    store: wasmtime.Store, ty: wasmtime.FuncType, callback: Any
) -> wasmtime.Func:
    """A host ``Func`` in ``store`` whose calls go straight to the unchecked ``callback``.

    The caller must keep ``callback`` alive as long as the store.
    """
    func = wffi.wasmtime_func_t()
    _func_new_unchecked(
        context_address(store),
        ctypes.cast(ty.ptr(), c_void_p),
        callback,
        None,
        _NULL_FINALIZER,
        ctypes.addressof(func),
    )
    return wasmtime.Func._from_raw(func)


def trap_new(message: str) -> int:
    """A new ``wasm_trap_t*`` (as an int) to return from a host callback."""
    data = message.encode("utf-8", "replace")
    ptr = _trap_new(data, len(data))
    return int(ptr or 0)


def take_trap(address: int) -> wasmtime.Trap:
    """Wrap (and take ownership of) a ``wasm_trap_t*`` returned by a call."""
    return wasmtime.Trap._from_ptr(ctypes.cast(address, ctypes.POINTER(wffi.wasm_trap_t)))


def error_message(address: int) -> str:
    """The message of a ``wasmtime_error_t*`` (which is freed)."""
    err = wasmtime.WasmtimeError._from_ptr(
        ctypes.cast(address, ctypes.POINTER(wffi.wasmtime_error_t))
    )
    return str(err)
