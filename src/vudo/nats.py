"""Distributed messaging over NATS JetStream: :class:`NatsBroker`.

Spirits of one session may run in several processes on several machines; every process gives its
:class:`~vudo.seance.Seance` a ``NatsBroker`` for the same ``url`` and ``session`` and the Spirits
message each other by name as they would through the in-process :class:`~vudo.broker.MessageBus`.

Layout on the server, per session ``S`` (``<name>`` is a Spirit name made subject-safe by
:func:`name_token`):

* stream ``VUDO_S`` (work-queue retention, file storage) over ``vudo.S.inbox.>``; the inbox of
  Spirit ``n`` is the subject ``vudo.S.inbox.<n>`` read by one durable consumer ``inbox_<n>``.
  Work-queue retention removes a message when that consumer acknowledges it, which ``recv`` does.
* KV bucket ``vudo_S_names``: one key per registered name holding its claim (owner, epoch). Names
  are claimed with ``create``, which fails when the key exists.
* KV bucket ``vudo_S_alive`` (entries expire after ``lease`` seconds): one key per live broker,
  refreshed every ``lease / 3``. A claim whose owner has no live key can be taken over.

See ``docs/distributed.md`` for the guarantees and the behaviour when things fail.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import queue
import re
import socket
import string
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar
from urllib.parse import quote, unquote

from ._host import DEFAULT_INBOX_CAPACITY, Message, MessageCallback
from .abi import ResultCode
from .errors import BrokerUnavailable

__all__ = ["BrokerUnavailable", "NatsBroker", "name_token"]

_log = logging.getLogger("vudo.nats")
_T = TypeVar("_T")

_SESSION_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SAFE_CHARS = frozenset(string.ascii_letters + string.digits + "-")
#: Message ids remembered after a message was received, to drop redelivered copies.
_ACKED_MEMORY = 65_536
#: Room left in a NATS message for our headers when checking the payload size.
_HEADER_ROOM = 512

_H_ID = "Nats-Msg-Id"
_H_FROM = "Vudo-From"
_H_CHANNEL = "Vudo-Channel"
_H_TS = "Vudo-Ts"
_H_EPOCH = "Vudo-Epoch"


def name_token(name: str) -> str:
    """Encode a Spirit name as a NATS subject token, KV key and consumer name.

    Letters, digits and ``-`` stay; every other character becomes ``_XX`` per UTF-8 byte, so the
    encoding is injective (``_`` itself is escaped) and readable for ordinary names.
    """
    if not name:
        raise ValueError("a Spirit name must not be empty")
    return "".join(
        c if c in _SAFE_CHARS else "".join(f"_{b:02X}" for b in c.encode()) for c in name
    )


def _name_from_token(token: str) -> str:
    out = bytearray()
    i = 0
    while i < len(token):
        if token[i] == "_":
            out.append(int(token[i + 1 : i + 3], 16))
            i += 3
        else:
            out += token[i].encode()
            i += 1
    return out.decode()


@dataclass(frozen=True, slots=True)
class _Claim:
    owner: str
    epoch: str
    revision: int


@dataclass(eq=False, slots=True)
class _Out:
    """One message on its way to JetStream (in the outbox, then in flight until its PubAck)."""

    seq: int
    subject: str
    data: bytes
    headers: dict[str, str]
    sent_at: float = 0.0
    attempts: int = 0


@dataclass(eq=False, slots=True)
class _Held:
    """A prefetched, not yet acknowledged message and the NATS message to acknowledge."""

    id: str
    message: Message
    raw: Any


@dataclass(eq=False)
class _Inbox:
    name: str
    capacity: int
    token: str
    subject: str
    durable: str
    epoch: str = ""
    revision: int = 0
    generation: int = 0
    sub: Any = None
    queue: deque[_Held] = field(default_factory=deque)
    ids: dict[str, _Held] = field(default_factory=dict)
    hooks: list[MessageCallback] = field(default_factory=list)
    recv_lock: threading.Lock = field(default_factory=threading.Lock)


class NatsBroker:
    """A :class:`~vudo.broker.MessageBroker` whose inboxes live in NATS JetStream.

    ``url`` is the NATS server (``nats://host:4222``); every process of one ``session`` shares
    its names and inboxes. ``owner`` identifies this process in name claims: a restarted process
    given the same ``owner`` takes its names back at once, while another owner can take a name
    over only after the claimer's liveness key expired (``lease`` seconds after it stopped) or it
    closed its broker. Never give one ``owner`` to two live processes.

    ``capacity`` is the default prefetch size of an inbox (messages held locally and not yet
    acknowledged); further messages wait in the stream. ``outbox_size`` bounds the messages
    accepted by :meth:`post` but not yet confirmed by JetStream: past it ``post`` returns ERROR.
    ``window`` bounds the publishes in flight. ``ack`` is ``"sync"`` (``recv`` returns a message
    only once JetStream confirmed its acknowledgement: exactly once even if the process is
    killed) or ``"async"`` (faster; a message received just before a crash may come again).

    Every method is thread-safe and synchronous; the network runs on a private event loop in a
    daemon thread. Raises :class:`BrokerUnavailable` when the server cannot be reached.
    """

    def __init__(
        self,
        url: str = "nats://127.0.0.1:4222",
        *,
        session: str = "default",
        owner: str | None = None,
        capacity: int = DEFAULT_INBOX_CAPACITY,
        outbox_size: int = 10_000,
        window: int = 1024,
        lease: float = 10.0,
        ack: Literal["sync", "async"] = "sync",
        ack_wait: float = 30.0,
        connect_timeout: float = 5.0,
        request_timeout: float = 2.0,
        retry_after: float = 2.0,
        debug: bool = False,
    ) -> None:
        if not _SESSION_RE.match(session):
            raise ValueError(f"session must match {_SESSION_RE.pattern}, got {session!r}")
        if capacity < 1 or outbox_size < 1 or window < 1:
            raise ValueError("capacity, outbox_size and window must be at least 1")
        if ack not in ("sync", "async"):
            raise ValueError("ack must be 'sync' or 'async'")
        if lease <= 0:
            raise ValueError("lease must be positive")
        self.url = url
        self.session = session
        self.owner = owner or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.capacity = capacity
        self.outbox_size = outbox_size
        self.window = window
        self.lease = lease
        self.ack = ack
        self.ack_wait = ack_wait
        self.request_timeout = request_timeout
        self.retry_after = retry_after
        self.debug = debug

        self._stream = f"VUDO_{session}"
        self._subject_prefix = f"vudo.{session}.inbox."
        # Message ids must never repeat within JetStream's duplicate window, even when a
        # restarted process reuses ``owner``: they carry a per-instance random prefix.
        self._instance = uuid.uuid4().hex[:12]
        self._owner_key = name_token(self.owner)

        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # arrivals, registry, outbox drained
        self._inboxes: dict[str, _Inbox] = {}
        self._registering: set[str] = set()
        self._registry: dict[str, _Claim] = {}
        self._acked: OrderedDict[str, None] = OrderedDict()
        self._outbox: deque[_Out] = deque()
        self._inflight: OrderedDict[int, _Out] = OrderedDict()
        self._out_seq = 0
        self._wake_scheduled = False
        self._need_resend = False
        self._connected = False
        self._closed = False
        self.sent = 0  #: messages confirmed stored by JetStream
        self.failed = 0  #: messages JetStream refused for good (see docs/distributed.md)

        self._hooks_q: queue.SimpleQueue[tuple[MessageCallback, Message] | None] = (
            queue.SimpleQueue()
        )
        self._hooks_thread: threading.Thread | None = None

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"vudo-nats-{session}", daemon=True
        )
        self._thread.start()
        self._nc: Any = None
        self._js: Any = None
        self._names: Any = None
        self._alive: Any = None
        self._watcher: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._watch_task: asyncio.Task[None] | None = None
        self._recover_task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
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

    # plumbing ----------------------------------------------------------------------------
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

    # start-up ----------------------------------------------------------------------------
    async def _start(self, connect_timeout: float) -> None:
        try:
            import nats
            from nats.js import api
            from nats.js.errors import BucketNotFoundError, NotFoundError
        except ImportError as e:  # pragma: no cover - depends on the installation
            raise ImportError("NatsBroker needs nats-py: pip install 'vudo[nats]'") from e

        async def on_error(e: Exception) -> None:
            _log.debug("NATS client error: %r", e)

        async def on_disconnected() -> None:
            if self._connected and not self._closed:
                _log.warning("lost the connection to NATS at %s; reconnecting", self.url)
            self._connected = False

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
                    servers=[self.url],
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
            await self._setup(api, BucketNotFoundError, NotFoundError)
        except Exception as e:
            await self._nc.close()
            raise BrokerUnavailable(self.url, f"setting up the session failed: {e!r}") from e

    async def _setup(self, api: Any, bucket_not_found: Any, not_found: Any) -> None:
        """Find or create the session's stream and buckets, then start the background tasks."""
        try:
            await self._js.stream_info(self._stream)
        except not_found:
            cfg = api.StreamConfig(
                name=self._stream,
                subjects=[self._subject_prefix + ">"],
                retention=api.RetentionPolicy.WORK_QUEUE,
                storage=api.StorageType.FILE,
                discard=api.DiscardPolicy.NEW,
                duplicate_window=120.0,
            )
            try:
                await self._js.add_stream(cfg)
            except Exception:
                await self._js.stream_info(self._stream)  # another process created it first

        async def bucket(name: str, ttl: float | None) -> Any:
            try:
                return await self._js.key_value(name)
            except bucket_not_found:
                try:
                    return await self._js.create_key_value(bucket=name, history=1, ttl=ttl)
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
        await self._restart_watch()
        self._wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._publisher()),
            loop.create_task(self._ticker()),
            loop.create_task(self._heartbeat()),
        ]

    # liveness ----------------------------------------------------------------------------
    async def _heartbeat_once(self) -> None:
        info = {"host": socket.gethostname(), "pid": os.getpid(), "instance": self._instance}
        await self._alive.put(self._owner_key, json.dumps(info).encode())

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            if self._connected:
                try:
                    await self._heartbeat_once()
                except Exception as e:
                    _log.debug("liveness heartbeat failed: %r", e)

    async def _is_alive(self, owner: str) -> bool:
        from nats.js.errors import KeyNotFoundError

        try:
            await self._alive.get(name_token(owner))
        except KeyNotFoundError:
            return False
        return True

    # registry view -----------------------------------------------------------------------
    def _apply(self, registry: dict[str, _Claim], entry: Any) -> None:
        name = _name_from_token(entry.key)
        if entry.operation in ("DEL", "PURGE"):
            registry.pop(name, None)
            return
        try:
            info = json.loads(entry.value)
            registry[name] = _Claim(str(info["owner"]), str(info["epoch"]), int(entry.revision))
        except (ValueError, KeyError, TypeError):
            _log.warning("ignoring malformed claim for %r", name)

    async def _restart_watch(self) -> None:
        """(Re)start the KV watch; the registry view is rebuilt from its initial snapshot."""
        if self._watch_task is not None:
            self._watch_task.cancel()
            self._watch_task = None
        if self._watcher is not None:
            old, self._watcher = self._watcher, None
            try:
                await old.stop()
            except Exception as e:
                _log.debug("stopping the old KV watch: %r", e)
        watcher = await self._names.watchall()
        snapshot: dict[str, _Claim] = {}
        while True:
            entry = await watcher.updates(timeout=2 * self.request_timeout)
            if entry is None:
                break
            self._apply(snapshot, entry)
        with self._lock:
            self._registry = snapshot
            self._changed.notify_all()
        self._watcher = watcher
        self._watch_task = asyncio.get_running_loop().create_task(self._watch_loop(watcher))

    async def _watch_loop(self, watcher: Any) -> None:
        async for entry in watcher:
            if entry is None:
                continue
            with self._lock:
                self._apply(self._registry, entry)
                self._changed.notify_all()
                inbox = self._inboxes.get(_name_from_token(entry.key))
                lost = inbox is not None and entry.revision > inbox.revision and self._lost(inbox)
            if lost and inbox is not None:
                await self._close_lost(inbox)

    def _lost(self, inbox: _Inbox) -> bool:
        """Whether the claim of a local name now belongs to someone else (call with the lock)."""
        claim = self._registry.get(inbox.name)
        if claim is not None and claim.owner == self.owner:
            return False
        # Another process took the name over (it thought this one dead: a stall longer than
        # the lease) or an operator deleted the claim. Stop handing out its messages: they
        # belong to the new holder.
        _log.error("Spirit name %r was taken from this process (now %s); its inbox is closed "
                   "here", inbox.name, claim.owner if claim else "unclaimed")
        self._inboxes.pop(inbox.name, None)
        inbox.generation += 1
        inbox.queue.clear()
        inbox.ids.clear()
        return True

    async def _close_lost(self, inbox: _Inbox) -> None:
        if inbox.sub is not None:
            with contextlib.suppress(Exception):
                await inbox.sub.unsubscribe()

    def _lookup(self, name: str) -> _Claim | None:
        claim = self._registry.get(name)
        if claim is not None:
            return claim
        # A name claimed a moment ago elsewhere may not have reached the watch yet: ask once.
        try:
            return self._call(self._fetch_claim(name), 2 * self.request_timeout)
        except Exception as e:
            _log.debug("claim lookup of %r failed: %r", name, e)
            return None

    async def _fetch_claim(self, name: str) -> _Claim | None:
        from nats.js.errors import KeyNotFoundError

        try:
            entry = await self._names.get(name_token(name))
        except KeyNotFoundError:
            return None
        info = json.loads(entry.value)
        return _Claim(str(info["owner"]), str(info["epoch"]), int(entry.revision))

    def wait_registered(self, name: str, timeout: float | None = None) -> bool:
        """Wait until ``name`` is registered in any process of the session; ``False`` on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while name not in self._registry:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True

    # registration ------------------------------------------------------------------------
    def register(self, name: str, *, capacity: int | None = None) -> None:
        """Claim ``name`` for this process and open its durable inbox.

        Raises ``ValueError`` if a live process holds the name (or this one already does), and
        :class:`BrokerUnavailable` when NATS cannot be reached. Messages sent to the name while
        its previous holder was down, or not yet acknowledged by it, are delivered here.
        """
        cap = self.capacity if capacity is None else capacity
        if cap < 1:
            raise ValueError("inbox capacity must be at least 1")
        token = name_token(name)
        with self._lock:
            if self._closed:
                raise BrokerUnavailable(self.url, "the broker is closed")
            if name in self._inboxes or name in self._registering:
                raise ValueError(f"a Spirit named {name!r} is already registered")
            self._registering.add(name)
        inbox = _Inbox(name, cap, token, self._subject_prefix + token, "inbox_" + token)
        try:
            if not self._connected:
                raise BrokerUnavailable(self.url, "not connected")
            try:
                self._call(self._claim(inbox))
            except TimeoutError as e:
                raise BrokerUnavailable(self.url, f"registering {name!r} timed out") from e
            with self._lock:
                self._inboxes[name] = inbox
        finally:
            with self._lock:
                self._registering.discard(name)

    async def _claim(self, inbox: _Inbox) -> None:
        from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

        def value(epoch: str) -> bytes:
            return json.dumps({
                "owner": self.owner, "epoch": epoch, "host": socket.gethostname(),
                "pid": os.getpid(), "capacity": inbox.capacity,
            }).encode()

        for _ in range(5):  # a claim deleted between our create and get: try again
            epoch = uuid.uuid4().hex[:16]
            try:
                revision = await self._names.create(inbox.token, value(epoch))
                break
            except KeyWrongLastSequenceError:
                pass
            try:
                entry = await self._names.get(inbox.token)
            except KeyNotFoundError:
                continue
            info = json.loads(entry.value)
            holder = str(info.get("owner"))
            if holder != self.owner and await self._is_alive(holder):
                raise ValueError(
                    f"a Spirit named {inbox.name!r} is already registered in session "
                    f"{self.session!r} by {holder} (host {info.get('host')}, pid {info.get('pid')})"
                )
            # Take over a claim of ours (restart with the same owner) or of a dead owner; the
            # epoch is kept so messages already sent to the name stay deliverable.
            epoch = str(info.get("epoch"))
            try:
                revision = await self._names.update(inbox.token, value(epoch), last=entry.revision)
                break
            except KeyWrongLastSequenceError:
                raise ValueError(
                    f"{inbox.name!r} was claimed concurrently by another process"
                ) from None
        else:
            raise ValueError(f"could not claim {inbox.name!r}: the claim kept changing")
        inbox.epoch, inbox.revision = epoch, revision
        with self._lock:
            self._registry[inbox.name] = _Claim(self.owner, epoch, revision)
            self._changed.notify_all()
        try:
            await self._reset_inbox(inbox)
        except BaseException:
            with self._lock:
                self._registry.pop(inbox.name, None)
            with contextlib.suppress(Exception):
                await self._names.delete(inbox.token, last=revision)
            raise

    async def _reset_inbox(self, inbox: _Inbox, *, purge: bool = False) -> None:
        """(Re)create the inbox consumer: everything unacknowledged is delivered again, in order.

        Used on register, after a reconnection (messages pushed while the connection broke would
        otherwise only come back after ``ack_wait``, out of order) and by :meth:`clear`.
        """
        from nats.js import api
        from nats.js.errors import NotFoundError

        with self._lock:
            inbox.generation += 1
            generation = inbox.generation
            inbox.queue.clear()
            inbox.ids.clear()
            old, inbox.sub = inbox.sub, None
        if old is not None:
            try:
                await old.unsubscribe()
            except Exception as e:
                _log.debug("unsubscribing the old inbox of %r: %r", inbox.name, e)
        try:
            await self._js.delete_consumer(self._stream, inbox.durable)
        except NotFoundError:
            pass
        if purge:
            await self._js.purge_stream(self._stream, subject=inbox.subject)
        deliver = self._nc.new_inbox()
        # Subscribe before the consumer exists so that nothing is pushed to a subject nobody
        # listens on (that would wait ``ack_wait`` before redelivery).
        sub = await self._nc.subscribe(
            deliver, cb=self._deliverer(inbox, generation), pending_msgs_limit=-1,
            pending_bytes_limit=-1,
        )
        with self._lock:
            inbox.sub = sub
        await self._js.add_consumer(
            self._stream,
            api.ConsumerConfig(
                durable_name=inbox.durable,
                deliver_subject=deliver,
                filter_subject=inbox.subject,
                deliver_policy=api.DeliverPolicy.ALL,
                ack_policy=api.AckPolicy.EXPLICIT,
                ack_wait=self.ack_wait,
                max_deliver=-1,
                max_ack_pending=inbox.capacity,
            ),
        )

    def unregister(self, name: str) -> None:
        """Release ``name``: its claim is deleted and its queued messages are discarded.

        Only names registered by this broker can be released; others are a no-op. When NATS is
        unreachable the local inbox still closes and a warning is logged.
        """
        with self._lock:
            inbox = self._inboxes.pop(name, None)
            if inbox is None:
                return
            inbox.generation += 1
            inbox.queue.clear()
            inbox.ids.clear()
        try:
            self._call(self._release(inbox))
        except Exception as e:
            _log.warning("could not release %r in NATS (%r); the claim stays until this "
                         "broker closes or its lease expires", name, e)

    async def _release(self, inbox: _Inbox) -> None:
        from nats.js.errors import APIError, NotFoundError

        if inbox.sub is not None:
            await inbox.sub.unsubscribe()
        try:
            await self._names.delete(inbox.token, last=inbox.revision)
        except APIError as e:
            if e.err_code in (10071, 10164):  # wrong last sequence: the claim is not ours now
                return  # someone took the name over (we were presumed dead): leave it to them
            raise
        with self._lock:
            self._registry.pop(inbox.name, None)
        try:
            await self._js.delete_consumer(self._stream, inbox.durable)
        except NotFoundError:
            pass
        await self._js.purge_stream(self._stream, subject=inbox.subject)

    def is_registered(self, name: str) -> bool:
        """Whether ``name`` is registered in any process of the session (cached view)."""
        return name in self._registry

    def spirits(self) -> list[str]:
        """Names registered in the whole session, oldest claim first (cached view)."""
        with self._lock:
            return sorted(self._registry, key=lambda n: self._registry[n].revision)

    def local_spirits(self) -> list[str]:
        """Names whose inbox this broker holds."""
        with self._lock:
            return list(self._inboxes)

    # sending -----------------------------------------------------------------------------
    def post(self, from_: str, to: str, payload: bytes, channel: int = 0) -> ResultCode:
        """Queue a message for ``to`` without waiting for the network.

        OK (accepted; JetStream stores it shortly), NOT_FOUND (no such name in the session) or
        ERROR (NATS unreachable, outbox full, payload too large, or broker closed).
        """
        if self._closed or not self._connected:
            return ResultCode.ERROR
        claim = self._lookup(to)
        if claim is None:
            return ResultCode.NOT_FOUND
        data = bytes(payload)
        if len(data) > self._max_payload - _HEADER_ROOM:
            _log.warning("message %r -> %r of %d bytes exceeds the NATS maximum payload",
                         from_, to, len(data))
            return ResultCode.ERROR
        headers = {
            _H_FROM: quote(from_, safe=""),
            _H_CHANNEL: str(int(channel)),
            _H_TS: repr(time.time() * 1000.0),
            _H_EPOCH: claim.epoch,
        }
        with self._lock:
            if len(self._outbox) + len(self._inflight) >= self.outbox_size:
                if self.debug:
                    _log.debug("outbox full (%d); refused message %r -> %r",
                               self.outbox_size, from_, to)
                return ResultCode.ERROR
            self._out_seq += 1
            seq = self._out_seq
            headers[_H_ID] = f"{self._instance}-{seq}"
            self._outbox.append(_Out(seq, self._subject_prefix + name_token(to), data, headers))
            wake = not self._wake_scheduled
            self._wake_scheduled = True
        if wake:
            self._loop.call_soon_threadsafe(self._wake_publisher)
        if self.debug:
            _log.debug("message %r -> %r ch=%d %d bytes", from_, to, channel, len(data))
        return ResultCode.OK

    def send(self, from_: str, to: str, channel: int, payload: bytes) -> bool:
        """Seed-compatible send: ``True`` if the message was accepted."""
        return self.post(from_, to, payload, channel) == ResultCode.OK

    def broadcast(self, from_: str, payload: bytes, channel: int = 0) -> int:
        """Send to every name of the session, the sender included; return how many accepted it."""
        data = bytes(payload)
        return sum(1 for n in self.spirits() if self.post(from_, n, data, channel) == ResultCode.OK)

    #: NatsBroker acknowledges on receipt: ``vudo_recv`` reads it peek-then-take.
    supports_requeue = False

    def requeue(self, message: Message) -> None:
        """Not supported (see :attr:`supports_requeue`)."""
        raise NotImplementedError("NatsBroker cannot put a message back; read peek-then-take")

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until JetStream confirmed every accepted message; ``False`` on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while self._outbox or self._inflight:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True

    def outbox_pending(self) -> int:
        """Messages accepted by :meth:`post` and not yet confirmed by JetStream."""
        with self._lock:
            return len(self._outbox) + len(self._inflight)

    def _wake_publisher(self) -> None:
        with self._lock:
            self._wake_scheduled = False
        if self._wake is not None:
            self._wake.set()

    async def _publish(self, item: _Out) -> None:
        item.sent_at = time.monotonic()
        await self._nc.publish(
            item.subject, item.data, reply=f"{self._ack_prefix}.{item.seq}", headers=item.headers
        )

    async def _publisher(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._connected:
                with self._lock:
                    if not self._outbox or len(self._inflight) >= self.window:
                        break
                    item = self._outbox.popleft()
                    self._inflight[item.seq] = item
                try:
                    await self._publish(item)
                except Exception as e:
                    _log.debug("publish failed: %r", e)
                    self._need_resend = True
                    break

    async def _resend_all(self) -> None:
        """Publish every unconfirmed message again, oldest first (ids make repeats harmless)."""
        self._need_resend = False
        with self._lock:
            items = list(self._inflight.values())
        for item in items:
            if not self._connected:
                self._need_resend = True
                return
            try:
                await self._publish(item)
            except Exception as e:
                _log.debug("re-publish failed: %r", e)
                self._need_resend = True
                return

    async def _ticker(self) -> None:
        assert self._wake is not None
        while True:
            await asyncio.sleep(0.2)
            if not self._connected:
                continue
            with self._lock:
                oldest = next(iter(self._inflight.values()), None)
                more = bool(self._outbox) and len(self._inflight) < self.window
            if oldest is not None:
                age = time.monotonic() - oldest.sent_at
                # A refused publish (e.g. JetStream still starting) is retried soon; a
                # missing PubAck (lost with a connection) after ``retry_after``.
                if age > self.retry_after or (self._need_resend and age > 0.25):
                    await self._resend_all()
            if more:
                self._wake.set()

    async def _on_puback(self, msg: Any) -> None:
        try:
            seq = int(msg.subject.rsplit(".", 1)[1])
        except ValueError:
            return
        error: dict[str, Any] | None = None
        if msg.data:
            try:
                resp = json.loads(msg.data)
                error = resp.get("error")
            except ValueError:
                error = {"code": 0, "description": "unreadable reply"}
        else:
            error = {"code": 503, "description": "no responders (stream unavailable)"}
        wake = False
        with self._lock:
            item = self._inflight.get(seq)
            if item is None:
                return
            if error is None:
                del self._inflight[seq]
                self.sent += 1
                wake = bool(self._outbox)
            else:
                item.attempts += 1
                transient = error.get("code") == 503
                if not transient and item.attempts >= 5:
                    del self._inflight[seq]
                    self.failed += 1
                    _log.error("JetStream refused a message to %s: %s", item.subject,
                               error.get("description"))
                else:
                    self._need_resend = True
            if not self._outbox and not self._inflight:
                self._changed.notify_all()
        if wake and self._wake is not None:
            self._wake.set()

    # receiving ---------------------------------------------------------------------------
    def _deliverer(
        self, inbox: _Inbox, generation: int
    ) -> Callable[[Any], Coroutine[Any, Any, None]]:
        async def deliver(msg: Any) -> None:
            if generation != inbox.generation:
                return  # a consumer being replaced: its messages come again from the new one
            headers = msg.headers or {}
            mid = headers.get(_H_ID) or msg.reply
            if headers.get(_H_EPOCH, inbox.epoch) != inbox.epoch:
                await msg.ack()  # sent to an earlier holder of the name that released it
                return
            with self._lock:
                if mid in self._acked:
                    stale = True
                elif mid in inbox.ids:
                    inbox.ids[mid].raw = msg  # redelivered while held: ack the newest delivery
                    return
                else:
                    stale = False
                    message = Message(
                        unquote(headers.get(_H_FROM, "")),
                        inbox.name,
                        int(headers.get(_H_CHANNEL, "0")),
                        bytes(msg.data),
                        float(headers.get(_H_TS, time.time() * 1000.0)),
                    )
                    held = _Held(mid, message, msg)
                    inbox.queue.append(held)
                    inbox.ids[mid] = held
                    hooks = tuple(inbox.hooks)
                    self._changed.notify_all()
            if stale:
                await msg.ack()  # a copy of a message already received: just remove it
                return
            for hook in hooks:
                self._hooks_q.put((hook, message))

        return deliver

    def _take(self, name: str, channel: int, remove: bool) -> Message | None:
        inbox = self._inboxes.get(name)
        if inbox is None:
            return None
        if not remove:
            if self.ack == "sync" and not self._connected:
                return None  # recv could not take it now (no acknowledgement possible)
            with self._lock:
                for h in inbox.queue:
                    if channel == 0 or h.message.channel == channel:
                        return h.message
            return None
        with inbox.recv_lock:  # one receiver at a time keeps per-inbox order
            while True:
                with self._lock:
                    held: _Held | None = next(
                        (h for h in inbox.queue if channel == 0 or h.message.channel == channel),
                        None,
                    )
                    if held is None:
                        return None
                    duplicate = held.id in self._acked
                if duplicate:
                    self._forget(inbox, held)
                    self._loop.call_soon_threadsafe(self._ack_later, held.raw)
                    continue
                if self.ack == "sync":
                    if not self._connected or not self._ack_now(held.raw):
                        return None  # not acknowledged, so not received: it stays queued
                else:
                    self._loop.call_soon_threadsafe(self._ack_later, held.raw)
                self._forget(inbox, held)
                return held.message

    def _forget(self, inbox: _Inbox, held: _Held) -> None:
        with self._lock:
            if inbox.queue and inbox.queue[0] is held:
                inbox.queue.popleft()
            else:
                try:
                    inbox.queue.remove(held)
                except ValueError:
                    pass  # the inbox was reset meanwhile; a redelivered copy will be dropped
            if inbox.ids.get(held.id) is held:
                del inbox.ids[held.id]
            self._acked[held.id] = None
            if len(self._acked) > _ACKED_MEMORY:
                self._acked.popitem(last=False)

    def _ack_now(self, raw: Any) -> bool:
        try:
            self._call(raw.ack_sync(timeout=self.request_timeout), self.request_timeout + 1.0)
        except Exception as e:
            _log.debug("acknowledgement failed: %r", e)
            return False
        return True

    def _ack_later(self, raw: Any) -> None:
        async def ack() -> None:
            try:
                await raw.ack()
            except Exception as e:
                _log.debug("acknowledgement failed: %r", e)

        self._loop.create_task(ack())

    def recv(self, name: str, channel: int = 0) -> Message | None:
        """Take the oldest message for local Spirit ``name`` (``channel`` 0 = any) or ``None``.

        The message is acknowledged to JetStream before it is returned (``ack="sync"``), so it
        is removed from the stream and will not be delivered again. While NATS is unreachable
        this returns ``None`` and the message stays queued.
        """
        return self._take(name, channel, remove=True)

    def peek(self, name: str, channel: int = 0) -> Message | None:
        """The oldest message for local Spirit ``name`` without taking it.

        Like :meth:`recv`, ``None`` while NATS is unreachable (with ``ack="sync"``), so that a
        peek-then-recv caller never sees a message it could not then take.
        """
        return self._take(name, channel, remove=False)

    def pending(self, name: str, channel: int = 0) -> int:
        """Messages prefetched for local Spirit ``name`` (at most its capacity)."""
        inbox = self._inboxes.get(name)
        if inbox is None:
            return 0
        with self._lock:
            if channel == 0:
                return len(inbox.queue)
            return sum(1 for h in inbox.queue if h.message.channel == channel)

    def wait_pending(self, name: str, timeout: float | None = None, channel: int = 0) -> bool:
        """Wait until a message waits for local Spirit ``name``; ``False`` on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        inbox = self._inboxes.get(name)
        if inbox is None:
            return False
        with self._changed:
            while not any(channel == 0 or h.message.channel == channel for h in inbox.queue):
                remaining = None if deadline is None else deadline - time.monotonic()
                if (remaining is not None and remaining <= 0) or self._closed:
                    return False
                self._changed.wait(remaining)
            return True

    def on_message(self, name: str, callback: MessageCallback) -> Callable[[], None]:
        """Call ``callback(message)`` after each message prefetched for local Spirit ``name``.

        Callbacks run in order on one broker thread (not the network loop), so they may call
        :meth:`recv`. Raises ``KeyError`` if ``name`` is not registered by this broker.
        """
        with self._lock:
            inbox = self._inboxes.get(name)
            if inbox is None:
                raise KeyError(f"no Spirit named {name!r} is registered in this process")
            inbox.hooks.append(callback)
            if self._hooks_thread is None:
                self._hooks_thread = threading.Thread(
                    target=self._run_hooks, name=f"vudo-nats-hooks-{self.session}", daemon=True
                )
                self._hooks_thread.start()

        def unsubscribe() -> None:
            with self._lock:
                if callback in inbox.hooks:
                    inbox.hooks.remove(callback)

        return unsubscribe

    def _run_hooks(self) -> None:
        while True:
            item = self._hooks_q.get()
            if item is None:
                return
            hook, message = item
            try:
                hook(message)
            except Exception:
                _log.exception("on_message callback for %r failed", message.to)

    def clear(self) -> None:
        """Discard every message queued for this broker's Spirits (they stay registered)."""
        with self._lock:
            inboxes = list(self._inboxes.values())

        async def clear_all() -> None:
            for inbox in inboxes:
                await self._reset_inbox(inbox, purge=True)

        self._call(clear_all(), (len(inboxes) + 1) * 4 * self.request_timeout)

    # failure recovery --------------------------------------------------------------------
    async def _recover(self) -> None:
        """After a reconnection: re-send, re-watch and re-create consumers until it works."""
        await self._resend_all()
        while self._connected and not self._closed:
            try:
                await self._heartbeat_once()  # also proves JetStream is back
                await self._restart_watch()
                with self._lock:
                    lost = [i for i in list(self._inboxes.values()) if self._lost(i)]
                    inboxes = list(self._inboxes.values())
                for inbox in lost:
                    await self._close_lost(inbox)
                for inbox in inboxes:
                    await self._reset_inbox(inbox)
                _log.info("NATS session %r recovered (%d inboxes)", self.session, len(inboxes))
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:
                _log.debug("recovery attempt failed: %r", e)
                await asyncio.sleep(0.25)

    # closing -----------------------------------------------------------------------------
    def close(self, timeout: float = 5.0) -> None:
        """Flush sends (up to ``timeout`` s), disconnect, and stop the broker's threads.

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
            self._closed = True
            self._changed.notify_all()
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
            try:
                await self._alive.delete(self._owner_key)
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
