"""Each of the 22 host functions, unit-tested against the host context double (no wasm)."""

from __future__ import annotations

import logging
import struct
from typing import ClassVar

import pytest

from vudo import Limits
from vudo._host.loas import CORE_LOA, debug, effects, io, memory, messaging, random, time
from vudo.abi import HOST_FUNCTIONS, EffectId, LogLevel, ResultCode
from vudo.errors import (
    HostHeapExhausted,
    MemoryAccessError,
    SpiritAssertionError,
    SpiritPanic,
    SpiritTerminated,
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

OK, ERROR, NOT_FOUND, INVALID = (int(ResultCode.OK), int(ResultCode.ERROR),
                                 int(ResultCode.NOT_FOUND), int(ResultCode.INVALID_ARG))


def put(ctx: FakeHostContext, data: bytes, at: int = 64) -> tuple[int, int]:
    ctx.memory.write_bytes(at, data)
    return at, len(data)


def test_every_abi_function_has_a_unit_tested_implementation() -> None:
    assert set(CORE_LOA.functions) == {spec.name for spec in HOST_FUNCTIONS}
    tested = {name.removeprefix("test_").split("__")[0] for name in globals()
              if name.startswith("test_vudo_")}
    assert tested == {spec.name for spec in HOST_FUNCTIONS}


# -------------------------------------------------------------------------------- io
def test_vudo_print__writes_text_without_a_newline() -> None:
    ctx = FakeHostContext()
    io.vudo_print(ctx)(*put(ctx, "héllo".encode()))
    assert isinstance(ctx.logger, MockLogger) and ctx.logger.output == "héllo"


def test_vudo_println__adds_the_newline() -> None:
    ctx = FakeHostContext()
    io.vudo_println(ctx)(*put(ctx, b"line"))
    assert isinstance(ctx.logger, MockLogger) and ctx.logger.output == "line\n"


def test_vudo_log__levels_outside_the_range_are_errors() -> None:
    ctx = FakeHostContext()
    log = io.vudo_log(ctx)
    log(1, *put(ctx, b"info"))
    log(99, *put(ctx, b"odd"))
    assert isinstance(ctx.logger, MockLogger)
    assert [(r.level, r.text) for r in ctx.logger.records] == [
        (LogLevel.INFO, "info"), (LogLevel.ERROR, "odd")]


def test_vudo_log__an_invalid_level_is_also_warned_about(
    caplog: pytest.LogCaptureFixture
) -> None:
    ctx = FakeHostContext("leveller")
    with caplog.at_level(logging.WARNING, logger="vudo.host"):
        io.vudo_log(ctx)(-3, *put(ctx, b"odd"))
    assert [r.getMessage() for r in caplog.records] == [
        "vudo_log: Spirit 'leveller' used invalid log level -3; logged as ERROR"]


def test_text_functions__refuse_text_over_max_string_length() -> None:
    ctx = FakeHostContext(limits=Limits(max_string_length=2))
    for factory in (io.vudo_print, io.vudo_println, io.vudo_error):
        factory(ctx)(*put(ctx, b"abc"))
    io.vudo_log(ctx)(1, *put(ctx, b"abc"))
    assert isinstance(ctx.logger, MockLogger)
    assert ctx.logger.outputs == [] and ctx.logger.records == []


def test_vudo_error__logs_at_error_and_rejects_bad_pointers() -> None:
    ctx = FakeHostContext()
    io.vudo_error(ctx)(*put(ctx, b"bad"))
    assert isinstance(ctx.logger, MockLogger)
    assert ctx.logger.records[-1].level == LogLevel.ERROR
    with pytest.raises(MemoryAccessError):
        io.vudo_error(ctx)(ctx.memory.size - 1, 2)


def test_invalid_utf8_is_replaced_not_raised() -> None:
    ctx = FakeHostContext()
    io.vudo_print(ctx)(*put(ctx, b"a\xffb"))
    assert isinstance(ctx.logger, MockLogger) and ctx.logger.output == "a\ufffdb"


# -------------------------------------------------------------------------------- memory
def test_vudo_alloc__zeroed_aligned_blocks_and_zero_for_negative_sizes() -> None:
    ctx = FakeHostContext()
    alloc = memory.vudo_alloc(ctx)
    ptr = alloc(24)
    assert ptr % 8 == 0 and ptr >= ctx.memory.heap_floor
    assert ctx.memory.read_bytes(ptr, 24) == bytes(24)
    assert alloc(-1) == 0
    assert alloc(0) == 0


def test_vudo_alloc__over_max_alloc_returns_zero() -> None:
    ctx = FakeHostContext(limits=Limits(max_alloc=32))
    assert memory.vudo_alloc(ctx)(33) == 0 and memory.vudo_alloc(ctx)(32) != 0


def test_vudo_free__ignores_pointers_it_did_not_hand_out() -> None:
    ctx = FakeHostContext()
    ptr = memory.vudo_alloc(ctx)(16)
    memory.vudo_free(ctx)(12345, 16)  # not a block: ignored
    memory.vudo_free(ctx)(ptr, 16)
    assert ctx.memory.allocator.in_use == 0


def test_vudo_realloc__keeps_the_prefix_and_fails_with_the_old_block_valid() -> None:
    ctx = FakeHostContext(memory=FakeMemory(1, max_pages=2))
    ptr = memory.vudo_alloc(ctx)(8)
    ctx.memory.write_bytes(ptr, b"12345678")
    bigger = memory.vudo_realloc(ctx)(ptr, 8, 64)
    assert ctx.memory.read_bytes(bigger, 8) == b"12345678"
    assert ctx.memory.read_bytes(bigger + 8, 56) == bytes(56)
    assert memory.vudo_realloc(ctx)(bigger, 64, 10 * 65536) == 0  # over max_pages
    assert ctx.memory.read_bytes(bigger, 8) == b"12345678"
    assert memory.vudo_realloc(ctx)(bigger, 64, -5) == 0
    assert memory.vudo_realloc(ctx)(bigger, -64, 8) == 0  # a negative old size too
    assert ctx.memory.read_bytes(bigger, 8) == b"12345678"


# -------------------------------------------------------------------------------- time
def test_vudo_now__comes_from_the_time_provider() -> None:
    ctx = FakeHostContext(time=MockTimeProvider(start_ms=1_234))
    assert time.vudo_now(ctx)() == 1_234


def test_vudo_sleep__is_the_contexts_sleep() -> None:
    clock = MockTimeProvider()
    ctx = FakeHostContext(time=clock)
    time.vudo_sleep(ctx)(250)
    time.vudo_sleep(ctx)(-3)
    assert ctx.slept == [250, 0] and clock.now() == 250


def test_vudo_sleep__over_max_sleep_is_refused() -> None:
    ctx = FakeHostContext(limits=Limits(max_sleep=1))
    time.vudo_sleep(ctx)(1001)
    time.vudo_sleep(ctx)(1000)
    assert ctx.slept == [1000]


def test_vudo_monotonic_now__never_decreases() -> None:
    class Backwards(MockTimeProvider):
        values: ClassVar[list[int]] = [5, 3, 9]

        def monotonic_now(self) -> int:
            return self.values.pop(0)

    now = time.vudo_monotonic_now(FakeHostContext(time=Backwards()))
    assert [now(), now(), now()] == [5, 5, 9]


# -------------------------------------------------------------------------------- messaging
def test_vudo_send__ok_not_found_full_and_oversized() -> None:
    ctx = FakeHostContext(limits=Limits(max_message_size=8))
    ctx.bus.register("peer", capacity=1)
    send = messaging.vudo_send(ctx)
    to = put(ctx, b"peer", 0)
    nobody = put(ctx, b"nobody", 16)
    payload = put(ctx, b"hi", 64)
    assert send(*to, *payload) == OK
    assert send(*to, *payload) == ERROR  # capacity 1
    assert send(*nobody, *payload) == NOT_FOUND
    assert send(*to, 64, 9) == INVALID  # over max_message_size
    assert ctx.bus.recv("peer") is not None


def test_vudo_recv__writes_the_message_block_and_zero_when_empty() -> None:
    ctx = FakeHostContext()
    recv = messaging.vudo_recv(ctx)
    assert recv() == 0
    ctx.bus.register("src")
    ctx.bus.post("src", ctx.name, b"payload")
    ptr = recv()
    mem = ctx.memory
    assert mem.read_u32(ptr) == 3 and mem.read_bytes(ptr + 4, 3) == b"src"
    assert mem.read_u32(ptr + 7) == 7 and mem.read_bytes(ptr + 11, 7) == b"payload"
    assert ptr in ctx.inbox.outstanding


def test_vudo_recv__a_full_heap_leaves_the_message_queued() -> None:
    ctx = FakeHostContext(memory=FakeMemory(1, max_pages=1))
    ctx.bus.register("src")
    ctx.bus.post("src", ctx.name, bytes(70_000))  # larger than the heap can ever hold
    assert messaging.vudo_recv(ctx)() == 0
    assert ctx.bus.pending(ctx.name) == 1


def test_vudo_pending__counts_the_inbox() -> None:
    ctx = FakeHostContext()
    ctx.bus.register("src")
    for _ in range(3):
        ctx.bus.post("src", ctx.name, b"x")
    assert messaging.vudo_pending(ctx)() == 3


def test_vudo_broadcast__reaches_everyone_including_the_sender() -> None:
    ctx = FakeHostContext()
    ctx.bus.register("a")
    ctx.bus.register("full", capacity=1)
    ctx.bus.post("x", "full", b"already")
    broadcast = messaging.vudo_broadcast(ctx)
    assert broadcast(*put(ctx, b"all")) == ERROR  # "full" refused it
    assert ctx.bus.pending(ctx.name) == 1 and ctx.bus.pending("a") == 1


def test_vudo_free_message__frees_only_received_blocks() -> None:
    ctx = FakeHostContext()
    ctx.bus.register("src")
    ctx.bus.post("src", ctx.name, b"m")
    ptr = messaging.vudo_recv(ctx)()
    free = messaging.vudo_free_message(ctx)
    free(ptr + 8)  # not a block the Spirit received: ignored
    assert ctx.memory.allocator.in_use > 0
    free(ptr)
    assert ctx.memory.allocator.in_use == 0 and not ctx.inbox.outstanding


# -------------------------------------------------------------------------------- random
def test_vudo_random__folds_bad_provider_values_into_range() -> None:
    rand = random.vudo_random(FakeHostContext(random=MockRandomProvider([0.25, 1.5, float("nan")])))
    assert [rand(), rand(), rand()] == [0.25, 0.5, 0.0]


def test_vudo_random_bytes__checks_bounds_before_generating() -> None:
    provider = MockRandomProvider(seed=7)
    ctx = FakeHostContext(random=provider)
    fill = random.vudo_random_bytes(ctx)
    fill(100, 16)
    assert ctx.memory.read_bytes(100, 16) != bytes(16)
    with pytest.raises(MemoryAccessError):
        fill(ctx.memory.size - 4, 16)


# -------------------------------------------------------------------------------- effects
def test_vudo_emit_effect__returns_the_handlers_code_and_stops_on_terminate() -> None:
    handler = MockEffectHandler({99: ResultCode.NOT_PERMITTED})
    ctx = FakeHostContext(effects=handler)
    emit = effects.vudo_emit_effect(ctx)
    assert emit(99, *put(ctx, b"x")) == int(ResultCode.NOT_PERMITTED)
    assert emit(int(EffectId.NOOP), 0, 0) == OK
    with pytest.raises(SpiritTerminated):
        emit(int(EffectId.TERMINATE), *put(ctx, b"bye"))
    assert ctx.terminations == ["TERMINATE effect: bye"]
    assert [e.effect_id for e in handler.effects] == [99, 0, 1]


def test_vudo_subscribe__reaches_the_handler() -> None:
    handler = MockEffectHandler()
    handler.register_channel("news")
    ctx = FakeHostContext(effects=handler)
    subscribe = effects.vudo_subscribe(ctx)
    assert subscribe(*put(ctx, b"news")) == OK
    assert subscribe(*put(ctx, b"nothing")) == NOT_FOUND
    assert handler.notify("news", b"hello") == 1
    assert ctx.bus.recv(ctx.name).payload == b"hello"  # type: ignore[union-attr]


# -------------------------------------------------------------------------------- debug
def test_vudo_breakpoint__reports_the_call_stack() -> None:
    debugger = MockDebugHandler()
    ctx = FakeHostContext(debugger=debugger, call_stack=["main", "inner"])
    debug.vudo_breakpoint(ctx)()
    assert debugger.breakpoints[0].backtrace == ["main", "inner", "vudo_breakpoint"]


def test_vudo_assert__fails_only_when_false() -> None:
    debugger = MockDebugHandler()
    ctx = FakeHostContext(debugger=debugger, call_stack=["check"])
    check = debug.vudo_assert(ctx)
    check(1, *put(ctx, b"fine"))
    with pytest.raises(SpiritAssertionError) as info:
        check(0, *put(ctx, b"broken"))
    assert info.value.function == "check" and info.value.message == "broken"
    assert [m.message for m in debugger.assertion_failures] == ["broken"]


def test_vudo_panic__raises_even_with_an_unreadable_message() -> None:
    debugger = MockDebugHandler()
    ctx = FakeHostContext(debugger=debugger)
    with pytest.raises(SpiritPanic, match="unreadable"):
        debug.vudo_panic(ctx)(ctx.memory.size, 10)
    with pytest.raises(SpiritPanic, match="boom"):
        debug.vudo_panic(ctx)(*put(ctx, b"boom"))
    assert len(debugger.panics) == 2


# -------------------------------------------------------------------------------- memory helpers
def test_encode_string_on_an_exhausted_heap_is_a_vudo_error() -> None:
    mem = FakeMemory(1, max_pages=1)
    with pytest.raises(HostHeapExhausted) as info:
        mem.encode_string("x" * 70_000)
    assert isinstance(info.value, MemoryError)


def test_fake_memory_is_bounds_checked_like_a_real_one() -> None:
    mem = FakeMemory(1, max_pages=2)
    assert mem.grow(1) == 1 and mem.size == 2 * 65536
    assert mem.grow(1) == -1
    mem.write_bytes(0, struct.pack("<I", 7))
    assert mem.read_u32(0) == 7
    with pytest.raises(MemoryAccessError):
        mem.read_bytes(2 * 65536 - 2, 4)
