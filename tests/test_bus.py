"""Tests of vudo.MessageBus, the in-process MessageBroker."""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict

import pytest

import vudo
from vudo import Message, MessageBroker, MessageBus
from vudo.abi import ResultCode

OK, ERROR, NOT_FOUND = ResultCode.OK, ResultCode.ERROR, ResultCode.NOT_FOUND


@pytest.fixture
def bus() -> MessageBus:
    b = MessageBus()
    for name in ("a", "b", "c"):
        b.register(name)
    return b


def test_is_a_message_broker() -> None:
    assert isinstance(MessageBus(), MessageBroker)
    assert vudo.MessageBus is MessageBus


def test_registration(bus: MessageBus) -> None:
    assert bus.spirits() == ["a", "b", "c"]
    assert bus.is_registered("a") and not bus.is_registered("z")
    with pytest.raises(ValueError, match="'a' is already registered"):
        bus.register("a")
    bus.unregister("b")
    bus.unregister("nobody")  # unknown: no-op
    assert bus.spirits() == ["a", "c"] and not bus.is_registered("b")
    bus.register("b")  # the name is free again, at the end of the order
    assert bus.spirits() == ["a", "c", "b"]


def test_send_recv_and_message_fields(bus: MessageBus) -> None:
    before = time.time() * 1000.0
    assert bus.send("a", "b", 4, b"\x00\x01payload") is True
    after = time.time() * 1000.0
    msg = bus.recv("b")
    assert isinstance(msg, Message)
    assert (msg.from_, msg.to, msg.channel, msg.payload) == ("a", "b", 4, b"\x00\x01payload")
    assert before <= msg.timestamp <= after  # milliseconds since the epoch
    assert bus.recv("b") is None
    with pytest.raises(AttributeError):
        msg.payload = b"changed"  # type: ignore[misc]  # messages are immutable


def test_send_to_unknown_spirit(bus: MessageBus) -> None:
    assert bus.send("a", "ghost", 0, b"x") is False
    assert bus.post("a", "ghost", b"x") == NOT_FOUND
    assert bus.recv("ghost") is None and bus.peek("ghost") is None
    assert bus.pending("ghost") == 0 and bus.pending("ghost", 3) == 0


def test_payload_is_copied(bus: MessageBus) -> None:
    data = bytearray(b"original")
    assert bus.post("a", "b", data) == OK
    data[:] = b"mutated!"
    view = memoryview(bytearray(b"viewdata"))
    assert bus.post("a", "b", view) == OK  # type: ignore[arg-type]  # any buffer is copied
    view[0] = ord("X")
    first, second = bus.recv("b"), bus.recv("b")
    assert first is not None and first.payload == b"original" and type(first.payload) is bytes
    assert second is not None and second.payload == b"viewdata"


def test_per_spirit_fifo(bus: MessageBus) -> None:
    for i in range(100):
        assert bus.post("abc"[i % 3], "c" if i % 2 else "b", str(i).encode()) == OK
    got_b = [m.payload for m in iter(lambda: bus.recv("b"), None)]
    got_c = [m.payload for m in iter(lambda: bus.recv("c"), None)]
    assert got_b == [str(i).encode() for i in range(0, 100, 2)]
    assert got_c == [str(i).encode() for i in range(1, 100, 2)]


def test_channels_zero_means_any(bus: MessageBus) -> None:
    bus.post("a", "b", b"c1-first", 1)
    bus.post("a", "b", b"c2-first", 2)
    bus.post("a", "b", b"c1-second", 1)
    bus.post("a", "b", b"c0", 0)
    assert bus.pending("b") == 4
    assert (bus.pending("b", 1), bus.pending("b", 2), bus.pending("b", 3)) == (2, 1, 0)
    peeked = bus.peek("b", 2)
    assert peeked is not None and peeked.payload == b"c2-first"
    assert bus.pending("b") == 4  # peek takes nothing
    taken = bus.recv("b", 2)
    assert taken is not None and taken.payload == b"c2-first"
    assert bus.recv("b", 2) is None and bus.peek("b", 2) is None
    assert [m.payload for m in iter(lambda: bus.recv("b", 0), None)] == [
        b"c1-first", b"c1-second", b"c0"
    ]


def test_peek_is_the_oldest(bus: MessageBus) -> None:
    assert bus.peek("a") is None
    bus.post("b", "a", b"1")
    bus.post("c", "a", b"2")
    first = bus.peek("a")
    assert first is not None and (first.from_, first.payload) == ("b", b"1")
    assert bus.recv("a") == first


