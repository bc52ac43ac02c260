"""Capability-checked standard effects: files, HTTP and SQLite behind ``vudo_emit_effect``.

A Spirit may use only the effects it was granted in its :class:`Permissions`; anything else
returns ``NOT_PERMITTED`` and is logged at WARNING on the logger ``vudo.effects``. By default a
Spirit gets no effects but NOOP and TERMINATE.

:class:`StandardEffectHandler` implements FS_READ, FS_WRITE, HTTP_GET, HTTP_POST and DB_QUERY.
Checks (permission, payload shape, path confinement, host allow-list) run on the Spirit's thread
and decide the return code of ``vudo_emit_effect``; the I/O itself runs on a small thread pool, so
the call returns at once. The result arrives later in the Spirit's inbox as a message from
``effect:<NAME>`` whose payload is the envelope ``[status i32 LE][body]`` (see ``docs/effects.md``
for every format).

Per-Spirit permissions: the handler uses ``spirit.permissions`` when the Spirit has such an
attribute that is not ``None``, and falls back to the handler's own ``permissions`` otherwise.
"""

from __future__ import annotations

import base64
import errno
import json
import logging
import math
import os
import re
import sqlite3
import stat
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path, PurePath
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self

import httpx

from .abi import EffectId, ResultCode
from .providers import DefaultEffectHandler

if TYPE_CHECKING:
    from .spirit import Spirit

__all__ = [
    "DEFAULT_DB_MAX_ROWS",
    "DEFAULT_DB_TIMEOUT",
    "DEFAULT_FS_MAX_READ",
    "DEFAULT_HTTP_MAX_RESPONSE",
    "DEFAULT_HTTP_TIMEOUT",
    "DEFAULT_MAX_WORKERS",
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

_log = logging.getLogger("vudo.effects")

#: Largest file FS_READ returns, in bytes (10 MiB).
DEFAULT_FS_MAX_READ = 10 * 1024 * 1024
#: Per-operation and total timeout of an HTTP request, in seconds.
DEFAULT_HTTP_TIMEOUT = 10.0
#: Largest HTTP response body delivered, in bytes (10 MiB).
DEFAULT_HTTP_MAX_RESPONSE = 10 * 1024 * 1024
#: Most rows a DB_QUERY result carries; more set ``"truncated": true``.
DEFAULT_DB_MAX_ROWS = 1000
#: Longest a DB_QUERY may run (and wait for a lock), in seconds.
DEFAULT_DB_TIMEOUT = 5.0
#: Worker threads of the pool a handler creates for itself.
DEFAULT_MAX_WORKERS = 4

_ALWAYS_ALLOWED = frozenset({int(EffectId.NOOP), int(EffectId.TERMINATE)})
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")


# --------------------------------------------------------------------------------------------
# Wire formats


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
    return int(_U32.unpack_from(body)[0]), body[4:]


def _prefixed(text: str, data: bytes) -> bytes:
    raw = text.encode("utf-8")
    return _U32.pack(len(raw)) + raw + data


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


# --------------------------------------------------------------------------------------------
# Permissions


def _parse_host_rule(entry: str) -> tuple[str, int | None]:
    """``host`` / ``host:port`` / ``[v6]`` / ``[v6]:port`` -> (lower-case host, port or None)."""
    text = entry.strip().lower()
    port: str | None = None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"bad HTTP host {entry!r}")
        port = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host = text  # a name, an IPv4 address, or a bare IPv6 address
    if not host or "/" in host or "@" in host:
        raise ValueError(f"bad HTTP host {entry!r}")
    if port is None:
        return host, None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad port in HTTP host {entry!r}")
    return host, int(port)


