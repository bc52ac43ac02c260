"""The facade: :class:`NatsBroker` (start-up, registration, recovery, closing)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import socket
import threading
import uuid
from collections import OrderedDict, deque
from pathlib import Path
from typing import Literal

from .._host import DEFAULT_INBOX_CAPACITY, Message
from ..errors import BrokerUnavailable
from ._core import Inbox
from ._journal import Journal
from ._lifecycle import Lifecycle
from ._wire import SESSION_RE, name_token

_log = logging.getLogger("vudo.nats")


class NatsBroker(Lifecycle):
    """A :class:`~vudo.broker.MessageBroker` whose inboxes live in NATS JetStream.

    ``url`` is the NATS server (``nats://host:4222``, or several separated by commas for a
    cluster); every process of one ``session`` shares its names and inboxes. ``owner``
    identifies this process in name claims and routes its Spirits' messages: a restarted process
    given the same ``owner`` takes its names back at once, while another owner can take a name
    over only after the claimer's liveness key expired (``lease`` seconds after it stopped) or
    it closed its broker. Never give one ``owner`` to two live processes.

    ``max_inbox`` (alias ``capacity``) bounds the messages stored per Spirit in the stream
    across all processes: a full inbox makes ``post`` return ERROR, as the in-process bus does.
    ``prefetch`` bounds the messages delivered to this process and not yet finished.
    ``outbox_size`` bounds the messages accepted by :meth:`post` but not yet stored; ``window``
    the publishes in flight. ``journal`` (a directory; needs a stable ``owner``) keeps every
    accepted message in a file until JetStream stored it, so a sender killed and restarted with
    the same owner re-sends what it had accepted (see ``docs/distributed.md``). ``ack`` is
    ``"sync"`` (finishing a message waits until JetStream confirmed its acknowledgement) or
    ``"async"`` (acknowledgements are batched in the background). ``replicas`` is the
    replication of the stream and buckets (3 on a cluster).
    See ``docs/distributed.md`` for the delivery contract.

    Every method is thread-safe and synchronous; the network runs on a private event loop in a
    daemon thread. Raises :class:`BrokerUnavailable` when the server cannot be reached.
    """

    def __init__(
        self,
        url: str = "nats://127.0.0.1:4222",
        *,
        session: str = "default",
        owner: str | None = None,
        capacity: int | None = None,
        max_inbox: int = DEFAULT_INBOX_CAPACITY,
        prefetch: int = 10_000,
        outbox_size: int = 10_000,
        window: int = 1024,
        lease: float = 10.0,
        ack: Literal["sync", "async"] = "sync",
        ack_wait: float = 30.0,
        replicas: int = 1,
        connect_timeout: float = 5.0,
        request_timeout: float = 2.0,
        retry_after: float = 2.0,
        journal: str | os.PathLike[str] | None = None,
        debug: bool = False,
    ) -> None:
        if not SESSION_RE.match(session):
            raise ValueError(f"session must match {SESSION_RE.pattern}, got {session!r}")
        if capacity is not None:
            max_inbox = capacity
        if min(max_inbox, prefetch, outbox_size, window, replicas) < 1:
            raise ValueError("max_inbox, prefetch, outbox_size, window and replicas must be "
                             "at least 1")
        if ack not in ("sync", "async"):
            raise ValueError("ack must be 'sync' or 'async'")
        if lease <= 0:
            raise ValueError("lease must be positive")
        if journal is not None and owner is None:
            raise ValueError("a journal needs a stable owner= (it is replayed by the process "
                             "restarted with the same owner)")
        self.url = url
        self.session = session
        self.owner = owner or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.capacity = self.max_inbox = max_inbox
        self.prefetch = prefetch
        self.outbox_size = outbox_size
        self.window = window
        self.lease = lease
        self.ack = ack
        self.ack_wait = ack_wait
        self.replicas = replicas
        self.request_timeout = request_timeout
        self.retry_after = retry_after
        self.debug = debug
        self.sent = 0  #: messages confirmed stored by JetStream
        self.failed = 0  #: messages JetStream refused for good (see docs/distributed.md)
        self.refused = 0  #: posts refused because the recipient's inbox was full

        self._stream = f"VUDO_{session}"
        self._prefix = f"vudo.{session}.in."
        # Message ids must never repeat within JetStream's duplicate window, even when a
        # restarted process reuses ``owner``: they carry a per-instance random prefix.
        self._instance = uuid.uuid4().hex[:10]
        self._origin = bytes.fromhex(self._instance).ljust(8, b"\0")  # in every frame
        self._lanes_out = {}
        self._owner_token = name_token(self.owner)

        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # arrivals, registry, outbox drained
        self._inboxes = {}
        self._by_token = {}
        self._registering: set[str] = set()
        self._registry = {}
        self._done = OrderedDict()
        self._outbox = deque()
        self._inflight = {}
        self._out_seq = 0
        self._wake_scheduled = False
        self._need_resend = False
        self._resending = False
        self._blocked = {}
        self._sent_seqs = {}
        self._taken_back = deque(maxlen=65_536)
        self._connected = False
        self._closed = False
        self._valid_until = 0.0
        self._consumer = ""
        self._consumer_gen = 0
        self._pull_inbox = ""
        self._reqs = {}
        self._req_seq = 0
        self._seen = {}
        self._parked = {}
        self._acks = []
        self._ack_scheduled = False
        self._hooks_q = queue.SimpleQueue()
        self._hooks_thread = None
        self._acker = None
        self._acker_retry_at = 0.0
        self._journal = None if journal is None else Journal(
            Path(journal), session, self._owner_token, url)

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"vudo-nats-{session}", daemon=True
        )
        self._thread.start()
        self._nc = self._js = self._names = self._alive = self._watcher = None
        self._tasks: list[asyncio.Task[None]] = []
        self._watch_task = None
        self._recover_task: asyncio.Task[None] | None = None
        self._wake = None
        self._ack_prefix = ""
        self._max_payload = 1024 * 1024
        try:
            try:
                self._call(self._start(connect_timeout), connect_timeout + 8 * request_timeout)
            except TimeoutError as e:
                raise BrokerUnavailable(url, "timed out setting up the session") from e
        except BaseException:
            self._closed = True
            self._stop_loop()
            if self._journal is not None:
                self._journal.close()
            raise

    # registration --------------------------------------------------------------------------
    def register(self, name: str, *, capacity: int | None = None) -> None:
        """Claim ``name`` for this process and open its inbox.

        Raises ``ValueError`` if a live process holds the name (or this one already does), and
        :class:`BrokerUnavailable` when NATS cannot be reached. Messages sent to the name while
        its previous holder was down, or not finished by it, are delivered here. ``capacity``
        is accepted for compatibility; the stream's per-Spirit limit (``max_inbox``) applies.
        """
        if capacity is not None and capacity < 1:
            raise ValueError("inbox capacity must be at least 1")
        token = name_token(name)
        with self._lock:
            if self._closed:
                raise BrokerUnavailable(self.url, "the broker is closed")
            if name in self._inboxes or name in self._registering:
                raise ValueError(f"a Spirit named {name!r} is already registered")
            self._registering.add(name)
        inbox = Inbox(name, token, capacity or self.max_inbox)
        try:
            if not self._connected:
                raise BrokerUnavailable(self.url, "not connected")
            try:
                self._call(self._register(inbox))
            except TimeoutError as e:
                raise BrokerUnavailable(self.url, f"registering {name!r} timed out") from e
        finally:
            with self._lock:
                self._registering.discard(name)

    async def _register(self, inbox: Inbox) -> None:
        previous = await self._claim(inbox)
        with self._lock:
            self._inboxes[inbox.name] = inbox
            self._by_token[inbox.token] = inbox
            stale = self._adopt_parked(inbox)
            self._changed.notify_all()
        if stale:
            await self._send_acks(confirm=False)
        if previous is not None:
            await self._sweep(inbox)
            if previous != self.owner:
                # A sender whose view still named the old holder may store a message on its
                # subject just after our sweep: look again a little later.
                for delay in (1.0, 5.0):
                    self._loop.call_later(delay, lambda: self._spawn(self._sweep(inbox)))

    def unregister(self, name: str) -> None:
        """Release ``name``: its claim is deleted and its queued messages are discarded.

        Only names registered by this broker can be released; others are a no-op. When NATS is
        unreachable the local inbox still closes and a warning is logged.
        """
        with self._lock:
            inbox = self._inboxes.pop(name, None)
            if inbox is None:
                return
            self._by_token.pop(inbox.token, None)
            self._forget_local(inbox)
            self._changed.notify_all()
        try:
            self._call(self._release(inbox))
        except Exception as e:
            _log.warning("could not release %r in NATS (%r); the claim stays until this "
                         "broker closes or its lease expires", name, e)

    async def _release(self, inbox: Inbox) -> None:
        if await self._release_claim(inbox):
            # Every owner's subject for the name: what an earlier holder left goes too.
            await self._js.purge_stream(self._stream, subject=f"{self._prefix}*.{inbox.token}")

    #: NatsBroker acknowledges late (see :meth:`done`): ``vudo_recv`` reads it peek-then-take.
    supports_requeue = False

    def requeue(self, message: Message) -> None:
        """Not supported (see :attr:`supports_requeue`)."""
        raise NotImplementedError("NatsBroker cannot put a message back; read peek-then-take")

    def clear(self, name: str | None = None) -> None:
        """Discard every message queued for ``name`` (for all of this broker's Spirits when
        ``None``); they stay registered. A name this broker does not hold is ignored."""
        with self._lock:
            inboxes = [inbox for key, inbox in self._inboxes.items()
                       if name is None or key == name]

        async def clear_all() -> None:
            # Everything stored so far goes, including copies already on their way to this
            # process: those arrive after the local queue was emptied and are dropped by
            # sequence, so clear() is exact, not racing the consumer.
            last = (await self._js.stream_info(self._stream)).state.last_seq
            with self._lock:
                for inbox in inboxes:
                    inbox.cleared_through = max(inbox.cleared_through, last)
                    self._forget_local(inbox)
            for inbox in inboxes:
                await self._js.purge_stream(self._stream,
                                            subject=f"{self._prefix}*.{inbox.token}")

        self._call(clear_all(), (len(inboxes) + 1) * 4 * self.request_timeout)

    # closing -------------------------------------------------------------------------------
    def close(self, timeout: float = 5.0) -> None:
        """Flush sends (up to ``timeout`` s), finish received messages, disconnect, and stop
        the broker's threads.

        Names stay claimed and their unreceived messages stay in JetStream, to be delivered to
        whoever registers the name next (this process restarted, or another one: the liveness
        key is deleted so the claims can be taken over at once). Idempotent.
        """
        with self._lock:
            if self._closed:
                return
        if self._connected:
            self.flush(timeout)
        with self._lock:
            taken = [h for i in self._inboxes.values() for h in i.taken]
            for inbox in self._inboxes.values():
                inbox.taken.clear()
            self._closed = True
            self._changed.notify_all()
        if taken and self._connected:
            with contextlib.suppress(Exception):
                self._finish(taken)
        try:
            self._call(self._shutdown(), timeout + 2 * self.request_timeout)
        except Exception as e:
            _log.debug("NATS shutdown: %r", e)
        finally:
            self._stop_loop()
            self._drop_acker()
            if self._journal is not None:
                self._journal_flush()
                with self._lock:  # what flush() did not get stored stays for the next run
                    self._journal.close()
            if self._hooks_thread is not None:
                self._hooks_q.put(None)
                if self._hooks_thread is not threading.current_thread():  # closed by a hook
                    self._hooks_thread.join(timeout=5)

    def __enter__(self) -> NatsBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "connected" if self._connected else "disconnected"
        return f"<NatsBroker {self.url} session={self.session!r} owner={self.owner!r} {state}>"

