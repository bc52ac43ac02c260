"""Tests of vudo.Seance and vudo.AsyncSeance with WAT Spirits talking through the host ABI."""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
import threading
from collections.abc import Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # seance_helpers, whatever the rootdir

from seance_helpers import (
    MESSENGER,
    NAME_AT,
    PAYLOAD_AT,
    SLOW_START,
    emit,
    put,
    read_message,
    spawn_payload,
    wasm_send,
    wasm_take,
)

import vudo
from vudo import Permissions
from vudo.abi import EffectId, ResultCode
from vudo.testing import MockTimeProvider

OK = ResultCode.OK
WAIT = 10.0  # seconds any Event/Barrier/join may wait before the test fails
SPAWN_OK = Permissions.allow(effects=[EffectId.SPAWN])


@pytest.fixture
def seance() -> Iterator[vudo.Seance]:
    with vudo.Seance() as s:
        yield s


# ------------------------------------------------------------------------------------------
# Summoning, invoking, lookup
# ------------------------------------------------------------------------------------------
def test_summon_invoke_and_lookup(seance: vudo.Seance) -> None:
    a = seance.summon("alpha", MESSENGER)
    seance.summon("beta", MESSENGER)
    assert isinstance(a, vudo.Spirit) and a.name == "alpha"
    assert seance.get_spirit("alpha") is a
    assert seance.has_spirit("beta") and not seance.has_spirit("gamma")
    assert seance.spirits() == ["alpha", "beta"]
    assert seance.size == 2
    assert seance.invoke("alpha", "add", 40, 2) == 42
    assert isinstance(seance.loas, vudo.LoaRegistry)
    assert isinstance(seance.messages, vudo.MessageBus)
    assert seance.messages.spirits() == ["alpha", "beta"]
    stats = seance.stats("alpha")
    assert (stats.calls, stats.failures) == (1, 0)


def test_duplicate_unknown_spirit_and_unknown_function_are_clear_errors(
    seance: vudo.Seance,
) -> None:
    seance.summon("alpha", MESSENGER)
    with pytest.raises(vudo.errors.SeanceError, match="'alpha' is already"):
        seance.summon("alpha", MESSENGER)
    assert seance.spirits() == ["alpha"]  # the failed summon left nothing behind
    with pytest.raises(vudo.errors.SeanceError, match=r"no Spirit named 'ghost'.*alpha"):
        seance.invoke("ghost", "add", 1, 2)
    with pytest.raises(vudo.errors.UnknownExportError, match=r"no exported function 'nope'.*add"):
        seance.invoke("alpha", "nope")
    with pytest.raises(vudo.errors.SeanceError):
        seance.get_spirit("ghost")
    with pytest.raises(vudo.errors.SeanceError):
        seance.release("ghost")
    with pytest.raises(vudo.errors.SeanceError, match="non-empty"):
        seance.summon("", MESSENGER)
    assert seance.stats("alpha").calls == 0  # none of these reached the Spirit


def test_failed_load_releases_the_name(seance: vudo.Seance) -> None:
    with pytest.raises(vudo.errors.LinkError):
        seance.summon("broken", '(module (import "nowhere" "f" (func)))')
    assert not seance.has_spirit("broken")
    assert not seance.messages.is_registered("broken")
    seance.summon("broken", MESSENGER)  # the name is free again
    assert seance.has_spirit("broken")


def test_max_spirits_caps_summon() -> None:
    with vudo.Seance(max_spirits=2) as s:
        s.summon("a", MESSENGER)
        s.summon("b", MESSENGER)
        with pytest.raises(vudo.errors.SeanceError, match="full"):
            s.summon("c", MESSENGER)
        s.release("a")
        s.summon("c", MESSENGER)
        assert s.spirits() == ["b", "c"]


def test_session_defaults_are_overridden_per_summon() -> None:
    session_clock, own_clock = MockTimeProvider(start_ms=1_000), MockTimeProvider(start_ms=5_000)
    with vudo.Seance(time_provider=session_clock, limits=vudo.Limits(fuel=10_000)) as s:
        s.summon("default", MESSENGER)
        s.summon("custom", MESSENGER, time_provider=own_clock, limits=vudo.Limits(fuel=None))
        assert s.invoke("default", "nap", 250) == 1_250
        assert s.invoke("custom", "nap", 40) == 5_040
        assert session_clock.sleeps == [250] and own_clock.sleeps == [40]
        with pytest.raises(vudo.errors.FuelExhausted):
            s.invoke("default", "spin", 10**9)
        assert s.invoke("custom", "spin", 100_000) == 100_000  # no fuel limit here


