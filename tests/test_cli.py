"""The ``vudo`` command, driven as a user would: click's CliRunner, and real subprocesses.

Every failing invocation must print one clear line on stderr, no Python traceback, and exit
with the documented code: 2 for usage errors, 1 for Spirit failures.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import vudo
from vudo.cli import cli

REPO_ROOT = Path(__file__).resolve().parent.parent
SPIRITS = REPO_ROOT.parent / "shared" / "spirits"
EXAMPLES = Path(vudo.__file__).resolve().parent / "examples"

needs_spirits = pytest.mark.skipif(
    not SPIRITS.is_dir(), reason=f"real compiled Spirits not found at {SPIRITS}"
)


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------
def _runner() -> CliRunner:
    try:  # click < 8.2 mixes stderr into stdout unless told not to
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg,unused-ignore]
    except TypeError:
        return CliRunner()


def vudo_cli(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    """Run ``vudo ARGS`` in-process; never a raw traceback unless --traceback was asked."""
    argv = [str(a) for a in args]
    result = _runner().invoke(cli, argv, env=env, catch_exceptions=False)
    if "--traceback" not in argv:
        assert "Traceback" not in result.stderr, result.stderr
    return result


def error_line(result: Result) -> str:
    """The single error line of a failed command (asserting there is exactly one)."""
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


FAULTY_WAT = """\
(module
  (import "vudo" "vudo_panic" (func $panic (param i32 i32)))
  (import "vudo" "vudo_assert" (func $assert (param i32 i32 i32)))
  (import "vudo" "vudo_print" (func $print (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 1024) "something broke")
  (func (export "boom")
    (call $print (i32.const 1024) (i32.const 9))
    (call $panic (i32.const 1024) (i32.const 15)))
  (func (export "check") (param i32)
    (call $assert (local.get 0) (i32.const 1024) (i32.const 15)))
  (func (export "spin") (loop $l (br $l)))
  (func (export "busy")
    (call $print (i32.const 1024) (i32.const 9))
    (loop $l (br $l)))
  (func (export "grow") (result i32) (memory.grow (i32.const 4)))
  (func (export "half") (param f64) (result f64 i32)
    (f64.mul (local.get 0) (f64.const 0.5)) (i32.const -1))
  (func (export "neg") (param i32) (result i32) (i32.sub (i32.const 0) (local.get 0))))
"""

UNLINKABLE_WAT = """\
(module
  (import "vudo" "vudo_print" (func (param i32 i32)))
  (import "vudo" "vudo_error" (func (param i32 i32) (result i32)))
  (import "env" "vudo_now" (func (result i32)))
  (import "env" "mystery" (func (param i64)))
  (import "js" "vudo_println" (func (param i32 i32)))
  (import "js" "memory" (memory 1))
  (func (export "main")))
"""

COUNTER_WAT = """\
(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))
  (func (export "new_Counter") (param $v i64) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (local.get $p) (i32.const 8)))
    (i64.store (local.get $p) (local.get $v))
    (local.get $p))
  (func (export "Counter.get_value") (param $p i32) (result i64) (i64.load (local.get $p)))
  (func (export "Counter.increment") (param $p i32) (result i64)
    (i64.add (i64.load (local.get $p)) (i64.const 1)))
  (func (export "Counter.add") (param $p i32) (param $n i64) (result i64)
    (i64.add (i64.load (local.get $p)) (local.get $n)))
  (func (export "add_numbers") (param i64 i64) (result i64)
    (i64.add (local.get 0) (local.get 1)))
  (func (export "scale") (param f32 f64) (result f64)
    (f64.mul (f64.promote_f32 (local.get 0)) (local.get 1)))
  (func (export "pair") (result i32 f64) (i32.const 1) (f64.const 2.5)))