def test_bounded_inbox_refuses_and_keeps_what_it_has() -> None:
    bus = MessageBus(capacity=3)
    bus.register("small")
    bus.register("big", capacity=10)
    for i in range(3):
        assert bus.post("x", "small", bytes([i])) == OK
    assert bus.post("x", "small", b"overflow") == ERROR
    assert bus.send("x", "small", 0, b"overflow") is False
    assert bus.pending("small") == 3
    assert [m.payload for m in iter(lambda: bus.recv("small"), None)] == [b"\0", b"\1", b"\2"]
    for _ in range(10):
        assert bus.post("x", "big", b"m") == OK
    assert bus.post("x", "big", b"m") == ERROR
    assert bus.post("x", "small", b"room again") == OK


def test_a_full_inbox_is_logged_once_per_spell(caplog: pytest.LogCaptureFixture) -> None:
    bus = MessageBus(capacity=2)
    bus.register("rx")
    caplog.set_level(logging.DEBUG, logger="vudo.bus")
    for _ in range(2):
        assert bus.post("tx", "rx", b"fits") == OK
    for _ in range(50):  # a flooding sender
        assert bus.post("tx", "rx", b"refused") == ERROR
    warnings = [r for r in caplog.records if r.name == "vudo.bus" and r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "'rx'" in warnings[0].getMessage() and "'tx'" in warnings[0].getMessage()
    assert bus.recv("rx") is not None  # room again: the next spell is logged again
    assert bus.post("tx", "rx", b"fits") == OK
    assert bus.post("other", "rx", b"refused") == ERROR
    warnings = [r for r in caplog.records if r.name == "vudo.bus" and r.levelname == "WARNING"]
    assert len(warnings) == 2 and "'other'" in warnings[1].getMessage()
    assert not [r for r in caplog.records if r.levelname == "DEBUG"]  # debug is off


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        MessageBus(capacity=0)
    with pytest.raises(ValueError):
        MessageBus().register("x", capacity=0)


def test_broadcast_includes_the_sender(bus: MessageBus) -> None:
    assert bus.broadcast("a", b"all", 6) == 3
    for name in ("a", "b", "c"):
        msg = bus.recv(name)
        assert msg is not None and (msg.from_, msg.to, msg.channel, msg.payload) == (
            "a", name, 6, b"all"
        )
    assert bus.broadcast("outsider", b"hi") == 3


def test_broadcast_counts_only_deliveries() -> None:
    bus = MessageBus(capacity=1)
    for name in ("a", "b", "c"):
        bus.register(name)
    bus.post("x", "b", b"fills b")
    assert bus.broadcast("a", b"all") == 2
    assert bus.pending("b") == 1 and bus.recv("b") is not None
    assert bus.recv("b") is None


def test_unregister_drops_the_queue(bus: MessageBus) -> None:
    bus.post("a", "b", b"1")
    bus.unregister("b")
    assert bus.post("a", "b", b"2") == NOT_FOUND
    bus.register("b")
    assert bus.pending("b") == 0


def test_clear_and_close(bus: MessageBus) -> None:
    bus.broadcast("a", b"x")
    bus.clear()
    assert [bus.pending(n) for n in ("a", "b", "c")] == [0, 0, 0]
    assert bus.spirits() == ["a", "b", "c"]  # still registered
    assert bus.post("a", "b", b"y") == OK
    bus.close()
    assert bus.spirits() == [] and bus.post("a", "b", b"z") == NOT_FOUND


def test_on_message_hooks(bus: MessageBus) -> None:
    seen: list[Message] = []
    stop = bus.on_message("b", seen.append)
    bus.post("a", "b", b"1", 2)
    bus.post("a", "c", b"not for b")
    assert len(seen) == 1 and (seen[0].from_, seen[0].payload, seen[0].channel) == ("a", b"1", 2)
    assert bus.pending("b") == 1  # the hook sees the message; it stays queued
    stop()
    stop()  # idempotent
    bus.post("a", "b", b"2")
    assert len(seen) == 1
    with pytest.raises(KeyError):
        bus.on_message("ghost", seen.append)


def test_a_failing_hook_does_not_fail_the_send(
    bus: MessageBus, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[bytes] = []

    def broken(_msg: Message) -> None:
        raise RuntimeError("hook bug")

    bus.on_message("b", broken)
    bus.on_message("b", lambda m: seen.append(m.payload))
    with caplog.at_level(logging.ERROR, logger="vudo.bus"):
        assert bus.post("a", "b", b"still delivered") == OK
    assert seen == [b"still delivered"]  # later hooks still run
    assert bus.pending("b") == 1
    assert any("hook bug" in (r.exc_text or "") or r.exc_info for r in caplog.records)


def test_a_hook_may_use_the_bus(bus: MessageBus) -> None:
    """Hooks run outside the bus lock: forwarding from a hook must not deadlock."""
    bus.on_message("b", lambda m: bus.post("b", "c", m.payload + b" (fwd)") and None)
    assert bus.post("a", "b", b"msg") == OK
    fwd = bus.recv("c")
    assert fwd is not None and (fwd.from_, fwd.payload) == ("b", b"msg (fwd)")


def test_debug_logs_on_vudo_bus(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="vudo.bus")
    bus = MessageBus(capacity=1, debug=True)
    bus.register("a")
    bus.post("x", "a", b"123")
    bus.post("x", "a", b"456")
    text = "\n".join(r.getMessage() for r in caplog.records if r.name == "vudo.bus")
    assert "'x' -> 'a'" in text and "3 bytes" in text
    assert "full" in text


def test_thread_safe_many_producers_and_consumers() -> None:
    """8 producers and 4 consumers at once: every message delivered exactly once, and each
    producer's messages come out in the order it sent them."""
    bus = MessageBus(capacity=1_000_000)
    bus.register("sink")
    producers, per_producer, consumers = 8, 2_000, 4
    total = producers * per_producer
    start = threading.Barrier(producers + consumers, timeout=10)
    received: list[list[Message]] = [[] for _ in range(consumers)]
    taken = [0]
    taken_lock = threading.Lock()
    done = threading.Event()

    def produce(p: int) -> None:
        start.wait()
        for i in range(per_producer):
            assert bus.post(f"p{p}", "sink", i.to_bytes(4, "little")) == OK

    def consume(c: int) -> None:
        start.wait()
        while not done.is_set():
            msg = bus.recv("sink")
            if msg is None:
                continue
            received[c].append(msg)
            with taken_lock:
                taken[0] += 1
                if taken[0] == total:
                    done.set()

    threads = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
    threads += [threading.Thread(target=consume, args=(c,)) for c in range(consumers)]
    for t in threads:
        t.start()
    assert done.wait(20), f"only {taken[0]} of {total} messages were received"
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    everything = [m for per_consumer in received for m in per_consumer]
    assert len(everything) == total and bus.pending("sink") == 0
    by_sender: dict[str, list[int]] = defaultdict(list)
    for per_consumer in received:  # each consumer sees a sender's messages in order
        seen: dict[str, int] = {}
        for m in per_consumer:
            n = int.from_bytes(m.payload, "little")
            assert n > seen.get(m.from_, -1)
            seen[m.from_] = n
            by_sender[m.from_].append(n)
    assert {s: sorted(v) for s, v in by_sender.items()} == {
        f"p{p}": list(range(per_producer)) for p in range(producers)
    }


def test_thread_safe_capacity_is_never_exceeded() -> None:
    bus = MessageBus(capacity=500)
    bus.register("sink")
    start = threading.Barrier(8, timeout=10)
    results: list[list[ResultCode]] = [[] for _ in range(8)]

    def produce(p: int) -> None:
        start.wait()
        results[p] = [bus.post(f"p{p}", "sink", b"x") for _ in range(200)]

    threads = [threading.Thread(target=produce, args=(p,)) for p in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    codes = [c for r in results for c in r]
    assert codes.count(OK) == 500 and codes.count(ERROR) == 1_100
    assert bus.pending("sink") == 500


def test_a_forwarding_broker_passes_every_protocol_method_through() -> None:
    from vudo._host import ForwardingBroker, MessageBroker

    inner = MessageBus()
    b = ForwardingBroker(inner)
    assert isinstance(b, MessageBroker)
    protocol = {n for n in vars(MessageBroker) if not n.startswith("_")}
    assert protocol <= set(vars(ForwardingBroker))  # none left to __getattr__ by accident
    b.register("a")
    b.register("b")
    assert b.post("a", "b", b"1") == ResultCode.OK and b.post("a", "b", b"2") == ResultCode.OK
    assert b.pending("b") == 2 and inner.pending("b") == 2
    m = b.recv("b")
    assert m is not None and m.payload == b"1"
    if b.supports_requeue:
        b.requeue(m)
        assert inner.pending("b") == 2
    b.clear("b")
    assert inner.pending("b") == 0 and b.spirits() == inner.spirits() == ["a", "b"]
    b.unregister("a")
    assert not inner.is_registered("a")
