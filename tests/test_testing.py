"""The test doubles of :mod:`vudo.testing` on their own: Protocol conformance and behaviour."""

from __future__ import annotations

import pytest
from _helpers_host import load, put

from vudo.abi import EffectId, LogLevel, ResultCode
from vudo.errors import SpiritTerminated
from vudo.providers import (
    DebugHandler,
    DefaultEffectHandler,
    EffectHandler,
    Logger,
    RandomProvider,
    TimeProvider,
)
from vudo.testing import (
    MockDebugHandler,
    MockEffectHandler,
    MockLogger,
    MockRandomProvider,
    MockTimeProvider,
)


def test_the_doubles_satisfy_the_provider_protocols() -> None:
    assert isinstance(MockLogger(), Logger)
    assert isinstance(MockTimeProvider(), TimeProvider)
    assert isinstance(MockRandomProvider(), RandomProvider)
    assert isinstance(MockEffectHandler(), EffectHandler)
    assert isinstance(MockEffectHandler(), DefaultEffectHandler)
    assert isinstance(MockDebugHandler(), DebugHandler)


# ------------------------------------------------------------------------------------------
# MockLogger
# ------------------------------------------------------------------------------------------
def test_logger_formats_messages_like_the_seed() -> None:
    log = MockLogger()
    log.debug("d")
    log.info("Test message")
    log.warn("w")
    log.error("e")
    log.log(LogLevel.WARN, "via log")
    log.log(42, "unknown level")  # type: ignore[arg-type]
    assert "[INFO] Test message" in log.messages
    assert log.messages == [
        "[DEBUG] d", "[INFO] Test message", "[WARN] w", "[ERROR] e", "[WARN] via log",
        "[ERROR] unknown level",
    ]
    assert log.records[1] == (LogLevel.INFO, "Test message")
    assert log.records[1].level is LogLevel.INFO and log.records[1].text == "Test message"
    assert log.errors == ["e", "unknown level"]
    assert log.outputs == []


def test_logger_keeps_printed_text_apart_from_records() -> None:
    log = MockLogger()
    log.print("a")
    log.println("b")
    log.print("c")
    assert log.outputs == ["a", "b\n", "c"]
    assert log.output == "ab\nc"
    assert log.records == [] and log.messages == []
    log.clear()
    assert (log.outputs, log.records, log.messages, log.errors) == ([], [], [], [])


# ------------------------------------------------------------------------------------------
# MockTimeProvider
# ------------------------------------------------------------------------------------------
def test_time_provider_set_time_and_advance() -> None:
    clock = MockTimeProvider()
    assert (clock.now(), clock.monotonic_now()) == (0, 0)
    clock.set_time(1000)
    assert clock.now() == 1000
    clock.advance(250)
    assert clock.now() == 1250
    assert clock.monotonic_now() == 250_000_000
    clock.set_time(10)  # wall clocks may jump back...
    assert clock.now() == 10
    assert clock.monotonic_now() == 250_000_000  # ...monotonic never does
    with pytest.raises(ValueError):
        clock.advance(-1)
    with pytest.raises(ValueError):
        MockTimeProvider(monotonic_start_ns=-5)


def test_time_provider_sleep_is_instant_and_recorded() -> None:
    clock = MockTimeProvider(5_000)
    clock.sleep(100)
    clock.sleep(0)
    clock.sleep(-3)
    assert clock.sleeps == [100, 0, -3]
    assert clock.now() == 5_100
    assert clock.monotonic_now() == 100_000_000


# ------------------------------------------------------------------------------------------
# MockRandomProvider
# ------------------------------------------------------------------------------------------
def test_random_provider_scripted_then_seeded() -> None:
    rng = MockRandomProvider([0.5, 0.125], seed=3)
    rng.push(0.75)
    assert [rng.random(), rng.random(), rng.random()] == [0.5, 0.125, 0.75]
    seeded = [rng.random() for _ in range(5)]
    assert all(0.0 <= v < 1.0 for v in seeded)
    twin = MockRandomProvider(seed=3)
    assert [twin.random() for _ in range(5)] == seeded
    assert rng.random_calls == 8


