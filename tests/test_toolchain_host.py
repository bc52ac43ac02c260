"""The toolchain host functions (AssemblyScript's env, vudo's WASI functions) against a
FakeHostContext, and WASI grants from Permissions, WasiOptions and SpiritConfig."""

from __future__ import annotations

from pathlib import Path

import pytest

from vudo import Permissions, SpiritConfig, WasiOptions, load_spirit
from vudo._host import LoaRegistry, wasi_context
from vudo._host.loas.foreign import ENGINE_WASI, as_abort, as_seed, toolchain_import
from vudo._host.loas.wasi import wasi_host_functions
from vudo._host.wasi_context import configure_wasi
from vudo._linking import plan_imports
from vudo._memory.guest_alloc import MallocAllocator
from vudo.errors import (
    ConfigError,
    SpiritPanic,
    SpiritTrap,
    VudoError,
    WasiExit,
    WasiPermissionError,
)
from vudo.testing import FakeHostContext, MockDebugHandler, MockRandomProvider, MockTimeProvider

WASI = wasi_host_functions()


def _as_string(ctx: FakeHostContext, ptr: int, text: str) -> int:
    """Write an AssemblyScript String (UTF-16LE, byte length at ptr - 4); return ptr."""
    data = text.encode("utf-16-le")
    ctx.memory.write_u32(ptr - 4, len(data))
    ctx.memory.write_bytes(ptr, data)
    return ptr


def test_abort_is_a_panic_with_the_decoded_message_and_location() -> None:
    debugger = MockDebugHandler()
    ctx = FakeHostContext("as", debugger=debugger, call_stack=["run"])
    msg, file = _as_string(ctx, 64, "négatif ✗"), _as_string(ctx, 256, "as/spirit.ts")
    with pytest.raises(SpiritPanic, match=r"négatif ✗ \(at as/spirit.ts:46:3\)") as info:
        as_abort(ctx)(msg, file, 46, 3)
    assert info.value.spirit == "as" and info.value.function == "run"
    assert [p.message for p in debugger.panics] == ["négatif ✗ (at as/spirit.ts:46:3)"]


def test_abort_with_a_bad_pointer_still_panics() -> None:
    ctx = FakeHostContext("as")
    with pytest.raises(SpiritPanic, match="unreadable abort message") as info:
        as_abort(ctx)(0x7FFF_FFF0, 0, 1, 2)
    assert "<unknown>:1:2" in str(info.value)


def test_abort_inside_the_guest_allocator_is_its_failure_not_a_panic() -> None:
    debugger = MockDebugHandler()
    ctx = FakeHostContext("as", debugger=debugger)
    guest = ctx.memory.install_allocator(lambda _g, zero, move: MallocAllocator("as", {}, zero,
                                                                                  move))
    assert ctx.memory.allocator_strategy == "guest:malloc"
    assert isinstance(guest, MallocAllocator)
    guest.busy = 1
    with pytest.raises(SpiritTrap, match="abort: <null>"):
        as_abort(ctx)(0, 0, 0, 0)
    assert debugger.panics == []


def test_seed_comes_from_the_random_provider() -> None:
    a = as_seed(FakeHostContext(random=MockRandomProvider(seed=7)))()
    b = as_seed(FakeHostContext(random=MockRandomProvider(seed=7)))()
    c = as_seed(FakeHostContext(random=MockRandomProvider(seed=8)))()
    assert a == b != c and a > 0


def test_clock_time_get_reads_the_time_provider() -> None:
    ctx = FakeHostContext(time=MockTimeProvider(1234, monotonic_start_ns=99))
    clock = WASI["clock_time_get"].factory(ctx)
    assert clock(0, 1, 16) == 0 and ctx.memory.read_i64(16) == 1234 * 1_000_000
    assert clock(1, 1, 24) == 0 and ctx.memory.read_i64(24) == 99
    assert clock(9, 1, 32) == 28  # EINVAL, nothing written
    assert ctx.memory.read_i64(32) == 0


def test_random_get_reads_the_random_provider() -> None:
    ctx = FakeHostContext(random=MockRandomProvider(seed=3))
    assert WASI["random_get"].factory(ctx)(100, 16) == 0
    assert ctx.memory.read_bytes(100, 16) == MockRandomProvider(seed=3).random_bytes(16)