def test_mock_time_makes_sleeps_deterministic(seance: vudo.Seance) -> None:
    clock = MockTimeProvider(start_ms=0)
    seance.summon("sleeper", MESSENGER, time_provider=clock)
    assert seance.invoke("sleeper", "nap", 3_600_000) == 3_600_000  # an hour, instantly
    assert seance.invoke("sleeper", "nap", -5) == 3_600_000  # negative means 0
    assert clock.sleeps == [3_600_000, 0]


# ------------------------------------------------------------------------------------------
# Messaging between Spirits
# ------------------------------------------------------------------------------------------
def test_ping_pong_through_vudo_send_and_vudo_recv(seance: vudo.Seance) -> None:
    ping = seance.summon("ping", MESSENGER)
    pong = seance.summon("pong", MESSENGER)
    payload = bytes(range(256)) * 3 + b"\x00end"
    assert wasm_send(seance, "ping", "pong", payload) == OK
    assert seance.pending("pong") == 1 and seance.invoke("pong", "pending") == 1
    # pong reads it inside wasm and echoes the payload back to the sender named in the message
    peeked = seance.messages.peek("pong")
    assert peeked is not None and (peeked.from_, peeked.to, peeked.channel) == ("ping", "pong", 0)
    assert seance.invoke("pong", "echo") == OK
    assert seance.pending("pong") == 0 and seance.pending("ping") == 1
    ptr = seance.invoke("ping", "recv")
    assert ptr >= ping.memory.heap_floor  # the block lives in the host heap, above the module
    sender, got = read_message(ping, ptr)
    assert sender == "pong"
    assert len(got) == len(payload)
    for i, (expected, actual) in enumerate(zip(payload, got, strict=True)):
        assert actual == expected, f"byte {i}"
    seance.invoke("ping", "free_message", ptr)
    assert seance.invoke("ping", "recv") == 0  # empty inbox
    assert seance.invoke("pong", "echo") == 1  # nothing left to serve
    # several rounds, each checked
    for i in range(20):
        msg = f"round {i}".encode() * (i + 1)
        assert wasm_send(seance, "ping", "pong", msg) == OK
        assert seance.invoke("pong", "echo") == OK
        assert wasm_take(ping) == ("pong", msg)
    assert not ping.terminated and not pong.terminated


def test_vudo_send_to_unknown_spirit_is_not_found(seance: vudo.Seance) -> None:
    seance.summon("lonely", MESSENGER)
    assert wasm_send(seance, "lonely", "nobody", b"hi") == ResultCode.NOT_FOUND
    assert seance.send("host", "nobody", b"hi") == ResultCode.NOT_FOUND


def test_vudo_broadcast_reaches_every_spirit_including_the_sender(seance: vudo.Seance) -> None:
    names = ["a", "b", "c"]
    for n in names:
        seance.summon(n, MESSENGER)
    length = put(seance.get_spirit("b"), PAYLOAD_AT, b"to all")
    assert seance.invoke("b", "broadcast", PAYLOAD_AT, length) == OK
    for n in names:
        assert seance.pending(n) == 1
        assert wasm_take(seance.get_spirit(n)) == ("b", b"to all")


def test_host_broadcast_excludes_the_sender(seance: vudo.Seance) -> None:
    for n in ("a", "b", "c"):
        seance.summon(n, MESSENGER)
    assert seance.broadcast("a", "news") == 2
    assert [seance.pending(n) for n in ("a", "b", "c")] == [0, 1, 1]
    assert wasm_take(seance.get_spirit("c")) == ("a", b"news")
    assert seance.broadcast("host", b"x", channel=7) == 3  # a non-Spirit sender reaches all
    msg = seance.messages.recv("a")
    assert msg is not None and (msg.from_, msg.channel, msg.payload) == ("host", 7, b"x")


