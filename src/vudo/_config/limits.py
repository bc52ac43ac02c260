"""Resource limits for a Spirit (load option ``limits=``, or a session default)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Limits", "MemoryOptions"]


_UNSET: Any = object()  # marks a field the caller did not give


@dataclass(frozen=True, slots=True, init=False)
class Limits:
    """What one Spirit may consume. ``None`` means unlimited.

    - ``timeout``: wall-clock seconds per call (epoch interruption; ~5 ms granularity).
    - ``fuel``: instructions per call (deterministic metering).
    - ``max_memory``: bytes of linear memory, the host heap included (enforced by the store).
    - ``max_inbox``: messages waiting in the Spirit's inbox.
    - ``max_message_size``: bytes in one message payload the Spirit sends.
    - ``terminate_on_limit``: terminate the Spirit when a limit is exceeded (default: the
      call fails and the Spirit stays usable).

    The fields given explicitly are remembered, so :meth:`merged` can lay one Spirit's limits
    over a session's field by field: ``Limits(timeout=1)`` keeps the session's fuel, and
    ``Limits(fuel=None)`` lifts it.
    """

    timeout: float | None
    fuel: int | None
    max_memory: int | None
    max_inbox: int | None
    max_message_size: int | None
    terminate_on_limit: bool
    _given: frozenset[str] = field(compare=False, repr=False)

    def __init__(
        self,
        timeout: float | None = _UNSET,
        fuel: int | None = _UNSET,
        max_memory: int | None = _UNSET,
        max_inbox: int | None = _UNSET,
        max_message_size: int | None = _UNSET,
        terminate_on_limit: bool = _UNSET,
        _given: frozenset[str] = frozenset(),
    ) -> None:
        given = set(_given)
        values = {
            "timeout": timeout, "fuel": fuel, "max_memory": max_memory, "max_inbox": max_inbox,
            "max_message_size": max_message_size, "terminate_on_limit": terminate_on_limit,
        }
        for name, value in values.items():
            if value is _UNSET:
                value = _DEFAULTS[name]
            else:
                given.add(name)
            object.__setattr__(self, name, value)
        object.__setattr__(self, "_given", frozenset(given))
        self.__post_init__()

    def __post_init__(self) -> None:
        for name in ("timeout", "fuel", "max_memory", "max_inbox", "max_message_size"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"Limits.{name} must be positive (got {value!r})")

    def merged(self, override: Limits) -> Limits:
        """These limits with every field ``override`` was given explicitly replaced."""
        if not override._given:
            return self
        names = self._given | override._given
        return Limits(**{
            name: getattr(override if name in override._given else self, name) for name in names
        })


_DEFAULTS: dict[str, Any] = {
    "timeout": None, "fuel": None, "max_memory": None, "max_inbox": None,
    "max_message_size": 1 << 20, "terminate_on_limit": False,
}


@dataclass(frozen=True, slots=True)
class MemoryOptions:
    """Initial and maximum pages for a Spirit that imports its memory."""

    initial: int | None = None
    maximum: int | None = None
