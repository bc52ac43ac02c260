"""The C message bus and host heap (vudo._nbus) against the Python ones' own tests.

Every test of tests/test_bus.py and tests/test_allocator.py runs again here with the C class
swapped in for the Python one (the Python runs stay in their own files), plus what is specific
to the C module: clear(name), the selector, and the C API capsule.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import test_allocator
import test_bus
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vudo
from vudo._runtime import native as _nbus_select

nbus = _nbus_select.native_module()
if nbus is None:
    pytest.skip("vudo._nbus is not built (or VUDO_NATIVE=0)", allow_module_level=True)
CBus = nbus.MessageBus
CFreeList = nbus.FreeListAllocator


@pytest.fixture(autouse=True)
def _c_implementations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(test_bus, "MessageBus", CBus)
    monkeypatch.setattr(vudo, "MessageBus", CBus)
    monkeypatch.setattr(test_allocator, "FreeListAllocator", CFreeList)


# The Python tests, collected again in this module (with the fixture above active).
globals().update(
    {name: obj for name, obj in vars(test_bus).items() if name.startswith("test_")}
)
globals().update(
    {
        name: obj
        for name, obj in vars(test_allocator).items()
        if name.startswith("test_") and "bump" not in name
    }
)
bus = test_bus.bus


class CAllocatorMachine(test_allocator.AllocatorMachine):
    """The allocator state machine over the C heap."""

    make = staticmethod(lambda mem: CFreeList(mem.grow, mem.zero, mem.move))


TestCFreeListProperties = CAllocatorMachine.TestCase
TestCFreeListProperties.settings = test_allocator._settings


# --------------------------------------------------------------------------------------------
# What only the C module has
# --------------------------------------------------------------------------------------------
def test_implementations_are_swapped_in() -> None:
    """Guards the reuse above: the borrowed tests really build the C classes."""
    assert test_bus.MessageBus is CBus
    assert type(test_allocator.freelist(test_allocator.FakeMemory())) is CFreeList


def test_clear_one_inbox(bus: CBus) -> None:
    bus.broadcast("a", b"x")
    bus.clear("b")
    assert [bus.pending(n) for n in ("a", "b", "c")] == [1, 0, 1]
    bus.clear("nobody")  # unknown: no-op
    assert bus.post("a", "b", b"y") == test_bus.OK and bus.pending("b") == 1


def test_messages_are_broker_messages(bus: CBus) -> None:
    bus.post("a", "b", b"p", 7)
    msg = bus.recv("b")
    assert type(msg) is vudo.Message and msg == ("a", "b", 7, b"p", msg.timestamp)


def test_requeue_puts_the_message_first(bus: CBus) -> None:
    bus.post("a", "b", b"1")
    bus.post("a", "b", b"2")
    first = bus.recv("b")
    assert first is not None
    bus.requeue(first)
    again = bus.recv("b")
    assert again == first
    bus.requeue(vudo.Message("a", "ghost", 0, b"x", 1.0))  # no such inbox: dropped
    assert bus.pending("ghost") == 0


def test_bad_arguments_raise_type_errors(bus: CBus) -> None:
    with pytest.raises(TypeError):
        bus.post("a", 3, b"x")
    with pytest.raises(TypeError):
        bus.recv("b", "one")
    with pytest.raises(OverflowError):
        bus.post("a", "b", b"x", 2**70)
    assert bus.pending("b") == 0


def test_c_threads_post_without_the_gil_while_python_receives() -> None:
    bus = CBus(capacity=1_000_000)
    bus.register("sink")
    got: list[vudo.Message] = []
    done = [False]

    def consume() -> None:
        while not done[0] or bus.pending("sink"):
            msg = bus.recv("sink")
            if msg is not None:
                got.append(msg)

    import threading

    consumer = threading.Thread(target=consume)
    consumer.start()
    try:
        assert nbus._post_from_threads(bus, "sink", 4, 5_000) == 20_000
    finally:
        done[0] = True
        consumer.join(20)
    assert not consumer.is_alive() and len(got) == 20_000
    for sender in ("t0", "t1", "t2", "t3"):  # each C thread's messages in its order
        seq = [int.from_bytes(m.payload, "little") for m in got if m.from_ == sender]
        assert seq == list(range(5_000))


def test_c_posts_run_python_hooks_and_log_refusals(caplog: pytest.LogCaptureFixture) -> None:
    bus = CBus(capacity=10)
    bus.register("sink")
    seen: list[bytes] = []
    bus.on_message("sink", lambda m: seen.append(m.payload))
    with caplog.at_level("WARNING", logger="vudo.bus"):
        assert nbus._post_from_threads(bus, "sink", 2, 20) == 10
    assert len(seen) == 10
    warnings = [r for r in caplog.records if r.name == "vudo.bus" and r.levelname == "WARNING"]
    assert len(warnings) == 1 and "'sink'" in warnings[0].getMessage()


def test_capsule_exports_the_c_api() -> None:
    assert nbus._capsule_ok() is True
    assert nbus.ABI_VERSION == 1


def _run(code: str, **env: str) -> str:
    full = {**os.environ, **env}
    out = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True,
                         text=True, timeout=60, check=True)
    return out.stdout.strip()


def test_selector_prefers_c_and_vudo_native_0_forces_python() -> None:
    code = ("import vudo; from vudo._runtime import native as s; from vudo._memory import memory;"
            " print(s.available(), vudo.MessageBus.__module__, memory._FREELIST.__module__)")
    assert _run(code, VUDO_NATIVE="1") == "True vudo._nbus vudo._nbus"
    assert _run(code, VUDO_NATIVE="0") == "False vudo._providers.bus vudo._memory.allocator"
    assert _nbus_select.available() is (os.environ.get("VUDO_NATIVE") != "0")


def test_c_posts_race_registration_and_clear_safely() -> None:
    """C threads post while Python unregisters, re-registers and clears the target: every
    post is OK or NOT_FOUND, nothing crashes, and the inbox never exceeds its capacity."""
    import threading

    bus = CBus(capacity=50)
    bus.register("sink")
    accepted: list[int] = []
    poster = threading.Thread(
        target=lambda: accepted.append(nbus._post_from_threads(bus, "sink", 4, 20_000))
    )
    poster.start()
    rounds = 0
    while poster.is_alive() or rounds < 100:
        bus.unregister("sink")
        bus.register("sink", capacity=50)
        bus.on_message("sink", lambda _m: None)
        assert bus.pending("sink") <= 50
        bus.clear("sink")
        bus.recv("sink")
        rounds += 1
    poster.join(20)
    assert not poster.is_alive() and 0 <= accepted[0] <= 80_000
    assert bus.spirits() == ["sink"] and bus.pending("sink") <= 50


@pytest.mark.parametrize("cls", [vudo._providers.PyMessageBus, CBus], ids=["python", "c"])
def test_every_argument_can_be_given_by_keyword(cls: type) -> None:
    b = cls(capacity=3, debug=False)
    b.register(name="a", capacity=2)
    assert b.post(from_="x", to="a", payload=b"1", channel=2) == test_bus.OK
    assert b.send(from_="x", to="a", channel=0, payload=b"2") is True
    assert b.is_registered(name="a") and b.pending(name="a", channel=2) == 1
    peeked = b.peek(name="a", channel=2)
    msg = b.recv(name="a", channel=2)
    assert msg == peeked and msg is not None
    b.requeue(message=msg)
    stop = b.on_message(name="a", callback=lambda _m: None)
    stop()
    assert b.broadcast(from_="x", payload=b"3", channel=0) == 0  # a is full
    b.unregister(name="a")
    assert b.spirits() == []


_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("alloc"), st.integers(-1, 5000), st.sampled_from([1, 8, 16, 64, 4096])),
        st.tuples(st.just("free"), st.integers(0, 40), st.just(0)),
        st.tuples(st.just("realloc"), st.integers(0, 40), st.integers(-1, 6000)),
        st.tuples(st.just("reset"), st.just(0), st.just(0)),
        st.tuples(st.just("spirit_grow"), st.just(0), st.just(0)),
    ),
    max_size=80,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_OPS)
def test_c_heap_hands_out_the_same_addresses_as_the_python_one(ops) -> None:
    """The same operations on both heaps give the same results, byte for byte in memory."""
    mems = [test_allocator.FakeMemory(max_bytes=test_allocator.FLOOR + 64 * 1024)
            for _ in range(2)]
    heaps = [vudo._memory.FreeListAllocator(mems[0].grow, mems[0].zero, mems[0].move),
             CFreeList(mems[1].grow, mems[1].zero, mems[1].move)]
    live: list[tuple[int, int]] = []  # (ptr, size) the same for both
    for op, x, y in ops:
        if op == "alloc":
            got = [h.alloc(x, y) for h in heaps]
            if got[0]:
                live.append((got[0], x))
        elif op == "free" and live:
            ptr, _ = live.pop(x % len(live))
            got = [h.free(ptr) for h in heaps]
        elif op == "realloc" and live:
            ptr, old = live.pop(x % len(live))
            got = [h.realloc(ptr, old, y) for h in heaps]
            live.append((got[0], y) if got[0] else (ptr, old))
        elif op == "reset":
            got = [h.reset() for h in heaps]
            live.clear()
        else:
            got = [m.spirit_grow() for m in mems]
        assert got[0] == got[1], (op, x, y)
        assert heaps[0].in_use == heaps[1].in_use and heaps[0].heap_bytes == heaps[1].heap_bytes
        assert [heaps[0].size_of(p) for p, _ in live] == [heaps[1].size_of(p) for p, _ in live]
    assert mems[0].data == mems[1].data and mems[0].grow_calls == mems[1].grow_calls


_NAMES = st.sampled_from(["a", "b", "c", "é"])
_BUS_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("register"), _NAMES, st.integers(1, 4)),
        st.tuples(st.just("unregister"), _NAMES, st.just(0)),
        st.tuples(st.just("post"), st.tuples(_NAMES, _NAMES), st.integers(0, 3)),
        st.tuples(st.just("broadcast"), _NAMES, st.integers(0, 3)),
        st.tuples(st.just("recv"), _NAMES, st.integers(0, 3)),
        st.tuples(st.just("peek"), _NAMES, st.integers(0, 3)),
        st.tuples(st.just("pending"), _NAMES, st.integers(0, 3)),
        st.tuples(st.just("requeue"), _NAMES, st.just(0)),
        st.tuples(st.just("clear"), st.just(None), st.just(0)),
    ),
    max_size=60,
)


def _comparable(result: object) -> object:
    if isinstance(result, vudo.Message):
        return result._replace(timestamp=0.0)
    return result


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_BUS_OPS)
def test_c_bus_gives_the_python_bus_results(ops) -> None:
    """The same operations on both buses give the same results (timestamps aside)."""
    buses = [vudo._providers.PyMessageBus(capacity=3), CBus(capacity=3)]
    taken: list[list[vudo.Message]] = [[], []]
    for n, (op, x, y) in enumerate(ops):
        got = []
        for i, bus in enumerate(buses):
            if op == "register":
                try:
                    got.append(bus.register(x, capacity=y))
                except ValueError as exc:
                    got.append(str(exc))
            elif op == "unregister":
                got.append(bus.unregister(x))
            elif op == "post":
                got.append(bus.post(x[0], x[1], str(n).encode(), y))
            elif op == "broadcast":
                got.append(bus.broadcast(x, str(n).encode(), y))
            elif op == "recv":
                msg = bus.recv(x, y)
                if msg is not None:
                    taken[i].append(msg)
                got.append(msg)
            elif op == "requeue":
                got.append(bus.requeue(taken[i].pop()) if taken[i] else None)
            elif op == "clear":
                got.append(bus.clear())
            else:
                got.append(getattr(bus, op)(x, y))
        assert _comparable(got[0]) == _comparable(got[1]), (op, x, y)
        assert buses[0].spirits() == buses[1].spirits()


def test_the_c_api_table_works_as_a_native_caller_uses_it() -> None:
    bus = CBus()
    bus.register("rx")
    bus.register("other")
    got = nbus._capsule_selftest(bus, "rx")
    assert got["post1"] == got["post2"] == 0
    assert (got["pending"], got["pending_2"], got["left"], got["count"]) == (2, 1, 0, 2)
    assert got["peek_ok"] and got["requeue_ok"]
    # The first region of an empty memory skips the null pointer (8 bytes).
    assert (got["alloc"], got["size_of"], got["huge"], got["freed"]) == (8, 16, 0, -1)
    assert got["realloc"] == 8  # grown in place into the free rest of the region
    with pytest.raises(TypeError, match=r"vudo\._nbus\.MessageBus"):
        nbus._capsule_selftest(object(), "rx")
    assert nbus._capsule_selftest(CBus(), "nobody")["pending"] == 0  # NOT_FOUND, no crash