def test_host_send_and_pending_by_channel(seance: vudo.Seance) -> None:
    spirit = seance.summon("s", MESSENGER)
    assert seance.send("host", "s", b"zero") == OK
    assert seance.send("host", "s", "three", channel=3) == OK
    assert seance.send("host", "s", b"three again", channel=3) == OK
    assert seance.pending("s") == 3
    assert seance.pending("s", 3) == 2 and seance.pending("s", 4) == 0
    assert seance.invoke("s", "pending") == 3
    # vudo_recv takes whatever is oldest, whatever its channel
    assert wasm_take(spirit) == ("host", b"zero")
    assert wasm_take(spirit) == ("host", b"three")
    assert seance.pending("unknown") == 0


def test_full_inbox_makes_vudo_send_return_error_and_keeps_earlier_messages() -> None:
    with vudo.Seance(inbox_capacity=3) as s:
        s.summon("sender", MESSENGER)
        receiver = s.summon("receiver", MESSENGER)
        for i in range(3):
            assert wasm_send(s, "sender", "receiver", f"m{i}".encode()) == OK
        assert wasm_send(s, "sender", "receiver", b"one too many") == ResultCode.ERROR == -1
        assert s.send("host", "receiver", b"also refused") == ResultCode.ERROR
        assert s.pending("receiver") == 3
        assert [wasm_take(receiver) for _ in range(3)] == [
            ("sender", b"m0"), ("sender", b"m1"), ("sender", b"m2")
        ]
        assert wasm_take(receiver) is None
        assert wasm_send(s, "sender", "receiver", b"room again") == OK


def test_inbox_capacity_per_summon_through_limits(seance: vudo.Seance) -> None:
    seance.summon("small", MESSENGER, limits=vudo.Limits(max_inbox=1))
    seance.summon("big", MESSENGER)
    assert seance.send("h", "small", b"1") == OK
    assert seance.send("h", "small", b"2") == ResultCode.ERROR
    for i in range(50):
        assert seance.send("h", "big", str(i)) == OK


def test_fifo_order_with_several_senders(seance: vudo.Seance) -> None:
    for n in ("x", "y", "z"):
        seance.summon(n, MESSENGER)
    sink = seance.summon("sink", MESSENGER)
    sent: list[tuple[str, bytes]] = []
    for i in range(60):
        sender = "xyz"[i % 3]
        payload = f"{sender}-{i}".encode()
        assert wasm_send(seance, sender, "sink", payload) == OK
        sent.append((sender, payload))
    received = []
    while (msg := wasm_take(sink)) is not None:
        received.append(msg)
    assert received == sent


def test_fifo_order_checked_inside_wasm(seance: vudo.Seance) -> None:
    producer = seance.summon("producer", MESSENGER)
    seance.summon("consumer", MESSENGER)
    to_len = put(producer, NAME_AT, "consumer")
    assert seance.invoke("producer", "produce", to_len, 500) == 500
    assert seance.invoke("consumer", "drain_in_order") == 500


def test_release_empties_the_queue_and_frees_the_name(seance: vudo.Seance) -> None:
    seance.summon("a", MESSENGER)
    b = seance.summon("b", MESSENGER)
    for i in range(5):
        assert wasm_send(seance, "a", "b", bytes([i])) == OK
    seance.release("b")
    assert b.terminated
    assert not seance.has_spirit("b") and seance.spirits() == ["a"]
    assert not seance.messages.is_registered("b")
    assert seance.pending("b") == 0
    assert wasm_send(seance, "a", "b", b"late") == ResultCode.NOT_FOUND
    with pytest.raises(vudo.errors.SpiritTerminated):
        b.call("add", 1, 2)
    seance.summon("b", MESSENGER)  # a fresh Spirit under the old name: its inbox is empty
    assert seance.pending("b") == 0


def test_dismiss_empties_every_queue_and_closes_the_session() -> None:
    s = vudo.Seance()
    spirits = [s.summon(n, MESSENGER) for n in ("a", "b")]
    assert s.send("h", "a", b"1") == OK and s.send("h", "b", b"2") == OK
    s.dismiss()
    assert s.dismissed and s.size == 0 and s.spirits() == []
    assert s.messages.spirits() == [] and s.pending("a") == 0
    assert all(sp.terminated for sp in spirits)
    assert s.send("h", "a", b"3") == ResultCode.NOT_FOUND
    with pytest.raises(vudo.errors.SeanceError, match="dismissed"):
        s.summon("c", MESSENGER)
    with pytest.raises(vudo.errors.SeanceError, match="dismissed"):
        s.invoke("a", "add", 1, 2)
    s.dismiss()  # idempotent