@dataclass(frozen=True, slots=True)
class Permissions:
    """What a Spirit may do through ``vudo_emit_effect`` and ``vudo_subscribe``.

    The default grants nothing but NOOP and TERMINATE (which are always allowed). An effect id
    must be in ``effects`` *and* its resource must be granted: FS effects need ``fs_root``
    (FS_WRITE also ``fs_write``), HTTP effects an allow-listed host, DB_QUERY a ``database``.
    :meth:`allow` grants the ids implied by the resources given.
    """

    #: Granted effect ids (standard or custom); NOOP and TERMINATE are allowed regardless.
    effects: frozenset[int] = frozenset()
    #: Directory FS_READ/FS_WRITE are confined to; resolved at each use (``None``: no files).
    fs_root: Path | None = None
    #: Whether FS_WRITE may create and overwrite files under ``fs_root``.
    fs_write: bool = False
    #: Largest file FS_READ returns, in bytes.
    fs_max_read: int = DEFAULT_FS_MAX_READ
    #: HTTP allow-list: ``host`` (any port) or ``host:port``; IPv6 as ``[::1]`` / ``[::1]:80``.
    http_hosts: frozenset[str] = frozenset()
    #: Timeout of each HTTP operation and of the whole request, in seconds.
    http_timeout: float = DEFAULT_HTTP_TIMEOUT
    #: Largest HTTP response body delivered, in bytes.
    http_max_response: int = DEFAULT_HTTP_MAX_RESPONSE
    #: SQLite database of DB_QUERY: a file path or ``":memory:"`` (``None``: no database).
    database: str | Path | None = None
    #: Whether DB_QUERY may change the database (INSERT, UPDATE, DELETE, CREATE, DROP...).
    db_write: bool = False
    #: Most rows a DB_QUERY result carries.
    db_max_rows: int = DEFAULT_DB_MAX_ROWS
    #: Longest a DB_QUERY may run, in seconds.
    db_timeout: float = DEFAULT_DB_TIMEOUT
    #: Channels ``vudo_subscribe`` may join; ``None`` means any channel the host registered.
    channels: frozenset[str] | None = None
    #: WASI Spirits: environment variables ``(name, value)`` the Spirit sees (``--env K=V``).
    wasi_env: tuple[tuple[str, str], ...] = ()
    #: WASI Spirits: pre-opened directories ``(host dir, guest path)`` (``--dir HOST[::GUEST]``).
    wasi_dirs: tuple[tuple[str, str], ...] = ()
    _http_rules: tuple[tuple[str, int | None], ...] = field(
        init=False, repr=False, compare=False, default=()
    )

    def __post_init__(self) -> None:
        # Normalise whatever iterables/strings were passed so checks can rely on the types.
        set_ = object.__setattr__
        set_(self, "effects", frozenset(int(e) for e in self.effects))
        if self.fs_root is not None:
            set_(self, "fs_root", Path(self.fs_root))
        hosts = frozenset(h.strip().lower() for h in self.http_hosts)
        set_(self, "http_hosts", hosts)
        set_(self, "_http_rules", tuple(_parse_host_rule(h) for h in sorted(hosts)))
        if self.channels is not None:
            set_(self, "channels", frozenset(self.channels))
        set_(self, "wasi_env", tuple((str(k), str(v)) for k, v in self.wasi_env))
        set_(self, "wasi_dirs", tuple((str(h), str(g)) for h, g in self.wasi_dirs))
        for name in ("fs_max_read", "http_max_response", "db_max_rows"):
            if getattr(self, name) < 0:
                raise ValueError(f"Permissions.{name} must be >= 0")
        for name in ("http_timeout", "db_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Permissions.{name} must be > 0")

    @classmethod
    def none(cls) -> Permissions:
        """No effects but NOOP and TERMINATE (the default)."""
        return cls()

    @classmethod
    def allow(
        cls,
        *,
        effects: Iterable[int] = (),
        fs_root: str | Path | None = None,
        fs_write: bool = False,
        http_hosts: Iterable[str] = (),
        database: str | Path | None = None,
        db_write: bool = False,
        channels: Iterable[str] | None = None,
        **limits: Any,
    ) -> Permissions:
        """Grant resources and the effect ids they imply.

        ``fs_root`` grants FS_READ (and FS_WRITE with ``fs_write=True``), ``http_hosts`` grants
        HTTP_GET and HTTP_POST, ``database`` grants DB_QUERY. ``effects`` adds further ids (for
        instance SPAWN or custom ids). ``limits`` sets the other fields (``http_timeout=2.0``...).
        """
        ids = {int(e) for e in effects}
        hosts = frozenset(http_hosts)
        if fs_root is not None:
            ids.add(EffectId.FS_READ)
            if fs_write:
                ids.add(EffectId.FS_WRITE)
        if hosts:
            ids.update((EffectId.HTTP_GET, EffectId.HTTP_POST))
        if database is not None:
            ids.add(EffectId.DB_QUERY)
        return cls(
            effects=frozenset(ids),
            fs_root=Path(fs_root) if fs_root is not None else None,
            fs_write=fs_write,
            http_hosts=hosts,
            database=database,
            db_write=db_write,
            channels=frozenset(channels) if channels is not None else None,
            **limits,
        )

    def allows_effect(self, effect_id: int) -> bool:
        """Whether ``effect_id`` is granted (NOOP and TERMINATE always are)."""
        return effect_id in _ALWAYS_ALLOWED or effect_id in self.effects

    def allows_host(self, host: str, port: int) -> bool:
        """Whether the allow-list admits ``host`` (lower-case, IPv6 unbracketed) on ``port``."""
        return any(h == host and (p is None or p == port) for h, p in self._http_rules)

    def allows_channel(self, channel: str) -> bool:
        """Whether ``vudo_subscribe`` may join ``channel``."""
        return self.channels is None or channel in self.channels


