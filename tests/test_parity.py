"""Parity with ``@vudo/runtime`` (issue 16): the peer's behaviour, as its users rely on it.

Each case is checked through a real WAT Spirit (so the native built-ins are covered when they
are built; ``VUDO_NATIVE=0`` runs the Python ones) and, where it belongs to one host function,
against :class:`vudo.testing.FakeHostContext`.
"""

from __future__ import annotations

import gc
import logging

import pytest
from _helpers_host import SCRATCH, Mocks, load, put

from vudo import Limits, MessageBroker, MessageBus
from vudo._host import HostContext
from vudo._host.loas import debug, effects, io, memory, time
from vudo._providers import DefaultDebugHandler, PyMessageBus
from vudo.abi import LogLevel, ResultCode
from vudo.errors import (
    ConfigError,
    HostFunctionError,
    InvalidLimitsError,
    MemoryAccessError,
    SpiritAssertionError,
)
from vudo.testing import (
    FakeHostContext,
    FakeMemory,
    MockDebugHandler,
    MockEffectHandler,
    MockLogger,
    MockRandomProvider,
    MockTimeProvider,
)

MIB = 1 << 20
INVALID = int(ResultCode.INVALID_ARG)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


# ==========================================================================================
# Per-call caps
# ==========================================================================================
def test_caps_have_the_peers_defaults_and_are_configurable() -> None:
    limits = Limits()
    assert (limits.max_string_length, limits.max_alloc, limits.max_sleep) == (
        MIB, 10 * MIB, 3600.0
    )
    custom = Limits(max_string_length=16, max_alloc=64, max_sleep=0.5)
    assert (custom.max_string_length, custom.max_alloc, custom.max_sleep) == (16, 64, 0.5)
    lifted = Limits(max_string_length=None, max_alloc=None, max_sleep=None)
    assert (lifted.max_string_length, lifted.max_alloc, lifted.max_sleep) == (None, None, None)
    # merged field by field like every limit: a Spirit's cap over the session's
    assert Limits(max_alloc=64).merged(Limits(timeout=1)).max_alloc == 64
    assert Limits(max_alloc=64).merged(Limits(max_alloc=None)).max_alloc is None


