"""The message broker Protocol: what a Spirit's inbox and a Séance need from a broker.

The broker is a provider like the logger: the in-process :class:`~vudo.MessageBus` is the
default, :class:`~vudo.nats.NatsBroker` spans processes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol, runtime_checkable

from ..abi import ResultCode

__all__ = [
    "DEFAULT_INBOX_CAPACITY", "ForwardingBroker", "Message", "MessageBroker", "MessageCallback",
]

#: Messages an inbox holds when no capacity is given.
DEFAULT_INBOX_CAPACITY = 10_000


class Message(NamedTuple):
    """One message: sender, recipient, channel, payload and send time (ms since the epoch).

    Immutable; a named tuple because messages are created on the hot path of every send.
    """

    from_: str
    to: str
    channel: int
    payload: bytes
    timestamp: float


MessageCallback = Callable[[Message], None]


@runtime_checkable
class MessageBroker(Protocol):
    """What a Séance needs from a message broker (in-process, or distributed such as NATS).

    Every method is declared here, the optional ones too; :attr:`supports_requeue` says whether
    :meth:`requeue` works.
    """

    @property
    def supports_requeue(self) -> bool:
        """Whether :meth:`requeue` can put a taken message back (the in-process bus can)."""
        ...

    def register(self, name: str, *, capacity: int | None = None) -> None:
        """Create the inbox of ``name``; raise :class:`~vudo.NameTaken` if it is taken."""

    def unregister(self, name: str) -> None:
        """Close and drop the inbox of ``name`` (queued messages are discarded)."""

    def is_registered(self, name: str) -> bool:
        """Whether ``name`` has an open inbox."""
        ...

    def post(self, from_: str, to: str, payload: bytes, channel: int = 0) -> ResultCode:
        """Queue a message: OK, NOT_FOUND (no such inbox) or ERROR (inbox full)."""
        ...

    def broadcast(self, from_: str, payload: bytes, channel: int = 0) -> int:
        """Send to every registered Spirit, the sender included; return how many got it."""
        ...

    def recv(self, name: str, channel: int = 0) -> Message | None:
        """Take the oldest message (on ``channel``, 0 = any) or ``None``."""
        ...

    def peek(self, name: str, channel: int = 0) -> Message | None:
        """Look at the oldest message without taking it."""
        ...

    def pending(self, name: str, channel: int = 0) -> int:
        """How many messages wait for ``name`` (on ``channel``, 0 = any)."""
        ...

    def spirits(self) -> list[str]:
        """Names of the registered inboxes."""
        ...

    def on_message(self, name: str, callback: MessageCallback) -> Callable[[], None]:
        """Call ``callback(message)`` after each delivery to ``name``; returns an unsubscriber."""
        ...

    def requeue(self, message: Message) -> None:
        """Put a message just taken back at the head of its inbox (only when
        :attr:`supports_requeue`; other brokers are read peek-then-take)."""

    def done(self, name: str, message: Message | None = None) -> bool:
        """The Spirit ``name`` is finished with ``message`` (``None``: with everything it
        took): a broker that acknowledges late (NATS) acknowledges it now."""
        ...

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every accepted message is handed over; ``False`` on timeout."""
        ...

    def clear(self, name: str | None = None) -> None:
        """Drop the messages queued for ``name``, or every queued message when ``None``
        (inboxes stay registered)."""

    def close(self) -> None:
        """Release the broker's resources."""


class ForwardingBroker:
    """A broker that forwards every call to ``inner``: the base of brokers that observe
    messages (tracing, counting) by overriding a few methods.

    Methods outside the Protocol (``wait_pending``, ``register_channel``...) are forwarded as
    they are, so a wrapped NATS broker keeps its extras.
    """

    def __init__(self, inner: MessageBroker) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @property
    def supports_requeue(self) -> bool:
        """Whether the inner broker can put a message back."""
        return self.inner.supports_requeue

    def register(self, name: str, *, capacity: int | None = None) -> None:
        """Create the inbox of ``name``."""
        self.inner.register(name, capacity=capacity)

    def unregister(self, name: str) -> None:
        """Drop the inbox of ``name``."""
        self.inner.unregister(name)

    def is_registered(self, name: str) -> bool:
        """Whether ``name`` has an open inbox."""
        return self.inner.is_registered(name)

    def post(self, from_: str, to: str, payload: bytes, channel: int = 0) -> ResultCode:
        """Queue a message for ``to``."""
        return self.inner.post(from_, to, payload, channel)

    def broadcast(self, from_: str, payload: bytes, channel: int = 0) -> int:
        """Send to every Spirit; how many accepted it."""
        return self.inner.broadcast(from_, payload, channel)

    def recv(self, name: str, channel: int = 0) -> Message | None:
        """Take the oldest message."""
        return self.inner.recv(name, channel)

    def peek(self, name: str, channel: int = 0) -> Message | None:
        """Look at the oldest message."""
        return self.inner.peek(name, channel)

    def pending(self, name: str, channel: int = 0) -> int:
        """How many messages wait for ``name``."""
        return self.inner.pending(name, channel)

    def spirits(self) -> list[str]:
        """Names of the registered inboxes."""
        return self.inner.spirits()

    def on_message(self, name: str, callback: MessageCallback) -> Callable[[], None]:
        """Call ``callback`` after each delivery to ``name``."""
        return self.inner.on_message(name, callback)

    def requeue(self, message: Message) -> None:
        """Put a message back (the inner broker's requeue)."""
        self.inner.requeue(message)

    def done(self, name: str, message: Message | None = None) -> bool:
        """The inner broker's done."""
        return self.inner.done(name, message)

    def flush(self, timeout: float | None = None) -> bool:
        """The inner broker's flush."""
        return self.inner.flush(timeout)

    def clear(self, name: str | None = None) -> None:
        """Drop the messages queued for ``name`` (every queued message when ``None``)."""
        self.inner.clear(name)

    def close(self) -> None:
        """Release the inner broker."""
        self.inner.close()
