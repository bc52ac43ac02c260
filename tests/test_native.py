"""The native core (vudo._cnative): same behaviour as the pure-Python paths, plus what only it
can do (interrupting a call that holds the GIL, C built-ins). Skipped when it is not built.

The rest of the suite runs on the native core whenever it is active; `VUDO_NATIVE=0` forces
the fallback (checked here in subprocesses).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from storm_helpers import sigint_storm

import vudo
from vudo._runtime import cnative as _native_core
from vudo.testing import MockRandomProvider, MockTimeProvider

pytestmark = pytest.mark.skipif(
    not _native_core.available(), reason=f"native core inactive: {_native_core.reason()}"
)
HERE = Path(__file__).resolve().parent

WAT = """
(module
  (import "vudo" "vudo_now" (func $now (result i64)))
  (import "vudo" "vudo_monotonic_now" (func $mono (result i64)))
  (import "vudo" "vudo_random" (func $rand (result f64)))
  (import "vudo" "vudo_random_bytes" (func $rbytes (param i32 i32)))
  (import "vudo" "vudo_print" (func $print (param i32 i32)))
  (import "env" "host" (func $host (param i32 i64 f32 f64) (result i32)))
  (import "env" "pair" (func $pair (result i64 i32)))
  (import "env" "started" (func $started))
  (memory (export "memory") 1)
  (data (i32.const 16) "hi \\ff!")
  (func (export "add") (param i64 i64) (result i64) local.get 0 local.get 1 i64.add)
  (func (export "mix") (param i32 i64 f32 f64) (result i32 i64 f32 f64)
    local.get 0 local.get 1 local.get 2 local.get 3)
  (func (export "now") (result i64) call $now)
  (func (export "mono") (result i64) call $mono)
  (func (export "rand") (result f64) call $rand)
  (func (export "rbytes") (param i32 i32) (call $rbytes (local.get 0) (local.get 1)))
  (func (export "print") (param i32 i32) (call $print (local.get 0) (local.get 1)))
  (func (export "host") (param i32 i64 f32 f64) (result i32)
    (call $host (local.get 0) (local.get 1) (local.get 2) (local.get 3)))
  (func (export "pair") (result i64 i32) call $pair)
  (func (export "spin") (call $started) (loop $l (br $l)))
)
"""


class Capture:
    """A logger keeping what vudo_print writes."""

    def __init__(self) -> None:
        self.out: list[str] = []

    def print(self, message: str) -> None:
        self.out.append(message)

    def log(self, level: Any, message: str) -> None:
        self.out.append(message)

    println = error = warn = info = debug = print


def load(fallback: bool = False, **options: Any) -> vudo.Spirit:
    host: Callable[..., Any] = options.pop("host", lambda a, b, c, d: a)
    imports = {"host": host, "pair": options.pop("pair", lambda: (1, 2)),
               "started": options.pop("started", lambda: None)}
    options.setdefault("logger", Capture())
    if fallback:
        with _native_core.fallback():
            return vudo.load_spirit(WAT, name="n", imports=imports, **options)
    return vudo.load_spirit(WAT, name="n", imports=imports, **options)


@pytest.fixture
def pair() -> Iterator[tuple[vudo.Spirit, vudo.Spirit]]:
    native, fallback = load(), load(fallback=True)
    assert type(native.function("add")).__name__ == "Caller"
    assert type(fallback.function("add")).__name__ == "function"
    yield native, fallback
    native.close()
    fallback.close()


def outcome(fn: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "ok", fn()
    except BaseException as exc:  # comparing whatever each path raises
        return type(exc).__name__, str(exc)


ARGS = [
    (1, 2), (-(2**63), 0), (2**64 - 1, 1), (2**64, 0), (-(2**63) - 1, 0), (True, 1),
    (1.0, 2), ("1", 2), (None, 2), (1,), (1, 2, 3), (10**30, 1),
]


@pytest.mark.parametrize("args", ARGS, ids=repr)
def test_call_path_converts_and_refuses_exactly_like_the_fallback(
    pair: tuple[vudo.Spirit, vudo.Spirit], args: tuple[Any, ...]
) -> None:
    native, fallback = pair
    assert outcome(lambda: native.call("add", *args)) == outcome(
        lambda: fallback.call("add", *args))


@pytest.mark.parametrize("args", [
    (2**32 - 1, -1, 1.5, 2.25), (-(2**31), 2**63, 3, 4), (2**32, 0, 0.0, 0.0),
    (-(2**31) - 1, 0, 0.0, 0.0), (0, 0, "x", 0.0), (0, 0, 1e300, 10**400), (0, 0.5, 0.0, 0.0),
], ids=repr)
def test_every_value_type_round_trips_like_the_fallback(
    pair: tuple[vudo.Spirit, vudo.Spirit], args: tuple[Any, ...]
) -> None:
    native, fallback = pair
    assert outcome(lambda: native.call("mix", *args)) == outcome(
        lambda: fallback.call("mix", *args))


@pytest.mark.parametrize("result", [
    7, -1, 2**40, True, None, 1.5, "x", 10**30,
], ids=repr)
def test_host_results_are_masked_or_refused_like_the_fallback(result: Any) -> None:
    def host(*_args):  # unannotated: called with the raw wasm values
        return result

    got = [outcome(lambda s=s: s.call("host", 1, 2, 3.0, 4.0))  # type: ignore[misc]
           for s in (load(host=host), load(fallback=True, host=host))]
    assert got[0] == got[1]


@pytest.mark.parametrize("pair_result", [(5, 6), (2**64 - 1, -1), (1,), 3, (1.5, 2)], ids=repr)
def test_multi_value_host_results_like_the_fallback(pair_result: Any) -> None:
    got = [outcome(s.function("pair")) for s in (
        load(pair=lambda: pair_result), load(fallback=True, pair=lambda: pair_result))]
    assert got[0] == got[1]


def test_host_arguments_arrive_with_their_wasm_types() -> None:
    seen: list[tuple[Any, ...]] = []

    def host(*args):
        seen.append(args)
        return 0

    load(host=host).call("host", 2**32 - 1, 2**64 - 2, 1.5, -0.25)
    assert seen == [(-1, -2, 1.5, -0.25)]


def test_a_host_exception_becomes_the_same_error_on_both_paths() -> None:
    def host(*_a):
        raise ValueError("boom")

    got = [outcome(lambda s=s: s.call("host", 0, 0, 0.0, 0.0))  # type: ignore[misc]
           for s in (load(host=host), load(fallback=True, host=host))]
    assert got[0] == got[1] and got[0][0] == "HostFunctionError" and "boom" in got[0][1]


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_keyboard_interrupt_in_a_host_function_reaches_the_caller(
    exc: type[BaseException],
) -> None:
    def host(*_a):
        raise exc("stop")

    spirit = load(host=host)
    with pytest.raises(exc):
        spirit.call("host", 0, 0, 0.0, 0.0)
    assert spirit.call("add", 1, 1) == 2  # still usable


def test_clock_builtins_are_native_with_the_default_providers() -> None:
    spirit = load()
    kinds = {type(k).__name__ for k in spirit._keepalive}
    assert "Builtin" in kinds
    before = time.time_ns() // 1_000_000
    now = spirit.call("now")
    assert before <= now <= time.time_ns() // 1_000_000
    a, b = spirit.call("mono"), spirit.call("mono")
    assert time.monotonic_ns() >= b >= a > 0


def test_custom_providers_are_called_instead_of_the_builtins() -> None:
    clock = MockTimeProvider(start_ms=1234)
    rand = MockRandomProvider([0.25], seed=1)
    spirit = load(time_provider=clock, random_provider=rand)
    assert spirit.call("now") == 1234
    assert spirit.call("rand") == 0.25


def test_random_is_uniform_in_range_and_random_bytes_fill_memory() -> None:
    spirit = load()
    values = [spirit.call("rand") for _ in range(2000)]
    assert all(0.0 <= v < 1.0 for v in values) and len(set(values)) == 2000
    assert 0.4 < sum(values) / len(values) < 0.6
    spirit.call("rbytes", 1024, 64)
    first = spirit.memory.read_bytes(1024, 64)
    spirit.call("rbytes", 1024, 64)
    assert first != spirit.memory.read_bytes(1024, 64) and first != bytes(64)
    spirit.call("rbytes", 65536, 0)  # empty, at the very end: fine


@pytest.mark.parametrize("args", [(65530, 7), (2**32 - 1, 2), (0, 70000)], ids=repr)
def test_random_bytes_out_of_bounds_is_the_same_memory_access_error(
    args: tuple[int, int],
) -> None:
    got = []
    for s in (load(), load(fallback=True)):
        with pytest.raises(vudo.errors.MemoryAccessError) as info:
            s.call("rbytes", *args)
        got.append(str(info.value))
        assert s.memory.read_bytes(65530, 6) == bytes(6)  # nothing written
    assert got[0] == got[1]


def test_print_decodes_like_the_python_loa_and_refuses_out_of_bounds() -> None:
    logs = Capture(), Capture()
    spirits = load(logger=logs[0]), load(fallback=True, logger=logs[1])
    for s in spirits:
        s.call("print", 16, 5)
        s.call("print", 65536, 0)
    assert logs[0].out == logs[1].out == ["hi \ufffd!", ""]
    got = [outcome(lambda s=s: s.call("print", 65535, 2)) for s in spirits]  # type: ignore[misc]
    assert got[0] == got[1] and got[0][0] == "MemoryAccessError"


def test_a_call_holding_the_gil_lets_another_thread_interrupt_it() -> None:
    # Holding the GIL is the single-thread fast path; the first epoch tick must release it, or
    # the other thread could never run interrupt().
    started = threading.Event()
    spirit = load(started=started.set)
    stopper = threading.Thread(target=lambda: (started.wait(10), spirit.interrupt()))
    _native_core.set_gil_policy("hold")
    try:
        stopper.start()
        with pytest.raises(vudo.SpiritTerminated):
            spirit.call("spin")
    finally:
        _native_core.set_gil_policy("auto")
        stopper.join()
    assert _native_core.gil_stats()[2] > 0


def test_a_timeout_fires_while_the_call_holds_the_gil() -> None:
    spirit = load(limits=vudo.Limits(timeout=0.05))
    _native_core.set_gil_policy("hold")
    try:
        with pytest.raises(vudo.SpiritTimeout):
            spirit.call("spin")
    finally:
        _native_core.set_gil_policy("auto")
    assert spirit.call("add", 2, 2) == 4


def test_the_native_rlock_behaves_like_threading_rlock() -> None:
    lock = _native_core.rlock()
    assert lock.acquire() and lock.acquire(timeout=0.01)
    lock.release()
    lock.release()
    with pytest.raises(RuntimeError):
        lock.release()
    with lock:
        waiter: list[bool] = []
        t = threading.Thread(target=lambda: waiter.append(lock.acquire(timeout=0.01)))
        t.start()
        t.join()
        assert waiter == [False] and lock.acquire(blocking=False) is True  # re-entrant
        lock.release()
    assert lock.acquire(blocking=False)
    lock.release()


def run_python(code: str, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_vudo_native_0_forces_the_fallback() -> None:
    code = ("import vudo; from vudo._runtime import cnative as n; "
            "s = vudo.load_spirit('(module (func (export \"f\")))'); "
            "print(n.available(), n.reason(), type(s.function('f')).__name__)")
    assert run_python(code, {"VUDO_NATIVE": "0"}) == "False disabled by VUDO_NATIVE=0 function"
    assert run_python(code, {"VUDO_NATIVE": "1"}) == "True None Caller"


def test_the_ticker_is_restarted_in_a_forked_child() -> None:
    code = """
