"""Connecting, setting up the session on the server, background tasks, recovery, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from ..errors import BrokerUnavailable
from ._inbox import Inboxes

_log = logging.getLogger("vudo.nats")


class Lifecycle(Inboxes):
    """The connection's life: start-up, the periodic tick, recovery after a reconnection."""

    #: Seconds the last recovery after a reconnection took (re-send, heartbeat, watch, consumer).
    last_recovery: float | None = None
    _tasks: list[asyncio.Task[None]]
    _recover_task: asyncio.Task[None] | None

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
            self._resending = True
            # Until the consumer is re-created, nothing is pulled or taken from it: the old one
            # would deliver what follows the messages it lost in flight, ahead of them.
            self._consumer = ""
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
        self._replay_journal()  # needs the registry view; goes out before any new post
        await self._reset_consumer(initial=True)
        self._wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._publisher()),
            loop.create_task(self._ticker()),
            loop.create_task(self._heartbeat()),
        ]
        if self._outbox:
            self._wake.set()

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            if not self._connected:
                continue
            try:
                await self._outbox_tick()
                self._release_overdue()
                await self._refill()
                if self._acks:
                    await self._send_acks(confirm=False)
            except Exception as e:
                _log.debug("NATS tick: %r", e)

    # failure recovery ----------------------------------------------------------------------
    async def _recover(self) -> None:
        """After a reconnection: re-send, re-watch and re-create the consumer until it works."""
        started = time.perf_counter()
        try:
            await self._redelete()
        except Exception as e:
            _log.debug("deleting taken-back copies again failed: %r", e)
        await self._resend_all()
        step = ""
        attempt = 0
        while self._connected and not self._closed:
            # While a cluster elects new leaders JetStream requests go unanswered: after each
            # attempt that timed out the next waits longer (0.5 s, 1 s, 2 s... up to
            # ``request_timeout``), so recovery ends soon after the election and still
            # completes on a slow server. A refusal (no responders) does not lengthen it.
            timeout = min(self.request_timeout, 0.5 * 2 ** attempt)
            try:
                step = "heartbeat"
                await asyncio.wait_for(self._heartbeat_once(), timeout)  # JetStream is back
                step = "registry watch"
                await asyncio.wait_for(self._restart_watch(timeout), 4 * timeout)
                step = "consumer"
                await asyncio.wait_for(self._reset_consumer(), 4 * timeout)
                self.last_recovery = time.perf_counter() - started
                _log.info("NATS session %r recovered (%d inboxes)", self.session,
                          len(self._inboxes))
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:
                _log.debug("recovery attempt failed at the %s (%.1f s): %r", step, timeout, e)
                if isinstance(e, TimeoutError):
                    attempt += 1
                await asyncio.sleep(0.25)

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

