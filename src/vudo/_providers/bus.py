"""The in-process message broker, :class:`MessageBus` (the default behind the
:class:`~vudo.MessageBroker` Protocol).

Inboxes are per Spirit, FIFO, bounded, and thread-safe. Payloads are copied (``bytes``), so a
sender cannot change a message after sending it. Channel 0 means "any channel" when receiving;
messages from ``vudo_send`` travel on channel 0.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from time import time as _now

from .._host.broker import DEFAULT_INBOX_CAPACITY, Message, MessageCallback
from ..abi import ResultCode
from ..errors import NameTaken

__all__ = ["DEFAULT_INBOX_CAPACITY", "MessageBus"]

_log = logging.getLogger("vudo.bus")


_new_tuple = tuple.__new__


class _Inbox:
    __slots__ = ("capacity", "hooks", "queue", "refusing")

    def __init__(self, capacity: int) -> None:
        self.queue: deque[Message] = deque()
        self.capacity = capacity
        self.hooks: list[MessageCallback] = []
        self.refusing = False  # full, and the refusal was logged (until a message fits again)


class MessageBus:
    """The default, in-process broker: bounded FIFO inboxes guarded by one lock.

    ``capacity`` is the default inbox size; ``register(name, capacity=...)`` overrides it per
    Spirit. A full inbox refuses new messages (``post`` returns ERROR) and never drops queued ones.
    The first refusal of each spell of fullness is logged at WARNING on ``vudo.bus`` (every
    refusal at DEBUG with ``debug=True``), so a flooding sender does not flood the log.
    """

    def __init__(self, *, capacity: int = DEFAULT_INBOX_CAPACITY, debug: bool = False) -> None:
        if capacity < 1:
            raise ValueError("inbox capacity must be at least 1")
        self.capacity = capacity
        self.debug = debug
        self._inboxes: dict[str, _Inbox] = {}
        self._lock = threading.Lock()

    # registration -------------------------------------------------------------------------
    def register(self, name: str, *, capacity: int | None = None) -> None:
        """Create the inbox of ``name``; ``ValueError`` if it already exists."""
        cap = self.capacity if capacity is None else capacity
        if cap < 1:
            raise ValueError("inbox capacity must be at least 1")
        with self._lock:
            if name in self._inboxes:
                raise NameTaken(f"a Spirit named {name!r} is already registered")
            self._inboxes[name] = _Inbox(cap)

    def unregister(self, name: str) -> None:
        """Close the inbox of ``name``; its queued messages are dropped. Unknown names: no-op."""
        with self._lock:
            self._inboxes.pop(name, None)

    def is_registered(self, name: str) -> bool:
        """Whether ``name`` has an inbox."""
        return name in self._inboxes

    def spirits(self) -> list[str]:
        """Registered names, in registration order."""
        with self._lock:
            return list(self._inboxes)

    # sending ------------------------------------------------------------------------------
    def post(self, from_: str, to: str, payload: bytes, channel: int = 0) -> ResultCode:
        """Queue a copy of ``payload`` for ``to``: OK, NOT_FOUND, or ERROR when full."""
        # Copy what the sender could still change; bytes are immutable already.
        data = payload if type(payload) is bytes else bytes(payload)
        # tuple.__new__ skips the named tuple's Python-level __new__ (this runs on every send).
        msg = _new_tuple(Message, (from_, to, channel, data, _now() * 1000.0))
        with self._lock:
            inbox = self._inboxes.get(to)
            if inbox is None:
                return ResultCode.NOT_FOUND
            if len(inbox.queue) >= inbox.capacity:
                first, inbox.refusing = not inbox.refusing, True
                capacity = inbox.capacity
            else:
                if inbox.refusing:
                    inbox.refusing = False
                inbox.queue.append(msg)
                hooks = inbox.hooks
                capacity = 0
        if capacity:
            if first:
                _log.warning("inbox of %r is full (%d messages): refusing messages, starting "
                             "with one from %r", to, capacity, from_)
            elif self.debug:
                _log.debug("inbox of %r full (%d); refused message from %r", to, capacity, from_)
            return ResultCode.ERROR
        if self.debug:
            _log.debug("message %r -> %r ch=%d %d bytes", from_, to, channel, len(msg.payload))
        if hooks:
            for hook in tuple(hooks):
                try:
                    hook(msg)
                except Exception:  # a faulty hook must not fail the sender (or its Spirit)
                    _log.exception("on_message hook %r for %r raised", hook, to)
        return ResultCode.OK

    def send(self, from_: str, to: str, channel: int, payload: bytes) -> bool:
        """Seed-compatible send: ``True`` if the message was queued."""
        return self.post(from_, to, payload, channel) == ResultCode.OK

    def broadcast(self, from_: str, payload: bytes, channel: int = 0) -> int:
        """Send to every registered Spirit, the sender included; return the number delivered."""
        return self._send_many(from_, self.spirits(), payload, channel)

    def _send_many(self, from_: str, names: Iterable[str], payload: bytes, channel: int) -> int:
        data = bytes(payload)
        return sum(1 for n in names if self.post(from_, n, data, channel) == ResultCode.OK)

    # receiving ----------------------------------------------------------------------------
    def recv(self, name: str, channel: int = 0) -> Message | None:
        """Take the oldest message for ``name`` (on ``channel``; 0 = any) or ``None``."""
        with self._lock:
            inbox = self._inboxes.get(name)
            if inbox is None or not inbox.queue:
                return None
            q = inbox.queue
            if channel == 0:
                return q.popleft()
            for i, msg in enumerate(q):
                if msg.channel == channel:
                    del q[i]
                    return msg
            return None

    def requeue(self, message: Message) -> None:
        """Put a message just taken with :meth:`recv` back at the front of its inbox.

        For a consumer that took a message and could not deliver it (``vudo_recv`` with a full
        host heap); the capacity is not checked, the message held its place before.
        """
        with self._lock:
            inbox = self._inboxes.get(message.to)
            if inbox is not None:
                inbox.queue.appendleft(message)

    def peek(self, name: str, channel: int = 0) -> Message | None:
        """The oldest message for ``name`` without removing it."""
        with self._lock:
            inbox = self._inboxes.get(name)
            if inbox is None:
                return None
            for msg in inbox.queue:
                if channel == 0 or msg.channel == channel:
                    return msg
            return None

    def pending(self, name: str, channel: int = 0) -> int:
        """Messages waiting for ``name`` (on ``channel``; 0 = any)."""
        inbox = self._inboxes.get(name)
        if inbox is None:
            return 0
        if channel == 0:
            return len(inbox.queue)
        with self._lock:
            return sum(1 for m in inbox.queue if m.channel == channel)

    def on_message(self, name: str, callback: MessageCallback) -> Callable[[], None]:
        """Call ``callback(message)`` after each message queued for ``name``.

        Hooks run on the sender's thread after the message is queued; an exception from a hook
        is logged (logger ``vudo.bus``) and does not affect the send.
        """
        with self._lock:
            inbox = self._inboxes.get(name)
            if inbox is None:
                raise KeyError(f"no Spirit named {name!r} is registered")
            inbox.hooks.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in inbox.hooks:
                    inbox.hooks.remove(callback)

        return unsubscribe

    #: :meth:`requeue` works: ``vudo_recv`` takes, then puts back if the heap is full.
    supports_requeue = True

    def done(self, name: str, message: Message | None = None) -> bool:
        """Nothing to acknowledge: a message leaves its inbox when it is taken."""
        return True

    def flush(self, timeout: float | None = None) -> bool:
        """Nothing to hand over: an accepted message is already in its inbox."""
        return True

    def clear(self, name: str | None = None) -> None:
        """Drop the messages queued for ``name`` (every inbox when ``None``); inboxes stay
        registered, and an unknown name is ignored, as with the C bus."""
        with self._lock:
            if name is None:
                inboxes = list(self._inboxes.values())
            else:
                inbox = self._inboxes.get(name)
                inboxes = [] if inbox is None else [inbox]
            for inbox in inboxes:
                inbox.queue.clear()

    def close(self) -> None:
        """Drop every inbox."""
        with self._lock:
            self._inboxes.clear()