import os, vudo
wat = '(module (func (export "spin") (loop $l (br $l))))'
s = vudo.load_spirit(wat, limits=vudo.Limits(timeout=0.05))
pid = os.fork()
if pid == 0:
    try:
        s.call("spin")
    except vudo.SpiritTimeout:
        os._exit(7)
    os._exit(1)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status))
"""
    assert run_python(code) == "7"


def test_key_test_files_pass_on_the_fallback_too() -> None:
    files = ["test_spirit.py", "test_host_functions.py", "test_reentrancy.py"]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
         *(str(HERE / f) for f in files)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "VUDO_NATIVE": "0"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_a_sigint_storm_never_crashes_the_process(tmp_path: Path) -> None:
    sigint_storm(HERE / "_native_storm.py", tmp_path / "stop", seconds=2.0, gap=0.0002)


def test_a_dropped_spirit_is_collected_despite_its_native_host_functions() -> None:
    # The store refers to its native host functions without a reference: no hidden cycle.
    import gc
    import weakref

    spirit = load(logger=Capture(), limits=vudo.Limits(timeout=1))
    spirit.call("print", 16, 5)
    spirit.call("host", 1, 2, 3.0, 4.0)
    ref = weakref.ref(spirit)
    del spirit
    gc.collect()
    assert ref() is None


def test_the_call_path_reads_the_guard_attribute_it_is_told() -> None:
    # The call path can serve any object with a guard attribute (the call-state object of the
    # restructured runtime names it `guard`).
    import ctypes

    from vudo._runtime import ffi as _ffi

    spirit = load()
    func = spirit.exports["add"]

    class State:
        guard: Any = None

    def refuse(name: str) -> None:
        raise vudo.VudoError(f"refused {name}")

    state = State()
    buf = (_ffi.ValRaw * 2)()
    trapbuf = ctypes.c_void_p()
    c = ctypes.c_void_p
    make = _native_core.caller_template(("i64", "i64"), ("i64",), False, guard="guard")
    assert make is not None
    call = make(state, "add", spirit._lock.acquire, spirit._lock.release, [],
                c(_ffi.context_address(spirit.store)), c(ctypes.addressof(func._func)), buf,
                c(ctypes.addressof(buf)),
                trapbuf, c(ctypes.addressof(trapbuf)), ctypes.c_size_t(2), None,
                spirit._state.failed, None, None)
    assert call(20, 22) == 42
    state.guard = refuse
    with pytest.raises(vudo.VudoError, match="refused add"):
        call(1, 2)
