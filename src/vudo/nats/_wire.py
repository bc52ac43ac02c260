"""What travels on the wire: subject tokens for names and the compact message frame.

A message is stored on subject ``vudo.<session>.in.<owner token>.<name token>`` with one
header (``Nats-Msg-Id``, for JetStream's duplicate filter) and this payload::

    [u8 version=2][u8 flags][u16 sender length][u32 channel][f64 ms since the epoch]
    [8-byte claim epoch][8-byte origin][u64 lane sequence][u64 lane floor][sender][payload]

The subject carries the recipient, the frame the rest, so nothing else needs a header. The
origin names the sending broker instance and the lane sequence counts its messages to one
name and epoch (1, 2, ...), and the floor is the lowest lane sequence the sender had not
seen stored when it accepted the message, so a receiver keeps order per sender itself
(``_order``).
Version-1 frames (no origin, no lane) are still read.
"""

from __future__ import annotations

import functools
import re
import string
import struct

from .._host import Message

_SAFE_CHARS = frozenset(string.ascii_letters + string.digits + "-")
SESSION_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

_HEAD = struct.Struct("<BBHId8s8sQQ")
HEAD_SIZE = _HEAD.size
_HEAD1 = struct.Struct("<BBHId8s")
_VERSION = 2
_new_tuple = tuple.__new__


@functools.lru_cache(maxsize=65_536)
def name_token(name: str) -> str:
    """Encode a Spirit name as a NATS subject token, KV key and consumer name.

    Letters, digits and ``-`` stay; every other character becomes ``_XX`` per UTF-8 byte, so the
    encoding is injective (``_`` itself is escaped) and readable for ordinary names.
    """
    if not name:
        raise ValueError("a Spirit name must not be empty")
    return "".join(
        c if c in _SAFE_CHARS else "".join(f"_{b:02X}" for b in c.encode()) for c in name
    )


def name_from_token(token: str) -> str:
    """The inverse of :func:`name_token`."""
    out = bytearray()
    i = 0
    while i < len(token):
        if token[i] == "_":
            out.append(int(token[i + 1 : i + 3], 16))
            i += 3
        else:
            out += token[i].encode()
            i += 1
    return out.decode()


@functools.lru_cache(maxsize=4096)
def _sender(name: str) -> bytes:
    return name.encode("utf-8")


def encode(from_: str, channel: int, timestamp: float, epoch: bytes, origin: bytes, lane: int,
           floor: int, payload: bytes) -> bytes:
    """The stored payload of one message (see the module docstring)."""
    sender = _sender(from_)
    return b"".join(
        (_HEAD.pack(_VERSION, 0, len(sender), channel & 0xFFFFFFFF, timestamp, epoch, origin,
                    lane, floor), sender, payload)
    )


def decode(data: bytes, to: str) -> tuple[Message, bytes, bytes, int, int] | None:
    """``(message, epoch, origin, lane sequence, lane floor)`` from a stored payload, or
    ``None`` if it is not a vudo frame (origin empty, lane and floor 0 in a version-1 frame)."""
    if len(data) >= HEAD_SIZE and data[0] == _VERSION:
        _, _, slen, channel, ts, epoch, origin, lane, floor = _HEAD.unpack_from(data)
        start = HEAD_SIZE
    elif len(data) >= _HEAD1.size and data[0] == 1:
        _, _, slen, channel, ts, epoch = _HEAD1.unpack_from(data)
        origin, lane, floor, start = b"", 0, 0, _HEAD1.size
    else:
        return None
    end = start + slen
    if len(data) < end:
        return None
    try:
        sender = data[start:end].decode("utf-8")
    except UnicodeDecodeError:
        return None
    message = _new_tuple(Message, (sender, to, channel, bytes(data[end:]), ts))
    return message, epoch, origin, lane, floor


def ack_stream_seq(reply: str) -> int:
    """The stream sequence in a JetStream acknowledgement subject (old and new formats)."""
    parts = reply.split(".")
    # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>  (9 tokens) or
    # $JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>.<sseq>...  (12 tokens)
    return int(parts[5] if len(parts) == 9 else parts[7])
