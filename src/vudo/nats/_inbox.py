"""Receiving: one pull consumer per process, local inboxes, hand-out, batched acknowledgements.

Every message for this process's Spirits is on ``vudo.<S>.in.<owner>.>``; one durable pull
consumer over that filter feeds every local inbox. A message is acknowledged to JetStream only
once the Spirit is done with it: when it frees it (:meth:`Inbox.done`), receives again, or is
released. Until then a crash leaves it in the stream, to be delivered again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from .._host import Message, MessageCallback
from ._core import DONE_MEMORY, Held, Inbox
from ._fastack import FastAcks
from ._order import Lanes
from ._wire import ack_stream_seq, decode

_log = logging.getLogger("vudo.nats")
#: Messages asked for per pull request (two requests are kept outstanding).
PULL_BATCH = 512
_PULL_EXPIRES = 5.0
_H_ID = "Nats-Msg-Id"


def _by_sseq(h: Held) -> int:
    return h.sseq


class Inboxes(FastAcks):
    """The receiving half of the broker."""

    prefetch: int
    ack_wait: float
    _consumer: str
    _consumer_gen: int
    _pull_inbox: str
    _reqs: dict[int, list[float]]
    _req_seq: int
    _seen: dict[tuple[int, str], Held]
    _parked: dict[str, list[tuple[Held, bytes]]]
    _acks: list[Held]
    _ack_scheduled: bool
    _hooks_q: queue.SimpleQueue[tuple[MessageCallback, Message] | None]
    _hooks_thread: threading.Thread | None

    # the consumer --------------------------------------------------------------------------
    def _consumer_name(self, gen: int) -> str:
        return f"p{gen % 2}_{self._owner_token}"

    async def _reset_consumer(self, *, initial: bool = False) -> None:
        """(Re)create this process's consumer: every unacknowledged message comes again, in
        stream order. Used at start and after a reconnection (a push or pull in flight when the
        connection broke would otherwise come back only after ``ack_wait``, out of order)."""
        from nats.js import api
        from nats.js.errors import NotFoundError

        await self._send_acks(confirm=False)
        with self._lock:
            old = self._consumer_name(self._consumer_gen) if self._consumer_gen else ""
            self._consumer_gen += 1
            self._consumer = self._consumer_name(self._consumer_gen)
            self._reqs.clear()
            taken = {h.key: h for i in self._inboxes.values() for h in i.taken}
            for inbox in self._inboxes.values():
                inbox.lanes.rewind(list(inbox.queue), inbox.taken)
                inbox.queue.clear()
                inbox.lanes.drop_held()
            self._seen = taken
            self._parked.clear()
        # At start, both names may exist from an earlier run of this owner.
        for name in {old, self._consumer} if not initial else {
                self._consumer_name(0), self._consumer_name(1)}:
            if not name:
                continue
            try:
                await self._js.delete_consumer(self._stream, name)
            except NotFoundError:
                pass
        await self._js.add_consumer(
            self._stream,
            api.ConsumerConfig(
                durable_name=self._consumer,
                filter_subject=f"{self._prefix}{self._owner_token}.>",
                deliver_policy=api.DeliverPolicy.ALL,
                ack_policy=api.AckPolicy.EXPLICIT,
                ack_wait=self.ack_wait,
                max_deliver=-1,
                max_ack_pending=self.prefetch,
                max_waiting=16,
                num_replicas=self.replicas,
            ),
        )
        await self._refill()

    async def _refill(self) -> None:
        """Keep up to two pull requests outstanding (on the loop)."""
        now = time.monotonic()
        for k in [k for k, (_, deadline) in self._reqs.items() if deadline < now]:
            del self._reqs[k]  # expired without a status message (lost with a connection)
        while self._connected and self._consumer and len(self._reqs) < 2 and \
                sum(r[0] for r in self._reqs.values()) < PULL_BATCH:
            self._req_seq += 1
            k = self._req_seq
            self._reqs[k] = [float(PULL_BATCH), now + _PULL_EXPIRES + 1.0]
            request = json.dumps({"batch": PULL_BATCH, "expires": int(_PULL_EXPIRES * 1e9)})
            try:
                await self._nc.publish(
                    f"$JS.API.CONSUMER.MSG.NEXT.{self._stream}.{self._consumer}",
                    request.encode(), reply=f"{self._pull_inbox}.{k}")
            except Exception as e:
                _log.debug("pull request failed: %r", e)
                self._reqs.pop(k, None)
                return

    async def _on_pull(self, msg: Any) -> None:
        headers = msg.headers
        if not msg.reply:  # a status: 408 request expired, 409 limits, 404 nothing (no_wait)
            if headers and "Status" in headers:
                try:
                    self._reqs.pop(int(msg.subject.rsplit(".", 1)[1]), None)
                except ValueError:
                    pass
                await self._refill()
            return
        # Messages fill the oldest request first.
        for k, req in self._reqs.items():
            req[0] -= 1
            if req[0] <= 0:
                del self._reqs[k]
                self._loop.create_task(self._refill())
            break
        reply: str = msg.reply
        parts = reply.split(".")
        if (parts[3] if len(parts) == 9 else parts[5]) != self._consumer:
            return  # from a consumer since replaced: the new one delivers it again
        sseq = ack_stream_seq(reply)
        key = (sseq, headers.get(_H_ID, "") if headers else "")
        token = msg.subject.rsplit(".", 1)[1]
        drop = False
        with self._lock:
            held = self._seen.get(key)
            if held is not None:
                held.reply = reply  # redelivered while held here: acknowledge the newest copy
                return
            if key in self._done:
                drop = True  # finished here already; its acknowledgement was lost
            else:
                inbox = self._by_token.get(token)
                decoded = decode(msg.data, inbox.name if inbox else "")
                if decoded is None:
                    drop = True
                    _log.warning("dropping a message that is not a vudo frame on %s",
                                 msg.subject)
                elif inbox is None:
                    held = Held(sseq, decoded[0], reply, key[1], *decoded[2:])
                    self._seen[key] = held
                    self._parked.setdefault(token, []).append((held, decoded[1]))
                elif decoded[1] != inbox.epoch:
                    drop = True  # sent to an earlier holder of the name, which released it
                elif sseq <= inbox.cleared_through:
                    drop = True  # stored before clear(), delivered to us after it
                else:
                    held = Held(sseq, decoded[0], reply, key[1], *decoded[2:])
                    self._seen[key] = held
                    self._admit(inbox, held)
        if drop:
            await self._nc.publish(reply, b"+ACK")

    def _admit(self, inbox: Inbox, held: Held) -> None:
        """Queue ``held`` in its sender's order (with the lock)."""
        ready, superseded = inbox.lanes.admit(held, time.monotonic(), inbox.registered_ms)
        if superseded is not None:  # a second copy: finished without being handed out
            self._seen.pop(superseded.key, None)
            self._done[superseded.key] = None
            self._acks.append(superseded)
        self._queue(inbox, ready)

    def _queue(self, inbox: Inbox, ready: list[Held]) -> None:
        if ready:
            inbox.queue.extend(ready)
            for h in ready:
                for hook in inbox.hooks:
                    self._hooks_q.put((hook, h.message))
            self._changed.notify_all()

    def _release_overdue(self) -> None:
        """Hand on messages that waited :data:`HOLD_LIMIT` for an earlier one (on the loop)."""
        now = time.monotonic()
        with self._lock:
            for inbox in self._inboxes.values():
                ready, skipped = inbox.lanes.overdue(now)
                if skipped:
                    _log.warning("%r: gave up waiting for messages %s of a sender; handing "
                                 "on the later ones", inbox.name, skipped)
                self._queue(inbox, ready)

    def _adopt_parked(self, inbox: Inbox) -> list[int]:
        """Move messages delivered before ``inbox`` was registered into it (with the lock);
        return the stream sequences of those sent to an earlier epoch (to acknowledge)."""
        stale = []
        for held, epoch in sorted(self._parked.pop(inbox.token, ()), key=lambda p: p[0].sseq):
            if epoch != inbox.epoch:
                self._seen.pop(held.key, None)
                stale.append(held)
                continue
            held.message = held.message._replace(to=inbox.name)
            self._admit(inbox, held)
        self._acks.extend(stale)
        return [h.sseq for h in stale]

    async def _sweep(self, inbox: Inbox) -> None:
        """Take over what earlier holders of ``inbox``'s name left on their own subjects."""
        from nats.js.errors import NotFoundError

        info = await self._js.stream_info(self._stream,
                                          subjects_filter=f"{self._prefix}*.{inbox.token}")
        ours = f"{self._prefix}{self._owner_token}.{inbox.token}"
        found: list[Held] = []
        stale: list[int] = []
        for subject in sorted(info.state.subjects or {}):
            if subject == ours:
                continue
            seq = 1
            while True:
                try:
                    m = await self._js.get_msg(self._stream, seq=seq, subject=subject, next=True)
                except NotFoundError:
                    break
                assert m.seq is not None
                seq = m.seq + 1
                decoded = decode(m.data or b"", inbox.name)
                if decoded is None or decoded[1] != inbox.epoch:
                    stale.append(m.seq)
                else:
                    found.append(Held(m.seq, decoded[0], None, (m.headers or {}).get(_H_ID, "")))
        for sseq in stale:
            await self._delete(sseq)
        if not found:
            return
        found.sort(key=lambda h: h.sseq)
        with self._lock:
            if self._inboxes.get(inbox.name) is not inbox:
                return
            fresh = [h for h in found if h.key not in self._seen]
            for held in reversed(fresh):
                inbox.queue.appendleft(held)  # older than what reached our own subject
                self._seen[held.key] = held
            self._changed.notify_all()
        _log.info("took over %d message(s) for %r left by its earlier holder", len(found),
                  inbox.name)

    # acknowledgements ------------------------------------------------------------------------
    def _finish(self, helds: list[Held]) -> bool:
        """Acknowledge messages the Spirit is done with; with ``ack="sync"`` wait for the
        server. ``False`` if that confirmation failed (the messages stay unfinished)."""
        with self._lock:
            for h in helds:
                self._seen.pop(h.key, None)
                self._done[h.key] = None
            while len(self._done) > DONE_MEMORY:
                self._done.popitem(last=False)
            self._acks.extend(helds)
            schedule = not self._ack_scheduled
            self._ack_scheduled = True
        if self.ack == "async":
            if schedule:
                self._loop.call_soon_threadsafe(self._spawn, self._send_acks(confirm=False))
            return True
        if self._finish_here(helds):
            return True
        try:
            self._call(self._send_acks(confirm=True), 2 * self.request_timeout + 1.0)
        except Exception as e:
            _log.debug("confirming acknowledgements failed: %r", e)
            with self._lock:
                for h in helds:
                    self._done.pop(h.key, None)
                    self._seen[h.key] = h
            return False
        return True

    async def _send_acks(self, *, confirm: bool) -> None:
        """Send every pending acknowledgement; with ``confirm`` wait until the server has them
        (one round trip: a consumer applies acknowledgements in order)."""
        with self._lock:
            batch, self._acks = self._acks, []
            self._ack_scheduled = False
        if not batch:
            return
        last_ack: str | None = None
        deletes = []
        try:
            # Newest first: nats-server 2.9, removing the first stored message of a subject
            # that holds more, walks the stream to that subject's next message (~one step per
            # other inbox's message in between); removed newest first, a subject's messages
            # in the batch are never its first while later ones remain.
            for h in sorted(batch, key=_by_sseq, reverse=True):
                if h.reply is None:
                    deletes.append(self._delete(h.sseq))
                elif last_ack is not None:
                    await self._nc.publish(last_ack, b"+ACK")
                    last_ack = h.reply
                else:
                    last_ack = h.reply
            if last_ack is not None:
                if confirm:
                    await self._nc.request(last_ack, b"+ACK", timeout=self.request_timeout)
                else:
                    await self._nc.publish(last_ack, b"+ACK")
            if deletes:
                await asyncio.gather(*deletes)
        except BaseException:
            with self._lock:
                self._acks[:0] = batch  # tried again with the next batch
            raise

    # the Spirit's side -----------------------------------------------------------------------
    def _take(self, name: str, channel: int, remove: bool) -> Message | None:
        inbox = self._inboxes.get(name)
        if inbox is None or not self.holds_lease():
            return None  # fenced: another process may hold the name by now
        if not remove:
            with self._lock:
                for h in inbox.queue:
                    if channel == 0 or h.message.channel == channel:
                        return h.message
            return None
        with inbox.recv_lock:  # one receiver at a time keeps per-inbox order
            if inbox.taken:
                finished, inbox.taken = inbox.taken, []
                if not self._finish(finished):
                    inbox.taken = finished + inbox.taken
                    return None
            with self._lock:
                if self._inboxes.get(name) is not inbox:
                    return None
                for i, held in enumerate(inbox.queue):
                    if channel == 0 or held.message.channel == channel:
                        del inbox.queue[i]
                        inbox.taken.append(held)
                        return held.message
            return None

    def recv(self, name: str, channel: int = 0) -> Message | None:
        """Take the oldest message for local Spirit ``name`` (``channel`` 0 = any) or ``None``.

        Receiving finishes the messages ``name`` received before (they are acknowledged to
        JetStream, waiting for the server's confirmation with ``ack="sync"``); the new one is
        acknowledged when it is finished in turn (:meth:`done`, the next ``recv``, release or
        close). ``None`` while NATS is unreachable or the lease is not confirmed.
        """
        return self._take(name, channel, remove=True)

    def peek(self, name: str, channel: int = 0) -> Message | None:
        """The oldest message for local Spirit ``name`` without taking it (``None`` whenever
        :meth:`recv` would return ``None``)."""
        return self._take(name, channel, remove=False)

    def done(self, name: str, message: Message | None = None) -> bool:
        """Finish ``message`` (or every message) received by local Spirit ``name``.

        It is acknowledged to JetStream and will not be delivered again; with ``ack="sync"``
        this waits for the server's confirmation. ``False`` if that failed or nothing matched.
        """
        inbox = self._inboxes.get(name)
        if inbox is None:
            return False
        with inbox.recv_lock:
            if message is None:
                finished, inbox.taken = inbox.taken, []
            else:
                finished = [h for h in inbox.taken if h.message is message] or \
                    [h for h in inbox.taken if h.message == message][:1]
                for h in finished:
                    inbox.taken.remove(h)
            if not finished:
                return False
            if not self._finish(finished):
                inbox.taken = finished + inbox.taken
                return False
            return True

    def pending(self, name: str, channel: int = 0) -> int:
        """Messages delivered to local Spirit ``name`` and not yet received."""
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
                if (remaining is not None and remaining <= 0) or self._closed or \
                        self._inboxes.get(name) is not inbox:
                    return False
                self._changed.wait(remaining)
            return True

    def on_message(self, name: str, callback: MessageCallback) -> Callable[[], None]:
        """Call ``callback(message)`` after each message delivered for local Spirit ``name``.

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

    def _forget_local(self, inbox: Inbox) -> None:
        """Drop what ``inbox`` holds locally (with the lock). Its lanes start afresh: what
        was stored for it is purged, so the next message of a sender follows a gap."""
        for h in (*inbox.queue, *inbox.taken, *inbox.lanes.held()):
            self._seen.pop(h.key, None)
        inbox.lanes = Lanes()
        inbox.queue.clear()
        inbox.taken.clear()

