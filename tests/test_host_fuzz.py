"""Property-based tests: every host function that takes a pointer, given pointers and lengths
outside the memory (including ``ptr + len`` wrapping past 2**32) or invalid UTF-8.

host-abi.md: "A pointer/length pair that reaches outside the memory never corrupts or crashes
the host: the host function traps the Spirit, and the Python caller gets a typed error naming the
Spirit, the host function, the pointer, the length and the memory size."
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from _helpers_host import PAGE, SCRATCH, import_decls, load, message_block, put, wat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vudo import Spirit, load_spirit
from vudo.abi import HOST_FUNCTIONS, EffectId, HostFunctionSpec, LogLevel, ResultCode
from vudo.errors import MemoryAccessError, SpiritAssertionError, SpiritPanic, SpiritTerminated
from vudo.testing import MockLogger

FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much]
)
FEW = settings(max_examples=25, deadline=None)
U32 = 2**32 - 1
#: ``Limits.max_message_size`` default: payloads above it are refused before being read.
MESSAGE_CAP = 1 << 20


def pointer_pairs(spec: HostFunctionSpec) -> list[int]:
    """Indices of the ``(..._ptr, ..._len)`` parameter pairs of a host function."""
    names = [n for n, _ in spec.params]
    return [
        i for i in range(len(names) - 1)
        if names[i].endswith("ptr") and names[i + 1].endswith("len")
    ]


#: (host function, index of the pair to fuzz) for every pointer pair of the ABI, derived from
#: the table so a new pointer-taking host function is fuzzed too. ``vudo_panic`` terminates the
#: Spirit whatever happens and is tested separately below.
CASES = [
    (spec, i) for spec in HOST_FUNCTIONS if spec.name != "vudo_panic" for i in pointer_pairs(spec)
]


def _is_payload(spec: HostFunctionSpec, index: int) -> bool:
    return spec.name in ("vudo_send", "vudo_broadcast") and spec.params[index][0] != "to_ptr"


def out_of_bounds(size: int, max_len: int = U32) -> st.SearchStrategy[tuple[int, int]]:
    """``(ptr, len)`` pairs with ``ptr + len > size``, as u32 values the Spirit could pass."""
    anywhere = st.tuples(st.integers(0, U32), st.integers(0, max_len)).filter(
        lambda p: p[0] + p[1] > size
    )
    just_past_the_end = st.integers(0, size).flatmap(
        lambda p: st.tuples(st.just(p), st.integers(size - p + 1, min(max_len, size - p + 64)))
    )
    # ptr + len wraps past 2**32 to land back inside the memory: a 32-bit bounds check
    # (ptr + len <= size computed modulo 2**32) would wrongly accept these.
    wrapping = st.integers(1, min(max_len, 2**32 - size - 1)).flatmap(
        lambda n: st.tuples(st.integers(2**32 - n, min(U32, 2**32 - n + size)), st.just(n))
    )
    beyond = st.tuples(st.integers(size + 1, U32), st.just(0))
    return st.one_of(anywhere, just_past_the_end, wrapping, beyond)


def _args(
    spec: HostFunctionSpec, index: int, pair: tuple[int, int], valid: tuple[int, int]
) -> list[int]:
    """Arguments for ``spec``: ``pair`` at ``index``, ``valid`` for any other pointer pair."""
    args: list[int] = []
    pairs = pointer_pairs(spec)
    i = 0
    while i < len(spec.params):
        if i in pairs:
            args += pair if i == index else valid
            i += 2
            continue
        pname = spec.params[i][0]
        args.append({"level": 1, "cond": 0, "id": 0}.get(pname, 0))
        i += 1
    return args


@pytest.mark.parametrize(
    ("spec", "index"), CASES, ids=[f"{s.name}-{s.params[i][0]}" for s, i in CASES]
)
def test_out_of_bounds_pointer_raises_memory_access_error_naming_the_function(
    spec: HostFunctionSpec, index: int
) -> None:
    spirit, mocks = load(name="fuzz")
    valid = put(spirit, "fuzz")  # the Spirit's own name: a valid string and a known Spirit
    export = spec.name.removeprefix("vudo_")
    size = spirit.memory.size
    max_len = MESSAGE_CAP if _is_payload(spec, index) else U32

    @FUZZ
    @given(pair=out_of_bounds(size, max_len))
    def check(pair: tuple[int, int]) -> None:
        with pytest.raises(MemoryAccessError) as err:
            spirit.call(export, *_args(spec, index, pair, valid))
        e = err.value
        assert e.function == spec.name
        assert e.spirit == "fuzz"
        assert (e.ptr, e.length, e.memory_size) == (pair[0], pair[1], size)
        for part in (spec.name, "fuzz", str(pair[0]), str(pair[1]), str(size)):
            assert part in str(e)
        assert mocks.quiet(), "a provider saw a call whose arguments were out of bounds"
        assert spirit.call("pending") == 0

    check()
    # The Spirit was trapped, not terminated: it keeps working.
    assert not spirit.terminated
    spirit.call("print", *put(spirit, "still alive"))
    assert mocks.logger.outputs == ["still alive"]


def test_a_spirit_without_memory_gets_memory_access_errors() -> None:
    specs = tuple(s for s in HOST_FUNCTIONS if s.name == "vudo_print")
    text = f"""(module {import_decls("vudo", specs)}
      (func (export "print") (param i32 i32) (call $vudo_print (local.get 0) (local.get 1))))"""
    logger = MockLogger()
    spirit = load_spirit(wat(text), logger=logger)

    @FEW
    @given(pair=out_of_bounds(0))
    def check(pair: tuple[int, int]) -> None:
        with pytest.raises(MemoryAccessError) as err:
            spirit.call("print", *pair)
        assert err.value.function == "vudo_print"
        assert err.value.memory_size == 0

    check()
    assert logger.outputs == []


@pytest.mark.parametrize("export", ["send", "broadcast"])
def test_oversized_out_of_bounds_payload_is_a_memory_access_error(export: str) -> None:
    spirit, _ = load(name="fuzz")
    to = put(spirit, "fuzz")
    args = [*to, U32 - 15, 2**31] if export == "send" else [U32 - 15, 2**31]
    with pytest.raises(MemoryAccessError) as err:
        spirit.call(export, *args)
    assert err.value.function == f"vudo_{export}"


# ------------------------------------------------------------------------------------------
# vudo_panic: terminates whatever the message pointer
# ------------------------------------------------------------------------------------------
def test_panic_with_an_out_of_bounds_message_still_terminates() -> None:
    @FEW
    @given(pair=out_of_bounds(PAGE))
    def check(pair: tuple[int, int]) -> None:
        spirit, mocks = load(name="fuzz")
        with pytest.raises(SpiritPanic) as err:
            spirit.call("panic", *pair)
        cause = err.value.__cause__
        assert isinstance(cause, MemoryAccessError)
        assert (cause.function, cause.ptr, cause.length) == ("vudo_panic", *pair)
        assert len(mocks.debug.panics) == 1
        assert spirit.terminated
        with pytest.raises(SpiritTerminated):
            spirit.call("now")

    check()


def test_panic_with_an_out_of_bounds_message_names_vudo_panic() -> None:
    spirit, _ = load(name="fuzz")
    with pytest.raises(SpiritPanic) as err:
        spirit.call("panic", U32 - 3, 8)
    cause = err.value.__cause__
    assert isinstance(cause, MemoryAccessError)
    assert (cause.function, cause.ptr, cause.length) == ("vudo_panic", U32 - 3, 8)


# ------------------------------------------------------------------------------------------
# Invalid UTF-8: decoded with U+FFFD replacements, never an exception in the host
# ------------------------------------------------------------------------------------------
texts = st.one_of(
    st.binary(max_size=120),
    st.text(max_size=40).map(lambda t: t.encode("utf-8")),
    st.tuples(st.text(max_size=10), st.binary(min_size=1, max_size=4)).map(
        lambda t: t[0].encode("utf-8") + b"\xff" + t[1]
    ),
)


def _decoded(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def test_text_functions_decode_invalid_utf8_with_replacement() -> None:
    spirit, m = load(name="fuzz")

    @FUZZ
    @given(data=texts)
    def check(data: bytes) -> None:
        m.logger.clear()
        text = _decoded(data)
        ptr, n = put(spirit, data)
        spirit.call("print", ptr, n)
        spirit.call("println", ptr, n)
        spirit.call("log", 1, ptr, n)
        spirit.call("log", 77, ptr, n)
        spirit.call("error", ptr, n)
        assert m.logger.outputs == [text, text + "\n"]
        assert m.logger.records == [
            (LogLevel.INFO, text), (LogLevel.ERROR, text), (LogLevel.ERROR, text),
        ]

    check()


def test_assert_message_with_invalid_utf8() -> None:
    spirit, m = load(name="fuzz")

    @FUZZ
    @given(data=texts)
    def check(data: bytes) -> None:
        with pytest.raises(SpiritAssertionError) as err:
            spirit.call("assert", 0, *put(spirit, data))
        assert err.value.message == _decoded(data)
        assert m.debug.assertion_failures[-1] == ("fuzz", _decoded(data))

    check()
    assert not spirit.terminated


def test_panic_message_with_invalid_utf8() -> None:
    @FEW
    @given(data=texts)
    def check(data: bytes) -> None:
        spirit, m = load(name="fuzz")
        with pytest.raises(SpiritPanic) as err:
            spirit.call("panic", *put(spirit, data))
        assert err.value.message == _decoded(data)
        assert m.debug.panics == [("fuzz", _decoded(data))]

    check()


def test_channel_and_recipient_names_with_invalid_utf8() -> None:
    spirit, m = load(name="fuzz")

    @FUZZ
    @given(data=texts)
    def check(data: bytes) -> None:
        name = _decoded(data)
        ptr, n = put(spirit, data)
        expected = ResultCode.OK if name == "fuzz" else ResultCode.NOT_FOUND
        assert spirit.call("send", ptr, n, ptr, n) == expected
        if expected == ResultCode.OK:
            spirit.call("free_message", spirit.call("recv"))
        m.effects.register_channel(name)
        assert spirit.call("subscribe", ptr, n) == ResultCode.OK
        assert m.effects.subscriptions[-1] == ("fuzz", name, ResultCode.OK)

    check()


def test_binary_payloads_arrive_unchanged() -> None:
    spirit, m = load(name="fuzz")
    to = put(spirit, "fuzz", SCRATCH)

    @FUZZ
    @given(
        data=st.binary(max_size=300),
        effect_id=st.integers(-(2**31), 2**31 - 1).filter(lambda i: i != EffectId.TERMINATE),
    )
    def check(data: bytes, effect_id: int) -> None:
        ptr, n = put(spirit, data, SCRATCH + 64)
        assert spirit.call("send", *to, ptr, n) == ResultCode.OK
        msg = spirit.call("recv")
        assert spirit.memory.read_bytes(msg, 12 + len(data)) == message_block("fuzz", data)
        spirit.call("free_message", msg)
        spirit.call("emit_effect", effect_id, ptr, n)
        assert m.effects.effects[-1] == (effect_id, data)

    check()


# ------------------------------------------------------------------------------------------
# Host-heap handles: arbitrary pointers never corrupt the heap
# ------------------------------------------------------------------------------------------
def _heap_intact(spirit: Spirit, block: int, size: int, byte: int) -> Callable[[], None]:
    def check() -> None:
        assert spirit.memory.read_bytes(block, size) == bytes([byte]) * size
        other = spirit.call("alloc", size)
        assert other != 0 and (other + size <= block or other >= block + size)
        spirit.call("free", other, size)

    return check


def test_realloc_and_free_message_with_arbitrary_pointers() -> None:
    spirit, _ = load(name="fuzz")
    block = spirit.call("alloc", 40)
    spirit.call("fill", block, 0x5C, 40)
    intact = _heap_intact(spirit, block, 40, 0x5C)
    spirit.call("send", *put(spirit, "fuzz"), *put(spirit, b"msg", SCRATCH + 16))
    msg = spirit.call("recv")

    @FUZZ
    @given(
        ptr=st.integers(1, U32).filter(lambda p: p not in (block, msg)),
        old=st.integers(0, U32),
        new=st.integers(0, U32),
    )
    def check(ptr: int, old: int, new: int) -> None:
        assert spirit.call("realloc", ptr, old, new) == 0  # not a block: refused
        spirit.call("free_message", ptr)
        spirit.call("free", ptr, old)
        intact()
        assert spirit.memory.read_bytes(msg, 15) == message_block("fuzz", b"msg")

    check()