def test_proc_exit_ends_the_call_never_the_host() -> None:
    ctx = FakeHostContext("prog", call_stack=["_start"])
    with pytest.raises(WasiExit, match="exited with status 7") as info:
        WASI["proc_exit"].factory(ctx)(7)
    assert (info.value.spirit, info.value.function, info.value.exit_code) == ("prog", "_start", 7)


def test_fd_write_without_a_wasi_context_is_a_clear_error() -> None:
    with pytest.raises(VudoError, match="has no WASI context"):
        WASI["fd_write"].factory(FakeHostContext("x"))(1, 0, 0, 0)


def test_which_foreign_imports_the_host_serves() -> None:
    abort = toolchain_import("env", "abort")
    assert abort is not None and abort != ENGINE_WASI
    assert toolchain_import("wasi_snapshot_preview1", "fd_write") == WASI["fd_write"]
    assert toolchain_import("wasi_snapshot_preview1", "path_open") == ENGINE_WASI
    assert toolchain_import("wasi_snapshot_preview1", "no_such_call") is None
    assert toolchain_import("env", "memcpy") is None
    assert toolchain_import("other", "abort") is None


def test_link_plan_names_foreign_imports_and_refuses_wrong_signatures() -> None:
    import wasmtime

    wat = """(module
      (import "env" "abort" (func (param i32 i32 i32 i32)))
      (import "env" "seed" (func (result i32)))
      (import "wasi_snapshot_preview1" "path_open"
        (func (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32))))"""
    module = wasmtime.Module(wasmtime.Engine(), wat)
    plan = plan_imports(module, LoaRegistry())
    abort, seed, path_open = plan.imports
    assert abort.status == "ok" and abort.detail == "AssemblyScript runtime (vudo)"
    assert seed.status == "unresolved" and seed.offered == "() -> f64"
    assert path_open.status == "ok" and path_open.engine_wasi


def test_preopened_dirs_are_read_only_unless_inside_a_writable_fs_root(tmp_path: Path) -> None:
    import wasmtime

    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    engine = wasmtime.Engine()
    perms = Permissions(fs_root=root, fs_write=True,
                        wasi_dirs=[(str(root / "sub"), "/sub"), (str(outside), "/out")])
    seen = wasi_context._preopens(perms, WasiOptions())
    assert seen == [(str(root), "/data", True), (str(root / "sub"), "/sub", True),
                    (str(outside), "/out", False)]
    read_only = Permissions(wasi_dirs=[(str(root), "/r")])
    assert wasi_context._preopens(read_only, WasiOptions()) == [(str(root), "/r", False)]
    with pytest.raises(WasiPermissionError, match="does not exist"):
        configure_wasi(wasmtime.Store(engine), name="x", stdout=print, stderr=print,
                       permissions=Permissions(wasi_dirs=[(str(tmp_path / "nope"), "/n")]))


ENV_WAT = """(module
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $get (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "count") (result i32)
    (drop (call $sizes (i32.const 0) (i32.const 4))) (i32.load (i32.const 0)))
  (func (export "fill") (result i32)
    (drop (call $get (i32.const 16) (i32.const 256))) (i32.const 256)))
"""


def _environment(spirit: object) -> list[str]:
    from vudo import Spirit

    assert isinstance(spirit, Spirit)
    count = spirit.call("count")
    start = spirit.call("fill")
    size = spirit.memory.read_i32(4)
    return spirit.memory.read_bytes(start, size).decode().split("\0")[:count]


def test_environment_from_permissions_and_options_by_either_option_style() -> None:
    perms = Permissions(wasi_env=[("A", "1"), ("B", "2")])
    options = WasiOptions(env={"B": "3", "C": "4"})
    by_shortcut = load_spirit(ENV_WAT, permissions=perms, wasi=options)
    by_config = load_spirit(ENV_WAT, config=SpiritConfig(permissions=perms, wasi=options))
    for spirit in (by_shortcut, by_config):
        assert sorted(_environment(spirit)) == ["A=1", "B=3", "C=4"]
        spirit.close()
    assert _environment(load_spirit(ENV_WAT)) == []  # deny-by-default


def test_wasi_options_are_typed_and_frozen() -> None:
    with pytest.raises(ConfigError, match=r"SpiritConfig\.wasi must be a WasiOptions"):
        SpiritConfig(wasi={"env": {}})  # type: ignore[arg-type]
    options = WasiOptions(args=["a", "b"], env={"K": "V"})
    assert options.args == ("a", "b")
    with pytest.raises(TypeError):
        options.env["K"] = "changed"  # type: ignore[index]
