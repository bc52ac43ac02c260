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
from typing import Any, Literal

from ..broker import DEFAULT_INBOX_CAPACITY
from ..errors import BrokerUnavailable
from ._core import Inbox
from ._inbox import Inboxes
from ._wire import SESSION_RE, name_token

_log = logging.getLogger("vudo.nats")


class NatsBroker(Inboxes):
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
    the publishes in flight. ``ack`` is ``"sync"`` (finishing a message waits until JetStream
    confirmed its acknowledgement) or ``"async"`` (acknowledgements are batched in the
    background). ``replicas`` is the replication of the stream and buckets (3 on a cluster).
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
        self._full = {}
        self._sent_seqs = {}
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
            raise

    def _stop_loop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()

    @property
    def connected(self) -> bool:
        """Whether the broker is connected to NATS right now."""
        return self._connected

    # start-up ------------------------------------------------------------------------------
    async def _start(self, connect_timeout: float) -> None:
        try:
            import nats
        except ImportError as e:  # pragma: no cover - depends on the installation
            raise ImportError("NatsBroker needs nats-py: pip install 'vudo[nats]'") from e

        async def on_error(e: Exception) -> None:
            _log.debug("NATS client error: %r", e)

        async def on_disconnected() -> None:
            if self._connected and not self._closed:
                _log.warning("lost the connection to NATS at %s; reconnecting", self.url)
            self._connected = False
            # nats-py would replay what it buffered before noticing the break, and then we
            # re-send every unconfirmed message: the replay would overtake the first re-sends
            # and break per-sender order. We re-send (and re-acknowledge) everything ourselves.
            nc = self._nc
            if nc is not None and hasattr(nc, "_pending"):
                nc._pending = []
                nc._pending_data_size = 0

        async def on_reconnected() -> None:
            _log.warning("reconnected to NATS at %s", self.url)
            self._connected = True
            if self._recover_task is not None:
                self._recover_task.cancel()
            self._recover_task = asyncio.get_running_loop().create_task(self._recover())

        try:
            # The client retries forever once connected (reconnection); the first connection
            # is bounded by ``connect_timeout`` so an unreachable server is a clear error.
            self._nc = await asyncio.wait_for(
                nats.connect(
                    servers=[u.strip() for u in self.url.split(",")],
                    name=f"vudo:{self.session}:{self.owner}",
                    connect_timeout=min(2.0, connect_timeout),
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.25,
                    ping_interval=5,
                    max_outstanding_pings=2,
                    error_cb=on_error,
                    disconnected_cb=on_disconnected,
                    reconnected_cb=on_reconnected,
                ),
                connect_timeout,
            )
        except TimeoutError as e:
            raise BrokerUnavailable(
                self.url, f"no NATS server answered within {connect_timeout}s"
            ) from e
        except (OSError, nats.errors.Error) as e:
            raise BrokerUnavailable(self.url, f"cannot connect ({e!r})") from e
        self._connected = True
        self._max_payload = int(self._nc.max_payload)
        self._js = self._nc.jetstream(timeout=self.request_timeout)
        try:
            await self._js.account_info()
        except Exception as e:
            await self._nc.close()
            raise BrokerUnavailable(
                self.url, f"JetStream is not enabled (start nats-server with -js): {e!r}"
            ) from e
        try:
            await self._setup()
        except Exception as e:
            await self._nc.close()
            raise BrokerUnavailable(self.url, f"setting up the session failed: {e!r}") from e

    async def _setup(self) -> None:
        """Find or create the session's stream and buckets, then start the background tasks."""
        from nats.js import api
        from nats.js.errors import BucketNotFoundError, NotFoundError

        try:
            info = await self._js.stream_info(self._stream)
        except NotFoundError:
            cfg = api.StreamConfig(
                name=self._stream,
                subjects=[self._prefix + ">"],
                retention=api.RetentionPolicy.WORK_QUEUE,
                storage=api.StorageType.FILE,
                discard=api.DiscardPolicy.NEW,
                max_msgs_per_subject=self.max_inbox,
                discard_new_per_subject=True,
                duplicate_window=120.0,
                num_replicas=self.replicas,
            )
            try:
                info = await self._js.add_stream(cfg)
            except Exception:
                info = await self._js.stream_info(self._stream)  # another process was first
        if self._prefix + ">" not in (info.config.subjects or []):
            raise RuntimeError(f"stream {self._stream} exists with other subjects "
                               f"{info.config.subjects} (made by an older vudo?)")
        if info.config.max_msgs_per_subject and info.config.max_msgs_per_subject > 0:
            self.max_inbox = self.capacity = int(info.config.max_msgs_per_subject)

        async def bucket(name: str, ttl: float | None) -> Any:
            try:
                return await self._js.key_value(name)
            except BucketNotFoundError:
                try:
                    return await self._js.create_key_value(
                        bucket=name, history=1, ttl=ttl, replicas=self.replicas)
                except Exception:
                    return await self._js.key_value(name)

        self._names = await bucket(f"vudo_{self.session}_names", None)
        self._alive = await bucket(f"vudo_{self.session}_alive", self.lease)
        # The bucket's own TTL is what counts (the first process created it): heartbeat well
        # within it, or others would think this process dead.
        ttl = (await self._alive.status()).ttl
        if ttl:
            self.lease = float(ttl)
        await self._heartbeat_once()
        self._ack_prefix = self._nc.new_inbox()
        await self._nc.subscribe(self._ack_prefix + ".*", cb=self._on_puback)
        self._pull_inbox = self._nc.new_inbox()
        await self._nc.subscribe(self._pull_inbox + ".*", cb=self._on_pull,
                                 pending_msgs_limit=-1, pending_bytes_limit=-1)
        await self._restart_watch()
        await self._reset_consumer(initial=True)
        self._wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._publisher()),
            loop.create_task(self._ticker()),
            loop.create_task(self._heartbeat()),
        ]

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            if not self._connected:
                continue
            try:
                await self._outbox_tick()
                await self._refill()
                if self._acks:
                    await self._send_acks(confirm=False)
            except Exception as e:
                _log.debug("NATS tick: %r", e)

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

    def clear(self) -> None:
        """Discard every message queued for this broker's Spirits (they stay registered)."""
        with self._lock:
            inboxes = list(self._inboxes.values())
            for inbox in inboxes:
                self._forget_local(inbox)

        async def clear_all() -> None:
            for inbox in inboxes:
                await self._js.purge_stream(self._stream,
                                            subject=f"{self._prefix}*.{inbox.token}")

        self._call(clear_all(), (len(inboxes) + 1) * 4 * self.request_timeout)

    # failure recovery ----------------------------------------------------------------------
    async def _recover(self) -> None:
        """After a reconnection: re-send, re-watch and re-create the consumer until it works."""
        await self._resend_all()
        while self._connected and not self._closed:
            try:
                await self._heartbeat_once()  # also proves JetStream is back
                await self._restart_watch()
                await self._reset_consumer()
                _log.info("NATS session %r recovered (%d inboxes)", self.session,
                          len(self._inboxes))
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:
                _log.debug("recovery attempt failed: %r", e)
                await asyncio.sleep(0.25)

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
            if self._hooks_thread is not None:
                self._hooks_q.put(None)
                if self._hooks_thread is not threading.current_thread():  # closed by a hook
                    self._hooks_thread.join(timeout=5)

    async def _shutdown(self) -> None:
        for task in (*self._tasks, self._watch_task, self._recover_task):
            if task is not None:
                task.cancel()
        if self._connected:
            with contextlib.suppress(Exception):
                await self._send_acks(confirm=True)
            try:
                await self._alive.delete(self._owner_token)
            except Exception as e:
                _log.debug("deleting the liveness key: %r", e)
            if self._watcher is not None:
                try:
                    await self._watcher.stop()
                except Exception as e:
                    _log.debug("stopping the KV watch: %r", e)
        try:
            await self._nc.close()
        except Exception as e:
            _log.debug("closing the NATS connection: %r", e)

    def __enter__(self) -> NatsBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "connected" if self._connected else "disconnected"
        return f"<NatsBroker {self.url} session={self.session!r} owner={self.owner!r} {state}>"

