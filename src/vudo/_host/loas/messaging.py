"""The messaging Loa: ``vudo_send``, ``vudo_recv``, ``vudo_pending``, ``vudo_broadcast``,
``vudo_free_message``.

A received message is one host-heap block ``[sender_len u32][sender][payload_len u32][payload]``;
the message leaves the inbox only once that block is written, so a full heap never loses it.
"""

from __future__ import annotations

import functools
import logging
import struct
from collections.abc import Callable

from ...abi import ResultCode
from ...errors import HostHeapExhausted
from ..broker import Message
from ..context import HostContext

_MASK = 0xFFFFFFFF
_U32 = struct.Struct("<I").pack
_log = logging.getLogger("vudo.messaging")
_OK = int(ResultCode.OK)
_ERROR = int(ResultCode.ERROR)
_INVALID = int(ResultCode.INVALID_ARG)


def _refuse_oversized(ctx: HostContext, fn: str) -> Callable[[int, int], int]:
    """What a send does with a payload over ``max_message_size``: a bad pointer is still a
    fault; otherwise log and return InvalidArg (nothing is queued)."""
    check = ctx.memory.check

    def refuse(ptr: int, length: int) -> int:
        check(ptr, length)
        _log.warning("%s: Spirit %r sent %d bytes, over its max_message_size %d",
                     fn, ctx.name, length, ctx.limits.max_message_size)
        return _INVALID

    return refuse


def vudo_send(ctx: HostContext) -> Callable[[int, int, int, int], int]:
    """Copy a payload into the named Spirit's inbox: Ok, NotFound, or Error when it is full."""
    mem = ctx.memory
    read, read_str = mem.read_bytes, mem.read_string
    cap = ctx.limits.max_message_size
    refuse = _refuse_oversized(ctx, "vudo_send")
    post = ctx.inbox.post

    def host(to_ptr: int, to_len: int, ptr: int, length: int) -> int:
        to_ptr &= _MASK
        ptr &= _MASK
        length &= _MASK
        to = read_str(to_ptr, to_len & _MASK)
        if cap is not None and length > cap:
            return refuse(ptr, length)
        return post(to, read(ptr, length))

    return host


@functools.lru_cache(maxsize=1024)
def _sender_prefix(sender: str) -> bytes:
    data = sender.encode("utf-8")
    return _U32(len(data)) + data


def _message_block(msg: Message) -> bytes:
    """``[sender_len u32][sender][payload_len u32][payload]``."""
    return b"".join((_sender_prefix(msg.from_), _U32(len(msg.payload)), msg.payload))


def vudo_recv(ctx: HostContext) -> Callable[[], int]:
    """Pointer to the oldest message in the host heap, or 0 (empty inbox or heap exhausted)."""
    mem = ctx.memory
    inbox = ctx.inbox
    outstanding = inbox.outstanding
    recv, peek, requeue = inbox.recv, inbox.peek, inbox.requeue
    finished = inbox.finished if inbox.done is not None else None
    alloc, write = mem.allocator.alloc, mem.write_bytes  # bound once: this is a hot path
    mark = _marker(mem.allocator)

    def take_then_allocate() -> int:
        # In-process broker: take the message, and put it back if the heap is full.
        msg = recv()
        if msg is None:
            return 0
        block = _message_block(msg)
        try:
            ptr = alloc(len(block), 8, zero=False)  # written in full below
        except BaseException:  # e.g. the guest's own allocator trapped: keep the message
            assert requeue is not None
            requeue(msg)
            raise
        if ptr == 0:
            assert requeue is not None
            if len(block) > _reachable(ctx):  # it can never fit: it must not block the inbox
                msg = _dead_letter(ctx, msg, len(block))
                block = _message_block(msg)
                ptr = alloc(len(block), 8, zero=False)
            if ptr == 0:
                requeue(msg)  # the Spirit may free memory and retry
                return 0
        write(ptr, block)
        outstanding.add(ptr)
        if mark is not None:
            mark(ptr)
        return ptr

    def allocate_then_take() -> int:
        # A broker that acknowledges on recv (NATS): allocate for the head first, so a full
        # heap leaves the message queued...
        msg = peek()
        if msg is None:
            return 0
        block = _message_block(msg)
        ptr = mem.alloc(len(block), 8, zero=False)
        if ptr == 0:
            return 0
        # ...then take it. Another consumer may have taken the head meanwhile: the Spirit gets
        # whatever was taken, never a copy of a message someone else has.
        taken = recv()
        if taken is None:  # emptied meanwhile, or the broker could not take it
            mem.free(ptr)
            return 0
        if taken is not msg and taken != msg:
            block = _message_block(taken)
            if len(block) > (mem.allocator.size_of(ptr) or 0):
                bigger = mem.realloc(ptr, 0, len(block))
                if bigger == 0:
                    mem.free(ptr)
                    raise HostHeapExhausted(
                        ctx.name, "vudo_recv", f"receiving a message of {len(block)} bytes"
                    )
                ptr = bigger
        mem.write_bytes(ptr, block)
        outstanding.add(ptr)
        if mark is not None:
            mark(ptr)
        if finished is not None:
            finished[ptr] = taken  # acknowledged to the broker when the Spirit frees it
        return ptr

    return take_then_allocate if requeue is not None else allocate_then_take


