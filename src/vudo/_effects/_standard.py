""":class:`StandardEffectHandler`: permission checks, then FS, HTTP and DB effects on a queue.

The HTTP and DB modules (and with them httpx and sqlite3) are imported on the first effect
that needs them.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor
from types import TracebackType
from typing import TYPE_CHECKING, Self

from .._config.permissions import Permissions
from ..abi import EffectId, ResultCode
from ._base import DefaultEffectHandler, EffectTarget, message_cap
from ._fs import fs_read, fs_write
from ._outcome import Failed, Invalid, Refused, label, log
from ._queue import (
    DEFAULT_MAX_QUEUED,
    DEFAULT_MAX_QUEUED_BYTES,
    DEFAULT_MAX_WORKERS,
    Job,
    JobQueue,
)
from ._wire import effect_sender

if TYPE_CHECKING:
    from ._db import Databases
    from ._http import HttpClient

__all__ = ["StandardEffectHandler"]

_Builtin = Callable[[EffectTarget, Permissions, bytes], Job]


class StandardEffectHandler(DefaultEffectHandler):
    """The default effect handler with permissions and the standard FS, HTTP and DB effects.

    ``emit`` checks that the Spirit may use the effect (else logs a WARNING on ``vudo.effects``
    and returns NOT_PERMITTED), validates the payload (else INVALID_ARG, also for a payload over
    the Spirit's ``max_message_size``), and queues the work on a thread pool, returning OK at
    once. Results of one Spirit's effects are delivered to its inbox in the order the effects
    were emitted; different Spirits run in parallel.

    The queue is bounded: a Spirit may have ``max_queued`` effects accepted and unfinished, and
    all queued effects together may hold ``max_queued_bytes`` of payload; past either bound
    ``emit`` returns ERROR (logged at WARNING) and nothing is queued.

    Effects registered with :meth:`register` take precedence over the built-in ones but are
    permission-checked too. The permissions used are ``spirit.permissions`` if the Spirit has
    that attribute and it is not ``None``, else ``permissions`` given here
    (default :meth:`Permissions.none`). Channel subscriptions and notifications are checked
    against the same permissions (:meth:`Permissions.allows_subscription`).

    ``executor``: run effects on this executor instead of an own pool of ``max_workers``
    threads; a given executor is not shut down by :meth:`close`.
    """

    def __init__(
        self,
        permissions: Permissions | None = None,
        *,
        executor: Executor | None = None,
        max_workers: int = DEFAULT_MAX_WORKERS,
        max_queued: int = DEFAULT_MAX_QUEUED,
        max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES,
    ) -> None:
        super().__init__()
        self.permissions = permissions if permissions is not None else Permissions.none()
        self._queue = JobQueue(
            executor,
            max_workers=max_workers,
            max_queued=max_queued,
            max_queued_bytes=max_queued_bytes,
        )
        self._builtins: dict[int, _Builtin] = {
            EffectId.FS_READ: self._fs_read,
            EffectId.FS_WRITE: self._fs_write,
            EffectId.HTTP_GET: self._http_get,
            EffectId.HTTP_POST: self._http_post,
            EffectId.DB_QUERY: self._db_query,
        }
        self._client: HttpClient | None = None
        self._databases: Databases | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop accepting effects, let running ones finish, drop queued ones, free resources.

        Idempotent. Later asynchronous effects return ERROR.
        """
        self._queue.close()
        with self._queue.cond:
            client, self._client = self._client, None
            databases, self._databases = self._databases, None
        if client is not None:
            client.close()
        if databases is not None:
            databases.close()

    @property
    def pending(self) -> int:
        """Effects accepted whose result has not been delivered (or dropped) yet."""
        return self._queue.pending

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every accepted effect has delivered its result; False on timeout."""
        return self._queue.wait_idle(timeout)

    # -- the EffectHandler protocol -------------------------------------------------------

    def permissions_for(self, spirit: EffectTarget) -> Permissions:
        """``spirit.permissions`` when set, else the handler's ``permissions``."""
        own: Permissions | None = getattr(spirit, "permissions", None)
        return own if own is not None else self.permissions

    def emit(self, spirit: EffectTarget, effect_id: int, payload: bytes) -> int:
        """Check, validate and start effect ``effect_id``; return a ResultCode value."""
        effect_id = int(effect_id)
        perms = self.permissions_for(spirit)
        if not perms.allows_effect(effect_id):
            return self._refuse(spirit, effect_id, "effect not granted")
        builtin = self._builtins.get(effect_id)
        if builtin is None or effect_id in self._handlers:
            return super().emit(spirit, effect_id, payload)
        cap = message_cap(spirit)
        try:
            if cap is not None and len(payload) > cap:
                raise Invalid(f"payload of {len(payload)} bytes exceeds max_message_size {cap}")
            job = builtin(spirit, perms, bytes(payload))
        except Refused as exc:
            return self._refuse(spirit, effect_id, str(exc))
        except Invalid as exc:
            log.warning(
                "Spirit %r: invalid payload for effect %s: %s", spirit.name, label(effect_id), exc
            )
            return ResultCode.INVALID_ARG
        except Failed as exc:
            log.warning(
                "Spirit %r: effect %s failed: %s", spirit.name, label(effect_id), exc.message
            )
            return exc.status
        code = self._queue.submit(spirit, effect_sender(effect_id), job, len(payload))
        if code == ResultCode.OK:
            log.debug(
                "Spirit %r: effect %s accepted (%d bytes)",
                spirit.name,
                label(effect_id),
                len(payload),
            )
        return code

    def subscribe(self, spirit: EffectTarget, channel: str) -> int:
        """Subscribe to a registered channel or a pattern the Spirit may join (else
        NOT_PERMITTED, see :meth:`Permissions.allows_subscription`)."""
        if not self.permissions_for(spirit).allows_subscription(channel):
            log.warning("Spirit %r refused subscription to channel %r", spirit.name, channel)
            return ResultCode.NOT_PERMITTED
        return super().subscribe(spirit, channel)

    def _may_receive(self, spirit: EffectTarget, channel: str) -> bool:
        # A wildcard subscription never widens what the Spirit's grants admit.
        return self.permissions_for(spirit).allows_channel(channel)

    def _refuse(self, spirit: EffectTarget, effect_id: int, reason: str) -> int:
        log.warning("Spirit %r refused effect %s: %s", spirit.name, label(effect_id), reason)
        return ResultCode.NOT_PERMITTED

    # -- the built-in effects -------------------------------------------------------------

    def _fs_read(self, spirit: EffectTarget, perms: Permissions, payload: bytes) -> Job:
        return fs_read(perms, payload, message_cap(spirit))

    def _fs_write(self, spirit: EffectTarget, perms: Permissions, payload: bytes) -> Job:
        return fs_write(perms, payload)

    def _http_get(self, spirit: EffectTarget, perms: Permissions, payload: bytes) -> Job:
        from ._http import http_get

        return http_get(perms, payload, self._http_client(), message_cap(spirit))

    def _http_post(self, spirit: EffectTarget, perms: Permissions, payload: bytes) -> Job:
        from ._http import http_post

        return http_post(perms, payload, self._http_client(), message_cap(spirit))

    def _db_query(self, spirit: EffectTarget, perms: Permissions, payload: bytes) -> Job:
        from ._db import db_query

        return db_query(perms, payload, self._dbs(), spirit.name, message_cap(spirit))

    def _http_client(self) -> HttpClient:
        from ._http import HttpClient

        with self._queue.cond:
            if self._client is None:
                self._client = HttpClient()
            return self._client

    def _dbs(self) -> Databases:
        from ._db import Databases

        with self._queue.cond:
            if self._databases is None:
                self._databases = Databases()
            return self._databases