def test_random_provider_bytes_are_reproducible_and_exact_length() -> None:
    a, b, c = MockRandomProvider(seed=1), MockRandomProvider(seed=1), MockRandomProvider(seed=2)
    for n in (0, 1, 17, 1000):
        data = a.random_bytes(n)
        assert len(data) == n
        assert data == b.random_bytes(n)
    assert a.random_bytes(32) != c.random_bytes(32)
    assert a.byte_requests == [0, 1, 17, 1000, 32]
    a.queue_bytes(b"\x01\x02")
    assert a.random_bytes(2) == b"\x01\x02"
    with pytest.raises(ValueError):
        a.random_bytes(-1)


# ------------------------------------------------------------------------------------------
# MockEffectHandler (with a live Spirit: it needs one for TERMINATE and channels)
# ------------------------------------------------------------------------------------------
def test_effect_handler_behaves_like_the_default_and_records() -> None:
    spirit, _ = load(name="fx")
    fx = MockEffectHandler({EffectId.HTTP_GET: ResultCode.NOT_PERMITTED})
    assert fx.emit(spirit, EffectId.NOOP, b"") == ResultCode.OK
    assert fx.emit(spirit, EffectId.HTTP_GET, b"u") == ResultCode.NOT_PERMITTED
    assert fx.emit(spirit, 500, b"?") == ResultCode.NOT_FOUND
    fx.register(500, lambda _s, p: len(p))
    assert fx.emit(spirit, 500, b"four") == 4
    fx.set_result(500, ResultCode.ERROR)  # scripted results win over handlers
    assert fx.emit(spirit, 500, b"x") == ResultCode.ERROR
    assert fx.effects == [(0, b""), (20, b"u"), (500, b"?"), (500, b"four"), (500, b"x")]
    assert fx.effects[1].effect_id == 20 and fx.effects[1].payload == b"u"
    assert not spirit.terminated
    assert fx.emit(spirit, EffectId.TERMINATE, b"bye") == ResultCode.OK
    assert spirit.terminated
    with pytest.raises(SpiritTerminated, match="bye"):
        spirit.call("now")
    fx.clear()
    assert fx.effects == [] and fx.subscriptions == []


def test_effect_handler_channels_subscribe_and_notify() -> None:
    spirit, _ = load(name="fx")
    fx = MockEffectHandler()
    assert fx.subscribe(spirit, "news") == ResultCode.NOT_FOUND
    fx.register_channel("news")
    assert fx.subscribe(spirit, "news") == ResultCode.OK
    assert fx.subscriptions == [("fx", "news", -4), ("fx", "news", 0)]
    assert fx.subscribers("news") == [spirit]
    assert fx.notify("news", b"extra") == 1
    assert spirit.call("pending") == 1


# ------------------------------------------------------------------------------------------
# MockDebugHandler
# ------------------------------------------------------------------------------------------
def test_debug_handler_records_everything() -> None:
    spirit, _ = load(name="dbg")
    visited: list[str] = []
    dbg = MockDebugHandler(on_breakpoint=lambda s: visited.append(s.name))
    dbg.breakpoint(spirit, ["main", "vudo_breakpoint"])
    dbg.assert_failed(spirit, "x > 0")
    dbg.panic(spirit, "oops")
    assert dbg.breakpoints == [("dbg", ["main", "vudo_breakpoint"])]
    assert dbg.assertion_failures == [("dbg", "x > 0")]
    assert dbg.panics == [("dbg", "oops")]
    assert visited == ["dbg"]
    dbg.clear()
    assert (dbg.breakpoints, dbg.assertion_failures, dbg.panics) == ([], [], [])


def test_mocks_plug_into_load_spirit_by_keyword() -> None:
    spirit, m = load()
    m.time.set_time(77)
    m.random.push(0.5)
    spirit.call("println", *put(spirit, "x"))
    assert (spirit.call("now"), spirit.call("random")) == (77, 0.5)
    assert m.logger.output == "x\n"
