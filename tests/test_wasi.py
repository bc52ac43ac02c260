"""WASI preview 1: a real C program (clang + wasi-libc) with printf and a file under a granted
directory, deny-by-default, output in the logger, proc_exit as an error with the exit code."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vudo import Permissions, WasiOptions, load_spirit, run_command
from vudo.errors import LinkError, WasiExit, WasiPermissionError
from vudo.testing import MockLogger, MockTimeProvider

COMMAND = Path(__file__).parent / "spirits" / "wasm" / "c_command.wasm"
ENOTCAPABLE = 76  # WASI errno: no preopened directory grants the path
EPERM = 63


@pytest.fixture
def root(tmp_path: Path) -> Path:
    data = tmp_path / "root"
    data.mkdir()
    (data / "input.txt").write_text("first line\nsecond line\n")
    return data


def run(perms: Permissions | None, *args: str, env: dict[str, str] | None = None,
        **opts: object) -> tuple[int, MockLogger]:
    log = MockLogger()
    spirit = load_spirit(COMMAND, logger=log, permissions=perms,
                         wasi=WasiOptions(args=args, env=env or {}, **opts))  # type: ignore[arg-type]
    return run_command(spirit, check=False), log


def test_printf_and_a_granted_file(root: Path) -> None:
    code, log = run(Permissions(fs_root=root), env={"WHO": "vudo"})
    assert code == 0
    assert log.output == (
        "hello from C: 1 argument(s)\nWHO=vudo\nread: first line\nread: second line\n"
    )
    assert log.errors == []


def test_no_grant_gets_the_wasi_error_and_the_host_is_untouched(root: Path) -> None:
    before = sorted(os.listdir(root))
    cwd = os.getcwd()
    with pytest.raises(WasiExit) as info:
        run_command(load_spirit(COMMAND, logger=(log := MockLogger())))
    assert info.value.exit_code == ENOTCAPABLE
    assert log.errors == ["cannot open /data/input.txt: Capabilities insufficient"]
    assert "WHO=(unset)" in log.output  # no environment unless given
    assert "1 argument(s)" in log.output  # no arguments unless given
    assert sorted(os.listdir(root)) == before and os.getcwd() == cwd


def test_read_only_unless_write_is_granted(root: Path) -> None:
    code, log = run(Permissions(fs_root=root), "write")
    assert code == EPERM
    assert log.errors == ["cannot write /data/output.txt: Operation not permitted"]
    assert not (root / "output.txt").exists()
    code, log = run(Permissions(fs_root=root, fs_write=True), "write")
    assert code == 0 and "wrote output.txt" in log.output
    assert (root / "output.txt").read_text() == "written by a Spirit\n"


def test_arguments_when_given(root: Path) -> None:
    code, log = run(Permissions(fs_root=root), "one", "two")
    assert code == 0
    assert "3 argument(s)\narg 1: one\narg 2: two\n" in log.output


def test_proc_exit_is_an_error_with_the_status_not_a_host_exit(root: Path) -> None:
    spirit = load_spirit(COMMAND, logger=MockLogger(), permissions=Permissions(fs_root=root),
                         wasi=WasiOptions(args=["exit3"]))
    with pytest.raises(WasiExit, match="exited with status 3") as info:
        run_command(spirit)
    assert info.value.exit_code == 3 and info.value.spirit == "c_command"


def test_proc_exit_zero_is_a_normal_end() -> None:
    wat = """(module
      (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
      (memory (export "memory") 1)
      (func (export "_start") (call $exit (i32.const 0)) unreachable))"""
    assert run_command(load_spirit(wat)) == 0


def test_directory_outside_fs_root_is_refused(root: Path) -> None:
    with pytest.raises(WasiPermissionError, match="outside fs_root"):
        load_spirit(COMMAND, permissions=Permissions(fs_root=root),
                    wasi=WasiOptions(host_dir=".."))
    with pytest.raises(WasiPermissionError, match=r"needs Permissions\.fs_root"):
        load_spirit(COMMAND, wasi=WasiOptions(host_dir="sub"))


def test_stderr_without_newline_is_flushed_and_stdout_interleaves() -> None:
    wat = """(module
      (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
      (import "vudo" "vudo_print" (func $p (param i32 i32)))
      (memory (export "memory") 1)
      (data (i32.const 16) "\\20\\00\\00\\00\\03\\00\\00\\00")
      (data (i32.const 32) "out")
      (data (i32.const 48) "err, no newline")
      (data (i32.const 64) "\\30\\00\\00\\00\\0f\\00\\00\\00")
      (func (export "_start")
        (drop (call $w (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 8)))
        (call $p (i32.const 32) (i32.const 3))
        (drop (call $w (i32.const 2) (i32.const 64) (i32.const 1) (i32.const 8)))))"""
    log = MockLogger()
    spirit = load_spirit(wat, logger=log)
    assert run_command(spirit) == 0
    assert log.outputs == ["out", "out"]
    assert log.errors == ["err, no newline"]
    assert spirit.memory.read_u32(8) == 15  # nwritten


def test_clock_comes_from_the_time_provider() -> None:
    wat = """(module
      (import "wasi_snapshot_preview1" "clock_time_get"
        (func $t (param i32 i64 i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "now") (result i64)
        (drop (call $t (i32.const 0) (i64.const 1) (i32.const 8))) (i64.load (i32.const 8)))
      (func (export "mono") (result i64)
        (drop (call $t (i32.const 1) (i64.const 1) (i32.const 8))) (i64.load (i32.const 8))))"""
    spirit = load_spirit(wat, time_provider=MockTimeProvider(1234, monotonic_start_ns=99))
    assert spirit.call("now") == 1234 * 1_000_000
    assert spirit.call("mono") == 99


def test_unknown_wasi_function_is_a_link_error() -> None:
    wat = """(module (import "wasi_snapshot_preview1" "no_such_call" (func)))"""
    with pytest.raises(LinkError, match="no_such_call"):
        load_spirit(wat)
