"""The messaging Loa: ``vudo_send``, ``vudo_recv``, ``vudo_pending``, ``vudo_broadcast``,
``vudo_free_message``.

A received message is one host-heap block ``[sender_len u32][sender][payload_len u32][payload]``;
the message leaves the inbox only once that block is written, so a full heap never loses it.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable

from ..abi import ResultCode
from ..broker import Message
from ..loa import LoaContext

_MASK = 0xFFFFFFFF
_U32 = struct.Struct("<I").pack
_log = logging.getLogger("vudo.messaging")
_OK = int(ResultCode.OK)
_ERROR = int(ResultCode.ERROR)
_INVALID = int(ResultCode.INVALID_ARG)


def _payload_reader(ctx: LoaContext, fn: str) -> Callable[[int, int], bytes | None]:
    """Read a payload, or ``None`` (logged) when it exceeds ``max_message_size``."""
    spirit = ctx.spirit
    mem = spirit.memory_or_null
    read = mem.read_bytes
    cap = spirit.limits.max_message_size

    def payload(ptr: int, length: int) -> bytes | None:
        ptr &= _MASK
        length &= _MASK
        if cap is not None and length > cap:
            mem.check(ptr, length)  # a bad pointer is a fault, whatever the size
            _log.warning("%s: Spirit %r sent %d bytes, over its max_message_size %d",
                         fn, spirit.name, length, cap)
            return None
        return read(ptr, length)

    return payload


def vudo_send(ctx: LoaContext) -> Callable[[int, int, int, int], int]:
    """Copy a payload into the named Spirit's inbox: Ok, NotFound, or Error when it is full."""
    spirit = ctx.spirit
    read_str = spirit.memory_or_null.read_string
    payload = _payload_reader(ctx, "vudo_send")
    name = spirit.name
    broker = spirit.broker

    def host(to_ptr: int, to_len: int, ptr: int, length: int) -> int:
        to = read_str(to_ptr & _MASK, to_len & _MASK)
        data = payload(ptr, length)
        if data is None:
            return _INVALID
        return int(broker.post(name, to, data))

    return host


def _message_block(msg: Message) -> bytes:
    """``[sender_len u32][sender][payload_len u32][payload]``."""
    sender = msg.from_.encode("utf-8")
    return b"".join((_U32(len(sender)), sender, _U32(len(msg.payload)), msg.payload))


def vudo_recv(ctx: LoaContext) -> Callable[[], int]:
    """Pointer to the oldest message in the host heap, or 0 (empty inbox or heap exhausted)."""
    spirit = ctx.spirit
    mem = spirit.memory_or_null
    broker = spirit.broker
    name = spirit.name
    outstanding = spirit._message_blocks

    def host() -> int:
        # Allocate for the head first, so a full heap leaves the message queued...
        msg = broker.peek(name)
        if msg is None:
            return 0
        block = _message_block(msg)
        ptr = mem.alloc(len(block), 8, zero=False)  # written in full below
        if ptr == 0:
            return 0  # the Spirit may free memory and retry
        # ...then take it. Another consumer (a host thread) may have taken the head meanwhile:
        # the Spirit gets whatever was taken, never a copy of a message someone else has.
        taken = broker.recv(name)
        if taken is None:  # emptied meanwhile, or a distributed broker could not take it
            mem.free(ptr)
            return 0
        if taken != msg:
            block = _message_block(taken)
            if len(block) > (mem.allocator.size_of(ptr) or 0):
                bigger = mem.realloc(ptr, 0, len(block))
                if bigger == 0:
                    mem.free(ptr)
                    raise MemoryError("host heap exhausted while receiving a message")
                ptr = bigger
        mem.write_bytes(ptr, block)
        outstanding.add(ptr)
        return ptr

    return host


def vudo_pending(ctx: LoaContext) -> Callable[[], int]:
    """Number of messages waiting in this Spirit's inbox."""
    broker = ctx.spirit.broker
    name = ctx.spirit.name

    def host() -> int:
        return broker.pending(name)

    return host


def vudo_broadcast(ctx: LoaContext) -> Callable[[int, int], int]:
    """Send to every Spirit of the session, the sender included; Error if one refused it."""
    broker = ctx.spirit.broker
    name = ctx.spirit.name
    payload = _payload_reader(ctx, "vudo_broadcast")

    def host(ptr: int, length: int) -> int:
        data = payload(ptr, length)
        if data is None:
            return _INVALID
        expected = len(broker.spirits())
        return _OK if broker.broadcast(name, data) >= expected else _ERROR

    return host


def vudo_free_message(ctx: LoaContext) -> Callable[[int], None]:
    """Release a block returned by ``vudo_recv``; other pointers are ignored."""
    free = ctx.spirit.memory_or_null.free
    outstanding = ctx.spirit._message_blocks

    def host(ptr: int) -> None:
        ptr &= _MASK
        if ptr in outstanding:
            outstanding.discard(ptr)
            free(ptr)

    return host