def test_context_manager_dismisses_on_exit() -> None:
    with vudo.Seance() as s:
        spirit = s.summon("a", MESSENGER)
    assert s.dismissed and spirit.terminated


def test_dismiss_during_a_summon_does_not_leave_a_live_spirit() -> None:
    """A Spirit still loading when the session is dismissed must not join the dead session."""
    started, go_on = threading.Event(), threading.Event()

    def block() -> None:
        started.set()
        assert go_on.wait(WAIT)

    s = vudo.Seance()
    errors: list[BaseException] = []

    def summon() -> None:
        try:
            s.summon("late", SLOW_START, imports={("test", "started"): block})
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=summon)
    t.start()
    assert started.wait(WAIT)
    s.dismiss()
    go_on.set()
    t.join(WAIT)
    assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], vudo.errors.SeanceError), errors
    assert s.spirits() == [] and not s.has_spirit("late")
    assert not s.messages.is_registered("late")


# ------------------------------------------------------------------------------------------
# Publish / subscribe
# ------------------------------------------------------------------------------------------
def test_publish_reaches_spirits_that_subscribed() -> None:
    with vudo.Seance(channels=["ticker"]) as s:
        s.register_channel("news")
        fan = s.summon("fan", MESSENGER)
        s.summon("bystander", MESSENGER)
        length = put(fan, NAME_AT, "news")
        assert s.invoke("fan", "subscribe", NAME_AT, length) == OK
        length = put(fan, NAME_AT, "ticker")
        assert s.invoke("fan", "subscribe", NAME_AT, length) == OK
        length = put(fan, NAME_AT, "gossip")  # never registered
        assert s.invoke("fan", "subscribe", NAME_AT, length) == ResultCode.NOT_FOUND

        assert s.publish("news", b"extra! extra!") == 1
        assert s.publish("ticker", "ACME 42") == 1
        assert s.publish("gossip", b"nobody listens") == 0
        assert s.pending("bystander") == 0
        assert wasm_take(fan) == ("channel:news", b"extra! extra!")
        assert wasm_take(fan) == ("channel:ticker", b"ACME 42")
        assert wasm_take(fan) is None


def test_publish_skips_released_and_respects_channel_permissions() -> None:
    with vudo.Seance(channels=["news"]) as s:
        fan = s.summon("fan", MESSENGER)
        picky = s.summon("picky", MESSENGER, permissions=Permissions.allow(channels=["other"]))
        for spirit in (fan, picky):
            put(spirit, NAME_AT, "news")
        assert s.invoke("fan", "subscribe", NAME_AT, 4) == OK
        assert s.invoke("picky", "subscribe", NAME_AT, 4) == ResultCode.NOT_PERMITTED
        assert s.publish("news", b"1") == 1
        s.release("fan")
        assert s.publish("news", b"2") == 0


def test_register_channel_needs_a_channel_aware_handler() -> None:
    class Bare:
        def emit(self, spirit: vudo.Spirit, effect_id: int, payload: bytes) -> int:
            return int(ResultCode.NOT_FOUND)

        def subscribe(self, spirit: vudo.Spirit, channel: str) -> int:
            return int(ResultCode.NOT_FOUND)

    with vudo.Seance(effect_handler=Bare()) as s:
        with pytest.raises(vudo.errors.SeanceError, match="channels"):
            s.register_channel("news")
        assert s.publish("news", b"x") == 0


