"""The message broker of ``vudo seance``: the in-process bus or NATS, counting messages."""

from __future__ import annotations

import re

from .._host import ForwardingBroker, Message, MessageBroker
from .._providers import MessageBus
from ..abi import ResultCode
from ._errors import UsageFailure

__all__ = ["CountingBroker", "make_broker"]

_SESSION_RE = re.compile(r"[^A-Za-z0-9_-]+")


# ------------------------------------------------------------------------------------------
# Counting messages
# ------------------------------------------------------------------------------------------
class CountingBroker(ForwardingBroker):
    """A :class:`~vudo.broker.MessageBroker` that forwards to another and counts, per Spirit,
    the messages it sent and received."""

    def __init__(self, inner: MessageBroker) -> None:
        super().__init__(inner)
        self.sent: dict[str, int] = {}
        self.received: dict[str, int] = {}

    def post(self, from_: str, to: str, payload: bytes, channel: int = 0) -> ResultCode:
        """Queue a message, counting it for the sender when it was accepted."""
        code = self.inner.post(from_, to, payload, channel)
        if code == ResultCode.OK:
            self.sent[from_] = self.sent.get(from_, 0) + 1
        return code

    def requeue(self, message: Message) -> None:
        """Put a message back (the inner broker's requeue)."""
        self.inner.requeue(message)
        self.received[message.to] = self.received.get(message.to, 0) - 1

    def broadcast(self, from_: str, payload: bytes, channel: int = 0) -> int:
        """Send to every Spirit, counting each delivery for the sender."""
        n = self.inner.broadcast(from_, payload, channel)
        self.sent[from_] = self.sent.get(from_, 0) + n
        return n

    def recv(self, name: str, channel: int = 0) -> Message | None:
        """Take the oldest message, counting it for the receiver."""
        message = self.inner.recv(name, channel)
        if message is not None:
            self.received[name] = self.received.get(name, 0) + 1
        return message


def make_broker(url: str | None, session: str) -> MessageBroker:
    """The in-process bus, or a NATS broker for ``--broker URL`` (session named ``session``)."""
    if url is None:
        return MessageBus()
    try:
        from .. import nats
    except ImportError as exc:
        raise UsageFailure(
            f"--broker needs NATS support, which is not available ({exc}); "
            "install it with: pip install 'vudo[nats]'"
        ) from None
    name = _SESSION_RE.sub("-", session)[:64] or "default"
    try:
        return nats.NatsBroker(url, session=name)
    except ImportError as exc:
        hint = "" if "pip install" in str(exc) else ": install it with pip install 'vudo[nats]'"
        raise UsageFailure(f"--broker needs nats-py ({exc}){hint}") from None
    except ValueError as exc:
        raise UsageFailure(f"--broker {url}: {exc}") from None
