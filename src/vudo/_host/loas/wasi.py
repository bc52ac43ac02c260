"""The WASI preview 1 functions vudo implements itself, on the Spirit's :class:`HostContext`.

- ``fd_write`` on fds 1 and 2 hands the bytes to the Spirit's logger (see
  :mod:`vudo._host.wasi_context`); other descriptors go to wasmtime's own ``fd_write``;
- ``proc_exit`` ends the current call with :class:`~vudo.errors.WasiExit`, never the host;
- ``clock_time_get`` and ``random_get`` read the Spirit's time and random providers, so a
  Spirit under a fake clock or a seeded random sees them through libc too.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable

from ...errors import VudoError, WasiExit
from ..context import HostContext
from ..loa import HostFunction

__all__ = ["wasi_host_functions"]

_MASK = 0xFFFFFFFF
_ESUCCESS = 0
_EINVAL = 28
_CLOCK_REALTIME, _CLOCK_MONOTONIC, _CLOCK_PROCESS, _CLOCK_THREAD = 0, 1, 2, 3


def _proc_exit(ctx: HostContext) -> Callable[[int], None]:
    def host(code: int) -> None:
        raise WasiExit(ctx.name, ctx.current_function, code & _MASK)

    return host


def _fd_write(ctx: HostContext) -> Callable[[int, int, int, int], int]:
    mem = ctx.memory

    def host(fd: int, iovs: int, count: int, nwritten: int) -> int:
        wasi = ctx.wasi
        if wasi is None:
            raise VudoError(f"Spirit {ctx.name!r} has no WASI context")
        if fd not in (1, 2):
            return wasi.engine_fd_write(mem)(fd, iovs, count, nwritten)
        iovs, count = iovs & _MASK, count & _MASK
        raw = mem.read_bytes(iovs, 8 * count)
        chunks = []
        for i in range(count):
            buf, length = struct.unpack_from("<II", raw, 8 * i)
            chunks.append(mem.read_bytes(buf, length))
        data = b"".join(chunks)
        mem.check(nwritten & _MASK, 4)
        (wasi.stdout if fd == 1 else wasi.stderr).write(data)
        mem.write_bytes(nwritten & _MASK, len(data).to_bytes(4, "little"))
        return _ESUCCESS

    return host


def _clock_time_get(ctx: HostContext) -> Callable[[int, int, int], int]:
    clock_source, mem = ctx.time, ctx.memory

    def host(clock: int, precision: int, out: int) -> int:
        if clock == _CLOCK_REALTIME:
            value = int(clock_source.now()) * 1_000_000
        elif clock == _CLOCK_MONOTONIC:
            value = int(clock_source.monotonic_now())
        elif clock == _CLOCK_PROCESS:
            value = time.process_time_ns()
        elif clock == _CLOCK_THREAD:
            value = time.thread_time_ns()
        else:
            return _EINVAL
        mem.write_bytes(out & _MASK, (value & 0xFFFF_FFFF_FFFF_FFFF).to_bytes(8, "little"))
        return _ESUCCESS

    return host


def _random_get(ctx: HostContext) -> Callable[[int, int], int]:
    rand, mem = ctx.random, ctx.memory

    def host(ptr: int, length: int) -> int:
        ptr, length = ptr & _MASK, length & _MASK
        mem.check(ptr, length)
        data = rand.random_bytes(length)
        if len(data) != length:
            raise ValueError(f"random provider returned {len(data)} bytes, not {length}")
        mem.write_bytes(ptr, data)
        return _ESUCCESS

    return host


_OVERRIDES = {
    "fd_write": HostFunction("fd_write", _fd_write, ("i32", "i32", "i32", "i32"), ("i32",)),
    "proc_exit": HostFunction("proc_exit", _proc_exit, ("i32",), ()),
    "clock_time_get": HostFunction("clock_time_get", _clock_time_get, ("i32", "i64", "i32"),
                                   ("i32",)),
    "random_get": HostFunction("random_get", _random_get, ("i32", "i32"), ("i32",)),
}


def wasi_host_functions() -> dict[str, HostFunction]:
    """The WASI functions vudo implements (link these rather than wasmtime's)."""
    return dict(_OVERRIDES)