"""


# ------------------------------------------------------------------------------------------
# help, version, the bare command
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [[], ["run"], ["inspect"], ["stubs"], ["seance"]])
def test_help_everywhere(command: list[str]) -> None:
    for flag in ("--help", "-h"):
        result = vudo_cli(*command, flag)
        assert result.exit_code == 0, result.stderr
        assert result.stdout.startswith("Usage: vudo")
        assert "Exit codes" in result.stdout


def test_seance_help_documents_the_manifest() -> None:
    text = vudo_cli("seance", "--help").stdout
    for key in ("[[spirits]]", "[[steps]]", "invoke =", "send =", "publish =", "rounds =",
                "expect =", "limits =", "max_rounds"):
        assert key in text


def test_version_and_bare_command() -> None:
    result = vudo_cli("--version")
    assert result.exit_code == 0 and vudo.__version__ in result.stdout
    bare = vudo_cli()
    assert bare.exit_code == 2
    assert "Commands:" in bare.stdout + bare.stderr


def test_unknown_option_is_one_line_usage_error() -> None:
    result = vudo_cli("run", "example:calculator", "add", "1", "2", "--jsn")
    assert result.exit_code == 2
    assert "--jsn" in error_line(result) and "vudo run --help" in error_line(result)
    assert result.stderr.count("\n") == 1


# ------------------------------------------------------------------------------------------
# vudo run: the real compiled Spirits
# ------------------------------------------------------------------------------------------
@needs_spirits
def test_run_hello_world_greet() -> None:
    result = vudo_cli("run", SPIRITS / "hello_world.wasm", "greet")
    assert result.exit_code == 0, result.stderr
    # exactly the Spirit's 13 bytes: no newline added after them
    assert result.stdout == "Hello, World!"
    proc = _python_m_vudo("run", SPIRITS / "hello_world.wasm", "greet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.encode() == b"Hello, World!" and proc.stderr == ""
    assert result.stderr == ""


@needs_spirits
def test_run_counter_add_numbers_positional() -> None:
    result = vudo_cli("run", SPIRITS / "counter.wasm", "add_numbers", "3", "4")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "7\n"


@needs_spirits
def test_run_counter_rust_tool_style() -> None:
    result = vudo_cli("run", SPIRITS / "counter.wasm", "-f", "add_numbers", "-a", "[3, 4]")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "7\n"
    long_form = vudo_cli("run", SPIRITS / "counter.wasm", "--function", "add_numbers",
                         "--args", "[40, 2]")
    assert long_form.stdout == "42\n"


@needs_spirits
def test_run_add_without_memory_and_gene_method() -> None:
    assert vudo_cli("run", SPIRITS / "add.wasm", "add", "2", "3").stdout == "5\n"
    # a gene method by its dotted name; the pointer comes from the constructor
    ptr = vudo_cli("run", SPIRITS / "counter.wasm", "new_Counter", "5").stdout.strip()
    assert int(ptr) >= 1024


@needs_spirits
def test_run_hello_world_has_no_default_function() -> None:
    result = vudo_cli("run", SPIRITS / "hello_world.wasm")
    assert result.exit_code == 2
    line = error_line(result)
    assert "neither main nor _start" in line
    assert "greet() -> ()" in line and "add(i64, i64) -> i64" in line


# ------------------------------------------------------------------------------------------
# vudo run: arguments and results
# ------------------------------------------------------------------------------------------
def test_run_wat_file_and_bundled_example() -> None:
    by_path = vudo_cli("run", EXAMPLES / "calculator.wat", "add", "2", "3")
    by_name = vudo_cli("run", "example:calculator", "multiply", "6", "7")
    assert (by_path.exit_code, by_path.stdout) == (0, "5\n")
    assert (by_name.exit_code, by_name.stdout) == (0, "42\n")


def test_run_negative_hex_and_bool_arguments() -> None:
    assert vudo_cli("run", "example:calculator", "add", "-3", "-4").stdout == "-7\n"
    assert vudo_cli("run", "example:calculator", "add", "--", "-3", "10").stdout == "7\n"
    assert vudo_cli("run", "example:calculator", "add", "0x10", "true").stdout == "17\n"
    assert vudo_cli("run", "example:calculator", "-a", "[-5, 2]", "-f", "multiply"
                    ).stdout == "-10\n"


def test_run_floats_and_multi_value(tmp_path: Path) -> None:
    wat = write(tmp_path, "counter.wat", COUNTER_WAT)
    assert vudo_cli("run", wat, "scale", "1.5", "-2").stdout == "-3.0\n"
    assert vudo_cli("run", wat, "scale", "inf", "1").stdout == "inf\n"
    assert vudo_cli("run", wat, "pair").stdout == "1 2.5\n"


def test_run_default_main_output_and_logs() -> None:
    result = vudo_cli("run", "example:greeter")
    assert result.exit_code == 0
    assert result.stdout == "Hello from a Spirit!\n"
    assert "INFO greeter: greeter is starting" in result.stderr
    assert "greeter is done" not in result.stderr  # DEBUG, hidden by default
    verbose = vudo_cli("run", "example:greeter", "-v")
    assert "DEBUG greeter: greeter is done" in verbose.stderr
    debug = vudo_cli("run", "example:greeter", "--debug")
    assert "DEBUG greeter: greeter is done" in debug.stderr
    assert vudo_cli("run", "example:greeter", "greet_times", "2").stdout == (
        "Hello from a Spirit!\nHello from a Spirit!\n2\n"
    )


def test_run_defaults_to_start_when_there_is_no_main(tmp_path: Path) -> None:
    wat = write(tmp_path, "cmd.wat", """\
        (module
          (import "vudo" "vudo_println" (func $println (param i32 i32)))
          (memory (export "memory") 1)
          (data (i32.const 1024) "started")
          (func (export "_start") (call $println (i32.const 1024) (i32.const 7)))
          (func (export "other") (result i32) (i32.const 1)))
        """)
    result = vudo_cli("run", wat)
    assert (result.exit_code, result.stdout) == (0, "started\n")


def test_run_log_host_calls_logs_each_host_call() -> None:
    result = vudo_cli("run", "example:greeter", "--log-host-calls")
    assert result.exit_code == 0
    assert result.stdout == "Hello from a Spirit!\n"
    trace = [line for line in result.stderr.splitlines() if line.startswith("INFO trace:")]
    assert len(trace) == 3
    assert "greeter: vudo_println(1024, 20)" in trace[1]


def test_run_json_success_captures_output_and_logs() -> None:
    result = vudo_cli("run", "example:greeter", "greet_times", "2", "--json")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["ok"] is True and doc["result"] == 2 and doc["args"] == [2]
    assert doc["function"] == "greet_times" and doc["spirit"] == "greeter"
    assert doc["output"] == "Hello from a Spirit!\n" * 2
    assert doc["logs"] == []
    main = json.loads(vudo_cli("run", "example:greeter", "--json").stdout)
    assert main["result"] is None
    assert main["logs"] == [{"level": "INFO", "message": "greeter is starting"},
                            {"level": "DEBUG", "message": "greeter is done"}]


def test_run_json_failure(tmp_path: Path) -> None:
    result = vudo_cli("run", "example:calculator", "divide", "1", "0", "--json")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["ok"] is False
    assert doc["error"]["type"] == "SpiritTrap" and doc["error"]["exit_code"] == 1
    assert "divide by zero" in doc["error"]["message"]
    assert "divide by zero" in error_line(result)


# ------------------------------------------------------------------------------------------
# vudo run: bad input (exit code 2)
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["add", "1"], "takes 2 argument(s), got 1"),
        (["add", "1", "2", "3"], "takes 2 argument(s), got 3"),
        (["add", "1", "x"], "argument 1 of add (i64): 'x' is not an integer"),
        (["add", "1.5", "2"], "argument 0 of add (i64): '1.5' is not an integer"),
        (["add", "99999999999999999999", "1"], "out of range"),
        (["nope"], "has no exported function 'nope'"),
        ([], "neither main nor _start"),
        (["-f", "add", "-a", "[1, 2"], "-a/--args is not valid JSON"),
        (["-f", "add", "-a", '["a", 2]'], "'a' is not an integer"),
        (["add", "1", "-a", "[2]"], "not both"),
        (["add", "1", "2", "--fuel", "0"], "--fuel"),
        (["add", "1", "2", "--max-memory", "12x"], "is not a size"),
    ],
)
def test_run_usage_errors(args: list[str], expected: str) -> None:
    result = vudo_cli("run", "example:calculator", *args)
    assert result.exit_code == 2, result.stderr
    assert expected in error_line(result)
    assert result.stdout == ""


def test_run_unknown_function_lists_exports() -> None:
    line = error_line(vudo_cli("run", "example:calculator", "nope"))
    assert "add(i64, i64) -> i64" in line and "divide(i64, i64) -> i64" in line


def test_run_bad_files(tmp_path: Path) -> None:
    (tmp_path / "text.wasm").write_text("hello")
    bad_wat = write(tmp_path, "bad.wat", '(module (func (export "x") (result i32) i32.const))')
    truncated = tmp_path / "trunc.wasm"
    truncated.write_bytes(b"\0asm\x01\0\0\0\x01\x05")
    cases: dict[str | Path, str] = {
        tmp_path / "missing.wasm": "no such file",
        tmp_path: "is a directory",
        tmp_path / "text.wasm": "not a WebAssembly module",
        bad_wat: "invalid WAT: expected a i32 (line 1, column 50)",
        truncated: "invalid WebAssembly module",
        "example:nope": "no bundled example 'nope'; examples: example:calculator",
    }
    for source, expected in cases.items():
        result = vudo_cli("run", source)
        assert result.exit_code == 2, (source, result.stderr)
        assert expected in error_line(result)


# ------------------------------------------------------------------------------------------
# vudo run: the Spirit fails (exit code 1)
# ------------------------------------------------------------------------------------------
def test_run_trap_is_one_line_with_details_on_request() -> None:
    result = vudo_cli("run", "example:calculator", "divide", "7", "0")
    assert result.exit_code == 1
    assert error_line(result) == (
        "error: Spirit 'calculator' trapped in divide: integer divide by zero"
    )
    assert result.stderr.count("\n") == 1
    verbose = vudo_cli("run", "example:calculator", "divide", "7", "0", "-v")
    assert "trap code: INTEGER_DIVISION_BY_ZERO" in verbose.stderr
    assert "wasm backtrace:" in verbose.stderr
    with_tb = vudo_cli("run", "example:calculator", "divide", "7", "0", "--traceback")
    assert with_tb.exit_code == 1
    assert "Traceback (most recent call last)" in with_tb.stderr
    # the flags work before the subcommand too
    assert "trap code" in vudo_cli("-v", "run", "example:calculator", "divide", "7", "0").stderr


def test_run_panic_and_assertion(tmp_path: Path) -> None:
    wat = write(tmp_path, "faulty.wat", FAULTY_WAT)
    panic = vudo_cli("run", wat, "boom")
    assert panic.exit_code == 1
    assert panic.stdout == "something"  # printed before the panic, byte for byte
    assert error_line(panic) == "error: Spirit 'faulty' panicked in boom: something broke"
    failed = vudo_cli("run", wat, "check", "0")
    assert failed.exit_code == 1
    assert "assertion failed" in error_line(failed) and "something broke" in error_line(failed)
    assert vudo_cli("run", wat, "check", "1").exit_code == 0


def test_run_limits(tmp_path: Path) -> None:
    wat = write(tmp_path, "faulty.wat", FAULTY_WAT)
    fuel = vudo_cli("run", wat, "spin", "--fuel", "100000")
    assert fuel.exit_code == 1
    assert error_line(fuel) == "error: Spirit 'faulty' exceeded its fuel limit (100000) in spin"
    timeout = vudo_cli("run", wat, "spin", "--timeout", "0.05")
    assert timeout.exit_code == 1
    assert "exceeded its timeout limit" in error_line(timeout)
    # memory.grow by 4 pages: allowed without a cap, refused (-1) under a 128 KiB cap
    assert vudo_cli("run", wat, "grow").stdout == "1\n"
    assert vudo_cli("run", wat, "grow", "--max-memory", "128KiB").stdout == "-1\n"
    assert vudo_cli("run", wat, "grow", "--max-memory", "5pages").stdout == "1\n"


def test_run_link_error_lists_every_unresolved_import(tmp_path: Path) -> None:
    wat = write(tmp_path, "unlinkable.wat", UNLINKABLE_WAT)
    result = vudo_cli("run", wat)
    assert result.exit_code == 1
    line = error_line(result)
    assert line.startswith(f"error: cannot load Spirit from {wat}: 4 unresolved import(s):")
    for name in ("env.vudo_now", "env.mystery", "js.vudo_println", "js.memory"):
        assert name in line
    verbose = vudo_cli("run", wat, "-v")
    assert verbose.stderr.count("  unresolved: ") == 4


# ------------------------------------------------------------------------------------------
# vudo inspect
# ------------------------------------------------------------------------------------------
@needs_spirits
def test_inspect_hello_world() -> None:
    result = vudo_cli("inspect", SPIRITS / "hello_world.wasm")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "links: yes" in out and "Loas needed: io" in out
    assert re.search(r"loa\s+\S\s+vudo_print\s+\S\s+\(i32, i32\) -> \(\)\s+\S\s+ok", out)
    assert re.search(r"greet\s+\S\s+func\s+\S\s+\(\) -> \(\)", out)
    assert "Memory: exported as 'memory', 1 pages (64 KiB) initially, max 256 pages (16 MiB)" \
        in out
    assert "Data: 1 segment(s), 13 bytes" in out
    assert not any(line != line.rstrip() for line in out.splitlines())


@needs_spirits
def test_inspect_counter_json() -> None:
    result = vudo_cli("inspect", SPIRITS / "counter.wasm", "--json")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["links"] is True and doc["imports"] == [] and doc["loas"] == []
    signatures = {e["name"]: e.get("signature") for e in doc["exports"]}
    assert signatures["Counter.add"] == "(i32, i64) -> i64"
    assert signatures["new_Counter"] == "(i64) -> i32"
    assert signatures["memory"] is None


def test_inspect_unsatisfiable_imports(tmp_path: Path) -> None:
    wat = write(tmp_path, "unlinkable.wat", UNLINKABLE_WAT)
    result = vudo_cli("inspect", wat)
    assert result.exit_code == 1
    assert "links: NO, 4 import(s) the host cannot satisfy" in result.stdout
    assert result.stdout.count("UNRESOLVED") == 4

    doc = json.loads(vudo_cli("inspect", wat, "--json").stdout)
    assert doc["links"] is False and doc["unresolved"] == 4
    by_name = {(i["module"], i["name"]): i for i in doc["imports"]}
    assert by_name[("vudo", "vudo_print")]["status"] == "ok"
    assert by_name[("vudo", "vudo_print")]["loa"] == "io"
    variant = by_name[("vudo", "vudo_error")]
    assert variant["status"] == "variant" and variant["host_function"] is True
    now = by_name[("env", "vudo_now")]
    assert now["status"] == "unresolved" and now["offered"] == "() -> i64"
    assert by_name[("env", "mystery")]["host_function"] is False
    assert "only under vudo, loa, env" in by_name[("js", "vudo_println")]["detail"]
    assert by_name[("js", "memory")]["kind"] == "memory"
    assert by_name[("js", "memory")]["status"] == "unresolved"
    assert doc["loas"] == ["io", "time"]
    assert doc["memories"][0]["origin"] == "imported"


def test_inspect_memory_import_under_a_vudo_namespace_links(tmp_path: Path) -> None:
    wat = write(tmp_path, "mem.wat", """\
        (module
          (import "env" "memory" (memory 2 10))
          (import "loa" "vudo_println" (func (param i32 i32))))
        """)
    doc = json.loads(vudo_cli("inspect", wat, "--json").stdout)
    assert doc["links"] is True
    assert doc["memories"] == [{"origin": "imported", "name": "env.memory", "min_pages": 2,
                                "max_pages": 10, "min_bytes": 131072, "max_bytes": 655360}]
    assert vudo_cli("run", wat, "-f", "nothing").exit_code == 2  # links; no such function


def test_inspect_never_instantiates(tmp_path: Path) -> None:
    wat = write(tmp_path, "start.wat", """\
        (module
          (func $boom unreachable)
          (start $boom)
          (func (export "main")))
        """)
    inspected = vudo_cli("inspect", wat)
    assert inspected.exit_code == 0 and "links: yes" in inspected.stdout
    ran = vudo_cli("run", wat)
    assert ran.exit_code == 1
    assert "start function" in error_line(ran) or "instantiation" in error_line(ran)


def test_inspect_warns_about_missing_memory(tmp_path: Path) -> None:
    wat = write(tmp_path, "nomem.wat", """\
        (module
          (import "vudo" "vudo_print" (func (param i32 i32)))
          (import "vudo" "vudo_now" (func (result i64)))
          (memory 1))
        """)
    doc = json.loads(vudo_cli("inspect", wat, "--json").stdout)
    assert doc["links"] is True
    assert len(doc["warnings"]) == 1 and "vudo_print" in doc["warnings"][0]
    assert "vudo_now" not in doc["warnings"][0]
    assert doc["memories"][0]["origin"] == "internal"


def test_inspect_example_and_bad_input(tmp_path: Path) -> None:
    doc = json.loads(vudo_cli("inspect", "example:ping", "--json").stdout)
    assert doc["loas"] == ["io", "messaging"]
    assert doc["data"] == {"segments": 5, "bytes": 63}
    missing = vudo_cli("inspect", tmp_path / "nope.wasm")
    assert missing.exit_code == 2 and "no such file" in error_line(missing)


# ------------------------------------------------------------------------------------------
# vudo stubs
# ------------------------------------------------------------------------------------------
def test_stubs_to_stdout(tmp_path: Path) -> None:
    wat = write(tmp_path, "counter.wat", COUNTER_WAT)
    result = vudo_cli("stubs", wat)
    assert result.exit_code == 0
    text = result.stdout
    assert "class Counter(Protocol):" in text
    assert "class CounterMethods(Protocol):" in text
    assert "    def Counter(self) -> CounterMethods:" in text
    assert "    def add_numbers(self, a0: int, a1: int, /) -> int:" in text
    assert "    def scale(self, a0: float, a1: float, /) -> float:" in text
    assert "    def pair(self) -> tuple[int, float]:" in text
    assert "    def add(self, a0: int, a1: int, /) -> int:" in text
    named = vudo_cli("stubs", wat, "--name", "Tally").stdout
    assert "class Tally(Protocol):" in named
    bad = vudo_cli("stubs", wat, "--name", "not valid")
    assert bad.exit_code == 2 and "not a Python identifier" in error_line(bad)


def _load_module(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


WEIRD_WAT = """\
(module
  (func (export "add-numbers") (param i64 i64) (result i64) (i64.add (local.get 0) (local.get 1)))
  (func (export "class") (result i32) (i32.const 1))
  (func (export "int") (param f32) (result f32) (local.get 0))
  (func (export "Shape") (result i32) (i32.const 2))
  (func (export "Shape.area") (param i32) (result f64) (f64.const 1.5))
  (func (export "a.b.c") (param i32) (result i32 i64) (local.get 0) (i64.const 7))
  (func (export "9lives") (result i32) (i32.const 9))
  (func (export "bind") (result i32) (i32.const 3)))
