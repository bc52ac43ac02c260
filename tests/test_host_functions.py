"""The 22 host functions of host-abi.md, each called by a WAT Spirit through ``spirit.call`` and
observed through the :mod:`vudo.testing` mocks, with the edge cases the ABI pins down.

Also: linking under the three namespaces, the load-time ``LinkError``, the real
``hello_world.wasm``, and the generated ``docs/host-functions.md``.
"""

from __future__ import annotations

import itertools
import logging
import math
import struct
import subprocess
import sys

import pytest
from _helpers_host import (
    MEMORY_1,
    PAGE,
    REPO_ROOT,
    SCRATCH,
    SHARED_SPIRITS,
    Mocks,
    host_module,
    import_decls,
    load,
    message_block,
    put,
    wat,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from vudo import Limits, LoadError, MessageBus, Spirit, load_spirit
from vudo.abi import HOST_FUNCTIONS, EffectId, LogLevel, ResultCode, render_host_functions_markdown
from vudo.errors import LinkError, SpiritAssertionError, SpiritPanic, SpiritTerminated
from vudo.testing import MockDebugHandler, MockLogger, MockRandomProvider, MockTimeProvider

FAST = settings(max_examples=50, deadline=None)
I32 = st.integers(-(2**31), 2**31 - 1)


# ==========================================================================================
# io: vudo_print, vudo_println, vudo_log, vudo_error
# ==========================================================================================
def test_print_writes_text_without_newline() -> None:
    spirit, m = load()
    spirit.call("print", *put(spirit, "Hello"))
    spirit.call("print", *put(spirit, ", World"))
    assert m.logger.outputs == ["Hello", ", World"]
    assert m.logger.output == "Hello, World"
    assert m.logger.records == []


def test_println_appends_a_newline() -> None:
    spirit, m = load()
    spirit.call("println", *put(spirit, "line one"))
    spirit.call("print", *put(spirit, "tail"))
    assert m.logger.output == "line one\ntail"
    assert m.logger.messages == []


def test_print_from_a_data_segment() -> None:
    text = "héllo ✓ 🌀"
    raw = text.encode("utf-8")
    escaped = "".join(f"\\{b:02x}" for b in raw)
    body = f"""
    (data (i32.const 1500) "{escaped}")
    (func (export "greet") (call $vudo_print (i32.const 1500) (i32.const {len(raw)})))
    """
    spirit, m = load(body)
    spirit.call("greet")
    assert m.logger.outputs == [text]


def test_print_invalid_utf8_is_replaced_not_raised() -> None:
    spirit, m = load()
    spirit.call("print", *put(spirit, b"ok\xff\xfe!"))
    assert m.logger.outputs == ["ok\ufffd\ufffd!"]


def test_print_empty_string_at_end_of_memory() -> None:
    spirit, m = load()
    spirit.call("print", PAGE, 0)
    assert m.logger.outputs == [""]


@pytest.mark.parametrize("level", list(LogLevel))
def test_log_at_each_level(level: LogLevel) -> None:
    spirit, m = load()
    spirit.call("log", int(level), *put(spirit, "state changed"))
    assert m.logger.records == [(level, "state changed")]
    assert m.logger.messages == [f"[{level.name}] state changed"]
    assert m.logger.outputs == []


def test_log_invalid_level_is_logged_at_error() -> None:
    spirit, m = load()
    ptr, n = put(spirit, "odd level")

    @FAST
    @given(level=I32.filter(lambda v: not 0 <= v <= 3))
    def check(level: int) -> None:
        m.logger.clear()
        spirit.call("log", level, ptr, n)
        assert m.logger.messages == ["[ERROR] odd level"]
        assert m.logger.errors == ["odd level"]

    check()


def test_error_logs_at_error_and_execution_continues() -> None:
    body = """
    (data (i32.const 1500) "disk on fire")
    (func (export "soft_fail") (result i32)
      (call $vudo_error (i32.const 1500) (i32.const 12))
      (i32.const 7))
    """
    spirit, m = load(body)
    assert spirit.call("soft_fail") == 7
    assert m.logger.errors == ["disk on fire"]
    assert m.logger.records == [(LogLevel.ERROR, "disk on fire")]
    assert spirit.call("soft_fail") == 7  # still usable


def test_default_logger_prints_to_stdout_and_logs_through_logging(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    spirit = load_spirit(wat(host_module()), name="greeter")
    caplog.set_level(logging.DEBUG, logger="vudo.spirit.greeter")
    spirit.call("print", *put(spirit, "a"))
    spirit.call("println", *put(spirit, "b"))
    spirit.call("log", 2, *put(spirit, "careful"))
    spirit.call("log", 99, *put(spirit, "odd"))
    spirit.call("error", *put(spirit, "bad"))
    assert capsys.readouterr().out == "ab\n"
    got = [(r.name, r.levelno, r.getMessage()) for r in caplog.records
           if r.name.startswith("vudo.spirit")]  # (the invalid-level warning: test_parity)
    assert got == [
        ("vudo.spirit.greeter", logging.WARNING, "careful"),
        ("vudo.spirit.greeter", logging.ERROR, "odd"),
        ("vudo.spirit.greeter", logging.ERROR, "bad"),
    ]


# ==========================================================================================
# memory: vudo_alloc, vudo_free, vudo_realloc
# ==========================================================================================
@pytest.mark.parametrize("size", [1, 7, 8, 13, 100, 4096, 70_000])
def test_alloc_is_aligned_zeroed_and_above_the_modules_memory(size: int) -> None:
    spirit, _ = load()
    first = spirit.call("alloc", size)
    spirit.call("fill", first, 0xAA, size)  # the Spirit dirties the block...
    spirit.call("free", first, size)
    ptr = spirit.call("alloc", size)  # ...a new block must come back zeroed anyway
    assert ptr != 0
    assert ptr % 8 == 0
    assert ptr >= PAGE, "host heap must not overlap the module's own memory"
    assert spirit.memory.read_bytes(ptr, size) == bytes(size)


def test_alloc_blocks_never_overlap() -> None:
    spirit, _ = load()

    @FAST
    @given(sizes=st.lists(st.integers(1, 3000), min_size=1, max_size=12))
    def check(sizes: list[int]) -> None:
        blocks = [(spirit.call("alloc", n), n) for n in sizes]
        try:
            assert all(p and p % 8 == 0 for p, _ in blocks)
            spans = sorted(blocks)
            for (p, n), (q, _) in itertools.pairwise(spans):
                assert p + n <= q
        finally:
            for p, n in blocks:
                spirit.call("free", p, n)

    check()


def test_alloc_returns_0_when_memory_cannot_grow() -> None:
    spirit, _ = load(memory='(memory (export "memory") 1 1)')
    assert spirit.call("alloc", 16) == 0
    assert spirit.memory.size == PAGE


def test_alloc_returns_0_on_exhaustion_and_the_heap_stays_usable() -> None:
    spirit, _ = load(memory='(memory (export "memory") 1 3)')
    assert spirit.call("alloc", 2**31 - 1) == 0
    assert spirit.call("alloc", 3 * PAGE) == 0
    assert spirit.call("alloc", -1) == 0  # 0xFFFFFFFF bytes
    ptr = spirit.call("alloc", 64)
    assert ptr >= PAGE


def test_alloc_returns_0_at_the_max_memory_limit() -> None:
    spirit, _ = load(limits=Limits(max_memory=2 * PAGE))
    assert spirit.call("alloc", 2 * PAGE) == 0
    assert spirit.call("alloc", 100) != 0


CHURN = """
(func (export "churn") (param $n i32) (param $size i32) (local $p i32)
  (block $done (loop $again
    (br_if $done (i32.eqz (local.get $n)))
    (local.set $p (call $vudo_alloc (local.get $size)))
    (memory.fill (local.get $p) (i32.const 0x5A) (local.get $size))
    (call $vudo_free (local.get $p) (local.get $size))
    (local.set $n (i32.sub (local.get $n) (i32.const 1)))
    (br $again))))
"""


def test_free_lets_memory_be_reused() -> None:
    spirit, _ = load(CHURN)
    spirit.call("churn", 1, 4096)
    pages = spirit.call("mem_pages")
    spirit.call("churn", 1000, 4096)  # 4 MB if nothing were reused
    assert spirit.call("mem_pages") == pages


def test_free_ignores_pointers_it_did_not_hand_out() -> None:
    spirit, _ = load()
    keep = spirit.call("alloc", 32)
    spirit.call("fill", keep, 0x77, 32)

    @FAST
    @given(ptr=st.integers(0, 2**32 - 1), size=st.integers(0, 2**32 - 1))
    def check(ptr: int, size: int) -> None:
        if ptr == keep:
            return
        spirit.call("free", ptr, size)
        other = spirit.call("alloc", 32)
        assert other + 32 <= keep or other >= keep + 32, "a live block was handed out again"
        spirit.call("free", other, 32)
        assert spirit.memory.read_bytes(keep, 32) == b"\x77" * 32

    check()
    spirit.call("free", keep, 32)
    spirit.call("free", keep, 32)  # double free: ignored
    assert spirit.call("alloc", 8) != 0


def test_realloc_in_place_keeps_data_and_zeroes_the_new_tail() -> None:
    spirit, _ = load()
    big = spirit.call("alloc", 256)
    spirit.call("fill", big, 0xAA, 256)  # dirty the region a grown block will extend into
    spirit.call("free", big, 256)
    ptr = spirit.call("alloc", 16)
    data = bytes(range(1, 17))
    spirit.memory.write_bytes(ptr, data)
    spirit.call("fill", ptr + 16, 0xAA, 64)  # the bytes right after the block are dirty
    new = spirit.call("realloc", ptr, 16, 80)
    assert new != 0 and new % 8 == 0
    assert spirit.memory.read_bytes(new, 16) == data
    assert spirit.memory.read_bytes(new + 16, 64) == bytes(64)


def test_realloc_moving_keeps_data_and_zeroes_the_new_tail() -> None:
    spirit, _ = load()
    ptr = spirit.call("alloc", 24)
    blocker = spirit.call("alloc", 24)  # no room to grow in place
    data = b"twenty-four bytes of dat"
    spirit.memory.write_bytes(ptr, data)
    new = spirit.call("realloc", ptr, 24, 5000)
    assert new not in (0, ptr)
    assert spirit.memory.read_bytes(new, 24) == data
    assert spirit.memory.read_bytes(new + 24, 5000 - 24) == bytes(5000 - 24)
    assert new + 5000 <= blocker or new >= blocker + 24


def test_realloc_shrink_keeps_the_prefix_and_regrowing_zeroes() -> None:
    spirit, _ = load()
    ptr = spirit.call("alloc", 64)
    spirit.call("fill", ptr, 0x33, 64)
    small = spirit.call("realloc", ptr, 64, 16)
    assert small != 0
    assert spirit.memory.read_bytes(small, 16) == b"\x33" * 16
    again = spirit.call("realloc", small, 16, 64)
    assert spirit.memory.read_bytes(again, 64) == b"\x33" * 16 + bytes(48)


def test_realloc_failure_returns_0_and_the_old_block_stays_valid() -> None:
    spirit, _ = load(memory='(memory (export "memory") 1 2)')
    ptr = spirit.call("alloc", 16)
    assert ptr != 0
    spirit.memory.write_bytes(ptr, b"keep me, please!")
    assert spirit.call("realloc", ptr, 16, 3 * PAGE) == 0
    assert spirit.memory.read_bytes(ptr, 16) == b"keep me, please!"
    smaller = spirit.call("realloc", ptr, 16, 8)  # the old block is still a live block
    assert smaller != 0
    assert spirit.memory.read_bytes(smaller, 8) == b"keep me,"


def test_realloc_of_an_unknown_pointer_returns_0() -> None:
    spirit, _ = load()
    assert spirit.call("realloc", SCRATCH, 16, 32) == 0


# ==========================================================================================
# time: vudo_now, vudo_sleep, vudo_monotonic_now
# ==========================================================================================
NAP = """
(func (export "nap") (param i32) (result i64)
  (call $vudo_sleep (local.get 0))
  (call $vudo_now))
"""


def test_now_reads_the_wall_clock_in_ms() -> None:
    clock = MockTimeProvider()
    spirit, _ = load(mocks=Mocks(time=clock))
    clock.set_time(1_700_000_000_123)
    assert spirit.call("now") == 1_700_000_000_123
    clock.advance(5)
    assert spirit.call("now") == 1_700_000_000_128


def test_monotonic_now_is_in_ns_and_ignores_wall_clock_jumps() -> None:
    clock = MockTimeProvider(1_000, monotonic_start_ns=10)
    spirit, _ = load(mocks=Mocks(time=clock))
    assert spirit.call("monotonic_now") == 10
    clock.advance(2)
    assert spirit.call("monotonic_now") == 2_000_010
    clock.set_time(0)
    assert spirit.call("monotonic_now") == 2_000_010


class _BackwardsClock(MockTimeProvider):
    def __init__(self, readings: list[int]) -> None:
        super().__init__()
        self.readings = readings

    def monotonic_now(self) -> int:
        return self.readings.pop(0)


def test_monotonic_now_never_decreases_even_if_the_provider_does() -> None:
    clock = _BackwardsClock([100, 50, 200, 199])
    spirit, _ = load(mocks=Mocks(time=clock))
    assert [spirit.call("monotonic_now") for _ in range(4)] == [100, 100, 200, 200]


def test_sleep_pauses_for_simulated_time() -> None:
    clock = MockTimeProvider(1_000)
    spirit, _ = load(NAP, mocks=Mocks(time=clock))
    assert spirit.call("nap", 250) == 1_250
    assert clock.sleeps == [250]


def test_negative_sleep_means_zero() -> None:
    clock = MockTimeProvider(5_000)
    spirit, _ = load(NAP, mocks=Mocks(time=clock))

    @FAST
    @given(ms=st.integers(-(2**31), -1))
    def check(ms: int) -> None:
        assert spirit.call("nap", ms) == 5_000
        assert all(s >= 0 for s in clock.sleeps), clock.sleeps

    check()
    assert spirit.call("nap", 0) == 5_000


# ==========================================================================================
# messaging: vudo_send, vudo_recv, vudo_pending, vudo_broadcast, vudo_free_message
# ==========================================================================================
def _send(spirit: Spirit, to: str, payload: bytes) -> int:
    to_ptr, to_len = put(spirit, to, SCRATCH)
    p_ptr, p_len = put(spirit, payload, SCRATCH + 256)
    return int(spirit.call("send", to_ptr, to_len, p_ptr, p_len))


def test_a_spirit_alone_sends_to_itself_and_receives_the_exact_layout() -> None:
    spirit, _ = load(name="solo")
    assert spirit.call("pending") == 0
    assert spirit.call("recv") == 0
    assert _send(spirit, "solo", b"\x00\x01payload\xff") == ResultCode.OK
    assert spirit.call("pending") == 1
    ptr = spirit.call("recv")
    assert ptr != 0 and ptr % 4 == 0
    assert ptr >= PAGE, "message blocks live in the host heap, not the module's memory"
    raw = spirit.memory.read_bytes(ptr, 4 + 4 + 4 + 10)
    assert raw[0:4] == struct.pack("<I", 4)
    assert raw[4:8] == b"solo"
    assert raw[8:12] == struct.pack("<I", 10)
    assert raw[12:22] == b"\x00\x01payload\xff"
    assert spirit.call("pending") == 0
    assert spirit.call("recv") == 0


def test_messages_arrive_in_order_with_empty_payloads_allowed() -> None:
    spirit, _ = load(name="solo")
    for payload in (b"first", b"", b"third"):
        assert _send(spirit, "solo", payload) == ResultCode.OK
    assert spirit.call("pending") == 3
    got = []
    for payload in (b"first", b"", b"third"):
        ptr = spirit.call("recv")
        got.append(spirit.memory.read_bytes(ptr, 12 + len(payload)))
        spirit.call("free_message", ptr)
    assert got == [message_block("solo", p) for p in (b"first", b"", b"third")]


def test_send_to_an_unknown_spirit_returns_not_found() -> None:
    spirit, _ = load(name="solo")
    assert _send(spirit, "nobody", b"hi") == ResultCode.NOT_FOUND
    assert spirit.call("pending") == 0


def test_send_to_a_full_inbox_returns_error_and_keeps_the_queue() -> None:
    spirit, _ = load(name="solo", limits=Limits(max_inbox=2))
    assert _send(spirit, "solo", b"1") == ResultCode.OK
    assert _send(spirit, "solo", b"2") == ResultCode.OK
    assert _send(spirit, "solo", b"3") == ResultCode.ERROR
    assert spirit.call("pending") == 2
    ptr = spirit.call("recv")
    assert spirit.memory.read_bytes(ptr, 13) == message_block("solo", b"1")


def test_send_between_two_spirits_names_the_sender() -> None:
    bus = MessageBus()
    a, _ = load(name="alpha", broker=bus)
    b, _ = load(name="beta", broker=bus)
    assert _send(a, "beta", b"ping") == ResultCode.OK
    assert a.call("pending") == 0
    ptr = b.call("recv")
    assert b.memory.read_bytes(ptr, 4 + 5 + 4 + 4) == message_block("alpha", b"ping")


def test_broadcast_reaches_every_spirit_the_sender_included() -> None:
    alone, _ = load(name="solo")
    assert alone.call("broadcast", *put(alone, b"hello all")) == ResultCode.OK
    ptr = alone.call("recv")
    assert alone.memory.read_bytes(ptr, 4 + 4 + 4 + 9) == message_block("solo", b"hello all")

    bus = MessageBus()
    a, _ = load(name="a", broker=bus)
    b, _ = load(name="b", broker=bus)
    assert a.call("broadcast", *put(a, b"x")) == ResultCode.OK
    assert (a.call("pending"), b.call("pending")) == (1, 1)
    ptr = b.call("recv")
    assert b.memory.read_bytes(ptr, 4 + 1 + 4 + 1) == message_block("a", b"x")


ECHO = """
(data (i32.const 2048) "solo")
(func (export "echo_loop") (param $n i32) (param $len i32) (result i32)
  (local $p i32) (local $total i32)
  (block $done (loop $again
    (br_if $done (i32.eqz (local.get $n)))
    (drop (call $vudo_send (i32.const 2048) (i32.const 4) (i32.const 4096) (local.get $len)))
    (local.set $p (call $vudo_recv))
    ;; [4]["solo"][payload_len]: the payload length is at p + 8
    (local.set $total (i32.add (local.get $total) (i32.load offset=8 (local.get $p))))
    (call $vudo_free_message (local.get $p))
    (local.set $n (i32.sub (local.get $n) (i32.const 1)))
    (br $again)))
  (local.get $total))
"""


def test_free_message_memory_is_reused() -> None:
    spirit, _ = load(ECHO, name="solo")
    assert spirit.call("echo_loop", 1, 1000) == 1000
    pages = spirit.call("mem_pages")
    assert spirit.call("echo_loop", 2000, 1000) == 2_000_000  # 2 MB if blocks were not reused
    assert spirit.call("mem_pages") == pages


def test_free_message_ignores_other_pointers_and_double_frees() -> None:
    spirit, _ = load(name="solo")
    _send(spirit, "solo", b"one")
    _send(spirit, "solo", b"two")
    first = spirit.call("recv")
    spirit.call("free_message", first)
    spirit.call("free_message", first)
    spirit.call("free_message", 0)
    spirit.call("free_message", SCRATCH)
    spirit.call("free_message", 2**32 - 1)
    second = spirit.call("recv")
    assert spirit.memory.read_bytes(second, 15) == message_block("solo", b"two")


def test_recv_with_no_room_keeps_the_message_queued() -> None:
    spirit, _ = load(name="solo", memory='(memory (export "memory") 1 1)')
    assert _send(spirit, "solo", b"wait for me") == ResultCode.OK
    assert spirit.call("recv") == 0  # the host heap cannot grow
    assert spirit.call("pending") == 1, "a message that could not be delivered was lost"


# ==========================================================================================
# random: vudo_random, vudo_random_bytes
# ==========================================================================================
def test_random_returns_the_providers_values() -> None:
    rng = MockRandomProvider([0.0, 0.25, 0.999])
    spirit, _ = load(mocks=Mocks(random=rng))
    assert [spirit.call("random") for _ in range(3)] == [0.0, 0.25, 0.999]
    assert rng.random_calls == 3


def test_random_stays_in_range_whatever_the_provider_returns() -> None:
    rng = MockRandomProvider()
    spirit, _ = load(mocks=Mocks(random=rng))

    @FAST
    @given(value=st.floats(allow_nan=False, allow_infinity=False))
    def check(value: float) -> None:
        rng.push(value)
        got = spirit.call("random")
        assert 0.0 <= got < 1.0, (value, got)

    check()


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_random_never_hands_the_spirit_nan(value: float) -> None:
    spirit, _ = load(mocks=Mocks(random=MockRandomProvider([value])))
    got = spirit.call("random")
    assert 0.0 <= got < 1.0


def test_random_with_the_default_provider_is_in_range() -> None:
    spirit = load_spirit(wat(host_module()))
    values = [spirit.call("random") for _ in range(200)]
    assert all(0.0 <= v < 1.0 for v in values)
    assert len(set(values)) > 190


def test_random_bytes_fills_exactly_len_bytes() -> None:
    spirit, m = load(mocks=Mocks(random=MockRandomProvider(seed=7)))
    twin = MockRandomProvider(seed=7)

    @FAST
    @given(n=st.integers(0, 600))
    def check(n: int) -> None:
        spirit.call("fill", SCRATCH - 1, 0xEE, n + 2)
        spirit.call("random_bytes", SCRATCH, n)
        assert spirit.memory.read_bytes(SCRATCH, n) == twin.random_bytes(n)
        assert spirit.call("load8", SCRATCH - 1) == 0xEE
        assert spirit.call("load8", SCRATCH + n) == 0xEE
        assert m.random.byte_requests[-1] == n

    check()


def test_random_bytes_with_the_default_provider() -> None:
    spirit = load_spirit(wat(host_module()))
    spirit.call("random_bytes", SCRATCH, 64)
    first = spirit.memory.read_bytes(SCRATCH, 64)
    spirit.call("random_bytes", SCRATCH, 64)
    assert spirit.memory.read_bytes(SCRATCH, 64) != first


# ==========================================================================================
# effects: vudo_emit_effect, vudo_subscribe
# ==========================================================================================
def test_emit_effect_records_and_returns_result_codes() -> None:
    spirit, m = load()
    fx = m.effects
    fx.set_result(EffectId.HTTP_GET, ResultCode.NOT_PERMITTED)
    fx.register(300, lambda _s, _p: ResultCode.ERROR)
    cases = [
        (EffectId.NOOP, b"", ResultCode.OK),
        (EffectId.HTTP_GET, b"https://example.org", ResultCode.NOT_PERMITTED),
        (300, b"custom", ResultCode.ERROR),
        (999, b"who knows", ResultCode.NOT_FOUND),
    ]
    for effect_id, payload, code in cases:
        ptr, n = put(spirit, payload)
        assert spirit.call("emit_effect", int(effect_id), ptr, n) == code
    assert m.effects.effects == [(int(i), p) for i, p, _ in cases]
    assert not spirit.terminated


def test_effect_results_are_delivered_to_the_inbox() -> None:
    spirit, m = load(name="solo")

    def reverse(target: Spirit, payload: bytes) -> int:
        target.deliver("effect:301", payload[::-1])
        return ResultCode.OK

    m.effects.register(301, reverse)
    assert spirit.call("emit_effect", 301, *put(spirit, b"abc")) == ResultCode.OK
    ptr = spirit.call("recv")
    assert spirit.memory.read_bytes(ptr, 4 + 10 + 4 + 3) == message_block("effect:301", b"cba")


def test_terminate_effect_ends_the_spirit() -> None:
    spirit, m = load()
    with pytest.raises(SpiritTerminated) as err:
        spirit.call("emit_effect", int(EffectId.TERMINATE), *put(spirit, b"job done"))
    assert "job done" in err.value.cause
    assert spirit.terminated
    assert m.effects.effects == [(1, b"job done")]
    with pytest.raises(SpiritTerminated) as later:
        spirit.call("now")
    assert "job done" in later.value.cause


def test_subscribe_to_an_unknown_channel_returns_not_found() -> None:
    spirit, m = load(name="solo")
    assert spirit.call("subscribe", *put(spirit, "nope")) == ResultCode.NOT_FOUND
    assert m.effects.subscriptions == [("solo", "nope", ResultCode.NOT_FOUND)]
    assert m.effects.notify("nope", b"x") == 0
    assert spirit.call("pending") == 0


def test_subscribed_channel_notifications_arrive_in_the_inbox() -> None:
    spirit, m = load(name="solo")
    m.effects.register_channel("ticks")
    assert m.effects.notify("ticks", b"before") == 0
    assert spirit.call("subscribe", *put(spirit, "ticks")) == ResultCode.OK
    assert m.effects.subscriptions == [("solo", "ticks", 0)]
    assert m.effects.notify("ticks", b"t1") == 1
    assert spirit.call("pending") == 1
    ptr = spirit.call("recv")
    assert spirit.memory.read_bytes(ptr, 4 + 13 + 4 + 2) == message_block("channel:ticks", b"t1")


# ==========================================================================================
# debug: vudo_breakpoint, vudo_assert, vudo_panic
# ==========================================================================================
BREAK = """
(func (export "pause") (result i32)
  (i32.store (i32.const 3000) (i32.const 4242))
  (call $vudo_breakpoint)
  (i32.const 5))
"""


def test_breakpoint_reports_the_backtrace_and_lets_the_debugger_look() -> None:
    seen: list[int] = []
    debug = MockDebugHandler(on_breakpoint=lambda s: seen.append(s.memory.read_i32(3000)))
    spirit, _ = load(BREAK, name="dbg", mocks=Mocks(debug=debug), debug=True)
    assert spirit.call("pause") == 5
    assert debug.breakpoints == [("dbg", ["pause", "vudo_breakpoint"])]
    assert seen == [4242], "the debugger sees the Spirit's state at the breakpoint"


def test_breakpoint_reaches_an_attached_handler_without_debug_mode() -> None:
    spirit, m = load(BREAK, name="dbg")
    assert spirit.call("pause") == 5
    assert len(m.debug.breakpoints) == 1
    assert m.debug.breakpoints[0].spirit == "dbg"
    assert m.debug.breakpoints[0].backtrace[-1] == "vudo_breakpoint"


def test_breakpoint_without_a_debugger_has_no_effect(caplog: pytest.LogCaptureFixture) -> None:
    spirit = load_spirit(wat(host_module(BREAK)), name="plain")
    caplog.set_level(logging.DEBUG, logger="vudo.debug")
    assert spirit.call("pause") == 5
    assert spirit.call("pause") == 5
    assert any("plain" in r.getMessage() for r in caplog.records)


_ASSERT_MSG = "balance must not go negative"
ASSERT = f"""
(global $reached (mut i32) (i32.const 0))
(data (i32.const 3000) "{_ASSERT_MSG}")
(func (export "check") (param $cond i32) (result i32)
  (global.set $reached (i32.const 0))
  (call $vudo_assert (local.get $cond) (i32.const 3000) (i32.const {len(_ASSERT_MSG)}))
  (global.set $reached (i32.const 1))
  (i32.const 42))
(func (export "reached") (result i32) (global.get $reached))
"""


def test_assert_with_a_true_condition_does_nothing() -> None:
    spirit, m = load(ASSERT)
    assert spirit.call("check", 1) == 42
    assert spirit.call("check", -7) == 42
    assert m.debug.assertion_failures == []


def test_failed_assert_fails_the_call_and_the_spirit_stays_usable() -> None:
    spirit, m = load(ASSERT, name="bank")
    with pytest.raises(SpiritAssertionError) as err:
        spirit.call("check", 0)
    assert err.value.message == _ASSERT_MSG
    assert err.value.spirit == "bank"
    assert err.value.function == "check"
    assert spirit.call("reached") == 0, "code after a failed assert must not run"
    assert m.debug.assertion_failures == [("bank", _ASSERT_MSG)]
    assert not spirit.terminated
    assert spirit.call("check", 1) == 42
    assert spirit.call("reached") == 1


_PANIC_MSG = "index out of range: 9 >= 3"
PANIC = f"""
(data (i32.const 3000) "{_PANIC_MSG}")
(func (export "explode") (result i32)
  (call $vudo_panic (i32.const 3000) (i32.const {len(_PANIC_MSG)}))
  (i32.const 7))
(func (export "answer") (result i32) (i32.const 42))
"""


def test_panic_terminates_and_every_later_call_is_refused() -> None:
    bus = MessageBus()
    spirit, m = load(PANIC, name="doomed", broker=bus)
    peer, _ = load(name="peer", broker=bus)
    assert spirit.call("answer") == 42
    with pytest.raises(SpiritPanic) as err:
        spirit.call("explode")
    assert err.value.message == _PANIC_MSG
    assert err.value.spirit == "doomed"
    assert spirit.terminated
    assert m.debug.panics == [("doomed", _PANIC_MSG)]
    for export, args in (("answer", ()), ("explode", ()), ("print", (0, 0))):
        with pytest.raises(SpiritTerminated) as later:
            spirit.call(export, *args)
        assert _PANIC_MSG in later.value.cause
    # its inbox is closed, and the rest of the session keeps running
    assert _send(peer, "doomed", b"hello?") == ResultCode.NOT_FOUND
    assert _send(peer, "peer", b"still here") == ResultCode.OK


# ==========================================================================================
# Linking
# ==========================================================================================
@pytest.mark.parametrize("ns", ["vudo", "loa", "env"])
def test_all_22_host_functions_link_under_each_namespace(ns: str) -> None:
    spirit, m = load(ns=ns)
    assert len([f for f in spirit.functions if f not in ("fill", "load8", "mem_pages")]) == 22
    spirit.call("print", *put(spirit, ns))
    assert m.logger.outputs == [ns]


def test_a_module_without_memory_can_import_pointer_free_functions() -> None:
    specs = tuple(s for s in HOST_FUNCTIONS if s.name in ("vudo_now", "vudo_pending"))
    text = f"""(module {import_decls("vudo", specs)}
      (func (export "t") (result i64) (call $vudo_now))
      (func (export "p") (result i32) (call $vudo_pending)))"""
    clock = MockTimeProvider(123)
    spirit = load_spirit(wat(text), time_provider=clock)
    assert not spirit.has_memory
    assert spirit.call("t") == 123
    assert spirit.call("p") == 0


def test_declared_variant_with_an_extra_i32_result_is_satisfied() -> None:
    text = f"""(module
      (import "vudo" "vudo_error" (func $err (param i32 i32) (result i32)))
      {MEMORY_1}
      (data (i32.const 1500) "oops")
      (func (export "e") (result i32) (call $err (i32.const 1500) (i32.const 4))))"""
    logger = MockLogger()
    spirit = load_spirit(wat(text), logger=logger)
    assert spirit.call("e") == 0
    assert logger.errors == ["oops"]


def test_unsatisfiable_imports_fail_with_one_link_error_listing_all() -> None:
    text = f"""(module
      (import "vudo" "vudo_print" (func (param i32)))
      (import "vudo" "vudo_teleport" (func (param i32 i32) (result i32)))
      (import "loa" "vudo_now" (func (result i32)))
      (import "elsewhere" "vudo_println" (func (param i32 i32)))
      (import "env" "vudo_println" (func (param i32 i32)))
      {MEMORY_1})"""
    with pytest.raises(LinkError) as err:
        load_spirit(wat(text))
    got = {(u.module, u.name, u.declared, u.offered) for u in err.value.unresolved}
    assert got == {
        ("vudo", "vudo_print", "(i32) -> ()", "(i32, i32) -> ()"),
        ("vudo", "vudo_teleport", "(i32, i32) -> i32", None),
        ("loa", "vudo_now", "() -> i32", "() -> i64"),
        ("elsewhere", "vudo_println", "(i32, i32) -> ()", None),
    }
    assert isinstance(err.value, LoadError)
    text_of_error = str(err.value)
    for line in ("vudo.vudo_print", "vudo.vudo_teleport", "loa.vudo_now", "elsewhere.vudo_println"):
        assert line in text_of_error


# ==========================================================================================
# A real DOL-compiled Spirit
# ==========================================================================================
def test_hello_world_prints_through_the_logger() -> None:
    path = SHARED_SPIRITS / "hello_world.wasm"
    if not path.is_file():
        pytest.skip(f"real Spirits not available: {path} does not exist")
    logger = MockLogger()
    spirit = load_spirit(path, logger=logger)
    assert spirit.call("greet") is None
    assert logger.outputs == ["Hello, World!"]
    assert logger.records == []
    assert spirit.call("add", 40, 2) == 42


def test_hello_world_with_the_default_logger(capsys: pytest.CaptureFixture[str]) -> None:
    path = SHARED_SPIRITS / "hello_world.wasm"
    if not path.is_file():
        pytest.skip(f"real Spirits not available: {path} does not exist")
    spirit = load_spirit(path)
    spirit.call("greet")
    spirit.call("greet")
    assert capsys.readouterr().out == "Hello, World!Hello, World!"


# ==========================================================================================
# docs/host-functions.md is generated from the table
# ==========================================================================================
DOC = REPO_ROOT / "docs" / "host-functions.md"


def test_host_functions_doc_matches_the_table() -> None:
    assert DOC.is_file(), "generate it with: python -m vudo.abi > docs/host-functions.md"
    assert DOC.read_text(encoding="utf-8") == render_host_functions_markdown(), (
        "docs/host-functions.md is stale; regenerate: python -m vudo.abi > docs/host-functions.md"
    )


def test_python_m_vudo_abi_prints_the_doc() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "vudo.abi"], capture_output=True, text=True, check=True
    ).stdout
    assert out == render_host_functions_markdown()
    for spec in HOST_FUNCTIONS:
        assert f"`{spec.name}`" in out and spec.signature in out
