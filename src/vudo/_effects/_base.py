"""The effect handler protocol, what it needs from a Spirit, and the default handler.

:class:`DefaultEffectHandler` accepts NOOP, terminates on TERMINATE, runs effects registered with
:meth:`~DefaultEffectHandler.register`, and keeps the host channels Spirits subscribe to (by
name or by pattern, see :mod:`._channels`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from .._config.channels import is_pattern, matches
from .._host.context import EffectHandler, EffectTarget
from ..abi import EffectId, ResultCode
from ._outcome import label, log

__all__ = ["DefaultEffectHandler", "EffectFn", "EffectHandler", "EffectTarget", "message_cap"]


#: A registered effect: ``fn(spirit, payload) -> ResultCode | int``.
EffectFn = Callable[[EffectTarget, bytes], "ResultCode | int"]


class DefaultEffectHandler:
    """Default effects: NOOP accepted, TERMINATE terminates the Spirit, registered ids run.

    Anything else returns NotFound. Channels must be declared with :meth:`register_channel`
    before Spirits can subscribe to them by name (unknown channels return NotFound). A Spirit
    may also subscribe to a pattern, ``"*"`` or a prefix such as ``"sensor.*"``, which matches
    every registered channel starting with that prefix, including channels registered later
    (a registered channel named exactly like the pattern text takes precedence).
    :meth:`notify` delivers a payload once to every Spirit subscribed to the channel by name or
    pattern, with the sender ``channel:<name>``; :meth:`unsubscribe` undoes a subscription.
    Accepted effects and subscriptions are logged at DEBUG on ``vudo.effects``.
    """

    def __init__(self) -> None:
        self._handlers: dict[int, EffectFn] = {}
        # _lock guards both maps: registered channel -> subscribers, pattern -> subscribers.
        self._channels: dict[str, set[EffectTarget]] = {}
        self._patterns: dict[str, set[EffectTarget]] = {}
        self._lock = threading.Lock()

    def register(self, effect_id: int, fn: EffectFn) -> None:
        """Handle ``effect_id`` with ``fn(spirit, payload) -> result code``."""
        self._handlers[int(effect_id)] = fn

    def register_channel(self, channel: str) -> None:
        """Declare a host channel Spirits may subscribe to."""
        with self._lock:
            self._channels.setdefault(channel, set())

    def subscribers(self, channel: str) -> list[EffectTarget]:
        """The live Spirits that receive ``channel``'s notifications (each once)."""
        with self._lock:
            subs = self._channels.get(channel)
            if subs is None:
                return []
            found = {id(s): s for s in subs}
            for pattern, spirits in self._patterns.items():
                if matches(pattern, channel):
                    found.update((id(s), s) for s in spirits)
            dead = [s for s in found.values() if s.terminated]
            for spirit in dead:  # released and panicked Spirits are forgotten, not kept alive
                self._forget(spirit)
        return [s for s in found.values() if not s.terminated and self._may_receive(s, channel)]

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
            code = int(fn(spirit, payload))
        elif effect_id == EffectId.NOOP:
            code = ResultCode.OK
        elif effect_id == EffectId.TERMINATE:
            log.debug("Spirit %r: effect %s accepted", spirit.name, label(effect_id))
            spirit.terminate("TERMINATE effect: " + payload.decode("utf-8", "replace"))
            return ResultCode.OK
        else:
            return ResultCode.NOT_FOUND
        if code == ResultCode.OK:
            log.debug(
                "Spirit %r: effect %s accepted (%d bytes)",
                spirit.name,
                label(effect_id),
                len(payload),
            )
        return code

    def subscribe(self, spirit: EffectTarget, channel: str) -> int:
        """Subscribe to the registered channel named ``channel``, else to the pattern
        ``channel`` when it ends in ``*``, else NotFound. Subscribing twice is harmless."""
        with self._lock:
            subs = self._channels.get(channel)
            if subs is not None:
                subs.add(spirit)
            elif is_pattern(channel):
                self._patterns.setdefault(channel, set()).add(spirit)
            else:
                return ResultCode.NOT_FOUND
        log.debug("Spirit %r subscribed to channel %r", spirit.name, channel)
        return ResultCode.OK

    def unsubscribe(self, spirit: EffectTarget, channel: str | None = None) -> int:
        """Undo :meth:`subscribe` for ``channel`` (the same name or pattern), or for every
        channel when it is ``None``. NotFound when the Spirit had no such subscription."""
        with self._lock:
            if channel is None:
                found = self._forget(spirit)
            else:
                found = spirit in self._channels.get(channel, ())
                self._channels.get(channel, set()).discard(spirit)
                patterns = self._patterns.get(channel)
                if patterns is not None and spirit in patterns:
                    found = True
                    patterns.discard(spirit)
                    if not patterns:
                        del self._patterns[channel]
        if not found:
            return ResultCode.NOT_FOUND
        log.debug(
            "Spirit %r unsubscribed from %s",
            spirit.name,
            "every channel" if channel is None else f"channel {channel!r}",
        )
        return ResultCode.OK

    def _forget(self, spirit: EffectTarget) -> bool:
        """Drop every subscription of ``spirit`` (caller holds ``_lock``); whether it had any."""
        found = False
        for subs in self._channels.values():
            if spirit in subs:
                subs.discard(spirit)
                found = True
        for pattern in [p for p, subs in self._patterns.items() if spirit in subs]:
            self._patterns[pattern].discard(spirit)
            if not self._patterns[pattern]:
                del self._patterns[pattern]
            found = True
        return found

    def _may_receive(self, spirit: EffectTarget, channel: str) -> bool:
        """Whether ``spirit`` may get ``channel``'s notifications (subclasses check grants)."""
        return True


def message_cap(spirit: object) -> int | None:
    """The Spirit's ``limits.max_message_size`` (``None`` when it has no such limit)."""
    cap = getattr(getattr(spirit, "limits", None), "max_message_size", None)
    return cap if isinstance(cap, int) else None
