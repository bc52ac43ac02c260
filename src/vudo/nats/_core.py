"""State shared by the parts of :class:`~vudo.nats.NatsBroker` and the loop plumbing."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from .._host import Message, MessageCallback
from ._order import Lanes

_log = logging.getLogger("vudo.nats")
_T = TypeVar("_T")

#: Stream sequences remembered after their acknowledgement, to drop copies redelivered by a
#: consumer re-created after a reconnection (within one process only).
DONE_MEMORY = 65_536
#: Stream sequences remembered per recipient, to remove messages that reached a name after it
#: was released (see ``_outbox.Outbox._on_claim_gone``).
SENT_MEMORY = 4096


@dataclass(frozen=True, slots=True)
class Claim:
    """One name's claim as stored in the names bucket."""

    owner: str
    epoch: str
    revision: int


@dataclass(eq=False, slots=True)
class Held:
    """A message delivered to this process and not yet acknowledged.

    ``reply`` is the JetStream acknowledgement subject; ``None`` for a message swept from
    another owner's subject, which is deleted from the stream instead of acknowledged.
    """

    sseq: int
    message: Message
    reply: str | None
    #: The copy's ``Nats-Msg-Id``. With the sequence it names the copy: a server restarted
    #: after a SIGKILL may give a new message the sequence of one finished before.
    mid: str = ""
    #: The sending broker's origin and the lane sequence from the frame (see ``_order``).
    origin: bytes = b""
    lane: int = 0
    floor: int = 0

    @property
    def key(self) -> tuple[int, str]:
        """What the duplicate memories (``_seen``, ``_done``) remember this copy by."""
        return (self.sseq, self.mid)


@dataclass(eq=False)
class Inbox:
    """The local side of one registered name."""

    name: str
    token: str
    capacity: int
    epoch: bytes = b""
    revision: int = 0
    queue: deque[Held] = field(default_factory=deque)
    taken: list[Held] = field(default_factory=list)  # handed out, not finished
    hooks: list[MessageCallback] = field(default_factory=list)
    recv_lock: threading.Lock = field(default_factory=threading.Lock)
    #: Stream sequences up to this were cleared: copies still in flight to us are dropped.
    cleared_through: int = 0
    #: Order per sender: messages that arrived ahead of an earlier one wait here.
    lanes: Lanes[Held] = field(default_factory=Lanes)
    #: When this process registered the name (ms since the epoch, as frames' send times).
    registered_ms: float = field(default_factory=lambda: time.time() * 1000.0)


@dataclass(eq=False, slots=True)
class Out:
    """One message on its way to JetStream (in the outbox, then in flight until its PubAck)."""

    seq: int
    to: str
    subject: str
    data: bytes
    epoch: str
    msg_id: str
    sent_at: float = 0.0
    attempts: int = 0
    deleting: bool = False  # its stored copy overtook a refused message and is being removed
    lane: int = 0  # its lane sequence (0: replayed from an earlier run's journal)
    confirmed: bool = False  # stored (or given up): no longer holds its lane's floor back


class LaneOut:
    """This broker's lane to one recipient and epoch: the last lane sequence it gave, and its
    messages not yet confirmed (oldest first), whose first is the floor put in each frame."""

    __slots__ = ("epoch", "last", "unconfirmed")

    def __init__(self, epoch: str) -> None:
        self.epoch, self.last = epoch, 0
        self.unconfirmed: deque[Out] = deque()

    def trim(self) -> None:
        """Drop the confirmed messages from the front."""
        pending = self.unconfirmed
        while pending and pending[0].confirmed:
            pending.popleft()

    def floor(self, lane: int) -> int:
        """The floor for a message given lane sequence ``lane``."""
        self.trim()
        return self.unconfirmed[0].lane if self.unconfirmed else lane


class Core:
    """Attributes every part of the broker uses, and how blocking calls reach the loop."""

    url: str
    session: str
    owner: str
    lease: float
    ack: Literal["sync", "async"]
    request_timeout: float
    debug: bool
    replicas: int
    max_inbox: int

    _stream: str
    _prefix: str  # "vudo.<session>.in."
    _owner_token: str
    _instance: str
    _loop: asyncio.AbstractEventLoop
    _thread: threading.Thread
    _nc: Any
    _js: Any
    _names: Any
    _alive: Any
    _lock: threading.Lock
    _changed: threading.Condition
    _inboxes: dict[str, Inbox]
    _by_token: dict[str, Inbox]
    _registry: dict[str, Claim]
    _done: OrderedDict[tuple[int, str], None]
    _connected: bool
    _closed: bool
    _valid_until: float

    def _call(self, coro: Coroutine[Any, Any, _T], timeout: float | None = None) -> _T:
        """Run ``coro`` on the broker's loop and wait for its result (not from the loop)."""
        if threading.get_ident() == self._thread.ident:
            coro.close()
            raise RuntimeError("NatsBroker methods that block cannot run on its event loop")
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result(timeout if timeout is not None else 4 * self.request_timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise TimeoutError("NATS operation timed out") from None

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Start ``coro`` on the loop (call from the loop thread), logging its failure."""

        async def run() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception as e:
                _log.debug("NATS background operation failed: %r", e)

        self._loop.create_task(run())

    def _subject(self, owner: str, token: str) -> str:
        from ._wire import name_token

        return f"{self._prefix}{name_token(owner)}.{token}"

    def _lose(self, inbox: Inbox, now_owner: str) -> None:
        """Close a local inbox whose name another process holds now (call with the lock)."""
        if self._inboxes.get(inbox.name) is not inbox:
            return
        _log.error("Spirit name %r was taken from this process (now %s); its inbox is closed "
                   "here", inbox.name, now_owner or "unclaimed")
        del self._inboxes[inbox.name]
        self._by_token.pop(inbox.token, None)
        inbox.queue.clear()
        inbox.taken.clear()
        self._changed.notify_all()