@pytest.mark.parametrize("bad", [
    {"max_string_length": 0}, {"max_string_length": 1.5}, {"max_alloc": -1},
    {"max_alloc": "10MiB"}, {"max_sleep": 0}, {"max_sleep": float("nan")},
    {"max_sleep": True},
])
def test_bad_caps_are_refused_where_written(bad: dict[str, object]) -> None:
    with pytest.raises(InvalidLimitsError, match=next(iter(bad))):
        Limits(**bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("fn", ["print", "println", "error"])
def test_text_over_the_cap_is_refused_with_a_warning_naming_the_spirit(
    fn: str, caplog: pytest.LogCaptureFixture
) -> None:
    spirit, m = load(name="chatty", limits=Limits(max_string_length=8))
    spirit.call(fn, *put(spirit, "12345678"))  # at the cap: written
    with caplog.at_level(logging.WARNING, logger="vudo.host"):
        spirit.call(fn, *put(spirit, "123456789"))
    assert m.logger.output + "".join(m.logger.errors) in ("12345678", "12345678\n")
    assert len(m.logger.outputs) + len(m.logger.errors) == 1
    (warning,) = warnings_of(caplog)
    assert f"vudo_{fn}" in warning and "'chatty'" in warning and "9 bytes" in warning


def test_default_text_cap_is_one_mib(caplog: pytest.LogCaptureFixture) -> None:
    spirit, m = load(memory='(memory (export "memory") 40)')
    spirit.call("print", SCRATCH, MIB)
    assert len(m.logger.output) == MIB
    with caplog.at_level(logging.WARNING, logger="vudo.host"):
        spirit.call("print", SCRATCH, MIB + 1)
    assert len(m.logger.outputs) == 1 and "1048577 bytes" in warnings_of(caplog)[0]


def test_text_over_the_cap_with_a_bad_pointer_is_still_a_fault() -> None:
    spirit, _ = load(limits=Limits(max_string_length=8))
    with pytest.raises(MemoryAccessError, match="out-of-bounds"):
        spirit.call("print", 65530, 100)


def test_log_subscribe_assert_and_panic_honour_the_text_cap(
    caplog: pytest.LogCaptureFixture
) -> None:
    ctx = FakeHostContext("capped", limits=Limits(max_string_length=4))
    ctx.memory.write_bytes(64, b"too long")
    assert isinstance(ctx.effects, MockEffectHandler)
    ctx.effects.register_channel("too long")
    with caplog.at_level(logging.WARNING, logger="vudo.host"):
        io.vudo_log(ctx)(1, 64, 8)
        assert effects.vudo_subscribe(ctx)(64, 8) == INVALID
    assert isinstance(ctx.logger, MockLogger) and ctx.logger.records == []
    assert ctx.effects.subscriptions == []
    assert [w.split(":")[0] for w in warnings_of(caplog)] == ["vudo_log", "vudo_subscribe"]


def test_allocations_over_max_alloc_return_zero(caplog: pytest.LogCaptureFixture) -> None:
    ctx = FakeHostContext("hungry", limits=Limits(max_alloc=4096))
    alloc, realloc = memory.vudo_alloc(ctx), memory.vudo_realloc(ctx)
    ptr = alloc(4096)
    assert ptr != 0
    with caplog.at_level(logging.WARNING, logger="vudo.memory"):
        assert alloc(4097) == 0
        assert realloc(ptr, 4096, 4097) == 0
    assert all("'hungry'" in w and "max_alloc" in w for w in warnings_of(caplog))
    assert realloc(ptr, 4096, 100) != 0  # the old block stayed valid


def test_default_max_alloc_is_ten_mib_through_a_spirit() -> None:
    spirit, _ = load()
    assert spirit.call("alloc", 10 * MIB + 1) == 0
    assert spirit.call("alloc", 1024) != 0


def test_sleeps_over_max_sleep_are_refused_with_a_warning(
    caplog: pytest.LogCaptureFixture
) -> None:
    ctx = FakeHostContext("dozy", limits=Limits(max_sleep=2))
    sleep = time.vudo_sleep(ctx)
    sleep(2000)
    with caplog.at_level(logging.WARNING, logger="vudo.host"):
        sleep(2001)
    assert ctx.slept == [2000]
    (warning,) = warnings_of(caplog)
    assert "vudo_sleep" in warning and "'dozy'" in warning and "2001 ms" in warning


def test_default_max_sleep_is_one_hour_through_a_spirit() -> None:
    spirit, m = load()
    spirit.call("sleep", 3_600_000)
    spirit.call("sleep", 3_600_001)
    assert m.time.sleeps == [3_600_000]


# ==========================================================================================
# Allocation argument checks
# ==========================================================================================
def test_alloc_of_zero_or_negative_sizes_returns_zero() -> None:
    spirit, _ = load()
    assert spirit.call("alloc", 0) == 0
    assert spirit.call("alloc", -8) == 0
    ptr = spirit.call("alloc", 16)
    assert spirit.call("realloc", ptr, 16, -1) == 0
    assert spirit.call("realloc", ptr, -16, 32) == 0
    assert spirit.call("realloc", ptr, 16, 32) != 0  # the block survived the refusals


@pytest.mark.parametrize("align", [0, -8, 3, 12, 1.5])
def test_memory_alloc_with_a_bad_alignment_raises_a_config_error(align: object) -> None:
    mem = FakeMemory(name="aligned")
    with pytest.raises(ConfigError, match=r"'aligned'.*power of two") as info:
        mem.alloc(16, align)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)
    assert mem.alloc(16, 16) % 16 == 0


# ==========================================================================================
# Inboxes
# ==========================================================================================
@pytest.mark.parametrize("kind", [MessageBus, PyMessageBus], ids=["default", "python"])
def test_clear_name_empties_one_inbox_and_clear_empties_all(kind: type[PyMessageBus]) -> None:
    bus = kind()
    for name in ("a", "b", "c"):
        bus.register(name)
    bus.broadcast("a", b"x")
    bus.clear("b")
    assert [bus.pending(n) for n in ("a", "b", "c")] == [1, 0, 1]
    bus.clear("nobody")  # an unknown name is ignored
    bus.clear()
    assert [bus.pending(n) for n in ("a", "b", "c")] == [0, 0, 0]
    assert bus.spirits() == ["a", "b", "c"]
    assert isinstance(bus, MessageBroker)


def test_log_unknown_level_is_error_plus_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    spirit, m = load(name="loud")
    with caplog.at_level(logging.WARNING, logger="vudo.host"):
        spirit.call("log", 7, *put(spirit, "odd"))
        spirit.call("log", 2, *put(spirit, "fine"))
    assert m.logger.records == [(LogLevel.ERROR, "odd"), (LogLevel.WARN, "fine")]
    (warning,) = warnings_of(caplog)
    assert "invalid log level 7" in warning and "'loud'" in warning


