"""The byte formats of effect payloads and of the result envelope (see ``docs/effects.md``)."""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from typing import Any

from ..abi import EffectId
from ._outcome import Invalid

__all__ = [
    "U32",
    "decode_http_result",
    "decode_result",
    "effect_sender",
    "encode_db_query",
    "encode_fs_write",
    "encode_http_post",
    "encode_result",
    "split_prefixed",
]

U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")


def effect_sender(effect_id: int) -> str:
    """The sender name of an effect's result message: ``effect:FS_READ``, or ``effect:<id>``."""
    try:
        return f"effect:{EffectId(effect_id).name}"
    except ValueError:
        return f"effect:{int(effect_id)}"


def encode_result(status: int, body: bytes = b"") -> bytes:
    """The result envelope ``[status i32 LE][body]``; ``status`` is 0 or a ResultCode."""
    return _I32.pack(int(status)) + body


def decode_result(message: bytes) -> tuple[int, bytes]:
    """Split a result envelope into ``(status, body)``; ``ValueError`` if it is too short."""
    if len(message) < 4:
        raise ValueError(f"result envelope needs 4 bytes, got {len(message)}")
    return int(_I32.unpack_from(message)[0]), message[4:]


def decode_http_result(body: bytes) -> tuple[int, bytes]:
    """Split the body of a successful HTTP result into ``(http_status, response_body)``."""
    if len(body) < 4:
        raise ValueError(f"HTTP result needs 4 bytes, got {len(body)}")
    return int(U32.unpack_from(body)[0]), body[4:]


def _prefixed(text: str, data: bytes) -> bytes:
    raw = text.encode("utf-8")
    return U32.pack(len(raw)) + raw + data


def encode_fs_write(path: str, data: bytes) -> bytes:
    """The FS_WRITE payload ``[path_len u32 LE][path UTF-8][data]``."""
    return _prefixed(path, data)


def encode_http_post(url: str, body: bytes) -> bytes:
    """The HTTP_POST payload ``[url_len u32 LE][url UTF-8][body]``."""
    return _prefixed(url, body)


def encode_db_query(sql: str, params: list[Any] | Mapping[str, Any] | None = None) -> bytes:
    """The DB_QUERY payload: SQL in UTF-8, then optionally a NUL byte and JSON parameters."""
    raw = sql.encode("utf-8")
    if params is None:
        return raw
    return raw + b"\x00" + json.dumps(params).encode("utf-8")


def split_prefixed(payload: bytes, what: str) -> tuple[bytes, bytes]:
    """Split ``[len u32][text][data]``; :class:`Invalid` when the length does not fit."""
    if len(payload) < 4:
        raise Invalid(f"payload shorter than the {what} length prefix")
    (n,) = U32.unpack_from(payload)
    if n > len(payload) - 4:
        raise Invalid(f"{what} length {n} exceeds the payload ({len(payload) - 4} bytes)")
    return payload[4 : 4 + n], payload[4 + n :]