# --------------------------------------------------------------------------------------------
# The handler


class EffectTarget(Protocol):
    """What the handler needs from a Spirit (the session's ``Spirit`` class provides it).

    Optionally the Spirit has ``permissions: Permissions | None``, which overrides the
    handler's default permissions for that Spirit.
    """

    @property
    def name(self) -> str:
        """The Spirit's name, used in logs."""
        ...

    @property
    def terminated(self) -> bool:
        """Whether the Spirit is terminated (its pending results are then dropped)."""
        ...

    def deliver(self, from_: str, payload: bytes, /) -> bool:
        """Queue a message into the inbox (thread-safe); False when full or closed."""
        ...

    def terminate(self, cause: str, /) -> None:
        """Terminate the Spirit with ``cause``."""


class _Refused(Exception):
    """A permission check failed: the effect returns NOT_PERMITTED."""


class _Invalid(Exception):
    """The payload is malformed: the effect returns INVALID_ARG."""


class _Failed(Exception):
    """The effect failed: deliver ``status`` with ``message`` as the body."""

    def __init__(self, status: ResultCode, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_Job = Callable[[], bytes]
_Builtin = Callable[["Spirit", Permissions, bytes], _Job]

_SPLIT_SEPARATORS = re.compile(r"[\\/]")

# Pragmas a Spirit may run: schema introspection with any argument; the rest only as reads.
_INTROSPECTION_PRAGMAS = frozenset(
    {
        "table_info",
        "table_xinfo",
        "table_list",
        "index_list",
        "index_info",
        "index_xinfo",
        "foreign_key_list",
    }
)
_READ_PRAGMAS = frozenset(
    {
        "user_version",
        "application_id",
        "page_count",
        "page_size",
        "freelist_count",
        "encoding",
        "data_version",
    }
)
_READ_ACTIONS = frozenset(
    {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
)
# Denied even with db_write: ATTACH/DETACH (and VACUUM INTO, which attaches) reach other files;
# transactions could leave the shared connection locked between effects.
_NEVER_ACTIONS = frozenset(
    {
        sqlite3.SQLITE_ATTACH,
        sqlite3.SQLITE_DETACH,
        sqlite3.SQLITE_TRANSACTION,
        sqlite3.SQLITE_SAVEPOINT,
    }
)


def _authorizer(write: bool, denied: list[str]) -> Callable[..., int]:
    """An SQLite authorizer: reads only, or (``write``) anything but the ``_NEVER_ACTIONS``."""

    def authorize(
        action: int, arg1: str | None, arg2: str | None, _db: str | None, _src: str | None
    ) -> int:
        if action == sqlite3.SQLITE_PRAGMA:
            name = (arg1 or "").lower()
            ok = name in _INTROSPECTION_PRAGMAS or (name in _READ_PRAGMAS and arg2 is None)
            ok = ok or (write and name == "user_version")
        elif action == sqlite3.SQLITE_FUNCTION:
            ok = (arg2 or "").lower() != "load_extension"
        elif write:
            ok = action not in _NEVER_ACTIONS
        else:
            ok = action in _READ_ACTIONS
        if ok:
            return sqlite3.SQLITE_OK
        denied.append(_ACTION_NAMES.get(action, str(action)) + (f" {arg1}" if arg1 else ""))
        return sqlite3.SQLITE_DENY

    return authorize


_ACTION_NAMES = {
    getattr(sqlite3, n): n.removeprefix("SQLITE_")
    for n in dir(sqlite3)
    if n.startswith("SQLITE_")
    and n not in ("SQLITE_OK", "SQLITE_DENY", "SQLITE_IGNORE")
    and isinstance(getattr(sqlite3, n), int)
}


class _Database:
    """One shared SQLite connection; queries are serialised by ``lock``."""

    def __init__(self, database: str) -> None:
        self.lock = threading.Lock()
        # isolation_level=None: autocommit, so every DB_QUERY is its own transaction.
        self.conn = sqlite3.connect(database, isolation_level=None, check_same_thread=False)


def _json_value(value: object) -> object:
    if isinstance(value, bytes):
        return {"blob": base64.b64encode(value).decode("ascii")}
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def _sql_param(value: object) -> object:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict) and set(value) == {"blob"} and isinstance(value["blob"], str):
        try:
            return base64.b64decode(value["blob"], validate=True)
        except ValueError as exc:
            raise _Invalid(f"bad base64 in blob parameter: {exc}") from None
    raise _Invalid(f"unsupported SQL parameter {value!r}")


class StandardEffectHandler(DefaultEffectHandler):
    """The default effect handler with permissions and the standard FS, HTTP and DB effects.

    ``emit`` checks that the Spirit may use the effect (else logs a WARNING on ``vudo.effects``
    and returns NOT_PERMITTED), validates the payload (else INVALID_ARG), and queues the work on
    a thread pool, returning OK at once. Results of one Spirit's effects are delivered to its
    inbox in the order the effects were emitted; different Spirits run in parallel.

    Effects registered with :meth:`register` take precedence over the built-in ones but are
    permission-checked too. The permissions used are ``spirit.permissions`` if the Spirit has
    that attribute and it is not ``None``, else ``permissions`` given here
    (default :meth:`Permissions.none`).

    ``executor``: run effects on this executor instead of an own pool of ``max_workers``
    threads; a given executor is not shut down by :meth:`close`.
    """

    def __init__(
        self,
        permissions: Permissions | None = None,
        *,
        executor: Executor | None = None,
        max_workers: int = DEFAULT_MAX_WORKERS,
    ) -> None:
        super().__init__()
        self.permissions = permissions if permissions is not None else Permissions.none()
        self._owns_executor = executor is None
        self._executor: Executor = executor or ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix="vudo-effect"
        )
        self._builtins: dict[int, _Builtin] = {
            EffectId.FS_READ: self._fs_read,
            EffectId.FS_WRITE: self._fs_write,
            EffectId.HTTP_GET: self._http_get,
            EffectId.HTTP_POST: self._http_post,
            EffectId.DB_QUERY: self._db_query,
        }
        # _cond guards the job queues, the pending count, _closed and the lazy resources.
        self._cond = threading.Condition()
        self._queues: dict[int, deque[tuple[EffectTarget, str, _Job]]] = {}
        self._pending = 0
        self._closed = False
        self._client: httpx.Client | None = None
        self._databases: dict[str, _Database] = {}

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
        with self._cond:
            if self._closed:
                return
            self._closed = True
        if self._owns_executor:
            self._executor.shutdown(wait=True, cancel_futures=True)
        self.wait_idle()
        with self._cond:
            client, self._client = self._client, None
            databases, self._databases = list(self._databases.values()), {}
        if client is not None:
            client.close()
        for db in databases:
            with db.lock:
                db.conn.close()

    @property
    def pending(self) -> int:
        """Effects accepted whose result has not been delivered (or dropped) yet."""
        with self._cond:
            return self._pending

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every accepted effect has delivered its result; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout)

    # -- the EffectHandler protocol -------------------------------------------------------

    def permissions_for(self, spirit: Spirit) -> Permissions:
        """``spirit.permissions`` when set, else the handler's ``permissions``."""
        own: Permissions | None = getattr(spirit, "permissions", None)
        return own if own is not None else self.permissions

    def emit(self, spirit: Spirit, effect_id: int, payload: bytes) -> int:
        """Check, validate and start effect ``effect_id``; return a ResultCode value."""
        effect_id = int(effect_id)
        perms = self.permissions_for(spirit)
        if not perms.allows_effect(effect_id):
            return self._refuse(spirit, effect_id, "effect not granted")
        builtin = self._builtins.get(effect_id)
        if builtin is None or effect_id in self._handlers:
            return super().emit(spirit, effect_id, payload)
        try:
            job = builtin(spirit, perms, bytes(payload))
        except _Refused as exc:
            return self._refuse(spirit, effect_id, str(exc))
        except _Invalid as exc:
            _log.warning(
                "Spirit %r: invalid payload for effect %s: %s",
                spirit.name,
                _label(effect_id),
                exc,
            )
            return ResultCode.INVALID_ARG
        except _Failed as exc:
            _log.warning(
                "Spirit %r: effect %s failed: %s", spirit.name, _label(effect_id), exc.message
            )
            return exc.status
        return self._submit(spirit, effect_sender(effect_id), job)

    def subscribe(self, spirit: Spirit, channel: str) -> int:
        """Subscribe to a registered channel the Spirit may join (else NOT_PERMITTED)."""
        if not self.permissions_for(spirit).allows_channel(channel):
            _log.warning("Spirit %r refused subscription to channel %r", spirit.name, channel)
            return ResultCode.NOT_PERMITTED
        return super().subscribe(spirit, channel)

    def _refuse(self, spirit: Spirit, effect_id: int, reason: str) -> int:
        _log.warning("Spirit %r refused effect %s: %s", spirit.name, _label(effect_id), reason)
        return ResultCode.NOT_PERMITTED

    # -- the job queue --------------------------------------------------------------------

    def _submit(self, spirit: EffectTarget, sender: str, job: _Job) -> int:
        key = id(spirit)
        with self._cond:
            if self._closed:
                _log.warning("Spirit %r: %s after the handler was closed", spirit.name, sender)
                return ResultCode.ERROR
            self._pending += 1
            queue = self._queues.get(key)
            start = queue is None
            if queue is None:
                queue = self._queues[key] = deque()
            queue.append((spirit, sender, job))
        if start:
            # One drain task per Spirit keeps its results in emission order.
            try:
                future = self._executor.submit(self._drain, key)
            except RuntimeError:  # the (shared) executor was shut down
                self._abandon(key)
                return ResultCode.ERROR
            future.add_done_callback(lambda f: self._abandon(key) if f.cancelled() else None)
        return ResultCode.OK

    def _abandon(self, key: int) -> None:
        with self._cond:
            dropped = self._queues.pop(key, deque())
            self._pending -= len(dropped)
            self._cond.notify_all()

    def _drain(self, key: int) -> None:
        while True:
            with self._cond:
                queue = self._queues[key]
                if not queue or self._closed:
                    del self._queues[key]
                    self._pending -= len(queue)
                    self._cond.notify_all()
                    return
                spirit, sender, job = queue.popleft()
            try:
                self._run(spirit, sender, job)
            finally:
                with self._cond:
                    self._pending -= 1
                    self._cond.notify_all()

    def _run(self, spirit: EffectTarget, sender: str, job: _Job) -> None:
        if spirit.terminated:
            _log.debug("Spirit %r terminated: %s dropped", spirit.name, sender)
            return
        try:
            result = job()
        except _Failed as exc:
            _log.info("Spirit %r: %s failed: %s", spirit.name, sender, exc.message)
            result = encode_result(exc.status, exc.message.encode("utf-8"))
        except Exception as exc:  # a bug or an unforeseen error must not kill the worker
            _log.exception("Spirit %r: %s raised", spirit.name, sender)
            result = encode_result(ResultCode.ERROR, f"{type(exc).__name__}: {exc}".encode())
        try:
            delivered = spirit.deliver(sender, result)
        except Exception:  # a failing inbox must not stall this Spirit's queue
            _log.exception("Spirit %r: delivering the %s result raised", spirit.name, sender)
            return
        if not delivered:
            _log.warning("Spirit %r: inbox full or closed, %s result dropped", spirit.name, sender)

    # -- FS -------------------------------------------------------------------------------

    def _resolve(self, perms: Permissions, raw: bytes) -> Path:
        """The absolute, symlink-free path of ``raw`` inside the FS root, or raise."""
        if perms.fs_root is None:
            raise _Refused("no FS root granted")
        try:
            rel = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _Invalid("path is not UTF-8") from None
        if not rel:
            raise _Invalid("empty path")
        pure = PurePath(rel)
        if pure.is_absolute() or pure.drive or pure.root or rel[0] in "/\\":
            raise _Refused(f"absolute path {rel!r}")
        # Both separators, so "..\\" is refused on every OS.
        if ".." in _SPLIT_SEPARATORS.split(rel):
            raise _Refused(f"'..' in path {rel!r}")
        if "\x00" in rel:
            raise _Invalid("NUL byte in path")
        try:
            root = perms.fs_root.resolve(strict=True)
            target = (root / rel).resolve()
        except FileNotFoundError:
            raise _Failed(ResultCode.ERROR, f"FS root {perms.fs_root} does not exist") from None
        except (OSError, RuntimeError) as exc:  # symlink loops
            raise _Failed(ResultCode.ERROR, f"cannot resolve {rel!r}: {exc}") from None
        if not target.is_relative_to(root):
            raise _Refused(f"path {rel!r} resolves outside the FS root")
        if target == root:
            raise _Invalid("path names the FS root itself")
        return target

    def _fs_read(self, spirit: Spirit, perms: Permissions, payload: bytes) -> _Job:
        target = self._resolve(perms, payload)
        cap = perms.fs_max_read

        def job() -> bytes:
            with _fs_errors(target):
                # O_NONBLOCK: opening a FIFO must not hang a worker; fstat rejects it below.
                fd = os.open(target, os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC | _O_NONBLOCK)
                with os.fdopen(fd, "rb") as f:
                    if not stat.S_ISREG(os.fstat(fd).st_mode):
                        raise _Failed(ResultCode.ERROR, f"{target.name!r} is not a regular file")
                    data = f.read(cap + 1)
            if len(data) > cap:
                raise _Failed(
                    ResultCode.BUFFER_TOO_SMALL, f"file is larger than fs_max_read ({cap} bytes)"
                )
            return encode_result(ResultCode.OK, data)

        return job

    def _fs_write(self, spirit: Spirit, perms: Permissions, payload: bytes) -> _Job:
        if not perms.fs_write:
            raise _Refused("FS write not granted")
        raw_path, data = _split_prefixed(payload, "path")
        target = self._resolve(perms, raw_path)

        def job() -> bytes:
            with _fs_errors(target):
                target.parent.mkdir(parents=True, exist_ok=True)
                flags = os.O_WRONLY | os.O_CREAT | _O_NOFOLLOW | _O_CLOEXEC | _O_NONBLOCK
                fd = os.open(target, flags, 0o644)
                with os.fdopen(fd, "wb") as f:
                    if not stat.S_ISREG(os.fstat(fd).st_mode):
                        raise _Failed(ResultCode.ERROR, f"{target.name!r} is not a regular file")
                    f.truncate(0)
                    f.write(data)
            return encode_result(ResultCode.OK, _U32.pack(len(data)))

        return job

    # -- HTTP -----------------------------------------------------------------------------

    def _http_get(self, spirit: Spirit, perms: Permissions, payload: bytes) -> _Job:
        return self._http_job(perms, "GET", payload, None)

    def _http_post(self, spirit: Spirit, perms: Permissions, payload: bytes) -> _Job:
        raw_url, body = _split_prefixed(payload, "URL")
        return self._http_job(perms, "POST", raw_url, body)

    def _http_job(
        self, perms: Permissions, method: str, raw_url: bytes, body: bytes | None
    ) -> _Job:
        url = _check_url(perms, raw_url)
        timeout, cap = perms.http_timeout, perms.http_max_response
        headers = {"content-type": "application/octet-stream"} if body is not None else None

        def job() -> bytes:
            client = self._http_client()
            deadline = time.monotonic() + timeout
            try:
                with client.stream(
                    method, url, content=body, headers=headers, timeout=httpx.Timeout(timeout)
                ) as response:
                    declared = response.headers.get("content-length", "")
                    if declared.isdigit() and int(declared) > cap:
                        raise _too_big(cap)
                    chunks: list[bytes] = []
                    size = 0
                    for chunk in response.iter_bytes():
                        size += len(chunk)
                        if size > cap:
                            raise _too_big(cap)
                        # httpx times single operations; this bounds a slowly dripping body.
                        if time.monotonic() > deadline:
                            raise _Failed(ResultCode.TIMEOUT, f"HTTP request took over {timeout}s")
                        chunks.append(chunk)
                    status = response.status_code
            except httpx.TimeoutException as exc:
                raise _Failed(ResultCode.TIMEOUT, f"HTTP timeout: {exc}") from None
            except httpx.HTTPError as exc:
                message = f"HTTP error: {type(exc).__name__}: {exc}"
                raise _Failed(ResultCode.ERROR, message) from None
            return encode_result(ResultCode.OK, _U32.pack(status) + b"".join(chunks))

        return job

    def _http_client(self) -> httpx.Client:
        with self._cond:
            if self._client is None:
                # No redirects (they could leave the allow-list), no proxies/.netrc from the
                # environment, and a cookie jar that keeps nothing so Spirits share no state.
                self._client = httpx.Client(
                    follow_redirects=False,
                    trust_env=False,
                    cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
                    headers={"user-agent": "vudo"},
                )
            return self._client

    # -- DB -------------------------------------------------------------------------------

    def _db_query(self, spirit: Spirit, perms: Permissions, payload: bytes) -> _Job:
        if perms.database is None:
            raise _Refused("no database granted")
        raw_sql, sep, raw_params = payload.partition(b"\x00")
        try:
            sql = raw_sql.decode("utf-8")
        except UnicodeDecodeError:
            raise _Invalid("SQL is not UTF-8") from None
        if not sql.strip():
            raise _Invalid("empty SQL")
        params: list[object] | dict[str, object] = []
        if sep and raw_params.strip():
            try:
                decoded = json.loads(raw_params)
            except (UnicodeDecodeError, ValueError) as exc:
                raise _Invalid(f"parameters are not JSON: {exc}") from None
            if isinstance(decoded, list):
                params = [_sql_param(v) for v in decoded]
            elif isinstance(decoded, dict):
                params = {str(k): _sql_param(v) for k, v in decoded.items()}
            else:
                raise _Invalid("parameters must be a JSON array or object")
        database = str(perms.database)
        write, max_rows, timeout = perms.db_write, perms.db_max_rows, perms.db_timeout
        name = spirit.name

        def job() -> bytes:
            db = self._database(database)
            denied: list[str] = []
            deadline = time.monotonic() + timeout
            with db.lock:
                conn = db.conn
                try:
                    conn.execute(f"PRAGMA busy_timeout = {max(1, int(timeout * 1000))}")
                    # query_only backs up the authorizer for read-only Spirits.
                    conn.execute(f"PRAGMA query_only = {0 if write else 1}")
                    conn.set_authorizer(_authorizer(write, denied))
                    conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 1000)
                    cursor = conn.execute(sql, params)
                    try:
                        columns = [d[0] for d in cursor.description or ()]
                        rows = cursor.fetchmany(max_rows + 1)
                        changes = max(cursor.rowcount, 0)
                        # lastrowid is per connection: only report it for this statement's rows.
                        last_row_id = cursor.lastrowid if changes else None
                    finally:
                        cursor.close()
                except sqlite3.Error as exc:
                    if denied:
                        _log.warning(
                            "Spirit %r refused effect %s: SQL not permitted (%s)",
                            name,
                            _label(EffectId.DB_QUERY),
                            ", ".join(denied),
                        )
                        raise _Failed(
                            ResultCode.NOT_PERMITTED, f"not permitted: {', '.join(denied)}"
                        ) from None
                    if time.monotonic() > deadline:
                        raise _Failed(ResultCode.TIMEOUT, f"query took over {timeout}s") from None
                    raise _Failed(ResultCode.ERROR, f"SQL error: {exc}") from None
                finally:
                    conn.set_authorizer(None)
                    conn.set_progress_handler(None, 0)
            result = {
                "columns": columns,
                "rows": [[_json_value(v) for v in row] for row in rows[:max_rows]],
                "truncated": len(rows) > max_rows,
                "changes": changes,
                "last_row_id": last_row_id,
            }
            return encode_result(ResultCode.OK, json.dumps(result).encode("utf-8"))

        return job

    def _database(self, database: str) -> _Database:
        key = database if database == ":memory:" else str(Path(database).resolve())
        with self._cond:
            db = self._databases.get(key)
            if db is None:
                try:
                    db = self._databases[key] = _Database(key)
                except sqlite3.Error as exc:
                    raise _Failed(ResultCode.ERROR, f"cannot open database: {exc}") from None
            return db


