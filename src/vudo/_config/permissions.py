"""What a Spirit may do through ``vudo_emit_effect`` and ``vudo_subscribe``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..abi import EffectId
from .channels import covers, matches

__all__ = [
    "DEFAULT_DB_MAX_RESULT_BYTES",
    "DEFAULT_DB_MAX_ROWS",
    "DEFAULT_DB_TIMEOUT",
    "DEFAULT_FS_MAX_READ",
    "DEFAULT_HTTP_MAX_RESPONSE",
    "DEFAULT_HTTP_TIMEOUT",
    "Permissions",
]

#: Largest file FS_READ returns, in bytes (10 MiB).
DEFAULT_FS_MAX_READ = 10 * 1024 * 1024
#: Per-operation and total timeout of an HTTP request, in seconds.
DEFAULT_HTTP_TIMEOUT = 10.0
#: Largest HTTP response body delivered, in bytes (10 MiB).
DEFAULT_HTTP_MAX_RESPONSE = 10 * 1024 * 1024
#: Most rows a DB_QUERY result carries; more set ``"truncated": true``.
DEFAULT_DB_MAX_ROWS = 1000
#: Largest DB_QUERY result (its JSON body) and largest single value, in bytes (10 MiB).
DEFAULT_DB_MAX_RESULT_BYTES = 10 * 1024 * 1024
#: Longest a DB_QUERY may run (and wait for a lock), in seconds.
DEFAULT_DB_TIMEOUT = 5.0

# SQLite refuses a length limit above its compiled maximum (1e9 by default).
_SQLITE_MAX_LENGTH = 1_000_000_000
_ALWAYS_ALLOWED = frozenset({int(EffectId.NOOP), int(EffectId.TERMINATE)})


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
    #: Largest DB_QUERY result body, in bytes; also the longest string or blob SQLite may build.
    db_max_result_bytes: int = DEFAULT_DB_MAX_RESULT_BYTES
    #: Longest a DB_QUERY may run, in seconds.
    db_timeout: float = DEFAULT_DB_TIMEOUT
    #: Channels ``vudo_subscribe`` may join, as names or patterns (``"sensor.*"``, ``"*"``);
    #: ``None`` means any channel the host registered.
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
        if not 0 < self.db_max_result_bytes <= _SQLITE_MAX_LENGTH:
            raise ValueError(f"Permissions.db_max_result_bytes must be in 1..{_SQLITE_MAX_LENGTH}")
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
        """Whether the Spirit may receive notifications of the channel named ``channel``."""
        return self.channels is None or any(matches(g, channel) for g in self.channels)

    def allows_subscription(self, pattern: str) -> bool:
        """Whether ``vudo_subscribe`` may join ``pattern``: a channel :meth:`allows_channel`
        admits, or a wildcard pattern that a granted pattern covers entirely (with
        ``channels={"sensor.*"}``, ``"sensor.temp.*"`` is allowed but ``"*"`` is not)."""
        return self.channels is None or any(covers(g, pattern) for g in self.channels)