def _marker(allocator: object) -> Callable[[int], object] | None:
    """The C heap's ``mark_message`` (``None`` for other heaps): a received block is tagged
    there, so the native ``vudo_free_message`` frees blocks this Loa handed out and back."""
    mark = getattr(allocator, "mark_message", None)
    return mark if callable(mark) else None


#: The sender of the notice that replaces a message the receiver can never allocate.
DEAD_LETTER = "vudo:dead-letter"


def _reachable(ctx: HostContext) -> int:
    """The most bytes one host block could ever take in this Spirit's memory."""
    mem = ctx.memory
    pages = mem.max_pages if mem.max_pages is not None else 65536
    most = pages * 65536
    if ctx.limits.max_memory is not None:
        most = min(most, ctx.limits.max_memory)
    return max(most - mem.heap_floor, 0)


def _dead_letter(ctx: HostContext, msg: Message, size: int) -> Message:
    """The notice delivered instead of ``msg``: from ``vudo:dead-letter``, its payload is
    ``[original size u32][original sender UTF-8]``; the loss is logged at WARNING."""
    _log.warning("vudo_recv: Spirit %r can never allocate the %d-byte message from %r; it is "
                 "dropped and a %s notice delivered instead", ctx.name, size, msg.from_,
                 DEAD_LETTER)
    payload = _U32(min(size, _MASK)) + msg.from_.encode("utf-8")
    return msg._replace(from_=DEAD_LETTER, payload=payload)


def vudo_pending(ctx: HostContext) -> Callable[[], int]:
    """Number of messages waiting in this Spirit's inbox."""
    return ctx.inbox.pending


def vudo_broadcast(ctx: HostContext) -> Callable[[int, int], int]:
    """Send to every Spirit of the session, the sender included; Error if one refused it."""
    inbox = ctx.inbox
    broadcast, peers = inbox.broadcast, inbox.peers
    read = ctx.memory.read_bytes
    cap = ctx.limits.max_message_size
    refuse = _refuse_oversized(ctx, "vudo_broadcast")

    def host(ptr: int, length: int) -> int:
        length &= _MASK
        if cap is not None and length > cap:
            return refuse(ptr & _MASK, length)
        data = read(ptr & _MASK, length)
        expected = peers()
        return _OK if broadcast(data) >= expected else _ERROR

    return host


def vudo_free_message(ctx: HostContext) -> Callable[[int], None]:
    """Release a block returned by ``vudo_recv``; other pointers are ignored."""
    free = ctx.memory.allocator.free
    inbox = ctx.inbox
    outstanding, done, finished = inbox.outstanding, inbox.done, inbox.finished
    # With the C heap its tag says which blocks are messages, whichever path received them.
    tagged = getattr(ctx.memory.allocator, "is_message", None)

    def host(ptr: int) -> None:
        ptr &= _MASK
        if tagged is not None:
            outstanding.discard(ptr)
            if not tagged(ptr):
                return  # not a message block: never free what the Spirit did not receive
        else:
            try:
                outstanding.remove(ptr)
            except KeyError:
                return  # not a message block: never free what the Spirit did not receive
        free(ptr)
        if done is not None:
            msg = finished.pop(ptr, None)
            if msg is not None:
                done(msg)  # finished: acknowledged now, so a crash will not redeliver it

    return host
