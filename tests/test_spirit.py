"""Spirit: loading from every kind of source, calling exports, typed proxies, errors and traps,
and the real DOL-compiled Spirits in ../shared/spirits."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import pytest
import wasmtime

import vudo
from vudo import LoadError, VudoError, gene_layout
from vudo.errors import LinkError, MemoryAccessError, SpiritTrap, UnknownExportError

LoadWat = Callable[..., vudo.Spirit]
Wat = Callable[[str], bytes]

CALC_WAT = """
(module
  (memory (export "memory") 1)
  (global (export "calls") (mut i32) (i32.const 0))
  (func (export "add") (param i64 i64) (result i64) local.get 0 local.get 1 i64.add)
  (func (export "scale") (param f64 f64) (result f64) local.get 0 local.get 1 f64.mul)
  (func (export "half") (param f32) (result f32) local.get 0 f32.const 0.5 f32.mul)
  (func (export "divmod") (param i32 i32) (result i32 i32)
    (i32.div_s (local.get 0) (local.get 1))
    (i32.rem_s (local.get 0) (local.get 1)))
  (func (export "nothing"))
  (func (export "echo_i32") (param i32) (result i32) local.get 0)
  (func (export "echo_i64") (param i64) (result i64) local.get 0)
  (func (export "div") (param i32 i32) (result i32) local.get 0 local.get 1 i32.div_s)
  (func (export "crash") unreachable)
  (func $divide_by_zero (param i32) (result i32) (i32.div_u (i32.const 1) (local.get 0)))
  (func (export "outer") (param i32) (result i32) (call $divide_by_zero (local.get 0)))
  (func (export "wild_load") (result i32) (i32.load (i32.const 0x7fffffff)))
  (func (export "new_Counter") (param i64) (result i32)
    (i64.store (i32.const 1024) (local.get 0))
    i32.const 1024)
  (func (export "Counter.get_value") (param i32) (result i64) (i64.load (local.get 0)))
  (func (export "Counter.increment") (param i32) (result i64)
    (i64.add (i64.load (local.get 0)) (i64.const 1)))
)
"""

CALC_FUNCTIONS = {
    "add", "scale", "half", "divmod", "nothing", "echo_i32", "echo_i64", "div", "crash",
    "outer", "wild_load", "new_Counter", "Counter.get_value", "Counter.increment",
}


@pytest.fixture
def calc(load_wat: LoadWat) -> vudo.Spirit:
    return load_wat(CALC_WAT, name="calc")


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------
def test_load_from_every_kind_of_source(tmp_path: Path, wat: Wat) -> None:
    wasm = wat(CALC_WAT)
    wasm_path = tmp_path / "calculator.wasm"
    wasm_path.write_bytes(wasm)
    wat_path = tmp_path / "calc_text.wat"
    wat_path.write_text(CALC_WAT)
    module = wasmtime.Module(vudo._runtime.engine.get_engine(), wasm)
    sources: list[tuple[object, str]] = [
        (wasm, "spirit"),
        (bytearray(wasm), "spirit"),
        (str(wasm_path), "calculator"),
        (wasm_path, "calculator"),
        (module, "spirit"),
        (CALC_WAT, "spirit"),
        (str(wat_path), "calc_text"),
        (wat_path, "calc_text"),
    ]
    for source, name in sources:
        spirit = vudo.load_spirit(source)  # type: ignore[arg-type]
        assert spirit.name == name, source
        assert spirit.call("add", 2, 3) == 5
        spirit.close()
    assert vudo.load_spirit(wasm, name="custom").name == "custom"


def test_wat_file_without_the_wat_suffix_is_recognised(tmp_path: Path) -> None:
    path = tmp_path / "module.txt"
    path.write_text("\n  " + CALC_WAT)
    assert vudo.load_spirit(path).call("add", 1, 1) == 2


def test_wat_text_with_a_leading_comment_is_recognised() -> None:
    assert vudo.load_spirit(";; a calculator\n" + CALC_WAT).call("add", 1, 1) == 2


def test_aload_spirit_under_asyncio_run(tmp_path: Path, wat: Wat) -> None:
    path = tmp_path / "calc.wasm"
    path.write_bytes(wat(CALC_WAT))

    async def main() -> tuple[vudo.Spirit, vudo.Spirit]:
        return await asyncio.gather(
            vudo.aload_spirit(path), vudo.aload_spirit(CALC_WAT, name="from-wat")
        )

    first, second = asyncio.run(main())
    assert isinstance(first, vudo.Spirit)
    assert (first.name, second.name) == ("calc", "from-wat")
    assert first.call("add", 20, 22) == second.call("add", 40, 2) == 42


def test_aload_spirit_raises_load_errors(tmp_path: Path) -> None:
    with pytest.raises(LoadError, match="no such file"):
        asyncio.run(vudo.aload_spirit(tmp_path / "missing.wasm"))


def _truncated(wat: Wat) -> bytes:
    wasm = wat(CALC_WAT)
    return wasm[: len(wasm) // 2]


@pytest.mark.parametrize(
    ("make_source", "match"),
    [
        pytest.param(lambda tmp, wat: b"this is not wasm", "not a WebAssembly", id="garbage"),
        pytest.param(lambda tmp, wat: b"", "not a WebAssembly", id="empty"),
        pytest.param(lambda tmp, wat: _truncated(wat), "invalid WebAssembly", id="truncated"),
        pytest.param(
            lambda tmp, wat: b"\0asm\x01\0\0\0\x01\xff\xff", "invalid WebAssembly", id="bad-section"
        ),
        pytest.param(lambda tmp, wat: tmp / "missing.wasm", "no such file", id="missing-path"),
        pytest.param(lambda tmp, wat: str(tmp / "nope.wasm"), "no such file", id="missing-str"),
        pytest.param(lambda tmp, wat: tmp, "directory", id="directory"),
        pytest.param(lambda tmp, wat: "(module (func (export", "invalid WAT", id="bad-wat-text"),
    ],
)
def test_bad_sources_raise_load_error(tmp_path: Path, wat: Wat, make_source, match: str) -> None:
    with pytest.raises(LoadError, match=match) as info:
        vudo.load_spirit(make_source(tmp_path, wat))
    assert isinstance(info.value, VudoError)


def test_garbage_and_truncated_files_on_disk(tmp_path: Path, wat: Wat) -> None:
    garbage = tmp_path / "garbage.wasm"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(LoadError, match="not a WebAssembly module") as info:
        vudo.load_spirit(garbage)
    assert str(garbage) in str(info.value)
    truncated = tmp_path / "truncated.wasm"
    truncated.write_bytes(_truncated(wat))
    with pytest.raises(LoadError, match="invalid WebAssembly module") as info:
        vudo.load_spirit(truncated)
    assert info.value.source == str(truncated)
    bad_wat = tmp_path / "bad.wat"
    bad_wat.write_text("(module (func (result i32)))")  # type error: no value returned
    with pytest.raises(LoadError, match=r"bad\.wat"):
        vudo.load_spirit(bad_wat)


def test_unsupported_source_type_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="int"):
        vudo.load_spirit(42)  # type: ignore[arg-type]


def test_unresolved_imports_are_all_listed(wat: Wat) -> None:
    source = wat("""
      (module
        (import "vudo" "no_such_function" (func (param i32)))
        (import "vudo" "vudo_print" (func (param i64)))
        (import "elsewhere" "thing" (func (result f64))))
    """)
    with pytest.raises(LinkError) as info:
        vudo.load_spirit(source)
    err = info.value
    assert isinstance(err, LoadError) and isinstance(err, VudoError)
    by_name = {(u.module, u.name): u for u in err.unresolved}
    assert set(by_name) == {
        ("vudo", "no_such_function"), ("vudo", "vudo_print"), ("elsewhere", "thing")
    }
    assert by_name[("vudo", "vudo_print")].declared == "(i64) -> ()"
    assert by_name[("vudo", "vudo_print")].offered == "(i32, i32) -> ()"
    assert by_name[("vudo", "no_such_function")].offered is None
    message = str(err)
    assert "3 unresolved" in message
    assert "no_such_function" in message and "elsewhere.thing" in message


def test_failing_start_function_is_a_load_error(wat: Wat) -> None:
    source = wat("(module (func $start unreachable) (start $start))")
    with pytest.raises(LoadError, match="instantiation failed"):
        vudo.load_spirit(source)


def test_faulthandler_enabled_after_import_does_not_break_traps() -> None:
    # pytest enables faulthandler after conftest imports vudo; wasm traps must still be traps.
    code = textwrap.dedent("""
        import faulthandler
        import vudo
        faulthandler.enable()
        spirit = vudo.load_spirit('(module (func (export "crash") unreachable))', cache=False)
        try:
            spirit.call("crash")
        except vudo.errors.SpiritTrap as exc:
            print("trapped", exc.trap_code)
    """)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "trapped UNREACHABLE"


# --------------------------------------------------------------------------------------------
# introspection
# --------------------------------------------------------------------------------------------
def test_functions_exports_and_name(calc: vudo.Spirit) -> None:
    assert calc.name == "calc"
    assert set(calc.functions) == CALC_FUNCTIONS
    assert calc.has_function("add")
    assert calc.has_function("Counter.increment")
    assert not calc.has_function("memory")  # an export, but not a function
    assert not calc.has_function("nope")
    assert isinstance(calc.exports["memory"], wasmtime.Memory)
    assert isinstance(calc.exports["calls"], wasmtime.Global)
    assert isinstance(calc.exports["add"], wasmtime.Func)
    assert set(calc.exports) == CALC_FUNCTIONS | {"memory", "calls"}
    assert calc.signature("divmod") == (("i32", "i32"), ("i32", "i32"))


# --------------------------------------------------------------------------------------------
# calls: conversions
# --------------------------------------------------------------------------------------------
def test_i64_arguments_and_results_are_python_ints(calc: vudo.Spirit) -> None:
    assert calc.call("add", 2**40, 2**41) == 3 * 2**40
    assert calc.call("add", -5, 3) == -2
    assert calc.call("add", 2**63 - 1, 1) == -(2**63)  # wasm wraps
    assert calc.call("echo_i64", 2**64 - 1) == -1  # the unsigned range is accepted
    assert type(calc.call("echo_i64", 7)) is int


def test_i32_accepts_signed_and_unsigned_and_bools(calc: vudo.Spirit) -> None:
    assert calc.call("echo_i32", -(2**31)) == -(2**31)
    assert calc.call("echo_i32", 0xFFFF_FFFF) == -1
    assert calc.call("echo_i32", True) == 1
    assert calc.call("echo_i32", False) == 0


def test_ints_are_accepted_for_floats(calc: vudo.Spirit) -> None:
    result = calc.call("scale", 3, 2)
    assert result == 6.0 and type(result) is float
    assert calc.call("scale", 1.5, -2) == -3.0
    assert calc.call("half", 3) == 1.5
    assert calc.call("half", 0.1) == pytest.approx(0.05, rel=1e-6)  # f32 precision


def test_multi_value_results_are_tuples_and_no_result_is_none(calc: vudo.Spirit) -> None:
    assert calc.call("divmod", 17, 5) == (3, 2)
    assert calc.call("divmod", -17, 5) == (-3, -2)
    assert calc.call("nothing") is None


def test_int_subclasses_are_accepted(calc: vudo.Spirit) -> None:
    assert calc.call("echo_i32", vudo.abi.ResultCode.NOT_FOUND) == -4
    assert calc.call("echo_i64", vudo.abi.EffectId.FS_READ) == 10


@pytest.mark.parametrize(
    ("name", "value"),
    [("echo_i32", 2**32), ("echo_i32", -(2**31) - 1), ("echo_i64", 2**64), ("echo_i64", 2**70)],
)
def test_out_of_range_ints_are_refused_not_truncated(
    calc: vudo.Spirit, name: str, value: int
) -> None:
    with pytest.raises(TypeError, match=f"calc.{name}"):
        calc.call(name, value)


@pytest.mark.parametrize(
    ("name", "args", "expected"),
    [
        ("add", (1,), "takes 2 argument(s), got 1"),
        ("add", (1, 2, 3), "takes 2 argument(s), got 3"),
        ("nothing", (1,), "takes 0 argument(s), got 1"),
        ("divmod", (), "takes 2 argument(s), got 0"),
    ],
)
def test_wrong_arity_names_the_function_and_signature(
    calc: vudo.Spirit, name: str, args: tuple[int, ...], expected: str
) -> None:
    with pytest.raises(TypeError) as info:
        calc.call(name, *args)
    message = str(info.value)
    assert expected in message
    params, results = calc.signature(name)
    assert f"calc.{name}(" in message
    assert f"({', '.join(params)}) -> {', '.join(results) or '()'}" in message


@pytest.mark.parametrize(
    ("name", "args", "fragment"),
    [
        ("add", ("1", 2), "argument 0 must be int for i64, got str"),
        ("add", (1, 2.5), "argument 1 must be int for i64, got float"),
        ("echo_i32", (None,), "must be int for i32, got NoneType"),
        ("scale", (1.0, "2"), "argument 1 must be float for f64, got str"),
    ],
)
def test_wrong_types_name_the_function_and_signature(
    calc: vudo.Spirit, name: str, args: tuple[object, ...], fragment: str
) -> None:
    with pytest.raises(TypeError) as info:
        calc.call(name, *args)
    message = str(info.value)
    assert fragment in message
    assert f"calc.{name}(" in message and "->" in message


def test_unknown_export_lists_the_available_ones(calc: vudo.Spirit) -> None:
    with pytest.raises(UnknownExportError) as info:
        calc.call("multiply", 2, 3)
    err = info.value
    assert isinstance(err, VudoError) and isinstance(err, AttributeError)
    assert err.spirit == "calc"
    assert set(err.available) == CALC_FUNCTIONS
    assert "multiply" in str(err) and "add" in str(err) and "Counter.increment" in str(err)
    with pytest.raises(UnknownExportError):
        calc.function("multiply")
    with pytest.raises(UnknownExportError):
        calc.signature("multiply")


def test_unknown_export_error_names_the_missing_function(calc: vudo.Spirit) -> None:
    with pytest.raises(UnknownExportError) as info:
        calc.call("multiply", 2, 3)
    assert info.value.name == "multiply"


def test_function_returns_the_call_path(calc: vudo.Spirit) -> None:
    add = calc.function("add")
    assert add(19, 23) == 42


# --------------------------------------------------------------------------------------------
# typed proxies
# --------------------------------------------------------------------------------------------
class Calculator(Protocol):
    def add(self, a: int, b: int) -> int: ...
    def scale(self, a: float, b: float) -> float: ...


class Multiplier(Protocol):
    def add(self, a: int, b: int) -> int: ...
    def multiply(self, a: int, b: int) -> int: ...
    def power(self, a: int, b: int) -> int: ...


def test_as_protocol_gives_typed_calls(calc: vudo.Spirit) -> None:
    calculator = calc.as_(Calculator)
    assert calculator.add(10, 20) == 30
    assert calculator.scale(2, 4) == 8.0


def test_as_protocol_with_missing_methods_lists_them(calc: vudo.Spirit) -> None:
    with pytest.raises(UnknownExportError) as info:
        calc.as_(Multiplier)
    assert "multiply" in str(info.value) and "power" in str(info.value)


def test_proxy_groups_gene_methods(calc: vudo.Spirit) -> None:
    proxy = calc.as_()
    ptr = proxy.new_Counter(41)
    assert proxy.Counter.get_value(ptr) == 41
    assert proxy.Counter.increment(ptr) == 42
    assert {"Counter", "add", "new_Counter"} <= set(dir(proxy))
    assert set(dir(proxy.Counter)) == {"get_value", "increment"}


def test_proxy_unknown_attribute(calc: vudo.Spirit) -> None:
    proxy = calc.as_()
    assert not hasattr(proxy, "multiply")
    with pytest.raises(UnknownExportError, match=r"Counter\.reset"):
        proxy.Counter.reset  # noqa: B018


# --------------------------------------------------------------------------------------------
# traps
# --------------------------------------------------------------------------------------------
def test_unreachable_traps_with_export_code_and_backtrace(calc: vudo.Spirit) -> None:
    with pytest.raises(SpiritTrap) as info:
        calc.call("crash")
    trap = info.value
    assert isinstance(trap, VudoError)
    assert trap.spirit == "calc"
    assert trap.function == "crash"
    assert trap.trap_code == "UNREACHABLE"
    assert len(trap.backtrace) >= 1
    assert "calc" in str(trap) and "crash" in str(trap)
    assert calc.call("add", 1, 2) == 3  # the Spirit stays usable


def test_divide_by_zero_backtrace_names_the_inner_function(calc: vudo.Spirit) -> None:
    with pytest.raises(SpiritTrap) as info:
        calc.call("outer", 0)
    trap = info.value
    assert trap.function == "outer"
    assert trap.trap_code == "INTEGER_DIVISION_BY_ZERO"
    assert len(trap.backtrace) == 2
    assert "divide_by_zero" in trap.backtrace[0]  # innermost frame first
    assert "divide by zero" in trap.message
    assert calc.call("outer", 1) == 1


@pytest.mark.parametrize(
    ("name", "args", "code"),
    [
        ("div", (1, 0), "INTEGER_DIVISION_BY_ZERO"),
        ("div", (-(2**31), -1), "INTEGER_OVERFLOW"),
        ("wild_load", (), "MEMORY_OUT_OF_BOUNDS"),
    ],
)
def test_trap_codes(calc: vudo.Spirit, name: str, args: tuple[int, ...], code: str) -> None:
    with pytest.raises(SpiritTrap) as info:
        calc.call(name, *args)
    assert info.value.trap_code == code
    assert info.value.function == name


def test_trap_through_the_proxy_names_the_export(calc: vudo.Spirit) -> None:
    with pytest.raises(SpiritTrap) as info:
        calc.as_().crash()
    assert info.value.function == "crash"


# --------------------------------------------------------------------------------------------
# memories: none, exported, imported
# --------------------------------------------------------------------------------------------
def test_spirit_without_memory(load_wat: LoadWat) -> None:
    spirit = load_wat("(module (func (export \"one\") (result i32) i32.const 1))")
    assert spirit.call("one") == 1
    assert not spirit.has_memory
    with pytest.raises(VudoError, match="no memory"):
        _ = spirit.memory
    null = spirit.memory_or_null
    with pytest.raises(MemoryAccessError):
        null.read_bytes(0, 1)
    assert null.alloc(8) == 0


IMPORTS_MEMORY_WAT = """
(module
  (import "env" "memory" (memory 1))
  (func (export "pages") (result i32) memory.size)
  (func (export "load") (param i32) (result i32) (i32.load (local.get 0))))