# ------------------------------------------------------------------------------------------
# Failure isolation
# ------------------------------------------------------------------------------------------
def test_a_panic_in_one_spirit_while_another_keeps_serving(seance: vudo.Seance) -> None:
    victim = seance.summon("victim", MESSENGER)
    server = seance.summon("server", MESSENGER)
    client = seance.summon("client", MESSENGER)
    # queue work for the server and messages for the victim before the panic
    assert wasm_send(seance, "client", "server", b"before") == OK
    assert wasm_send(seance, "client", "victim", b"doomed") == OK

    length = put(victim, NAME_AT, "out of cheese")
    with pytest.raises(vudo.errors.SpiritPanic, match="out of cheese"):
        seance.invoke("victim", "panic", NAME_AT, length)
    assert victim.terminated
    with pytest.raises(vudo.errors.SpiritTerminated, match="out of cheese") as info:
        seance.invoke("victim", "add", 1, 2)
    assert "panic" in info.value.cause
    # its inbox is closed: sends return NotFound, from the host and from inside wasm
    assert seance.send("host", "victim", b"x") == ResultCode.NOT_FOUND
    assert wasm_send(seance, "client", "victim", b"x") == ResultCode.NOT_FOUND
    assert not seance.messages.is_registered("victim")

    # the others carry on, their queued messages intact
    assert seance.invoke("server", "echo") == OK
    assert wasm_take(client) == ("server", b"before")
    for i in range(10):
        assert wasm_send(seance, "client", "server", bytes([i]) * i) == OK
        assert seance.invoke("server", "echo") == OK
        assert wasm_take(client) == ("server", bytes([i]) * i)
    assert not server.terminated and not client.terminated

    # release cleans the dead Spirit up
    assert seance.has_spirit("victim")
    seance.release("victim")
    assert seance.spirits() == ["server", "client"]


def test_a_trap_fails_only_its_own_call(seance: vudo.Seance) -> None:
    flaky = seance.summon("flaky", MESSENGER)
    seance.summon("steady", MESSENGER)
    assert seance.send("host", "flaky", b"keep me") == OK
    assert seance.send("host", "steady", b"me too") == OK
    with pytest.raises(vudo.errors.SpiritTrap):
        seance.invoke("flaky", "trap")
    assert not flaky.terminated
    assert seance.invoke("flaky", "add", 2, 2) == 4  # still usable
    assert wasm_take(flaky) == ("host", b"keep me")
    assert wasm_take(seance.get_spirit("steady")) == ("host", b"me too")
    assert seance.stats("flaky").failures == 1


def test_an_exhausted_limit_fails_only_its_own_call(seance: vudo.Seance) -> None:
    seance.summon("hungry", MESSENGER, limits=vudo.Limits(fuel=50_000))
    seance.summon("other", MESSENGER)
    assert seance.send("host", "hungry", b"queued") == OK
    with pytest.raises(vudo.errors.FuelExhausted):
        seance.invoke("hungry", "spin", 10**12)
    assert seance.invoke("hungry", "spin", 10) == 10  # fuel is per call
    assert seance.invoke("other", "spin", 1_000_000) == 1_000_000
    assert wasm_take(seance.get_spirit("hungry")) == ("host", b"queued")


def test_terminate_on_limit_closes_the_inbox(seance: vudo.Seance) -> None:
    seance.summon("fragile", MESSENGER, limits=vudo.Limits(fuel=50_000, terminate_on_limit=True))
    with pytest.raises(vudo.errors.FuelExhausted):
        seance.invoke("fragile", "spin", 10**12)
    assert seance.send("host", "fragile", b"x") == ResultCode.NOT_FOUND
    with pytest.raises(vudo.errors.SpiritTerminated):
        seance.invoke("fragile", "add", 1, 1)


# ------------------------------------------------------------------------------------------
# SPAWN
# ------------------------------------------------------------------------------------------
def test_spawn_within_the_cap_adds_a_spirit_and_tells_the_spawner() -> None:
    with vudo.Seance(max_spirits=3) as s:
        s.register_module("worker", MESSENGER)
        parent = s.summon("parent", MESSENGER, permissions=SPAWN_OK)
        assert emit(parent, EffectId.SPAWN, spawn_payload("w1", "worker")) == OK
        assert s.spirits() == ["parent", "w1"]
        assert wasm_take(parent) == ("effect:SPAWN", b"\0\0\0\0w1")  # [status 0][name]
        # the new Spirit is a full member of the session
        assert s.invoke("w1", "add", 20, 22) == 42
        assert wasm_send(s, "parent", "w1", b"hello child") == OK
        assert s.invoke("w1", "echo") == OK
        assert wasm_take(parent) == ("w1", b"hello child")

        assert emit(parent, EffectId.SPAWN, spawn_payload("w2", "worker")) == OK
        assert s.size == 3
        # beyond the cap
        assert emit(parent, EffectId.SPAWN, spawn_payload("w3", "worker")) == -5
        assert s.spirits() == ["parent", "w1", "w2"]
        assert wasm_take(parent) == ("effect:SPAWN", b"\0\0\0\0w2")
        assert wasm_take(parent) is None  # no message for the refused SPAWN


