"""WASI preview 1 for Spirits, through wasmtime's own implementation, deny-by-default.

host-abi.md ("Spirits from other toolchains"): no preopened directory, environment or argument
unless granted. The grants come from vudo's :class:`~vudo.effects.Permissions` (``fs_root``
becomes the one preopened directory, read-only unless ``fs_write``) and :class:`WasiOptions`
(arguments and environment variables, none by default).

Four functions are vudo host functions instead of wasmtime's, because the behaviour must be the
host's:

- ``fd_write`` on fds 1 and 2 hands the bytes to the Spirit's logger (stdout to ``print``,
  stderr to ``error`` line by line) on the calling thread, in order with ``vudo_print``; every
  other descriptor goes to wasmtime's ``fd_write``, called through a three-instruction shim
  module that re-exports the Spirit's memory (wasmtime's WASI reads the memory of the instance
  calling it, so it cannot be called from the host directly). wasmtime-py's ``stdout_custom``
  callback was the alternative: it runs on the engine's worker threads, so a logger would be
  called off the Spirit's thread, and a callback still pending at interpreter exit aborts the
  process. A file for stdout would lose the interleaving with ``vudo_print`` and live output.
- ``proc_exit`` ends the current call with :class:`WasiExit`, never the host process;
- ``clock_time_get`` and ``random_get`` read the Spirit's time and random providers, so a
  Spirit under a fake clock or a seeded random sees them through libc too.
"""

from __future__ import annotations

import codecs
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import wasmtime

from .errors import VudoError
from .loa import HostFunction, LoaContext
from .providers import Logger

__all__ = [
    "WASI_FUNCTIONS",
    "WASI_MODULE",
    "WasiContext",
    "WasiExit",
    "WasiOptions",
    "WasiPermissionError",
    "configure_wasi",
    "imports_wasi",
    "run_command",
    "wasi_host_functions",
]

#: The import module of WASI preview 1.
WASI_MODULE = "wasi_snapshot_preview1"
#: Every function of WASI preview 1 (what wasmtime's linker defines).
WASI_FUNCTIONS = frozenset("""
args_get args_sizes_get environ_get environ_sizes_get clock_res_get clock_time_get fd_advise
fd_allocate fd_close fd_datasync fd_fdstat_get fd_fdstat_set_flags fd_fdstat_set_rights
fd_filestat_get fd_filestat_set_size fd_filestat_set_times fd_pread fd_prestat_get
fd_prestat_dir_name fd_pwrite fd_read fd_readdir fd_renumber fd_seek fd_sync fd_tell fd_write
path_create_directory path_filestat_get path_filestat_set_times path_link path_open
path_readlink path_remove_directory path_rename path_symlink path_unlink_file poll_oneoff
proc_exit proc_raise sched_yield random_get sock_accept sock_recv sock_send sock_shutdown
""".split())
#: Where the granted directory appears inside the Spirit, unless ``WasiOptions.guest_dir``.
DEFAULT_GUEST_DIR = "/data"

_MASK = 0xFFFFFFFF
_ESUCCESS = 0
_EINVAL = 28
_CLOCK_REALTIME, _CLOCK_MONOTONIC, _CLOCK_PROCESS, _CLOCK_THREAD = 0, 1, 2, 3


class WasiExit(VudoError):
    """A WASI program called ``proc_exit(n)``: the call ended with exit status ``exit_code``.

    :func:`run_command` treats ``exit_code == 0`` as a normal end.
    """

    def __init__(self, spirit: str, function: str, exit_code: int) -> None:
        self.spirit = spirit
        self.function = function
        self.exit_code = exit_code
        super().__init__(f"Spirit {spirit!r} exited with status {exit_code} (in {function})")


class WasiPermissionError(VudoError, PermissionError):
    """A WASI grant that vudo refuses (e.g. a directory outside ``fs_root``)."""


