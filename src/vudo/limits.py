"""Resource limits for a Spirit (load option ``limits=``, or a session default)."""

from __future__ import annotations

import math
import operator
import threading
from dataclasses import dataclass
from typing import SupportsIndex, cast

from .errors import InvalidLimitsError

__all__ = ["Limits", "MemoryOptions"]


@dataclass(frozen=True, slots=True)
class Limits:
    """What one Spirit may consume. ``None`` means unlimited.

    - ``timeout``: wall-clock seconds per call (epoch interruption; ~5 ms granularity).
    - ``fuel``: instructions per call (deterministic metering).
    - ``max_memory``: bytes of linear memory, the host heap included (enforced by the store).
    - ``max_inbox``: messages waiting in the Spirit's inbox.
    - ``max_message_size``: bytes in one message payload the Spirit sends.
    - ``terminate_on_limit``: terminate the Spirit when a limit is exceeded (default: the
      call fails and the Spirit stays usable).

    Every value is checked here, so a bad one fails where it is written, not at load or
    (worse) never: ``timeout`` is a finite number of seconds up to ``threading.TIMEOUT_MAX``;
    the others are whole numbers from 1 to ``2**64 - 1``. Anything else (``nan``, ``inf``,
    ``1.5`` fuel, ``"16MiB"``, ``True``) raises :class:`~vudo.errors.InvalidLimitsError`,
    a ``ValueError``.
    """

    timeout: float | None = None
    fuel: int | None = None
    max_memory: int | None = None
    max_inbox: int | None = None
    max_message_size: int | None = 1 << 20
    terminate_on_limit: bool = False

    def __post_init__(self) -> None:
        if self.timeout is not None:
            object.__setattr__(self, "timeout", _seconds(self.timeout))
        for name in ("fuel", "max_memory", "max_inbox", "max_message_size"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _count(name, value))
        if not isinstance(self.terminate_on_limit, bool):
            raise InvalidLimitsError(
                f"Limits.terminate_on_limit must be True or False "
                f"(got {self.terminate_on_limit!r})"
            )


#: The largest count a limit may hold (fuel and sizes are unsigned 64-bit in wasmtime).
MAX_COUNT = 2**64 - 1


def _seconds(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidLimitsError(
            f"Limits.timeout must be a number of seconds (got {type(value).__name__} {value!r})"
        )
    seconds = float(value)
    if not math.isfinite(seconds) or seconds <= 0 or seconds > threading.TIMEOUT_MAX:
        raise InvalidLimitsError(
            f"Limits.timeout must be finite, positive and at most {threading.TIMEOUT_MAX:.0f} "
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


@dataclass(frozen=True, slots=True)
class MemoryOptions:
    """Initial and maximum pages for a Spirit that imports its memory."""

    initial: int | None = None
    maximum: int | None = None
