"""The effect handler protocol, what it needs from a Spirit, and the default handler.

:class:`DefaultEffectHandler` accepts NOOP, terminates on TERMINATE, runs effects registered with
:meth:`~DefaultEffectHandler.register`, and keeps the host channels Spirits subscribe to.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from ..abi import EffectId, ResultCode

__all__ = ["DefaultEffectHandler", "EffectFn", "EffectHandler", "EffectTarget", "message_cap"]


class EffectTarget(Protocol):
    """What effect handlers need from a Spirit (the session's ``Spirit`` class provides it).

    Two optional attributes are read with ``getattr`` when present: ``permissions``
    (:class:`~vudo.Permissions` or ``None``), which overrides the handler's default permissions
    for that Spirit, and ``limits`` (:class:`~vudo.Limits`), whose ``max_message_size`` bounds
    the payloads the Spirit emits and the results delivered to it.
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


#: A registered effect: ``fn(spirit, payload) -> ResultCode | int``.
EffectFn = Callable[[EffectTarget, bytes], "ResultCode | int"]


@runtime_checkable
class EffectHandler(Protocol):
    """Performs side effects asked for with ``vudo_emit_effect`` and channel subscriptions."""

    def emit(self, spirit: EffectTarget, effect_id: int, payload: bytes) -> int:
        """Perform effect ``effect_id``; return a :class:`~vudo.abi.ResultCode` value."""
        ...

    def subscribe(self, spirit: EffectTarget, channel: str) -> int:
        """Subscribe ``spirit`` to host channel ``channel``; return a result code."""
        ...


class DefaultEffectHandler:
    """Default effects: NOOP accepted, TERMINATE terminates the Spirit, registered ids run.

    Anything else returns NotFound. Channels must be declared with :meth:`register_channel`
    before Spirits can subscribe (unknown channels return NotFound); :meth:`notify` delivers a
    payload to every subscriber's inbox with the sender ``channel:<name>``.
    """

    def __init__(self) -> None:
        self._handlers: dict[int, EffectFn] = {}
        self._channels: dict[str, set[EffectTarget]] = {}
        self._lock = threading.Lock()

    def register(self, effect_id: int, fn: EffectFn) -> None:
        """Handle ``effect_id`` with ``fn(spirit, payload) -> result code``."""
        self._handlers[int(effect_id)] = fn

    def register_channel(self, channel: str) -> None:
        """Declare a host channel Spirits may subscribe to."""
        with self._lock:
            self._channels.setdefault(channel, set())

    def subscribers(self, channel: str) -> list[EffectTarget]:
        """The live Spirits subscribed to ``channel``."""
        with self._lock:
            subs = self._channels.get(channel)
            if subs is None:
                return []
            dead = {s for s in subs if s.terminated}
            subs -= dead  # released and panicked Spirits are forgotten, not kept alive
            return list(subs)

    def notify(self, channel: str, payload: bytes) -> int:
        """Deliver ``payload`` to every subscriber of ``channel``; return how many got it."""
        delivered = 0
        for spirit in self.subscribers(channel):
            if spirit.deliver(f"channel:{channel}", payload):
                delivered += 1
        return delivered

    def emit(self, spirit: EffectTarget, effect_id: int, payload: bytes) -> int:
        """Run the effect: registered handlers first, then NOOP/TERMINATE, else NotFound."""
        fn = self._handlers.get(effect_id)
        if fn is not None:
            return int(fn(spirit, payload))
        if effect_id == EffectId.NOOP:
            return ResultCode.OK
        if effect_id == EffectId.TERMINATE:
            spirit.terminate("TERMINATE effect: " + payload.decode("utf-8", "replace"))
            return ResultCode.OK
        return ResultCode.NOT_FOUND

    def subscribe(self, spirit: EffectTarget, channel: str) -> int:
        """Subscribe to a registered channel; NotFound for an unknown one."""
        with self._lock:
            subs = self._channels.get(channel)
            if subs is None:
                return ResultCode.NOT_FOUND
            subs.add(spirit)
        return ResultCode.OK


def message_cap(spirit: object) -> int | None:
    """The Spirit's ``limits.max_message_size`` (``None`` when it has no such limit)."""
    cap = getattr(getattr(spirit, "limits", None), "max_message_size", None)
    return cap if isinstance(cap, int) else None