def test_spawn_unknown_module_is_not_found() -> None:
    with vudo.Seance() as s:
        parent = s.summon("parent", MESSENGER, permissions=SPAWN_OK)
        assert emit(parent, EffectId.SPAWN, spawn_payload("w", "missing")) == -4
        assert s.spirits() == ["parent"]


def test_spawn_without_permission_is_not_permitted() -> None:
    with vudo.Seance() as s:
        s.register_module("worker", MESSENGER)
        plain = s.summon("plain", MESSENGER)
        assert emit(plain, EffectId.SPAWN, spawn_payload("w", "worker")) == -5
        assert s.spirits() == ["plain"]
        assert s.pending("plain") == 0


def test_spawn_errors_bad_payload_and_duplicate_name() -> None:
    with vudo.Seance() as s:
        s.register_module("worker", MESSENGER)
        parent = s.summon("parent", MESSENGER, permissions=SPAWN_OK)
        assert emit(parent, EffectId.SPAWN, b"\x01") == ResultCode.INVALID_ARG
        assert emit(parent, EffectId.SPAWN, b"\xff\x00\x00\x00ab") == ResultCode.INVALID_ARG
        assert emit(parent, EffectId.SPAWN, spawn_payload("", "worker")) == ResultCode.INVALID_ARG
        assert emit(parent, EffectId.SPAWN, spawn_payload("parent", "worker")) == ResultCode.ERROR
        assert s.spirits() == ["parent"]


def test_spawn_is_not_permitted_while_a_summon_holds_the_last_slot() -> None:
    """A Spirit still loading counts towards the cap: SPAWN then says NotPermitted."""
    started, go_on = threading.Event(), threading.Event()

    def block() -> None:
        started.set()
        assert go_on.wait(WAIT)

    with vudo.Seance(max_spirits=2) as s:
        s.register_module("worker", MESSENGER)
        parent = s.summon("parent", MESSENGER, permissions=SPAWN_OK)
        with ThreadPoolExecutor(1) as pool:
            loading = pool.submit(
                s.summon, "slow", SLOW_START, imports={("test", "started"): block}
            )
            assert started.wait(WAIT)
            try:
                code = emit(parent, EffectId.SPAWN, spawn_payload("w", "worker"))
            finally:
                go_on.set()
            loading.result(WAIT)
        assert code == ResultCode.NOT_PERMITTED
        assert s.spirits() == ["parent", "slow"]


# ------------------------------------------------------------------------------------------
# Debug tracing
# ------------------------------------------------------------------------------------------
def test_debug_logs_summon_invoke_and_messages(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="vudo.seance")
    caplog.set_level(logging.DEBUG, logger="vudo.bus")
    with vudo.Seance(debug=True) as s:
        s.summon("a", MESSENGER)
        s.summon("b", MESSENGER)
        s.invoke("a", "add", 1, 2)
        wasm_send(s, "a", "b", b"hi")
        s.send("host", "b", b"hello")
    seance_text = "\n".join(r.getMessage() for r in caplog.records if r.name == "vudo.seance")
    bus_text = "\n".join(r.getMessage() for r in caplog.records if r.name == "vudo.bus")
    assert "summoned 'a'" in seance_text and "summoned 'b'" in seance_text
    assert "invoke a.add(1, 2)" in seance_text and "-> 3" in seance_text
    assert "send 'host' -> 'b'" in seance_text
    assert "dismissed 2" in seance_text
    assert "'a' -> 'b'" in bus_text and "'host' -> 'b'" in bus_text


def test_no_debug_logs_without_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="vudo.seance")
    caplog.set_level(logging.DEBUG, logger="vudo.bus")
    with vudo.Seance() as s:
        s.summon("a", MESSENGER)
        s.invoke("a", "add", 1, 2)
        s.send("host", "a", b"x")
    assert not [r for r in caplog.records if r.name in ("vudo.seance", "vudo.bus")]