"""


def test_stubs_pass_mypy_strict_and_work_at_runtime(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    counter = write(tmp_path, "counter.wat", COUNTER_WAT)
    weird = write(tmp_path, "weird.wat", WEIRD_WAT)
    r1 = vudo_cli("stubs", counter, "-o", tmp_path / "counter_api.py")
    r2 = vudo_cli("stubs", weird, "-o", tmp_path / "weird_api.py")
    assert r1.exit_code == 0 and r2.exit_code == 0
    assert "wrote" in r1.stderr
    weird_text = (tmp_path / "weird_api.py").read_text()
    assert "# The export 'add-numbers' is not a Python identifier; sanitized to add_numbers." \
        in weird_text
    assert "is shadowed by the export 'Shape'" in weird_text

    # code a user writes against the generated modules
    write(tmp_path, "use_bind.py", f"""\
        import vudo
        from counter_api import Counter, bind
        from weird_api import add_numbers, class_, _9lives, Shape_area, bind as bind_weird

        spirit = vudo.load_spirit({str(counter)!r})
        proxy: Counter = bind(spirit)
        p: int = proxy.new_Counter(5)
        value: int = proxy.Counter.get_value(p)
        pair: tuple[int, float] = proxy.pair()

        w = vudo.load_spirit({str(weird)!r})
        wp = bind_weird(w)
        x: float = wp.int(2.5)
        abc: tuple[int, int] = wp.a.b.c(3)
        n: int = add_numbers(w, 2, 3) + class_(w) + _9lives(w) + wp.bind()
        area: float = Shape_area(w, 0)
        print(value, pair, x, abc, n, area)
        """)
    write(tmp_path, "use_as.py", f"""\
        import vudo
        from counter_api import Counter

        spirit = vudo.load_spirit({str(counter)!r})
        p = spirit.as_(Counter).new_Counter(7)
        value: int = spirit.as_(Counter).Counter.get_value(p)
        print(value)
        """)
    write(tmp_path, "misuse.py", f"""\
        import vudo
        from counter_api import bind

        proxy = bind(vudo.load_spirit({str(counter)!r}))
        wrong: str = proxy.Counter.get_value(1)
        proxy.add_numbers(1)
        """)
    env = {**os.environ, "MYPYPATH": str(tmp_path)}
    files = ["counter_api.py", "weird_api.py", "use_bind.py", "use_as.py", "misuse.py"]
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary",
         "--cache-dir", str(tmp_path / ".mypy_cache"), *files],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    errors = [line for line in checked.stdout.splitlines() if ": error:" in line]
    by_file: dict[str, list[str]] = {}
    for line in errors:
        by_file.setdefault(line.split(":", 1)[0], []).append(line)
    # the generated modules and the code using them are clean under --strict
    assert "counter_api.py" not in by_file, by_file
    assert "weird_api.py" not in by_file, by_file
    assert "use_bind.py" not in by_file, by_file
    # `spirit.as_(Counter)` type-checks as Counter
    assert "use_as.py" not in by_file, by_file
    # and the types do catch mistakes
    misuse = "\n".join(by_file.get("misuse.py", []))
    assert "Incompatible types in assignment" in misuse
    assert 'Missing positional argument "a1"' in misuse or "Too few arguments" in misuse

    ran = subprocess.run([sys.executable, "use_bind.py"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "5 (1, 2.5) 2.5 (3, 7) 18 1.5"
    ran_as = subprocess.run([sys.executable, "use_as.py"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert ran_as.stdout.strip() == "7"


def test_stubs_protocol_is_checked_by_as_at_runtime(tmp_path: Path) -> None:
    counter = write(tmp_path, "counter.wat", COUNTER_WAT)
    assert vudo_cli("stubs", counter, "-o", tmp_path / "api.py").exit_code == 0
    api = _load_module(tmp_path / "api.py", "generated_counter_api")
    spirit = vudo.load_spirit(counter)
    proxy = api.bind(spirit)
    assert proxy.Counter.add(proxy.new_Counter(5), 10) == 15
    other = vudo.load_spirit(EXAMPLES / "calculator.wat")
    with pytest.raises(vudo.errors.UnknownExportError):
        api.bind(other)  # calculator does not export what Counter declares


# ------------------------------------------------------------------------------------------
# vudo seance
# ------------------------------------------------------------------------------------------
def _summary_row(stdout: str, name: str) -> list[str]:
    for line in stdout.splitlines():
        cells = [c for c in re.split(r"[\s│┃|]+", line) if c]
        if cells and cells[0] == name:
            return cells
    raise AssertionError(f"no summary row for {name!r} in:\n{stdout}")


def test_seance_pingpong_runs_to_completion() -> None:
    result = vudo_cli("seance", "example:pingpong")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:4] == [
        "[1] ping.start(10) -> 0 ok",
        "[2] rounds pong.run, ping.step: idle after 10 round(s)",
        "[3] ping.received() -> 10 ok",
        "[4] pong.echoed() -> 10 ok",
    ]
    # Spirit, calls, failures, sent, received, pending, time
    assert _summary_row(result.stdout, "ping")[:7] == ["ping", "12", "0", "10", "10", "0",
                                                      _summary_row(result.stdout, "ping")[6]]
    assert _summary_row(result.stdout, "pong")[1:6] == ["11", "0", "10", "10", "0"]
    assert "4 step(s) completed" in result.stdout
    assert "INFO ping: all pongs received" in result.stderr


def test_seance_quiet_and_progress(tmp_path: Path) -> None:
    quiet = vudo_cli("seance", EXAMPLES / "pingpong.toml", "--quiet")
    assert quiet.exit_code == 0
    assert "[1]" not in quiet.stdout and "4 step(s) completed" in quiet.stdout
    # the progress display is tested on a real terminal in test_cli_session.py


LISTENER_WAT = """\
(module
  (import "vudo" "vudo_subscribe" (func $subscribe (param i32 i32) (result i32)))
  (import "vudo" "vudo_recv" (func $recv (result i32)))
  (import "vudo" "vudo_free_message" (func $free (param i32)))
  (import "vudo" "vudo_panic" (func $panic (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 1024) "news")
  (func (export "listen") (result i32) (call $subscribe (i32.const 1024) (i32.const 4)))
  (func (export "count") (result i32)
    (local $m i32) (local $n i32)
    (block $done (loop $next
      (local.set $m (call $recv))
      (br_if $done (i32.eqz (local.get $m)))
      (call $free (local.get $m))
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (br $next)))
    (local.get $n))
  (func (export "fail") (call $panic (i32.const 1024) (i32.const 4)))
  (func (export "spin") (loop $l (br $l)))
  (func (export "pair") (param i64) (result i64 f64) (local.get 0) (f64.const 0.5)))
"""


def test_seance_send_publish_expect(tmp_path: Path) -> None:
    write(tmp_path, "listener.wat", LISTENER_WAT)
    manifest = write(tmp_path, "news.toml", """\
        [session]
        name = "news-desk"

        [[spirits]]
        name = "desk"
        source = "listener.wat"

        [[steps]]
        invoke = "desk.listen"
        expect = 0

        [[steps]]
        publish = { channel = "news", payload = "extra!" }

        [[steps]]
        send = { to = "desk", payload = [1, 2, 3], from = "editor" }

        [[steps]]
        invoke = "count"
        spirit = "desk"
        expect = 2

        [[steps]]
        invoke = "desk.pair"
        args = ["0x10"]
        expect = [16, 0.5]

        [[steps]]
        invoke = "desk.fail"
        expect_error = "panicked"
        """)
    result = vudo_cli("seance", manifest)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[:6] == [
        "[1] desk.listen() -> 0 ok",
        "[2] publish news: 6 bytes to 1 subscriber(s)",
        "[3] send editor -> desk: 3 bytes",
        "[4] desk.count() -> 2 ok",
        "[5] desk.pair(16) -> 16 0.5 ok",
        "[6] desk.fail() failed as expected: Spirit 'desk' panicked in fail: news",
    ]
    row = _summary_row(result.stdout, "desk")
    assert row[1:6] == ["4", "1", "0", "2", "0"]  # calls, failures, sent, received, pending


def test_seance_failing_steps_exit_1(tmp_path: Path) -> None:
    write(tmp_path, "listener.wat", LISTENER_WAT)
    base = """\
        [[spirits]]
        name = "desk"
        source = "listener.wat"
        limits = { fuel = 100000 }

        [[steps]]
        invoke = "desk.count"
        expect = 0
        """
    cases = {
        'invoke = "desk.count"\nexpect = 5':
            "step 2 (desk.count()): returned 0, expected 5",
        'invoke = "desk.fail"': "step 2 (desk.fail()): Spirit 'desk' panicked in fail: news",
        'invoke = "desk.spin"': "exceeded its fuel limit (100000) in spin",
        'invoke = "desk.count"\nexpect_error = true': "returned 0, expected an error",
        'rounds = ["desk.count"]\nuntil = "desk.count"\nmax_rounds = 3':
            "not desk.count() true after 3 rounds (max_rounds)",
        'send = { to = "nobody", payload = "x" }': "the message was refused: NOT_FOUND",
    }
    for i, (step, expected) in enumerate(cases.items()):
        manifest = write(tmp_path, f"fail{i}.toml", base + "\n[[steps]]\n" + step + "\n")
        result = vudo_cli("seance", manifest)
        assert result.exit_code == 1, (step, result.stderr)
        assert expected in error_line(result), step
        assert "[1] desk.count() -> 0 ok" in result.stdout
        assert "step 2 of 2 failed" in result.stdout  # the summary is printed anyway


def test_seance_manifest_errors_exit_2(tmp_path: Path) -> None:
    write(tmp_path, "listener.wat", LISTENER_WAT)
    spirit = '[[spirits]]\nname = "desk"\nsource = "listener.wat"\n'
    cases = {
        "[[spirits]\n": "invalid TOML",
        "": "at least one [[spirits]] entry",
        '[[spirits]]\nname = "a"\nsource = "nope.wat"\n': "spirits[1]: ",
        '[[spirits]]\nsorce = "x.wat"\n': "spirits[1]: unknown key 'sorce'",
        spirit + spirit: "two Spirits are named 'desk'",
        spirit + '[[steps]]\ninvoke = "pen.count"\n': "steps[1]: no Spirit named 'pen'",
        spirit + '[[steps]]\ninvoke = "desk.nope"\n':
            "steps[1]: Spirit 'desk' has no exported function 'nope'",
        spirit + '[[steps]]\ninvoke = "desk.pair"\nargs = [1, 2]\n':
            "steps[1]: pair(i64) takes 1 argument(s), got 2",
        spirit + '[[steps]]\ninvoke = "desk.pair"\nargs = ["x"]\n': "is not an integer",
        spirit + '[[steps]]\ninvoke = "deskpair"\n': "must be written SPIRIT.FUNCTION",
        spirit + '[[steps]]\nwait = 1\n': "a step needs exactly one of invoke, send",
        spirit + '[[steps]]\ninvoke = "desk.count"\nrepeat = 0\n': "'repeat' must be a positive",
        spirit + 'limits = { fuel = -1 }\n': "limits.fuel must be a positive integer",
        spirit + 'limits = { max_memory = "lots" }\n': "limits.max_memory",
        spirit + '[[steps]]\nsend = { payload = "x" }\n': "missing 'to'",
    }
    for i, (text, expected) in enumerate(cases.items()):
        manifest = write(tmp_path, f"bad{i}.toml", text)
        result = vudo_cli("seance", manifest)
        assert result.exit_code == 2, (text, result.stderr)
        assert expected in error_line(result), (text, result.stderr)
        assert result.stdout == ""
    missing = vudo_cli("seance", tmp_path / "nope.toml")
    assert missing.exit_code == 2 and "no such file" in error_line(missing)
    unlinkable = write(tmp_path, "unlinkable.wat", UNLINKABLE_WAT)
    linkfail = write(tmp_path, "link.toml", f'[[spirits]]\nsource = "{unlinkable.name}"\n')
    result = vudo_cli("seance", linkfail)
    assert result.exit_code == 1 and "4 unresolved import(s)" in error_line(result)


def test_seance_broker_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(vudo, "nats", raising=False)
    monkeypatch.setitem(sys.modules, "vudo.nats", None)
    result = vudo_cli("seance", "example:pingpong", "--broker", "nats://127.0.0.1:4222")
    assert result.exit_code == 2
    assert "--broker needs NATS support" in error_line(result)
    assert "pip install 'vudo[nats]'" in error_line(result)


def test_seance_broker_without_nats_py(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("vudo.nats")
    monkeypatch.setitem(sys.modules, "nats", None)
    result = vudo_cli("seance", "example:pingpong", "--broker", "nats://127.0.0.1:4222")
    assert result.exit_code == 2
    assert "--broker needs nats-py" in error_line(result)


def test_seance_over_a_real_nats_server(tmp_path: Path) -> None:
    pytest.importorskip("nats")
    pytest.importorskip("vudo.nats")
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        from nats_helpers import NatsServer, find_nats_server
    finally:
        sys.path.pop(0)
    binary = find_nats_server()
    if binary is None:
        pytest.skip("nats-server is not installed")
    server = NatsServer(binary, tmp_path / "nats")
    server.start()
    try:
        result = vudo_cli("seance", "example:pingpong", "--broker", server.url)
    finally:
        server.stop()
    assert result.exit_code == 0, result.stderr
    assert "[3] ping.received() -> 10 ok" in result.stdout
    assert _summary_row(result.stdout, "ping")[3:6] == ["10", "10", "0"]


# ------------------------------------------------------------------------------------------
# real processes: python -m vudo
# ------------------------------------------------------------------------------------------
def _python_m_vudo(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VUDO_CACHE_DIR": ""}
    return subprocess.run(
        [sys.executable, "-m", "vudo", *map(str, args)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60,
    )


def test_python_m_vudo_runs_like_vudo() -> None:
    ok = _python_m_vudo("run", "src/vudo/examples/calculator.wat", "add", "2", "3")
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "5\n", "")
    session = _python_m_vudo("seance", "src/vudo/examples/pingpong.toml", "--quiet")
    assert session.returncode == 0, session.stderr
    assert "4 step(s) completed" in session.stdout


def test_python_m_vudo_errors_are_one_line() -> None:
    missing = _python_m_vudo("run", "missing.wasm")
    assert missing.returncode == 2
    assert missing.stderr == "error: missing.wasm: no such file\n"
    trap = _python_m_vudo("run", "example:calculator", "divide", "1", "0")
    assert trap.returncode == 1
    assert trap.stderr == "error: Spirit 'calculator' trapped in divide: integer divide by zero\n"
    usage = _python_m_vudo("run")
    assert usage.returncode == 2
    assert usage.stderr.startswith("error: Missing argument 'SPIRIT'")
    assert "Traceback" not in missing.stderr + trap.stderr + usage.stderr


def test_ctrl_c_stops_a_spinning_spirit(tmp_path: Path) -> None:
    wat = write(tmp_path, "faulty.wat", FAULTY_WAT)
    proc = subprocess.Popen(
        [sys.executable, "-m", "vudo", "run", str(wat), "busy"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "VUDO_CACHE_DIR": ""},
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.read(9) == "something"  # the Spirit is now in its endless loop
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 130
    # faulty.wat grows memory and exports no allocator: host-abi.md's load warning comes first.
    err = "".join(line for line in err.splitlines(keepends=True)
                  if not line.startswith("WARNING vudo.spirit: Spirit 'faulty' grows"))
    assert (out, err) == ("", "error: interrupted\n")