"""


@pytest.mark.parametrize(
    "options", [vudo.MemoryOptions(initial=2, maximum=4), {"initial": 2, "maximum": 4}]
)
def test_imported_memory_gets_the_requested_limits(load_wat: LoadWat, options) -> None:
    spirit = load_wat(IMPORTS_MEMORY_WAT, memory=options)
    mem = spirit.memory
    assert mem.pages == 2 and spirit.call("pages") == 2
    assert mem.max_pages == 4
    assert mem.heap_floor == 2 * vudo._memory.PAGE_SIZE
    ptr = mem.alloc(16)
    mem.write_i32(ptr, 1234)
    assert spirit.call("load", ptr) == 1234  # the Spirit sees the memory the host allocates in
    assert mem.pages == 3  # the host heap took one page beyond the 2 it had
    assert mem.grow(2) == -1  # 5 pages > maximum 4
    assert mem.grow(1) == 3
    assert mem.grow(1) == -1


def test_imported_memory_defaults_to_the_declared_minimum(load_wat: LoadWat) -> None:
    spirit = load_wat(IMPORTS_MEMORY_WAT)
    assert spirit.call("pages") == 1
    assert spirit.memory.max_pages is None


def test_imported_memory_maximum_below_initial_is_a_link_error(wat: Wat) -> None:
    with pytest.raises(LinkError, match="memory"):
        vudo.load_spirit(wat(IMPORTS_MEMORY_WAT), memory={"initial": 2, "maximum": 1})


def test_memory_import_below_the_declared_minimum_is_a_link_error(wat: Wat) -> None:
    with pytest.raises(LinkError, match=r"env\.memory"):
        vudo.load_spirit(
            wat(IMPORTS_MEMORY_WAT.replace("(memory 1)", "(memory 3)")),
            memory=vudo.MemoryOptions(initial=2),
        )


# --------------------------------------------------------------------------------------------
# the real DOL-compiled Spirits
# --------------------------------------------------------------------------------------------
class Recorder:
    """A Logger that records what the Spirit printed."""

    def __init__(self) -> None:
        self.printed: list[str] = []

    def log(self, level: vudo.abi.LogLevel, message: str) -> None:
        self.printed.append(f"[log {int(level)}] {message}")

    def debug(self, message: str) -> None:
        self.log(vudo.abi.LogLevel.DEBUG, message)

    def info(self, message: str) -> None:
        self.log(vudo.abi.LogLevel.INFO, message)

    def warn(self, message: str) -> None:
        self.log(vudo.abi.LogLevel.WARN, message)

    def error(self, message: str) -> None:
        self.log(vudo.abi.LogLevel.ERROR, message)

    def print(self, message: str) -> None:
        self.printed.append(message)

    def println(self, message: str) -> None:
        self.printed.append(message + "\n")


def test_shared_add_has_no_memory(shared_spirits: Path) -> None:
    spirit = vudo.load_spirit(shared_spirits / "add.wasm")
    assert spirit.name == "add"
    assert spirit.call("add", 2, 3) == 5
    assert spirit.signature("add") == (("i64", "i64"), ("i64",))
    assert not spirit.has_memory


def test_shared_hello_world_prints_without_newline(shared_spirits: Path) -> None:
    recorder = Recorder()
    spirit = vudo.load_spirit(shared_spirits / "hello_world.wasm", logger=recorder)
    assert spirit.call("greet") is None
    assert recorder.printed == ["Hello, World!"]
    assert spirit.call("add", 40, 2) == 42
    assert spirit.memory.read_bytes(1024, 13) == b"Hello, World!"
    assert (spirit.memory.pages, spirit.memory.max_pages) == (1, 256)


def test_shared_hello_world_prints_to_stdout_by_default(
    shared_spirits: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vudo.load_spirit(shared_spirits / "hello_world.wasm").call("greet")
    assert capsys.readouterr().out == "Hello, World!"


def test_shared_counter_and_its_gene(shared_spirits: Path) -> None:
    spirit = vudo.load_spirit(shared_spirits / "counter.wasm")
    counter = spirit.as_()
    ptr = counter.new_Counter(5)
    assert counter.Counter.get_value(ptr) == 5
    assert counter.Counter.increment(ptr) == 6
    assert counter.Counter.get_value(ptr) == 5  # increment does not store
    assert counter.Counter.add(ptr, 10) == 15
    assert counter.add_numbers(2, 3) == 5
    layout = gene_layout("Counter", [("value", "i64")])
    assert layout.size == 8
    assert spirit.memory.read_gene(ptr, layout) == {"value": 5}


def test_shared_counter_survives_host_allocations(shared_spirits: Path) -> None:
    spirit = vudo.load_spirit(shared_spirits / "counter.wasm")
    layout = gene_layout("Counter", [("value", "i64")])
    first = spirit.call("new_Counter", 5)
    mem = spirit.memory
    strings = [mem.encode_string(f"host string {i}") for i in range(50)]
    genes = []
    for i in range(10):
        gene = mem.alloc(layout.size)
        mem.write_gene(gene, {"value": 1000 + i}, layout)
        genes.append(gene)
    second = spirit.call("new_Counter", 7)  # the Spirit's own heap keeps working
    assert second != first
    assert all(p >= mem.heap_floor >= 65536 for p in strings + genes)
    assert spirit.call("Counter.get_value", first) == 5
    assert spirit.call("Counter.get_value", second) == 7
    # A gene written by the host is usable by the Spirit's methods.
    assert spirit.call("Counter.add", genes[3], 10) == 1013
    assert [mem.decode_string(p) for p in strings] == [f"host string {i}" for i in range(50)]


def test_shared_spirits_load_from_bytes_and_async(shared_spirits: Path) -> None:
    data = (shared_spirits / "counter.wasm").read_bytes()
    assert vudo.load_spirit(data).call("add_numbers", 1, 2) == 3
    spirit = asyncio.run(vudo.aload_spirit(shared_spirits / "add.wasm"))
    assert spirit.call("add", 2, 3) == 5
