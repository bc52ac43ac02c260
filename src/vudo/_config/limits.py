"""Resource limits for a Spirit (load option ``limits=``, or a session default)."""

from __future__ import annotations

import math
import operator
import threading
from dataclasses import dataclass, field
from typing import Any, SupportsIndex, cast

from ..errors import InvalidLimitsError

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
    - ``max_string_length``: bytes of text one host function reads (default 1 MiB, as in
      ``@vudo/runtime``): ``vudo_print``, ``vudo_println``, ``vudo_log``, ``vudo_error``,
      ``vudo_assert``, ``vudo_panic`` and ``vudo_subscribe`` refuse longer text with a WARNING
      on ``vudo.host`` naming the Spirit (print and log calls do nothing, ``vudo_subscribe``
      returns InvalidArg, a failed assertion and a panic still fail, with a placeholder
      message).
    - ``max_alloc``: bytes in one ``vudo_alloc``/``vudo_realloc`` block (default 10 MiB):
      larger requests return 0, as an exhausted heap does.
    - ``max_sleep``: seconds one ``vudo_sleep`` may pause (default 3600): a longer sleep is
      refused (returns at once) with a WARNING naming the Spirit.
    - ``terminate_on_limit``: terminate the Spirit when a limit is exceeded (default: the
      call fails and the Spirit stays usable).

    Every value is checked here, so a bad one fails where it is written, not at load or
    (worse) never: ``timeout`` is a finite number of seconds up to ``threading.TIMEOUT_MAX``;
    the others are whole numbers from 1 to ``2**64 - 1``. Anything else (``nan``, ``inf``,
    ``1.5`` fuel, ``"16MiB"``, ``True``) raises :class:`~vudo.errors.InvalidLimitsError`,
    a ``ValueError``.

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
    max_string_length: int | None
    max_alloc: int | None
    max_sleep: float | None
    _given: frozenset[str] = field(compare=False, repr=False)

    def __init__(
        self,
        timeout: float | None = _UNSET,
        fuel: int | None = _UNSET,
        max_memory: int | None = _UNSET,
        max_inbox: int | None = _UNSET,
        max_message_size: int | None = _UNSET,
        terminate_on_limit: bool = _UNSET,
        max_string_length: int | None = _UNSET,
        max_alloc: int | None = _UNSET,
        max_sleep: float | None = _UNSET,
        _given: frozenset[str] = frozenset(),
    ) -> None:
        given = set(_given)
        values = {
            "timeout": timeout, "fuel": fuel, "max_memory": max_memory, "max_inbox": max_inbox,
            "max_message_size": max_message_size, "terminate_on_limit": terminate_on_limit,
            "max_string_length": max_string_length, "max_alloc": max_alloc,
            "max_sleep": max_sleep,
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
        if self.timeout is not None:
            object.__setattr__(self, "timeout", _seconds(self.timeout))
        if self.max_sleep is not None:
            object.__setattr__(self, "max_sleep", _seconds(self.max_sleep, "max_sleep"))
        for name in ("fuel", "max_memory", "max_inbox", "max_message_size",
                     "max_string_length", "max_alloc"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _count(name, value))
        if not isinstance(self.terminate_on_limit, bool):
            raise InvalidLimitsError(
                f"Limits.terminate_on_limit must be True or False "
                f"(got {self.terminate_on_limit!r})"
            )

    def merged(self, override: Limits) -> Limits:
        """These limits with every field ``override`` was given explicitly replaced."""
        if not override._given:
            return self
        names = self._given | override._given
        return Limits(**{
            name: getattr(override if name in override._given else self, name) for name in names
        })


#: The largest count a limit may hold (fuel and sizes are unsigned 64-bit in wasmtime).
MAX_COUNT = 2**64 - 1


def _seconds(value: object, name: str = "timeout") -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidLimitsError(
            f"Limits.{name} must be a number of seconds (got {type(value).__name__} {value!r})"
        )
    seconds = float(value)
    if not math.isfinite(seconds) or seconds <= 0 or seconds > threading.TIMEOUT_MAX:
        raise InvalidLimitsError(
            f"Limits.{name} must be finite, positive and at most {threading.TIMEOUT_MAX:.0f} "
            f"seconds (got {value!r})"
        )
    return seconds


def _count(name: str, value: object) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(cast(SupportsIndex, value))  # TypeError unless int-like
    except TypeError:
        raise InvalidLimitsError(
            f"Limits.{name} must be a whole number (got {type(value).__name__} {value!r})"
        ) from None
    if not 1 <= number <= MAX_COUNT:
        raise InvalidLimitsError(f"Limits.{name} must be from 1 to 2**64 - 1 (got {value!r})")
    return int(number)


_DEFAULTS: dict[str, Any] = {
    "timeout": None, "fuel": None, "max_memory": None, "max_inbox": None,
    "max_message_size": 1 << 20, "terminate_on_limit": False,
    # @vudo/runtime's per-call caps: 1 MiB of text, 10 MiB per allocation, one-hour sleeps.
    "max_string_length": 1 << 20, "max_alloc": 10 << 20, "max_sleep": 3600.0,
}


@dataclass(frozen=True, slots=True)
class MemoryOptions:
    """Initial and maximum pages for a Spirit that imports its memory."""

    initial: int | None = None
    maximum: int | None = None