@dataclass(frozen=True)
class WasiOptions:
    """What a WASI Spirit sees besides files: none of it unless given.

    ``args`` follow ``argv[0]`` (the Spirit's name); ``env`` are the only environment
    variables; ``guest_dir`` is the path at which ``Permissions.fs_root`` appears, and
    ``host_dir`` (inside ``fs_root``) narrows the preopened directory to a sub-directory.
    """

    args: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    guest_dir: str = DEFAULT_GUEST_DIR
    host_dir: str | Path | None = None


def imports_wasi(module: wasmtime.Module) -> bool:
    """Whether the module imports anything from WASI preview 1."""
    return any(imp.module == WASI_MODULE for imp in module.imports)


class _LineSink:
    """Decodes a byte stream as UTF-8 and hands it to the logger: as it comes, or by lines."""

    def __init__(self, emit: Callable[[str], None], by_line: bool) -> None:
        self._emit = emit
        self._by_line = by_line
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._pending = ""

    def write(self, data: bytes) -> int:
        text = self._decoder.decode(data)
        if not self._by_line:
            if text:
                self._emit(text)
            return len(data)
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._emit(line)
        return len(data)

    def flush(self) -> None:
        text = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        if text:
            self._emit(text)


class WasiContext:
    """A Spirit's WASI state: the linker holding wasmtime's functions, and the output sinks."""

    def __init__(self, linker: wasmtime.Linker, logger: Logger) -> None:
        #: Defines wasmtime's WASI functions (``linker.get(store, WASI_MODULE, name)``).
        self.linker = linker
        self.stdout = _LineSink(logger.print, by_line=False)
        self.stderr = _LineSink(logger.error, by_line=True)

    def flush(self) -> None:
        """Hand unfinished output (the last stderr line without a newline) to the logger."""
        self.stdout.flush()
        self.stderr.flush()


def _preopen(permissions: Any, options: WasiOptions) -> tuple[str, bool] | None:
    """The host directory to preopen and whether it is writable, or ``None``."""
    root = getattr(permissions, "fs_root", None) if permissions is not None else None
    if root is None:
        if options.host_dir is not None:
            raise WasiPermissionError(
                f"WASI directory {options.host_dir} needs Permissions.fs_root to be granted"
            )
        return None
    root_path = Path(root).resolve()
    target = root_path if options.host_dir is None else (root_path / options.host_dir).resolve()
    if not target.is_relative_to(root_path):
        raise WasiPermissionError(f"WASI directory {target} is outside fs_root {root_path}")
    if not target.is_dir():
        raise WasiPermissionError(f"WASI directory {target} does not exist")
    return str(target), bool(getattr(permissions, "fs_write", False))


def configure_wasi(
    store: wasmtime.Store,
    *,
    name: str,
    logger: Logger,
    permissions: Any = None,
    options: WasiOptions | None = None,
) -> WasiContext:
    """Give ``store`` a deny-by-default WASI context; return it with a linker defining WASI.

    Take the engine's WASI functions from ``.linker`` (``linker.get(store, WASI_MODULE,
    name)``) or instantiate through it; :func:`wasi_host_functions` lists the ones vudo
    provides itself, which must be linked instead (they find this context as the Spirit's
    ``_wasi_ctx``).
    """
    opts = options or WasiOptions()
    config = wasmtime.WasiConfig()
    config.argv = [name, *opts.args]
    env = dict(opts.env)
    config.env = [[k, v] for k, v in env.items()]
    grant = _preopen(permissions, opts)
    if grant is not None:
        host_dir, writable = grant
        config.preopen_dir(host_dir, opts.guest_dir, writable)
    store.set_wasi(config)
    linker = wasmtime.Linker(store.engine)
    linker.define_wasi()
    return WasiContext(linker, logger)


