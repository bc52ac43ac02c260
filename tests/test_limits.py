"""Per-Spirit limits: timeout, fuel, max_memory, max_inbox, max_message_size, terminate_on_limit.

Every runaway here is a real WebAssembly loop. The only timing assertions are generous upper
bounds on how long a stopped call may take (a 0.1 s timeout must stop the call within 10 s);
threads are synchronised with events signalled from host functions, never with sleeps.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import vudo
from vudo import Limits, LoadError, Seance, Spirit
from vudo._memory import PAGE_SIZE
from vudo.abi import ResultCode
from vudo.errors import (
    FuelExhausted,
    LimitExceeded,
    MemoryLimitExceeded,
    SpiritTerminated,
    SpiritTimeout,
)

#: How long a call stopped by a limit (or by dismissal) may take at most. Deliberately huge:
#: the limits involved are 0.05-0.1 s, so this only catches "never stopped".
STOP_BOUND = 10.0

OK = int(ResultCode.OK)
ERROR = int(ResultCode.ERROR)
INVALID_ARG = int(ResultCode.INVALID_ARG)

# A Spirit with an infinite loop, a cheap function and a bounded loop.
SPIN = """
(module
  (memory (export "memory") 1)
  (func (export "spin") (loop br 0))
  (func (export "add") (param i32 i32) (result i32) local.get 0 local.get 1 i32.add)
  ;; count(n): loop n times, return n
  (func (export "count") (param $n i32) (result i32) (local $i i32)
    (block (loop
      (br_if 1 (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      br 0))
    local.get $i))
"""

# Spirits that call the user import ``env.started`` first, then spin: the test knows the call
# is inside WebAssembly once ``started`` ran. ``wait_flag`` spins until the i32 at 0 is nonzero
# and returns how many iterations it made.
SPIN_SIGNALLING = """
(module
  (import "env" "started" (func $started))
  (memory (export "memory") 1)
  (func (export "spin") (call $started) (loop br 0))
  (func (export "wait_flag") (result i64) (local $n i64)
    (call $started)
    (block (loop
      (local.set $n (i64.add (local.get $n) (i64.const 1)))
      (br_if 1 (i32.ne (i32.load (i32.const 0)) (i32.const 0)))
      br 0))
    local.get $n)
  (func (export "add") (param i32 i32) (result i32) local.get 0 local.get 1 i32.add))
"""

# Memory bombs. ``bomb_trap`` grows one page at a time and hits ``unreachable`` when refused;
# ``bomb_count`` grows until refused and returns the pages it ended up with.
BOMB = """
(module
  (import "vudo" "vudo_alloc" (func $alloc (param i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "bomb_trap")
    (loop
      (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then unreachable))
      br 0))
  (func (export "bomb_count") (result i32)
    (block (loop
      (br_if 1 (i32.eq (memory.grow (i32.const 1)) (i32.const -1)))
      br 0))
    memory.size)
  (func (export "pages") (result i32) memory.size)
  (func (export "alloc") (param i32) (result i32) local.get 0 call $alloc))
"""

# Messaging: ``flood(n)`` sends the i32 i (as 4 bytes) to "rx" for i in 0..n and stores each
# result code at 1024 + 4*i; ``send_len(len)`` sends ``len`` bytes from offset 0 to "rx" (the
# name lives at 60000, out of the way);
# ``broadcast_len(len)`` broadcasts ``len`` bytes from offset 0.
SENDER = """
(module
  (import "vudo" "vudo_send" (func $send (param i32 i32 i32 i32) (result i32)))
  (import "vudo" "vudo_broadcast" (func $broadcast (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 60000) "rx")
  (func (export "flood") (param $n i32) (local $i i32)
    (block (loop
      (br_if 1 (i32.ge_u (local.get $i) (local.get $n)))
      (i32.store (i32.const 32) (local.get $i))
      (i32.store (i32.add (i32.const 1024) (i32.shl (local.get $i) (i32.const 2)))
        (call $send (i32.const 60000) (i32.const 2) (i32.const 32) (i32.const 4)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      br 0)))
  (func (export "send_len") (param i32) (result i32)
    (call $send (i32.const 60000) (i32.const 2) (i32.const 0) (local.get 0)))
  (func (export "broadcast_len") (param i32) (result i32)
    (call $broadcast (i32.const 0) (local.get 0))))
"""

RECEIVER = """
(module
  (import "vudo" "vudo_recv" (func $recv (result i32)))
  (import "vudo" "vudo_free_message" (func $free_message (param i32)))
  (memory (export "memory") 1)
  (func (export "recv") (result i32) call $recv)
  (func (export "free_message") (param i32) local.get 0 call $free_message)
  (func (export "bomb_count") (result i32)
    (block (loop
      (br_if 1 (i32.eq (memory.grow (i32.const 1)) (i32.const -1)))
      br 0))
    memory.size))
"""

SLEEPER = """
(module
  (import "vudo" "vudo_sleep" (func $sleep (param i32)))
  (func (export "nap") (param i32) local.get 0 call $sleep))
"""


def _noop() -> None:
    pass


def read_message(spirit: Spirit, ptr: int) -> tuple[str, bytes]:
    """Decode a ``vudo_recv`` block ``[sender_len u32][sender][payload_len u32][payload]``."""
    mem = spirit.memory
    sender_len = mem.read_u32(ptr)
    sender = mem.read_string(ptr + 4, sender_len)
    payload_len = mem.read_u32(ptr + 4 + sender_len)
    return sender, mem.read_bytes(ptr + 8 + sender_len, payload_len)


class CallInThread:
    """Run one Spirit call on another thread and keep its outcome."""

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn, *args), daemon=True)

    def _run(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            self.result = fn(*args)
        except BaseException as exc:
            self.error = exc

    def start(self) -> CallInThread:
        self._thread.start()
        return self

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; ``True`` when the call has ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()


@pytest.fixture
def seance() -> Iterator[Seance]:
    with Seance() as session:
        yield session


# ------------------------------------------------------------------------------------------
# Limits themselves
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field", ["timeout", "fuel", "max_memory", "max_inbox",
                                   "max_message_size"])
@pytest.mark.parametrize("value", [0, -1])
def test_limits_reject_non_positive_values(field: str, value: int) -> None:
    kwargs: dict[str, Any] = {field: value}
    with pytest.raises(ValueError, match=field):
        Limits(**kwargs)


# ------------------------------------------------------------------------------------------
# timeout and fuel
# ------------------------------------------------------------------------------------------
def test_timeout_stops_infinite_loop_and_spirit_stays_usable(
    load_wat: Callable[..., Spirit],
) -> None:
    spirit = load_wat(SPIN, name="looper", limits=Limits(timeout=0.1))
    for _ in range(2):  # the deadline is re-armed for every call
        start = time.monotonic()
        with pytest.raises(SpiritTimeout) as info:
            spirit.call("spin")
        assert time.monotonic() - start < STOP_BOUND
        err = info.value
        assert isinstance(err, LimitExceeded)
        assert (err.spirit, err.function, err.limit) == ("looper", "spin", "timeout")
        assert "looper" in str(err) and "spin" in str(err) and "timeout" in str(err)
        assert not spirit.terminated
        assert spirit.call("add", 2, 3) == 5


def test_fuel_stops_infinite_loop_and_spirit_stays_usable(
    load_wat: Callable[..., Spirit],
) -> None:
    spirit = load_wat(SPIN, name="burner", limits=Limits(fuel=100_000))
    for _ in range(2):
        with pytest.raises(FuelExhausted) as info:
            spirit.call("spin")
        err = info.value
        assert isinstance(err, LimitExceeded)
        assert (err.spirit, err.function, err.limit, err.value) == (
            "burner", "spin", "fuel", 100_000)
        assert "burner" in str(err) and "fuel" in str(err)
        assert not spirit.terminated
        assert spirit.call("add", 2, 3) == 5


def test_fuel_is_a_budget_per_call_not_per_spirit(load_wat: Callable[..., Spirit]) -> None:
    spirit = load_wat(SPIN, limits=Limits(fuel=1_000_000))
    # One call of 20 000 iterations fits the budget; 50 of them would not if fuel carried over.
    for _ in range(50):
        assert spirit.call("count", 20_000) == 20_000
    with pytest.raises(FuelExhausted):
        spirit.call("count", 10_000_000)
    assert spirit.call("count", 20_000) == 20_000


def test_session_default_limits_apply_and_summon_overrides_them() -> None:
    with Seance(limits=Limits(fuel=100_000)) as session:
        metered = session.summon("metered", SPIN)
        timed = session.summon("timed", SPIN, limits=Limits(timeout=0.05, fuel=10**15))
        # Per-Spirit limits merge with the session's field by field: the fuel limit stays.
        merged = session.summon("merged", SPIN, limits=Limits(timeout=30))
        assert merged.limits == Limits(fuel=100_000, timeout=30)
        with pytest.raises(FuelExhausted):
            session.invoke("merged", "spin")
        with pytest.raises(FuelExhausted) as fuel_info:
            session.invoke("metered", "spin")
        assert fuel_info.value.spirit == "metered"
        with pytest.raises(SpiritTimeout) as timeout_info:
            session.invoke("timed", "spin")
        assert timeout_info.value.spirit == "timed"
        assert session.invoke("metered", "add", 1, 2) == 3
        assert session.invoke("timed", "add", 1, 2) == 3
        assert not metered.terminated and not timed.terminated
        assert session.stats("timed").failures == 1


def test_timeout_in_one_spirit_does_not_disturb_a_concurrent_call_in_another() -> None:
    started = threading.Event()
    with Seance() as session:
        session.summon("hasty", SPIN_SIGNALLING, limits=Limits(timeout=0.1),
                       imports={"started": _noop})
        patient = session.summon("patient", SPIN_SIGNALLING, limits=Limits(timeout=60),
                                 imports={"started": started.set})
        call = CallInThread(session.invoke, "patient", "wait_flag").start()
        assert started.wait(STOP_BOUND), "the patient Spirit never started"
        # The patient Spirit is now spinning in WebAssembly on the other thread.
        with pytest.raises(SpiritTimeout) as info:
            session.invoke("hasty", "spin")
        assert info.value.spirit == "hasty"
        assert not call.join(0), "the patient Spirit's call ended when the other one timed out"
        patient.memory.write_i32(0, 1)  # let it finish
        assert call.join(STOP_BOUND), "the patient Spirit never saw its flag"
        assert call.error is None, f"patient call failed: {call.error!r}"
        assert isinstance(call.result, int) and call.result > 0
        assert session.invoke("patient", "add", 20, 22) == 42
        assert session.invoke("hasty", "add", 20, 22) == 42


@pytest.mark.parametrize("how", ["dismiss", "release"])
def test_spinning_spirit_without_limits_is_stopped_by_the_session(how: str) -> None:
    started = threading.Event()
    session = Seance()
    try:
        spirit = session.summon("spinner", SPIN_SIGNALLING, imports={"started": started.set})
        call = CallInThread(spirit.call, "spin").start()
        assert started.wait(STOP_BOUND)
        begin = time.monotonic()
        if how == "dismiss":
            session.dismiss()
        else:
            session.release("spinner")
        assert time.monotonic() - begin < STOP_BOUND  # dismiss/release do not wait
        assert call.join(STOP_BOUND), f"{how}() did not stop the spinning call"
        assert isinstance(call.error, SpiritTerminated)
        with pytest.raises(SpiritTerminated):
            spirit.call("add", 1, 2)
    finally:
        session.dismiss()


def test_interrupt_stops_a_standalone_spirit_spinning_on_another_thread(
    load_wat: Callable[..., Spirit],
) -> None:
    started = threading.Event()
    spirit = load_wat(SPIN_SIGNALLING, imports={"started": started.set})
    call = CallInThread(spirit.call, "spin").start()
    assert started.wait(STOP_BOUND)
    spirit.interrupt()
    assert call.join(STOP_BOUND)
    assert isinstance(call.error, SpiritTerminated)


def test_timeout_bounds_a_call_sleeping_in_vudo_sleep(load_wat: Callable[..., Spirit]) -> None:
    spirit = load_wat(SLEEPER, limits=Limits(timeout=0.1))
    start = time.monotonic()
    with pytest.raises(SpiritTimeout):
        spirit.call("nap", 2_000)
    assert time.monotonic() - start < 1.5


_START_LOOP_PROGRAM = textwrap.dedent("""
    import json, os, sys, threading
    os.environ["VUDO_CACHE_DIR"] = ""
    import vudo
    WAT = '(module (func $spin (loop br 0)) (start $spin))'
    outcome = {}
    def load(key, limits):
        try:
            vudo.load_spirit(WAT, limits=limits)
            outcome[key] = "loaded"
        except BaseException as exc:
            outcome[key] = type(exc).__name__
    threads = [threading.Thread(target=load, args=args, daemon=True) for args in (
        ("timeout", vudo.Limits(timeout=0.05)), ("fuel", vudo.Limits(fuel=100_000)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(float(sys.argv[1]))
    print(json.dumps(outcome), flush=True)
    os._exit(0)  # a load still spinning must not keep this process alive
""")


def test_start_function_infinite_loop_is_stopped_by_timeout_and_fuel() -> None:
    # In a child process: a load that hangs must not leave a spinning thread in this one.
    proc = subprocess.run(
        [sys.executable, "-c", _START_LOOP_PROGRAM, "2.0"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    outcome = json.loads(proc.stdout)
    load_error = {LoadError.__name__, SpiritTimeout.__name__, FuelExhausted.__name__}
    assert outcome.get("timeout") in load_error, outcome
    assert outcome.get("fuel") in load_error, outcome


# ------------------------------------------------------------------------------------------
# max_memory
# ------------------------------------------------------------------------------------------
def test_memory_bomb_that_traps_when_refused_raises_memory_limit_exceeded(
    load_wat: Callable[..., Spirit],
) -> None:
    cap = 4 * PAGE_SIZE
    spirit = load_wat(BOMB, name="bomber", limits=Limits(max_memory=cap))
    with pytest.raises(MemoryLimitExceeded) as info:
        spirit.call("bomb_trap")
    err = info.value
    assert isinstance(err, LimitExceeded)
    assert (err.spirit, err.function, err.limit, err.value) == (
        "bomber", "bomb_trap", "max_memory", cap)
    assert "bomber" in str(err) and "max_memory" in str(err)
    assert spirit.memory.size <= cap
    assert not spirit.terminated
    assert spirit.call("pages") == 4  # still usable


@pytest.mark.parametrize("cap", [2 * PAGE_SIZE, 4 * PAGE_SIZE + 100, 16 * PAGE_SIZE])
def test_memory_bomb_that_counts_pages_returns_normally_within_the_cap(
    load_wat: Callable[..., Spirit], cap: int,
) -> None:
    spirit = load_wat(BOMB, limits=Limits(max_memory=cap))
    pages = spirit.call("bomb_count")
    assert pages == cap // PAGE_SIZE  # got every whole page the cap allows, and no more
    assert pages * PAGE_SIZE <= cap
    assert spirit.memory.size <= cap
    assert spirit.call("bomb_count") == pages  # nothing more on a second try


def test_host_heap_respects_max_memory(load_wat: Callable[..., Spirit]) -> None:
    cap = 2 * PAGE_SIZE
    spirit = load_wat(BOMB, limits=Limits(max_memory=cap))
    mem = spirit.memory
    block = spirit.call("alloc", 1000)
    assert block >= mem.heap_floor  # above the module's own memory
    mem.write_bytes(block, b"k" * 1000)
    # The heap could only grow by one page: a block that needs another one is refused...
    assert spirit.call("alloc", PAGE_SIZE) == 0
    assert mem.alloc(PAGE_SIZE) == 0
    assert mem.size <= cap
    # ...and the block already handed out is intact and small blocks still fit.
    assert mem.read_bytes(block, 1000) == b"k" * 1000
    assert spirit.call("alloc", 64) != 0


def test_host_heap_refused_once_the_spirit_took_all_memory(load_wat: Callable[..., Spirit]) -> None:
    spirit = load_wat(BOMB, limits=Limits(max_memory=3 * PAGE_SIZE))
    assert spirit.call("bomb_count") == 3
    assert spirit.call("alloc", 8) == 0
    assert spirit.memory.alloc(8) == 0
    assert spirit.memory.size == 3 * PAGE_SIZE


def test_table_growth_is_bounded_when_max_memory_is_set(load_wat: Callable[..., Spirit]) -> None:
    wat = """(module (table $t 0 funcref) (memory 1)
      (func (export "grow") (param i32) (result i32)
        (table.grow $t (ref.null func) (local.get 0))))"""
    spirit = load_wat(wat, limits=Limits(max_memory=2 * PAGE_SIZE))
    # One million elements is 8 MB of host memory for a Spirit capped at 128 KiB.
    try:
        result = spirit.call("grow", 1_000_000)
    except LimitExceeded:
        return
    assert result == -1


def test_module_whose_initial_memory_exceeds_max_memory_fails_to_load() -> None:
    wat = '(module (memory (export "memory") 8))'
    with pytest.raises(LoadError):
        vudo.load_spirit(wat, limits=Limits(max_memory=4 * PAGE_SIZE))


def test_message_waits_in_inbox_when_the_receiver_heap_is_at_the_cap(seance: Seance) -> None:
    sender = seance.summon("tx", SENDER)
    rx = seance.summon("rx", RECEIVER, limits=Limits(max_memory=2 * PAGE_SIZE))
    assert rx.call("bomb_count") == 2  # the receiver used up its memory itself
    sender.memory.write_bytes(0, b"hello")
    assert sender.call("send_len", 5) == OK
    assert rx.call("recv") == 0  # no room for the message block...
    assert seance.pending("rx") == 1  # ...so it stays queued, intact
    msg = seance.messages.peek("rx")
    assert msg is not None and (msg.from_, msg.payload) == ("tx", b"hello")


# ------------------------------------------------------------------------------------------
# max_inbox and max_message_size
# ------------------------------------------------------------------------------------------
def test_message_flood_is_refused_once_the_inbox_is_full_and_nothing_queued_is_lost(
    seance: Seance,
) -> None:
    cap, sent = 5, 12
    sender = seance.summon("tx", SENDER)
    rx = seance.summon("rx", RECEIVER, limits=Limits(max_inbox=cap))
    sender.call("flood", sent)
    codes = [sender.memory.read_i32(1024 + 4 * i) for i in range(sent)]
    assert codes == [OK] * cap + [ERROR] * (sent - cap)
    assert seance.pending("rx") == cap
    # The first `cap` messages are intact and in order.
    got = []
    for _ in range(cap):
        ptr = rx.call("recv")
        assert ptr != 0
        got.append(read_message(rx, ptr))
        rx.call("free_message", ptr)
    assert got == [("tx", i.to_bytes(4, "little")) for i in range(cap)]
    assert rx.call("recv") == 0
    # Draining made room again.
    sender.call("flood", 1)
    assert sender.memory.read_i32(1024) == OK
    assert seance.pending("rx") == 1


def test_session_inbox_limit_applies_to_host_sends_too(seance: Seance) -> None:
    seance.summon("rx", RECEIVER, limits=Limits(max_inbox=2))
    codes = [seance.send("host", "rx", f"m{i}") for i in range(4)]
    assert codes == [ResultCode.OK, ResultCode.OK, ResultCode.ERROR, ResultCode.ERROR]
    assert [m.payload for m in (seance.messages.recv("rx"), seance.messages.recv("rx")) if m] == [
        b"m0", b"m1"]


def test_oversized_message_is_refused_with_invalid_arg_and_nothing_is_queued(
    seance: Seance, caplog: pytest.LogCaptureFixture,
) -> None:
    sender = seance.summon("tx", SENDER, limits=Limits(max_message_size=100))
    seance.summon("rx", RECEIVER)
    sender.memory.write_bytes(0, bytes(range(100)) + b"!")
    assert sender.call("send_len", 100) == OK  # exactly at the cap is allowed
    with caplog.at_level(logging.WARNING, logger="vudo"):
        assert sender.call("send_len", 101) == INVALID_ARG
        assert sender.call("send_len", 50_000) == INVALID_ARG
    assert seance.pending("rx") == 1
    msg = seance.messages.recv("rx")
    assert msg is not None and msg.payload == bytes(range(100))
    refusals = [r for r in caplog.records
                if r.levelno >= logging.WARNING and "'tx'" in r.getMessage()
                and "max_message_size" in r.getMessage()]
    assert len(refusals) == 2


def test_oversized_broadcast_is_refused_with_invalid_arg_and_reaches_nobody(
    seance: Seance, caplog: pytest.LogCaptureFixture,
) -> None:
    sender = seance.summon("tx", SENDER, limits=Limits(max_message_size=64))
    seance.summon("rx", RECEIVER)
    with caplog.at_level(logging.WARNING, logger="vudo"):
        assert sender.call("broadcast_len", 65) == INVALID_ARG
    assert seance.pending("rx") == 0 and seance.pending("tx") == 0
    assert any("'tx'" in r.getMessage() and "max_message_size" in r.getMessage()
               for r in caplog.records)
    assert sender.call("broadcast_len", 64) == OK
    assert seance.pending("rx") == 1 and seance.pending("tx") == 1


def test_broadcast_reports_error_when_one_inbox_is_full_but_delivers_to_the_others(
    seance: Seance,
) -> None:
    sender = seance.summon("tx", SENDER)
    seance.summon("rx", RECEIVER, limits=Limits(max_inbox=1))
    seance.summon("other", RECEIVER)
    assert sender.call("broadcast_len", 4) == OK
    assert sender.call("broadcast_len", 4) == ERROR  # rx is full now
    assert seance.pending("rx") == 1
    assert seance.pending("other") == 2 and seance.pending("tx") == 2


def test_inbox_full_refusal_is_logged(seance: Seance, caplog: pytest.LogCaptureFixture) -> None:
    sender = seance.summon("tx", SENDER)
    seance.summon("rx", RECEIVER, limits=Limits(max_inbox=1))
    with caplog.at_level(logging.WARNING, logger="vudo"):
        sender.call("flood", 2)
    assert sender.memory.read_i32(1028) == ERROR
    assert any("'rx'" in r.getMessage() and "full" in r.getMessage()
               and r.name.startswith("vudo") and r.levelno >= logging.WARNING
               for r in caplog.records), [r.getMessage() for r in caplog.records]


def test_host_heap_refusal_at_the_memory_cap_is_logged(
    load_wat: Callable[..., Spirit], caplog: pytest.LogCaptureFixture,
) -> None:
    spirit = load_wat(BOMB, name="greedy", limits=Limits(max_memory=2 * PAGE_SIZE))
    with caplog.at_level(logging.DEBUG, logger="vudo"):
        assert spirit.call("alloc", 2 * PAGE_SIZE) == 0
    assert any("greedy" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------------------------
# terminate_on_limit
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("limits", "function", "error"), [
    (Limits(timeout=0.05, terminate_on_limit=True), "spin", SpiritTimeout),
    (Limits(fuel=50_000, terminate_on_limit=True), "spin", FuelExhausted),
    (Limits(max_memory=2 * PAGE_SIZE, terminate_on_limit=True), "bomb_trap",
     MemoryLimitExceeded),
], ids=["timeout", "fuel", "max_memory"])
def test_terminate_on_limit_terminates_the_spirit(
    seance: Seance, limits: Limits, function: str, error: type[LimitExceeded],
) -> None:
    wat = BOMB if function == "bomb_trap" else SPIN
    spirit = seance.summon("doomed", wat, limits=limits)
    start = time.monotonic()
    with pytest.raises(error) as info:
        spirit.call(function)
    assert time.monotonic() - start < STOP_BOUND
    assert spirit.terminated
    assert info.value.limit in (spirit.termination_cause or "")
    with pytest.raises(SpiritTerminated) as later:
        spirit.call(function)
    assert info.value.limit in later.value.cause
    # Its inbox is closed; the session carries on.
    assert seance.send("host", "doomed", b"x") == ResultCode.NOT_FOUND
    other = seance.summon("survivor", SPIN)
    assert other.call("add", 1, 1) == 2
