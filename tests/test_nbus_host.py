"""The host function bodies of vudo._nbus (vudo_send, vudo_recv, ... in C), driven through the
test entry point ``_host_call`` on a bytearray standing in for a Spirit's memory.

The native core wires the same C functions to wasmtime; here they run without the GIL on a
memory of one "module" page that the heap grows a page at a time up to the bytearray's size.
"""

from __future__ import annotations

import pytest

from vudo._runtime import native as _nbus_select
from vudo.abi import ResultCode

nbus = _nbus_select.native_module()
if nbus is None:
    pytest.skip("vudo._nbus is not built (or VUDO_NATIVE=0)", allow_module_level=True)

PAGE = 65536
DONE, FAULT, OVERSIZED = 0, 1, 2
OK, ERROR, NOT_FOUND, INVALID = (int(c) for c in (ResultCode.OK, ResultCode.ERROR,
                                                  ResultCode.NOT_FOUND, ResultCode.INVALID_ARG))


class Spirit:
    """One Spirit's view: its name, a memory (bytearray) and its host heap."""

    def __init__(self, bus: object, name: str, pages: int = 8, **limits: int) -> None:
        self.bus, self.name, self.limits = bus, name, limits
        self.mem = bytearray(b"\xaa") * (pages * PAGE)  # garbage: zeroing is really checked
        self.size = PAGE  # the module's own page; the host heap grows above it
        self.heap = nbus.FreeListAllocator(_no_grow, _no_zero, _no_move)

    def call(self, fn: str, *args: int) -> tuple[int, int]:
        status, result, self.size = nbus._host_call(
            fn, self.bus, self.heap, self.mem, self.size, self.name, args,
            self.limits.get("max_message_size", -1), self.limits.get("max_alloc", -1),
        )
        return status, result

    def put(self, ptr: int, data: bytes) -> tuple[int, int]:
        self.mem[ptr:ptr + len(data)] = data
        return ptr, len(data)

    def send(self, to: bytes, payload: bytes) -> tuple[int, int]:
        return self.call("send", *self.put(100, to), *self.put(1000, payload))

    def recv_block(self) -> tuple[int, str, bytes]:
        status, ptr = self.call("recv")
        assert status == DONE
        if ptr == 0:
            return 0, "", b""
        n = int.from_bytes(self.mem[ptr:ptr + 4], "little")
        sender = self.mem[ptr + 4:ptr + 4 + n].decode()
        m = int.from_bytes(self.mem[ptr + 4 + n:ptr + 8 + n], "little")
        return ptr, sender, bytes(self.mem[ptr + 8 + n:ptr + 8 + n + m])


def _no_grow(_n: int) -> None:
    raise AssertionError("the host functions grow memory in C, not through Python")


def _no_zero(_p: int, _n: int) -> None:
    raise AssertionError("zeroing goes through the memory base in C")


def _no_move(_d: int, _s: int, _n: int) -> None:
    raise AssertionError("moving goes through the memory base in C")


@pytest.fixture
def bus() -> object:
    b = nbus.MessageBus(capacity=4)
    for name in ("a", "b"):
        b.register(name)
    return b


def test_send_then_recv_writes_the_message_block(bus) -> None:
    a, b = Spirit(bus, "a"), Spirit(bus, "b")
    payload = bytes(range(64))
    assert a.send(b"b", payload) == (DONE, OK)
    assert b.call("pending") == (DONE, 1)
    ptr, sender, got = b.recv_block()
    assert ptr >= PAGE and ptr % 8 == 0  # in the host heap, above the module's memory
    assert (sender, got) == ("a", payload)
    assert b.size == 2 * PAGE  # grown once, by one page
    assert b.call("pending") == (DONE, 0) and b.call("recv") == (DONE, 0)
    msg_size = b.heap.size_of(ptr)
    assert msg_size is not None and msg_size >= 8 + 1 + 64


def test_send_codes_and_faults(bus) -> None:
    a = Spirit(bus, "a")
    assert a.send(b"ghost", b"x") == (DONE, NOT_FOUND)
    for _ in range(4):
        assert a.send(b"b", b"x") == (DONE, OK)
    assert a.send(b"b", b"x") == (DONE, ERROR)  # inbox full (capacity 4)
    assert a.call("send", 8 * PAGE - 1, 2, 1000, 1)[0] == FAULT  # name beyond memory
    assert a.call("send", 100, 1, 0xFFFF_FFF0, 32)[0] == FAULT  # payload wraps 32 bits
    assert bus.pending("b") == 4