# ------------------------------------------------------------------------------------------
# The WASI functions vudo provides itself
# ------------------------------------------------------------------------------------------
def _proc_exit(ctx: LoaContext) -> Callable[[int], None]:
    spirit = ctx.spirit

    def host(code: int) -> None:
        raise WasiExit(spirit.name, spirit.current_function, code & _MASK)

    return host


_SHIM_WAT = """(module
  (import "spirit" "memory" (memory 0))
  (import "wasi" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (export "memory" (memory 0))
  (func (export "fd_write") (param i32 i32 i32 i32) (result i32)
    local.get 0 local.get 1 local.get 2 local.get 3 call $w))"""
_shim: list[wasmtime.Module] = []


def _engine_fd_write(spirit: Any, wasi: WasiContext) -> Callable[..., Any]:
    """wasmtime's ``fd_write``, callable from the host on the Spirit's memory."""
    if not _shim:
        _shim.append(wasmtime.Module(spirit.store.engine, _SHIM_WAT))
    store = spirit.store
    engine = wasi.linker.get(store, WASI_MODULE, "fd_write")
    memory = spirit.memory.wasmtime_memory
    instance = wasmtime.Instance(store, _shim[0], [memory, engine])
    func = instance.exports(store)["fd_write"]
    assert isinstance(func, wasmtime.Func)
    return lambda *args: func(store, *args)


def _fd_write(ctx: LoaContext) -> Callable[[int, int, int, int], int]:
    spirit = ctx.spirit
    engine_write: list[Callable[..., Any]] = []

    def host(fd: int, iovs: int, count: int, nwritten: int) -> int:
        wasi: WasiContext | None = spirit._wasi_ctx
        if wasi is None:
            raise VudoError(f"Spirit {spirit.name!r} has no WASI context")
        if fd not in (1, 2):
            if not engine_write:
                engine_write.append(_engine_fd_write(spirit, wasi))
            return int(engine_write[0](fd, iovs, count, nwritten))
        mem = spirit.memory_or_null
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


def _clock_time_get(ctx: LoaContext) -> Callable[[int, int, int], int]:
    spirit = ctx.spirit

    def host(clock: int, precision: int, out: int) -> int:
        if clock == _CLOCK_REALTIME:
            value = int(spirit.time_provider.now()) * 1_000_000
        elif clock == _CLOCK_MONOTONIC:
            value = int(spirit.time_provider.monotonic_now())
        elif clock == _CLOCK_PROCESS:
            value = time.process_time_ns()
        elif clock == _CLOCK_THREAD:
            value = time.thread_time_ns()
        else:
            return _EINVAL
        spirit.memory_or_null.write_bytes(
            out & _MASK, (value & 0xFFFF_FFFF_FFFF_FFFF).to_bytes(8, "little")
        )
        return _ESUCCESS

    return host


def _random_get(ctx: LoaContext) -> Callable[[int, int], int]:
    spirit = ctx.spirit

    def host(ptr: int, length: int) -> int:
        ptr, length = ptr & _MASK, length & _MASK
        mem = spirit.memory_or_null
        mem.check(ptr, length)
        data = spirit.random_provider.random_bytes(length)
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


def run_command(spirit: Any, *, check: bool = True) -> int:
    """Run a WASI command's ``_start`` as a whole program; return its exit status.

    Returning from ``main`` or ``proc_exit(0)`` is status 0. ``proc_exit(n)`` with n != 0
    raises :class:`WasiExit` (``exit_code == n``) when ``check`` is true, and is returned
    otherwise. The host process never exits.
    """
    if not spirit.has_function("_start"):
        raise VudoError(f"Spirit {spirit.name!r} is not a WASI command: it exports no _start")
    try:
        spirit.call("_start")
        code = 0
    except WasiExit as exc:
        code = exc.exit_code
        if code and check:
            raise WasiExit(spirit.name, "_start", code) from None
    finally:
        wasi: WasiContext | None = getattr(spirit, "_wasi_ctx", None)
        if wasi is not None:
            wasi.flush()
    return code