# ==========================================================================================
# Debugging: every assertion reaches the debug handler
# ==========================================================================================
def test_every_assertion_reaches_on_assert_passing_ones_too() -> None:
    spirit, m = load(name="checker")
    spirit.call("assert", 1, *put(spirit, "holds"))
    spirit.call("assert", 5, *put(spirit, "also holds"))
    with pytest.raises(SpiritAssertionError, match="broken"):
        spirit.call("assert", 0, *put(spirit, "broken"))
    assert m.debug.assertions == [
        ("checker", True, "holds"), ("checker", True, "also holds"),
        ("checker", False, "broken"),
    ]
    assert (m.debug.passed, m.debug.failed) == (2, 1)
    assert m.debug.assertion_failures == [("checker", "broken")]


def test_a_passing_assertion_with_a_bad_message_pointer_does_not_fail() -> None:
    debugger = MockDebugHandler()
    ctx = FakeHostContext("sloppy", debugger=debugger)
    debug.vudo_assert(ctx)(1, 70000, 4)  # past the 1-page memory
    ((name, ok, message),) = debugger.assertions
    assert (name, ok) == ("sloppy", True) and message.startswith("<unreadable")


def test_assertion_messages_over_the_cap_become_a_placeholder() -> None:
    debugger = MockDebugHandler()
    ctx = FakeHostContext("wordy", debugger=debugger, limits=Limits(max_string_length=2))
    ctx.memory.write_bytes(64, b"long")
    with pytest.raises(SpiritAssertionError, match="over max_string_length 2"):
        debug.vudo_assert(ctx)(0, 64, 4)
    assert debugger.assertions[0].ok is False


def test_the_default_debug_handler_logs_passing_assertions_at_debug(
    caplog: pytest.LogCaptureFixture
) -> None:
    ctx = FakeHostContext("quiet", debugger=DefaultDebugHandler())
    ctx.memory.write_bytes(64, b"fine")
    with caplog.at_level(logging.DEBUG, logger="vudo.debug"):
        debug.vudo_assert(ctx)(1, 64, 4)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.DEBUG, "assertion passed in Spirit 'quiet': fine")
    ]


def test_a_debug_handler_without_on_assert_still_works() -> None:
    class Legacy:
        def __init__(self) -> None:
            self.failures: list[str] = []

        def breakpoint(self, spirit: HostContext, backtrace: list[str]) -> None:
            pass

        def assert_failed(self, spirit: HostContext, message: str) -> None:
            self.failures.append(message)

        def panic(self, spirit: HostContext, message: str) -> None:
            pass

    legacy = Legacy()
    ctx = FakeHostContext(debugger=legacy)  # type: ignore[arg-type]
    ctx.memory.write_bytes(64, b"no")
    host = debug.vudo_assert(ctx)
    host(1, 64, 2)
    with pytest.raises(SpiritAssertionError):
        host(0, 64, 2)
    assert legacy.failures == ["no"]


# ==========================================================================================
# Memory views
# ==========================================================================================
GROWER = '(func (export "grow") (param i32) (result i32) (memory.grow (local.get 0)))'


def test_a_view_is_zero_copy_both_ways() -> None:
    spirit, _ = load()
    view = spirit.memory.view(SCRATCH, 4)
    view[:] = b"\x01\x02\x03\x04"
    assert spirit.call("load8", SCRATCH + 2) == 3  # the Spirit sees the write
    spirit.call("fill", SCRATCH, 9, 4)
    assert bytes(view) == b"\x09" * 4  # and the view sees the Spirit's


def test_typed_views_read_and_write_i32_and_f64_arrays() -> None:
    spirit, _ = load()
    mem = spirit.memory
    ints = mem.view_i32(SCRATCH, 3)
    ints[0], ints[2] = -7, 2**31 - 1
    assert (mem.read_i32(SCRATCH), mem.read_i32(SCRATCH + 8)) == (-7, 2**31 - 1)
    assert (ints.format, len(ints), ints.nbytes) == ("i", 3, 12)
    mem.write_f64(SCRATCH + 16, 2.5)
    floats = mem.view_f64(SCRATCH + 16, 2)
    assert floats[0] == 2.5
    floats[1] = -0.25
    assert mem.read_f64(SCRATCH + 24) == -0.25
    assert mem.view(SCRATCH, 8, format="q").tolist() == [mem.read_i64(SCRATCH)]
    with pytest.raises(TypeError):
        mem.view(SCRATCH, 4, readonly=True)[0] = 1


@pytest.mark.parametrize(("ptr", "length"), [(65535, 2), (-1, 1), (0, 65537), (10, -1)])
def test_views_are_bounds_checked(ptr: int, length: int) -> None:
    spirit, _ = load(name="viewer")
    with pytest.raises(MemoryAccessError, match="'viewer'"):
        spirit.memory.view(ptr, length)