def test_oversized_payloads_are_refused_but_bad_pointers_still_fault(bus) -> None:
    a = Spirit(bus, "a", max_message_size=16)
    assert a.send(b"b", b"y" * 17) == (OVERSIZED, INVALID)
    assert a.call("send", *a.put(100, b"b"), 8 * PAGE - 4, 17)[0] == FAULT
    assert a.call("broadcast", 1000, 17) == (OVERSIZED, INVALID)
    assert a.send(b"b", b"y" * 16) == (DONE, OK)
    assert bus.pending("b") == 1


def test_an_invalid_utf8_name_is_read_with_replacement(bus) -> None:
    bus.register("\ufffdx")
    a = Spirit(bus, "a")
    assert a.send(b"\xffx", b"hi") == (DONE, OK)  # as read_string(..., "replace") reads it
    msg = bus.recv("\ufffdx")
    assert msg is not None and msg.payload == b"hi"


def test_a_full_heap_leaves_the_message_queued(bus) -> None:
    bus.post("a", "b", b"m" * 100)
    b = Spirit(bus, "b", pages=1)  # no page to grow into
    assert b.call("recv") == (DONE, 0)
    assert bus.pending("b") == 1
    b.mem += bytes(PAGE)  # room appears: the same message arrives
    ptr, sender, payload = b.recv_block()
    assert ptr and (sender, payload) == ("a", b"m" * 100)


def test_free_message_frees_only_received_blocks(bus) -> None:
    b = Spirit(bus, "b")
    status, block = b.call("alloc", 40)
    assert status == DONE and block
    b.call("free_message", block)  # not a message block: left alone
    assert b.heap.size_of(block) == 40
    bus.post("a", "b", b"x")
    ptr, _, _ = b.recv_block()
    b.call("free_message", ptr)
    assert b.heap.size_of(ptr) is None
    b.call("free_message", ptr)  # twice: ignored
    assert b.heap.in_use == 40


def test_receiving_and_freeing_keeps_the_heap_flat(bus) -> None:
    b = Spirit(bus, "b")
    for i in range(5_000):
        assert bus.post("a", "b", i.to_bytes(4, "little") * 16) == ResultCode.OK
        ptr, _, payload = b.recv_block()
        assert payload == i.to_bytes(4, "little") * 16
        b.call("free_message", ptr)
    assert b.heap.in_use == 0 and b.heap.heap_bytes == PAGE and b.size == 2 * PAGE


def test_alloc_free_realloc(bus) -> None:
    s = Spirit(bus, "a", max_alloc=10_000)
    status, p = s.call("alloc", 100)
    assert status == DONE and p % 8 == 0 and s.mem[p:p + 100] == bytes(100)
    assert s.call("alloc", -1) == (DONE, 0)
    assert s.call("alloc", 10_001) == (DONE, 0)  # over max_alloc
    s.put(p, b"\x11" * 100)
    _, blocker = s.call("alloc", 8)
    status, q = s.call("realloc", p, 100, 300)  # moves (the next block is taken)
    assert status == DONE and q not in (0, p)
    assert s.mem[q:q + 100] == b"\x11" * 100 and s.mem[q + 100:q + 300] == bytes(200)
    assert s.call("realloc", q, 300, -5) == (DONE, 0)
    assert s.call("realloc", q, 300, 20_000) == (DONE, 0)  # over max_alloc: old block kept
    assert s.heap.size_of(q) is not None
    assert s.call("free", q, 300) == (DONE, 0)
    assert s.heap.size_of(q) is None and s.heap.size_of(blocker) == 8
    status, r = s.call("realloc", 0, 0, 16)  # realloc(0) allocates
    assert status == DONE and r


def test_broadcast_reaches_everyone_or_says_error(bus) -> None:
    a = Spirit(bus, "a")
    assert a.call("broadcast", *a.put(1000, b"all")) == (DONE, OK)
    assert bus.pending("a") == 1 and bus.pending("b") == 1
    for _ in range(3):
        bus.post("x", "b", b"fill")
    assert a.call("broadcast", 1000, 3) == (DONE, ERROR)  # b is full
    assert bus.pending("a") == 2


@pytest.mark.parametrize(
    ("raw", "name"),
    [(b"\xc3\xa9t\xc3\xa9", "été"), (b"\xf0\x9f\x91\xbb", "\U0001f47b"),  # valid: as is
     (b"\xed\xa0\x80", "\ufffd" * 3), (b"\xc0\xaf", "\ufffd" * 2), (b"a\xe2\x82", "a\ufffd")],
)
def test_recipient_names_decode_as_read_string_does(raw: bytes, name: str) -> None:
    assert raw.decode("utf-8", "replace") == name  # what the Python Loa would look up
    bus = nbus.MessageBus()
    bus.register(name)
    assert Spirit(bus, "a").send(raw, b"x") == (DONE, OK)
    assert bus.pending(name) == 1
