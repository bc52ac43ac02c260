"""Resource limits for a Spirit (load option ``limits=``, or a session default)."""

from __future__ import annotations

from dataclasses import dataclass

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
    """

    timeout: float | None = None
    fuel: int | None = None
    max_memory: int | None = None
    max_inbox: int | None = None
    max_message_size: int | None = 1 << 20
    terminate_on_limit: bool = False

    def __post_init__(self) -> None:
        for name in ("timeout", "fuel", "max_memory", "max_inbox", "max_message_size"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"Limits.{name} must be positive (got {value!r})")


@dataclass(frozen=True, slots=True)
class MemoryOptions:
    """Initial and maximum pages for a Spirit that imports its memory."""

    initial: int | None = None
    maximum: int | None = None