# ------------------------------------------------------------------------------------------
# The two faces: the same script through Seance and AsyncSeance
# ------------------------------------------------------------------------------------------
class Err:
    """An exception turned into a comparable value."""

    def __init__(self, exc: BaseException) -> None:
        self.kind = type(exc).__name__
        self.text = str(exc)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Err) and (self.kind, self.text) == (other.kind, other.text)

    def __hash__(self) -> int:
        return hash((self.kind, self.text))

    def __repr__(self) -> str:
        return f"Err({self.kind}: {self.text})"


Step = tuple[Any, ...]
Script = Generator[Step, Any, list[Any]]


def script() -> Script:
    """A session exercising every part of the API; yields steps, receives their results."""
    log: list[Any] = []

    def record(value: Any) -> None:
        log.append(value.name if isinstance(value, vudo.Spirit) else value)

    for name in ("ping", "pong", "third"):
        record((yield ("summon", name, MESSENGER)))
    record((yield ("summon", "ping", MESSENGER)))  # duplicate
    record((yield ("summon", "child", MESSENGER, {"limits": vudo.Limits(max_inbox=2)})))
    record((yield ("spirits",)))
    record((yield ("prop", "size")))
    record((yield ("has_spirit", "pong")))
    record((yield ("has_spirit", "nobody")))
    record((yield ("invoke", "ping", "add", 19, 23)))
    record((yield ("invoke", "ghost", "add", 1, 1)))
    record((yield ("invoke", "ping", "missing")))
    # ping -> pong from inside wasm, pong echoes, ping reads it back
    ping = yield ("get_spirit", "ping")
    pong = yield ("get_spirit", "pong")
    put(ping, NAME_AT, "pong")
    put(ping, PAYLOAD_AT, bytes(range(200)))
    record((yield ("invoke", "ping", "send", NAME_AT, 4, PAYLOAD_AT, 200)))
    record((yield ("pending", "pong")))
    record((yield ("invoke", "pong", "echo")))
    ptr = yield ("invoke", "ping", "recv")
    record(read_message(ping, ptr))
    record((yield ("invoke", "ping", "free_message", ptr)))
    # host-side helpers
    record((yield ("send", "host", "third", b"direct", {"channel": 5})))
    record((yield ("pending", "third", 5)))
    record((yield ("broadcast", "ping", b"hello all")))
    counts = []
    for n in ("ping", "pong", "third", "child"):
        counts.append((yield ("pending", n)))
    record(counts)
    for i in range(3):  # child's inbox holds 2
        record((yield ("send", "host", "child", bytes([i]))))
    record((yield ("invoke", "child", "drain")))
    put(pong, PAYLOAD_AT, b"from inside")
    record((yield ("invoke", "pong", "broadcast", PAYLOAD_AT, 11)))
    counts = []
    for n in ("ping", "pong", "third", "child"):
        counts.append((yield ("pending", n)))
    record(counts)
    record((yield ("invoke", "pong", "drain")))
    record((yield ("register_channel", "news")))
    put(pong, NAME_AT, "news")
    record((yield ("invoke", "pong", "subscribe", NAME_AT, 4)))
    record((yield ("publish", "news", b"headline")))
    ptr = yield ("invoke", "pong", "recv")
    record(read_message(pong, ptr))
    # two Spirits at once
    record((yield ("concurrently", [("ping", "spin", 300_000), ("pong", "spin", 200_000)])))
    # failures
    record((yield ("invoke", "third", "trap")))
    record((yield ("invoke", "third", "add", 1, 2)))
    put(pong, NAME_AT, "bye")
    record((yield ("invoke", "pong", "panic", NAME_AT, 3)))
    record((yield ("invoke", "pong", "add", 1, 2)))
    record((yield ("send", "host", "pong", b"x")))
    record((yield ("release", "pong")))
    record((yield ("spirits",)))
    record((yield ("prop", "size")))
    return log


def run_sync(seance: vudo.Seance) -> list[Any]:
    gen = script()
    result: Any = None
    with seance:
        while True:
            try:
                step = gen.send(result)
            except StopIteration as stop:
                return list(stop.value)
            try:
                result = _sync_step(seance, step)
            except vudo.VudoError as exc:
                result = Err(exc)