# --------------------------------------------------------------------------------------------
# Helpers


def _label(effect_id: int) -> str:
    try:
        return f"{EffectId(effect_id).name} ({effect_id})"
    except ValueError:
        return f"custom ({effect_id})"


def _split_prefixed(payload: bytes, what: str) -> tuple[bytes, bytes]:
    """Split ``[len u32][text][data]``; INVALID_ARG when the length does not fit."""
    if len(payload) < 4:
        raise _Invalid(f"payload shorter than the {what} length prefix")
    (n,) = _U32.unpack_from(payload)
    if n > len(payload) - 4:
        raise _Invalid(f"{what} length {n} exceeds the payload ({len(payload) - 4} bytes)")
    return payload[4 : 4 + n], payload[4 + n :]


def _check_url(perms: Permissions, raw: bytes) -> httpx.URL:
    try:
        text = raw.decode("utf-8")
        url = httpx.URL(text)
    except (UnicodeDecodeError, httpx.InvalidURL, ValueError, TypeError) as exc:
        raise _Invalid(f"bad URL: {exc}") from None
    if url.scheme not in ("http", "https"):
        raise _Invalid(f"URL scheme must be http or https: {text!r}")
    if not url.host:
        raise _Invalid(f"URL has no host: {text!r}")
    port = url.port or (443 if url.scheme == "https" else 80)
    if not perms.allows_host(url.host.lower(), port):
        raise _Refused(f"host {url.host}:{port} is not on the HTTP allow-list")
    return url


def _too_big(cap: int) -> _Failed:
    return _Failed(ResultCode.BUFFER_TOO_SMALL, f"response exceeds http_max_response ({cap} bytes)")


@contextmanager
def _fs_errors(path: Path) -> Iterator[None]:
    """Map OS errors of a file operation to result statuses (only the file name is shown)."""
    try:
        yield
    except FileNotFoundError:
        raise _Failed(ResultCode.NOT_FOUND, f"{path.name!r} not found") from None
    except OSError as exc:
        if isinstance(exc, PermissionError) or exc.errno == errno.ELOOP:
            raise _Failed(ResultCode.NOT_PERMITTED, f"{path.name!r}: {exc.strerror}") from None
        raise _Failed(ResultCode.ERROR, f"{path.name!r}: {exc.strerror or exc}") from None
