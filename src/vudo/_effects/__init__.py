"""Capability-checked effects behind ``vudo_emit_effect`` and ``vudo_subscribe``.

A Spirit may use only the effects it was granted in its :class:`Permissions`; anything else
returns ``NOT_PERMITTED`` and is logged at WARNING on the logger ``vudo.effects``. By default a
Spirit gets no effects but NOOP and TERMINATE.

:class:`StandardEffectHandler` implements FS_READ, FS_WRITE, HTTP_GET, HTTP_POST and DB_QUERY.
Checks (permission, payload shape and size, path confinement, host allow-list) run on the
Spirit's thread and decide the return code of ``vudo_emit_effect``; the I/O itself runs on a
small thread pool behind a bounded queue, so the call returns at once. The result arrives later
in the Spirit's inbox as a message from ``effect:<NAME>`` whose payload is the envelope
``[status i32 LE][body]`` (see ``docs/effects.md`` for every format).

The modules: ``_base`` (the handler protocol, :class:`EffectTarget`, the default handler and
its channels), ``_channels`` (subscription patterns), ``_permissions``, ``_wire`` (payload and
result formats), ``_queue`` (the job queue), ``_fs``, ``_http`` (httpx), ``_db`` (sqlite3) and
``_standard`` (the standard handler). httpx and sqlite3 are imported on first use only.
"""

from __future__ import annotations

from .._config.permissions import (
    DEFAULT_DB_MAX_RESULT_BYTES,
    DEFAULT_DB_MAX_ROWS,
    DEFAULT_DB_TIMEOUT,
    DEFAULT_FS_MAX_READ,
    DEFAULT_HTTP_MAX_RESPONSE,
    DEFAULT_HTTP_TIMEOUT,
    Permissions,
)
from ._base import DefaultEffectHandler, EffectFn, EffectHandler, EffectTarget
from ._queue import DEFAULT_MAX_QUEUED, DEFAULT_MAX_QUEUED_BYTES, DEFAULT_MAX_WORKERS
from ._standard import StandardEffectHandler
from ._wire import (
    decode_http_result,
    decode_result,
    effect_sender,
    encode_db_query,
    encode_fs_write,
    encode_http_post,
    encode_result,
)

__all__ = [
    "DEFAULT_DB_MAX_RESULT_BYTES",
    "DEFAULT_DB_MAX_ROWS",
    "DEFAULT_DB_TIMEOUT",
    "DEFAULT_FS_MAX_READ",
    "DEFAULT_HTTP_MAX_RESPONSE",
    "DEFAULT_HTTP_TIMEOUT",
    "DEFAULT_MAX_QUEUED",
    "DEFAULT_MAX_QUEUED_BYTES",
    "DEFAULT_MAX_WORKERS",
    "DefaultEffectHandler",
    "EffectFn",
    "EffectHandler",
    "EffectTarget",
    "Permissions",
    "StandardEffectHandler",
    "decode_http_result",
    "decode_result",
    "effect_sender",
    "encode_db_query",
    "encode_fs_write",
    "encode_http_post",
    "encode_result",
]