def test_typed_view_arguments_are_checked() -> None:
    mem = FakeMemory()
    with pytest.raises(ConfigError, match="whole number"):
        mem.view(0, 6, "i")
    with pytest.raises(ConfigError, match="unknown format"):
        mem.view(0, 4, "x")
    with pytest.raises(MemoryAccessError):
        mem.view_f64(65536 - 8, 2)


def test_a_view_survives_growth_covering_the_same_bytes() -> None:
    spirit, _ = load(GROWER)
    mem = spirit.memory
    view = mem.view(65536 - 4, 4)
    view[:] = b"edge"
    assert spirit.call("grow", 3) == 1
    assert mem.pages == 4 and bytes(view) == b"edge" and len(view) == 4
    mem.write_bytes(65536 - 4, b"moved?")  # the same bytes: the memory did not move
    assert bytes(view) == b"move"
    wider = mem.view(65536 - 4, 8)  # the new pages need a new view
    assert bytes(wider) == b"moved?\x00\x00"


def test_closing_the_spirit_releases_its_views() -> None:
    spirit, _ = load()
    view = spirit.memory.view_i32(SCRATCH, 2)
    spirit.close()
    with pytest.raises(ValueError, match="released"):
        view[0]


def test_a_view_keeps_the_memory_alive_after_the_spirit_is_dropped() -> None:
    spirit, _ = load()
    spirit.memory.write_bytes(SCRATCH, b"still here")
    view = spirit.memory.view(SCRATCH, 10)
    del spirit
    gc.collect()
    assert bytes(view) == b"still here"


# ==========================================================================================
# Test doubles
# ==========================================================================================
def test_mock_random_reset_replays_the_sequence_or_reseeds() -> None:
    rng = MockRandomProvider(seed=3)
    first = [rng.random() for _ in range(3)], rng.random_bytes(8)
    rng.push(0.5)
    rng.reset()
    assert ([rng.random() for _ in range(3)], rng.random_bytes(8)) == first
    rng.reset(4)
    assert rng.random() == MockRandomProvider(seed=4).random()
    assert (rng.random_calls, rng.byte_requests) == (1, [])


def test_mock_random_reset_through_a_spirit() -> None:
    spirit, m = load()
    a = spirit.call("random")
    m.random.reset()
    assert spirit.call("random") == a


def test_mock_monotonic_clock_can_be_set_after_it_started() -> None:
    clock = MockTimeProvider()
    spirit, _ = load(mocks=Mocks(time=clock))
    assert spirit.call("monotonic_now") == 0
    clock.set_monotonic(5_000)
    assert spirit.call("monotonic_now") == 5_000
    clock.set_monotonic(1_000)  # backwards: the Spirit still never sees time go back
    assert clock.monotonic_now() == 1_000
    assert spirit.call("monotonic_now") == 5_000
    clock.advance(1)  # 1 ms later: 1_001_000 ns
    assert spirit.call("monotonic_now") == 1_001_000
    with pytest.raises(ValueError, match="negative"):
        clock.set_monotonic(-1)


# ==========================================================================================
# A time provider that raises
# ==========================================================================================
class BrokenClock(MockTimeProvider):
    def now(self) -> int:
        raise OSError("clock unplugged")

    def monotonic_now(self) -> int:
        raise RuntimeError("no monotonic clock")

    def sleep(self, ms: int) -> None:
        raise OSError("cannot sleep")


@pytest.mark.parametrize(("export", "args", "host", "method", "cause"), [
    ("now", (), "vudo_now", "now", OSError),
    ("monotonic_now", (), "vudo_monotonic_now", "monotonic_now", RuntimeError),
    ("sleep", (5,), "vudo_sleep", "sleep", OSError),
])
def test_a_raising_time_provider_traps_naming_the_provider_and_host_function(
    export: str, args: tuple[int, ...], host: str, method: str, cause: type[Exception]
) -> None:
    spirit, _ = load(name="timed", mocks=Mocks(time=BrokenClock()))
    with pytest.raises(HostFunctionError) as info:
        spirit.call(export, *args)
    text = str(info.value)
    assert f"host function {host}" in text and f"BrokenClock.{method}()" in text
    assert (info.value.spirit, info.value.function) == ("timed", export)
    assert isinstance(info.value.__cause__, cause)
    assert spirit.call("alloc", 8) != 0  # the Spirit stays usable


def test_a_raising_time_provider_against_the_host_context() -> None:
    ctx = FakeHostContext("ctx", time=BrokenClock())
    with pytest.raises(HostFunctionError, match=r"vudo_now: time provider BrokenClock\.now"):
        time.vudo_now(ctx)()
