"""WASI preview 1 for Spirits, through wasmtime's own implementation, deny-by-default.

host-abi.md ("Spirits from other toolchains"): no preopened directory, environment or argument
unless granted. The grants come from vudo's :class:`~vudo.Permissions` (``fs_root`` is preopened
at ``WasiOptions.guest_dir``, read-only unless ``fs_write``; ``wasi_dirs`` are preopened
read-only, writable only inside ``fs_root`` with ``fs_write``; ``wasi_env`` are the environment)
and :class:`~vudo.WasiOptions` (arguments and more variables, none by default).

Four functions are vudo host functions instead of wasmtime's, because the behaviour must be the
host's (:mod:`vudo._host.loas.wasi`):

- ``fd_write`` on fds 1 and 2 hands the bytes to the Spirit's logger (stdout to ``print``,
  stderr to ``error`` line by line) on the calling thread, in order with ``vudo_print``; every
  other descriptor goes to wasmtime's ``fd_write``, called through a three-instruction shim
  module that re-exports the Spirit's memory (wasmtime's WASI reads the memory of the instance
  calling it, so it cannot be called from the host directly). wasmtime-py's ``stdout_custom``
  callback was the alternative: it runs on the engine's worker threads, so a logger would be
  called off the Spirit's thread, and a callback still pending at interpreter exit aborts the
  process. A file for stdout would lose the interleaving with ``vudo_print`` and live output.
- ``proc_exit`` ends the current call with :class:`~vudo.errors.WasiExit`, never the host process;
- ``clock_time_get`` and ``random_get`` read the Spirit's time and random providers, so a
  Spirit under a fake clock or a seeded random sees them through libc too.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable
from pathlib import Path

import wasmtime

from .._config import Permissions, WasiOptions
from .._memory import WasmMemory
from ..errors import WasiPermissionError

__all__ = [
    "WASI_FUNCTIONS",
    "WASI_MODULE",
    "WasiContext",
    "configure_wasi",
    "imports_wasi",
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

    def __init__(
        self, store: wasmtime.Store, linker: wasmtime.Linker,
        stdout: Callable[[str], None], stderr: Callable[[str], None],
    ) -> None:
        self._store = store
        #: Defines wasmtime's WASI functions (``linker.get(store, WASI_MODULE, name)``).
        self.linker = linker
        self.stdout = _LineSink(stdout, by_line=False)
        self.stderr = _LineSink(stderr, by_line=True)
        self._engine_write: Callable[..., int] | None = None

    def engine_function(self, name: str) -> wasmtime.Func:
        """wasmtime's own implementation of WASI function ``name``, for this Spirit's store."""
        func = self.linker.get(self._store, WASI_MODULE, name)
        assert isinstance(func, wasmtime.Func)
        return func

    def engine_fd_write(self, memory: WasmMemory) -> Callable[..., int]:
        """wasmtime's ``fd_write``, callable from the host on the Spirit's memory."""
        if self._engine_write is None:
            if not _shim:
                _shim.append(wasmtime.Module(self._store.engine, _SHIM_WAT))
            store = self._store
            instance = wasmtime.Instance(
                store, _shim[0], [memory.wasmtime_memory, self.engine_function("fd_write")]
            )
            func = instance.exports(store)["fd_write"]
            assert isinstance(func, wasmtime.Func)
            self._engine_write = lambda *args: int(func(store, *args))
        return self._engine_write

    def flush(self) -> None:
        """Hand unfinished output (the last stderr line without a newline) to the logger."""
        self.stdout.flush()
        self.stderr.flush()


_SHIM_WAT = """(module
  (import "spirit" "memory" (memory 0))
  (import "wasi" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (export "memory" (memory 0))
  (func (export "fd_write") (param i32 i32 i32 i32) (result i32)
    local.get 0 local.get 1 local.get 2 local.get 3 call $w))"""
_shim: list[wasmtime.Module] = []


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def _preopens(
    permissions: Permissions | None, options: WasiOptions
) -> list[tuple[str, str, bool]]:
    """``(host dir, guest path, writable)`` of every directory to preopen."""
    root = permissions.fs_root if permissions is not None else None
    write = bool(permissions is not None and permissions.fs_write)
    found: list[tuple[str, str, bool]] = []
    root_path = Path(root).resolve() if root is not None else None
    if root_path is None:
        if options.host_dir is not None:
            raise WasiPermissionError(
                f"WASI directory {options.host_dir} needs Permissions.fs_root to be granted"
            )
    else:
        target = root_path if options.host_dir is None else (root_path / options.host_dir)
        target = target.resolve()
        if not _inside(target, root_path):
            raise WasiPermissionError(f"WASI directory {target} is outside fs_root {root_path}")
        if not target.is_dir():
            raise WasiPermissionError(f"WASI directory {target} does not exist")
        found.append((str(target), options.guest_dir, write))
    for host, guest in permissions.wasi_dirs if permissions is not None else ():
        path = Path(host).resolve()
        if not path.is_dir():
            raise WasiPermissionError(f"WASI directory {path} does not exist")
        writable = write and root_path is not None and _inside(path, root_path)
        found.append((str(path), guest, writable))
    return found


def configure_wasi(
    store: wasmtime.Store,
    *,
    name: str,
    stdout: Callable[[str], None],
    stderr: Callable[[str], None],
    permissions: Permissions | None = None,
    options: WasiOptions | None = None,
) -> WasiContext:
    """Give ``store`` a deny-by-default WASI context; return it with a linker defining WASI.

    ``stdout``/``stderr`` receive the program's output (the Spirit logger's ``print`` and
    ``error``). Take the engine's WASI functions from :meth:`WasiContext.engine_function`;
    :func:`vudo._host.loas.wasi.wasi_host_functions` lists the ones vudo provides itself,
    which are linked instead (they find this context as ``HostContext.wasi``).
    """
    opts = options or WasiOptions()
    config = wasmtime.WasiConfig()
    config.argv = [name, *opts.args]
    env = dict(permissions.wasi_env) if permissions is not None else {}
    env.update(opts.env)
    config.env = [[k, v] for k, v in env.items()]
    for host_dir, guest_dir, writable in _preopens(permissions, opts):
        config.preopen_dir(host_dir, guest_dir, writable)
    store.set_wasi(config)
    linker = wasmtime.Linker(store.engine)
    linker.define_wasi()
    return WasiContext(store, linker, stdout, stderr)


