"""The messaging and host-heap host functions served in C (``_native/bushost.c`` over
``vudo._nbus``) give exactly the results of the Python Loa.

Every edge case runs on three Spirits of one kind of session: ``native`` (C bus, C heap, the
host functions in C), ``python-host`` (the same C bus and heap, the Python host functions: the
Spirit is loaded under ``cnative.fallback()``) and ``python-bus`` (the pure-Python
``MessageBus``). Without the native core only the Python variants run.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from storm_helpers import sigint_storm

import vudo
from vudo import Limits
from vudo._host.loas import messaging
from vudo._providers import PyMessageBus
from vudo._runtime import cnative
from vudo.abi import ResultCode
from vudo.errors import MemoryAccessError, VudoError

NATIVE = cnative.native_bus_available()
BUS_FUNCTIONS = {"vudo_send", "vudo_recv", "vudo_pending", "vudo_broadcast",
                 "vudo_free_message", "vudo_alloc", "vudo_free", "vudo_realloc"}
PAGE = 65536

WAT = """
(module
  (import "vudo" "vudo_send" (func $send (param i32 i32 i32 i32) (result i32)))
  (import "vudo" "vudo_recv" (func $recv (result i32)))
  (import "vudo" "vudo_pending" (func $pending (result i32)))
  (import "vudo" "vudo_broadcast" (func $broadcast (param i32 i32) (result i32)))
  (import "vudo" "vudo_free_message" (func $free_message (param i32)))
  (import "vudo" "vudo_alloc" (func $alloc (param i32) (result i32)))
  (import "vudo" "vudo_free" (func $free (param i32 i32)))
  (import "vudo" "vudo_realloc" (func $realloc (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "send") (param i32 i32 i32 i32) (result i32)
    (call $send (local.get 0) (local.get 1) (local.get 2) (local.get 3)))
  (func (export "recv") (result i32) (call $recv))
  (func (export "pending") (result i32) (call $pending))
  (func (export "broadcast") (param i32 i32) (result i32)
    (call $broadcast (local.get 0) (local.get 1)))
  (func (export "free_message") (param i32) (call $free_message (local.get 0)))
  (func (export "alloc") (param i32) (result i32) (call $alloc (local.get 0)))
  (func (export "free") (param i32 i32) (call $free (local.get 0) (local.get 1)))
  (func (export "realloc") (param i32 i32 i32) (result i32)
    (call $realloc (local.get 0) (local.get 1) (local.get 2)))
)
"""

VARIANTS = (["native"] if NATIVE else []) + ["python-host", "python-bus"]


class Session:
    """Spirits ``a`` and ``b`` (and more on demand) of one Séance, loaded as ``variant``."""

    def __init__(self, variant: str, **options: Any) -> None:
        self.variant = variant
        broker = PyMessageBus(capacity=options.pop("capacity", 4)) if variant == "python-bus" \
            else vudo.MessageBus(capacity=options.pop("capacity", 4))
        self.seance = vudo.Seance(broker=broker, **options)
        self.broker = broker

    def summon(self, name: str, **options: Any) -> vudo.Spirit:
        if self.variant == "native":
            spirit = self.seance.summon(name, WAT, **options)
            assert cnative.native_host_functions(spirit._keepalive) >= BUS_FUNCTIONS
            return spirit
        with cnative.fallback():
            spirit = self.seance.summon(name, WAT, **options)
        assert not cnative.native_host_functions(spirit._keepalive) & BUS_FUNCTIONS
        return spirit

    def close(self) -> None:
        self.seance.dismiss()
        self.broker.close()


@pytest.fixture(params=VARIANTS)
def session(request: pytest.FixtureRequest) -> Iterator[Session]:
    s = Session(request.param)
    yield s
    s.close()


def put(spirit: vudo.Spirit, ptr: int, data: bytes) -> tuple[int, int]:
    spirit.memory.write_bytes(ptr, data)
    return ptr, len(data)


def block(spirit: vudo.Spirit, ptr: int) -> tuple[str, bytes]:
    mem = spirit.memory
    n = mem.read_u32(ptr)
    m = mem.read_u32(ptr + 4 + n)
    return mem.read_bytes(ptr + 4, n).decode(), mem.read_bytes(ptr + 8 + n, m)


def outcome(fn: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "ok", fn()
    except MemoryAccessError as exc:
        return "MemoryAccessError", (exc.spirit, exc.function, exc.ptr, exc.length)
    except VudoError as exc:
        return type(exc).__name__, str(exc)


# ------------------------------------------------------------------------------ serving
@pytest.mark.skipif(not NATIVE, reason="native core or vudo._nbus inactive")
def test_only_the_c_bus_and_heap_get_the_c_host_functions() -> None:
    spirit = vudo.load_spirit(WAT, name="alone")  # its own C MessageBus
    assert cnative.native_host_functions(spirit._keepalive) >= BUS_FUNCTIONS

    class Sub(vudo.MessageBus):  # type: ignore[misc, valid-type]
        """A subclass may override anything: the Python host functions call it."""

    for broker in (PyMessageBus(), Sub()):
        s = vudo.load_spirit(WAT, name="other", broker=broker)
        assert not cnative.native_host_functions(s._keepalive) & BUS_FUNCTIONS
    traced = vudo.load_spirit(WAT, name="traced", trace=True)
    assert not cnative.native_host_functions(traced._keepalive) & BUS_FUNCTIONS
    bump = vudo.load_spirit(WAT, name="bump", allocator="bump")
    assert not cnative.native_host_functions(bump._keepalive) & BUS_FUNCTIONS


@pytest.mark.skipif(not NATIVE, reason="native core or vudo._nbus inactive")
def test_an_override_of_one_messaging_function_keeps_all_five_in_python() -> None:
    calls: list[int] = []
    spirit = vudo.load_spirit(WAT, name="o", imports={"vudo_free_message": calls.append})
    served = cnative.native_host_functions(spirit._keepalive)
    assert not served & {"vudo_send", "vudo_recv", "vudo_pending", "vudo_broadcast"}
    spirit.call("free_message", 8)
    assert calls == [8]


@pytest.mark.skipif(not NATIVE, reason="native core or vudo._nbus inactive")
def test_a_traced_seance_uses_the_python_path_and_records_messages(tmp_path: Any) -> None:
    with vudo.Seance(trace=tmp_path / "t.json") as seance:
        a, b = seance.summon("a", WAT), seance.summon("b", WAT)
        assert not cnative.native_host_functions(a._keepalive) & BUS_FUNCTIONS
        assert a.call("send", *put(a, 100, b"b"), *put(a, 200, b"hi")) == 0
        assert block(b, b.call("recv")) == ("a", b"hi")
        names = [e.get("name") for e in seance.tracer._events]  # type: ignore[union-attr]
    assert {"send -> b", "recv <- a", "vudo_send", "vudo_recv"} <= set(names)


# ------------------------------------------------------------------------------ parity
def test_send_recv_pending_and_result_codes(session: Session) -> None:
    a, b = session.summon("a"), session.summon("b")
    to, payload = put(a, 100, b"b"), put(a, 200, bytes(range(64)))
    assert a.call("send", *put(a, 300, b"ghost"), *payload) == int(ResultCode.NOT_FOUND)
    for _ in range(4):
        assert a.call("send", *to, *payload) == 0
    assert a.call("send", *to, *payload) == int(ResultCode.ERROR)  # full (capacity 4)
    assert b.call("pending") == 4
    ptrs = [b.call("recv") for _ in range(4)]
    assert all(p >= PAGE and p % 8 == 0 for p in ptrs)
    assert {block(b, p) for p in ptrs} == {("a", bytes(range(64)))}
    assert b.call("recv") == 0 and b.call("pending") == 0
    for p in ptrs:
        b.call("free_message", p)
    assert b.memory.allocator.in_use == 0


def test_broadcast_reaches_everyone_and_reports_a_refusal(session: Session) -> None:
    a, b = session.summon("a"), session.summon("b")
    msg = put(a, 200, b"all")
    assert a.call("broadcast", *msg) == 0
    assert (a.call("pending"), b.call("pending")) == (1, 1)
    for _ in range(3):
        a.call("send", *put(a, 100, b"b"), *msg)
    assert a.call("broadcast", *msg) == int(ResultCode.ERROR)  # b's inbox is full
    assert (a.call("pending"), b.call("pending")) == (2, 4)


def test_oversized_payloads_are_refused_and_logged_naming_the_spirit(
    session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    a = session.summon("a", limits=Limits(max_message_size=16))
    session.summon("b")
    caplog.set_level(logging.WARNING, logger="vudo.messaging")
    to = put(a, 100, b"b")
    assert a.call("send", *to, *put(a, 200, b"y" * 17)) == int(ResultCode.INVALID_ARG)
    assert a.call("broadcast", 200, 17) == int(ResultCode.INVALID_ARG)
    assert [r.getMessage() for r in caplog.records] == [
        "vudo_send: Spirit 'a' sent 17 bytes, over its max_message_size 16",
        "vudo_broadcast: Spirit 'a' sent 17 bytes, over its max_message_size 16",
    ]
    # Over the cap *and* out of bounds: still a fault.
    got = outcome(lambda: a.call("send", *to, PAGE - 4, 17))
    assert got == ("MemoryAccessError", ("a", "vudo_send", PAGE - 4, 17))
    assert a.call("send", *to, *put(a, 200, b"y" * 16)) == 0


@pytest.mark.parametrize(("fn", "args", "expected"), [
    ("send", (PAGE - 1, 2, 0, 1), (PAGE - 1, 2)),
    ("send", (100, 1, 0xFFFF_FFF0, 32), (0xFFFF_FFF0, 32)),
    ("broadcast", (PAGE - 8, 9), (PAGE - 8, 9)),
])
def test_out_of_bounds_pointers_raise_the_same_memory_access_error(
    session: Session, fn: str, args: tuple[int, ...], expected: tuple[int, int]
) -> None:
    a = session.summon("a")
    put(a, 100, b"a")
    got = outcome(lambda: a.call(fn, *[x - 2**32 if x >= 2**31 else x for x in args]))
    assert got == ("MemoryAccessError", ("a", f"vudo_{fn}", *expected))
    assert a.call("pending") == 0  # nothing was queued, and the Spirit is still usable


def test_alloc_edge_cases_and_zeroed_blocks(
    session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    a = session.summon("a", limits=Limits(max_alloc=1000))
    caplog.set_level(logging.WARNING, logger="vudo.memory")
    assert [a.call("alloc", n) for n in (0, -1, -(2**31), 1001)] == [0, 0, 0, 0]
    assert [r.getMessage() for r in caplog.records] == [
        "vudo_alloc: Spirit 'a' asked for 1001 bytes, over its max_alloc 1000; refused"]
    p = a.call("alloc", 1000)
    assert p >= PAGE and a.memory.read_bytes(p, 1000) == bytes(1000)
    a.memory.write_bytes(p, b"x" * 1000)
    a.call("free", p, 1000)
    q = a.call("alloc", 1000)
    assert a.memory.read_bytes(q, 1000) == bytes(1000)  # reused and zeroed again
    assert a.call("realloc", q, -1, 10) == 0  # a negative old size
    assert a.call("realloc", q, 10, -1) == 0
    assert a.call("realloc", q, 1000, 1001) == 0
    a.call("free", 12345, 0)  # unknown: ignored
    assert a.memory.allocator.in_use == 1000


def test_realloc_keeps_the_contents_and_memory_growth_is_seen(session: Session) -> None:
    a = session.summon("a")
    p = a.call("alloc", 16)
    a.memory.write_bytes(p, b"0123456789abcdef")
    big = a.call("realloc", p, 16, 3 * PAGE)  # the memory grows under the host function
    assert big and a.memory.read_bytes(big, 16) == b"0123456789abcdef"
    assert a.memory.size >= 4 * PAGE
    assert a.memory.read_bytes(big + 16, 3 * PAGE - 16) == bytes(3 * PAGE - 16)


def test_exhaustion_is_logged_once_per_spell(
    session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    a = session.summon("a", limits=Limits(max_memory=3 * PAGE))
    caplog.set_level(logging.WARNING, logger="vudo.memory")
    first = a.call("alloc", PAGE)
    assert first
    assert [a.call("alloc", 2 * PAGE) for _ in range(3)] == [0, 0, 0]
    a.call("free", first, 0)
    assert a.call("alloc", 8)  # the spell ends
    assert a.call("alloc", 2 * PAGE) == 0
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 2 and all(m.startswith("vudo_alloc: host heap of Spirit 'a' "
                                                 "exhausted") for m in logged)


def test_a_full_heap_keeps_the_message_and_a_hopeless_one_is_dead_lettered(
    session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    a = session.summon("a", limits=Limits(max_memory=2 * PAGE))
    b = session.summon("b", limits=Limits(max_memory=3 * PAGE))
    hog = b.call("alloc", PAGE)
    hog2 = b.call("alloc", PAGE - 64)
    assert hog and hog2
    a.call("send", *put(a, 100, b"b"), *put(a, 200, b"m" * 1000))
    assert b.call("recv") == 0 and b.call("pending") == 1  # no room: kept queued
    b.call("free", hog, 0)
    ptr = b.call("recv")
    assert block(b, ptr) == ("a", b"m" * 1000)
    b.call("free_message", ptr)
    # Bigger than b's whole memory can ever hold: replaced by the dead-letter notice.
    session.broker.post("a", "b", b"z" * (3 * PAGE))
    caplog.set_level(logging.WARNING, logger="vudo.messaging")
    ptr = b.call("recv")
    sender, payload = block(b, ptr)
    assert sender == messaging.DEAD_LETTER
    assert payload == (3 * PAGE + 9).to_bytes(4, "little") + b"a"
    assert "can never allocate" in caplog.records[0].getMessage()
    assert b.call("pending") == 0


def test_free_message_frees_only_message_blocks(session: Session) -> None:
    a, b = session.summon("a"), session.summon("b")
    own = b.call("alloc", 40)
    b.call("free_message", own)  # not a message block: left alone
    assert b.memory.allocator.size_of(own) == 40
    a.call("send", *put(a, 100, b"b"), *put(a, 200, b"x"))
    ptr = b.call("recv")
    if hasattr(b.memory.allocator, "is_message"):  # the C heap tags message blocks
        b.call("free", ptr, 0)  # freed as a plain block...
        again = b.call("alloc", 10)
        assert again == ptr
        b.call("free_message", again)  # ...so the reused block is not a message any more
        assert b.memory.allocator.size_of(again) is not None
    else:
        b.call("free_message", ptr)
        assert b.memory.allocator.size_of(ptr) is None
    b.call("free_message", 0)
    b.call("free_message", -1)


@pytest.mark.skipif(not NATIVE, reason="native core or vudo._nbus inactive")
def test_blocks_from_either_path_are_freed_by_the_other() -> None:
    s = Session("native")
    try:
        a, b = s.summon("a"), s.summon("b")
        to, msg = put(a, 100, b"b"), put(a, 200, b"x" * 20)
        a.call("send", *to, *msg)
        c_block = b.call("recv")  # received in C
        messaging.vudo_free_message(b.context)(c_block)  # freed by the Python Loa
        assert b.memory.allocator.size_of(c_block) is None
        a.call("send", *to, *msg)
        py_block = messaging.vudo_recv(b.context)()  # received by the Python Loa
        assert block(b, py_block) == ("a", b"x" * 20)
        b.call("free_message", py_block)  # freed in C
        assert b.memory.allocator.size_of(py_block) is None
        assert b.memory.allocator.in_use == 0
    finally:
        s.close()


def test_a_raising_on_message_hook_is_logged_and_the_send_succeeds(
    session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = session.summon("a"), session.summon("b")

    def hook(message: Any) -> None:
        raise ValueError("hook says no")

    session.broker.on_message("b", hook)
    caplog.set_level(logging.ERROR, logger="vudo.bus")
    assert a.call("send", *put(a, 100, b"b"), *put(a, 200, b"x")) == 0
    assert a.call("broadcast", 200, 1) == 0
    assert b.call("pending") == 2
    assert [r.getMessage().endswith("for 'b' raised") for r in caplog.records] == [True] * 2


def test_ctrl_c_in_a_hook_during_a_send_reaches_the_caller(session: Session) -> None:
    a, b = session.summon("a"), session.summon("b")
    session.broker.on_message("b", lambda m: os.kill(os.getpid(), signal.SIGINT))
    with pytest.raises(KeyboardInterrupt):
        a.call("send", *put(a, 100, b"b"), *put(a, 200, b"x"))
    assert a.call("pending") == 0 and b.call("pending") == 1  # both still usable
    assert block(b, b.call("recv")) == ("a", b"x")


@pytest.mark.skipif(not NATIVE, reason="native core or vudo._nbus inactive")
def test_a_sigint_storm_during_c_host_functions_never_crashes(tmp_path: Any) -> None:
    sigint_storm(Path(__file__).with_name("_native_msg_storm.py"), tmp_path / "stop",
                 seconds=1.5, gap=0.0003)


@pytest.mark.skipif(not NATIVE, reason="native core or vudo._nbus inactive")
def test_a_dropped_spirit_with_c_messaging_functions_is_collected() -> None:
    import gc
    import weakref

    bus = vudo.MessageBus()
    spirit = vudo.load_spirit(WAT, name="gone", broker=bus)
    bus.register("x")
    assert spirit.call("send", *put(spirit, 100, b"x"), *put(spirit, 200, b"hi")) == 0
    assert spirit.call("alloc", 100)
    ref = weakref.ref(spirit)
    del spirit
    gc.collect()
    assert ref() is None
    assert bus.recv("x") is not None  # the bus outlives its Spirits


@pytest.mark.parametrize("variant", VARIANTS)
def test_spirits_on_two_threads_exchange_every_message_in_order(variant: str) -> None:
    import threading

    s = Session(variant, capacity=64)
    try:
        a, b = s.summon("a"), s.summon("b")
        total = 5000
        to = put(a, 100, b"b")
        got: list[int] = []
        start = threading.Barrier(2)

        def produce() -> None:
            start.wait()
            for i in range(total):
                a.memory.write_u32(200, i)  # only this thread touches a
                while a.call("send", *to, 200, 4) != 0:  # full: wait for the consumer
                    pass

        def consume() -> None:
            start.wait()
            while len(got) < total:
                ptr = b.call("recv")
                if ptr:
                    got.append(int.from_bytes(block(b, ptr)[1], "little"))
                    b.call("free_message", ptr)

        threads = [threading.Thread(target=produce), threading.Thread(target=consume)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads)
        assert got == list(range(total))
        assert b.memory.allocator.in_use == 0 and b.call("pending") == 0
    finally:
        s.close()