def _sync_step(seance: vudo.Seance, step: Step) -> Any:
    op, *args = step
    if op == "prop":
        return getattr(seance, args[0])
    if op == "concurrently":
        with ThreadPoolExecutor(len(args[0])) as pool:
            futures = [pool.submit(seance.invoke, *call) for call in args[0]]
            return [f.result(WAIT) for f in futures]
    kwargs = args.pop() if args and isinstance(args[-1], dict) else {}
    return getattr(seance, op)(*args, **kwargs)


async def run_async(seance: vudo.AsyncSeance) -> list[Any]:
    gen = script()
    result: Any = None
    async with seance:
        while True:
            try:
                step = gen.send(result)
            except StopIteration as stop:
                return list(stop.value)
            try:
                result = await _async_step(seance, step)
            except vudo.VudoError as exc:
                result = Err(exc)


async def _async_step(seance: vudo.AsyncSeance, step: Step) -> Any:
    op, *args = step
    if op == "prop":
        return getattr(seance, args[0])
    if op == "concurrently":
        return list(await asyncio.gather(*(seance.invoke(*call) for call in args[0])))
    kwargs = args.pop() if args and isinstance(args[-1], dict) else {}
    result = getattr(seance, op)(*args, **kwargs)
    return await result if inspect.isawaitable(result) else result


def test_sync_and_async_faces_give_identical_results() -> None:
    sync_log = run_sync(vudo.Seance())
    async_log = asyncio.run(run_async(vudo.AsyncSeance()))
    assert sync_log == async_log
    # and the transcript is the expected one, not two identical failures
    expected_head = [
        "ping", "pong", "third",
        Err(vudo.errors.SeanceError("a Spirit named 'ping' is already in this Séance")),
        "child", ["ping", "pong", "third", "child"], 4, True, False, 42,
    ]
    assert sync_log[: len(expected_head)] == expected_head
    assert isinstance(sync_log[10], Err) and sync_log[10].kind == "SeanceError"
    assert isinstance(sync_log[11], Err) and sync_log[11].kind == "UnknownExportError"
    assert sync_log[12:16] == [0, 1, 0, ("pong", bytes(range(200)))]
    assert sync_log[17:21] == [0, 1, 3, [0, 1, 2, 1]]
    # child's inbox holds 2 and already had the broadcast: one more fits
    assert sync_log[21:25] == [OK, ResultCode.ERROR, ResultCode.ERROR, 2]
    assert sync_log[25:28] == [0, [1, 2, 3, 1], 2]  # vudo_broadcast included the sender
    assert sync_log[28:32] == [None, 0, 1, ("channel:news", b"headline")]
    assert sync_log[32] == [300_000, 200_000]
    assert [type(x).__name__ if isinstance(x, Err) else x for x in sync_log[33:]] == [
        "Err", 3, "Err", "Err", ResultCode.NOT_FOUND, None, ["ping", "third", "child"], 3,
    ]
    assert sync_log[33].kind == "SpiritTrap"
    assert sync_log[35].kind == "SpiritPanic" and sync_log[36].kind == "SpiritTerminated"


def test_async_seance_api() -> None:
    async def main() -> None:
        async with vudo.AsyncSeance(max_spirits=3) as s:
            spirit = await s.summon("a", MESSENGER)
            assert s.get_spirit("a") is spirit and s.has_spirit("a")
            assert s.spirits() == ["a"] and s.size == 1
            assert s.loas is s.sync.loas and s.messages is s.sync.messages
            assert await s.invoke("a", "add", 2, 3) == 5
            assert await s.send("h", "a", b"x") == OK and s.pending("a") == 1
            s.register_module("m", MESSENGER)
            await s.summon("b", MESSENGER)
            assert s.broadcast("a", b"y") == 1
            await s.release("b")
            assert s.spirits() == ["a"]
            with pytest.raises(vudo.errors.SeanceError):
                await s.summon("a", MESSENGER)
            with pytest.raises(vudo.errors.SeanceError):
                await s.invoke("zzz", "add", 1, 1)
        assert s.sync.dismissed and spirit.terminated

    asyncio.run(main())
