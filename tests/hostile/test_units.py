"""In-process regression tests of the pieces behind the corpus: the module reader, the
instance memory budget, the signal deferral and the error-path guards."""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType

import pytest
import wasmtime

import vudo
from vudo._runtime import budget as _budget
from vudo._runtime import safety as _safety
from vudo._runtime import signals as _signals
from vudo._runtime import wasmscan as _wasmscan


def wasm(text: str) -> bytes:
    return bytes(wasmtime.wat2wasm(text))


# ------------------------------------------------------------------------------------------
# _wasmscan: signatures, exports, memories and tables from the bytes
# ------------------------------------------------------------------------------------------
def test_scan_reads_signatures_of_imports_and_exports_through_rec_groups() -> None:
    shape = _wasmscan.scan(wasm("""(module
      (rec (type $s (struct (field i32) (field (mut i8)))) (type $a (array f64)))
      (type $t (func (param i32 v128) (result (ref null $s))))
      (import "env" "h" (func (param i64) (result f32 externref)))
      (import "env" "m" (memory 2 5))
      (import "env" "g" (global (mut v128)))
      (table 3 10 funcref) (memory 1)
      (func $f (type $t) ref.null $s)
      (export "f" (func $f)) (export "f2" (func $f)) (export "mem" (memory 1)))"""))
    assert shape.func_imports == [("env", "h", ("i64",), ("f32", "externref"))]
    assert shape.func_exports == {
        "f": (("i32", "v128"), ("(ref null $0)",)), "f2": (("i32", "v128"), ("(ref null $0)",))}
    assert shape.exports == [("f", "func"), ("f2", "func"), ("mem", "memory")]
    assert shape.memories == [(2 * 65536, 5 * 65536), (65536, None)]
    assert shape.tables == [(3, 10)]


@pytest.mark.parametrize("data", [b"", b"\0asm", b"\0asm\x0d\0\x01\0", b"\0asm\1\0\0\0\1\xff"])
def test_scan_refuses_what_it_cannot_read(data: bytes) -> None:
    with pytest.raises(_wasmscan.ScanError):
        _wasmscan.scan(data)


def test_a_foreign_module_object_keeps_working_for_supported_types() -> None:
    module = wasmtime.Module(vudo._runtime.engine.get_engine(),
                             '(module (func (export "f") (result i32) i32.const 4))')
    assert vudo.load_spirit(module).call("f") == 4


# ------------------------------------------------------------------------------------------
# _budget: one max_memory for every memory and table
# ------------------------------------------------------------------------------------------
def _shape(memories: list[tuple[int, int | None]],
           tables: list[tuple[int, int | None]]) -> _wasmscan.ModuleShape:
    return _wasmscan.ModuleShape(memories=memories, tables=tables)


def test_budget_one_memory_gets_everything() -> None:
    assert _budget.store_limits(_shape([(65536, None)], []), 1 << 24)["memory_size"] == 1 << 24


@pytest.mark.parametrize("memories,tables", [
    ([(65536, None)] * 100, []),
    ([(65536, None)], [(0, None)] * 20),
    ([(65536, 2 * 65536), (65536, None), (0, None)], [(4, 4), (0, None)]),
])
def test_budget_worst_case_fits(memories: list[tuple[int, int | None]],
                                tables: list[tuple[int, int | None]]) -> None:
    cap = 1 << 24
    lim = _budget.store_limits(_shape(memories, tables), cap)
    per, elems = lim["memory_size"], lim["table_elements"]
    worst = sum(per if mx is None else min(mx, per) for _, mx in memories) + 8 * sum(
        elems if mx is None else min(mx, elems) for _, mx in tables)
    assert 0 < worst <= cap
    assert lim["memories"] == len(memories)


def test_budget_bounded_items_leave_the_rest_to_the_others() -> None:
    lim = _budget.store_limits(_shape([(65536, 65536), (65536, None)], []), 1 << 24)
    assert lim["memory_size"] == (1 << 24) - 65536


def test_budget_clamps_to_int64() -> None:
    assert _budget.store_limits(None, 2**64 - 1)["memory_size"] == 2**63 - 1


# ------------------------------------------------------------------------------------------
# _signals: deferral inside call paths only
# ------------------------------------------------------------------------------------------
def test_protect_wraps_python_handlers_and_defers_only_inside_a_call_path() -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers are installed from the main thread")
    seen: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda n, f: seen.append(n))
    try:
        _signals.protect()
        handler = signal.getsignal(signal.SIGUSR1)
        assert handler is _signals._handler
        frame = sys._getframe()
        handler(signal.SIGUSR1, frame)  # not in a call path: runs at once
        assert seen == [signal.SIGUSR1]

        ns: dict[str, object] = {}
        exec(compile("def call(h, n):\n    h(n, __import__('sys')._getframe())\n",
                     _signals.CALL_PATH_FILE, "exec"), ns)
        call = ns["call"]
        assert callable(call)
        call(handler, signal.SIGUSR1)  # inside a (generated) call path: deferred
        assert seen == [signal.SIGUSR1] and _signals.pending() == (signal.SIGUSR1,)
        _signals.run_deferred()  # a safe point
        assert seen == [signal.SIGUSR1] * 2 and _signals.pending() == ()
    finally:
        signal.signal(signal.SIGUSR1, previous)
        _signals._previous.pop(signal.SIGUSR1, None)


def test_in_call_path_sees_registered_methods() -> None:
    captured: list[FrameType] = []
    _signals.register(test_in_call_path_sees_registered_methods)
    captured.append(sys._getframe())
    assert _signals.in_call_path(captured[0])
    _signals._codes.discard(test_in_call_path_sees_registered_methods.__code__)
    assert not _signals.in_call_path(captured[0])


# ------------------------------------------------------------------------------------------
# _safety
# ------------------------------------------------------------------------------------------
def test_text_of_survives_a_raising_str() -> None:
    class Nasty(Exception):
        def __str__(self) -> str:
            raise RuntimeError

    assert "Nasty" in _safety.text_of(Nasty())
    assert _safety.text_of(ValueError("plain")) == "plain"


def test_ensure_headroom_refuses_near_the_recursion_limit() -> None:
    _safety.ensure_headroom("s", "f")  # a shallow stack: fine

    def deep(n: int) -> None:
        if n:
            deep(n - 1)
        else:
            _safety.ensure_headroom("s", "f")

    depth, frame = 0, sys._getframe()
    while frame is not None:
        depth, frame = depth + 1, frame.f_back
    with pytest.raises(vudo.errors.StackExhausted, match="recursion limit"):
        deep(sys.getrecursionlimit() - depth - 30)


def test_wasm_stack_budget_is_half_a_small_thread_stack() -> None:
    old = threading.stack_size()
    try:
        threading.stack_size(512 * 1024)
        assert _safety.wasm_stack_budget() == 256 * 1024
    finally:
        threading.stack_size(old)
