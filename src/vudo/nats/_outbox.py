"""Sending: the bounded outbox, the publish window, PubAcks, re-sends and remote back-pressure.

``post`` never waits for the network: it frames the message, routes it to the subject of the
recipient's current holder and appends it to the outbox. The loop publishes in order with at
most ``window`` in flight; every message carries a ``Nats-Msg-Id`` so a re-send after a lost
PubAck is dropped by JetStream's duplicate filter, and re-sends always go out oldest first.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import time
from collections import deque
from typing import Any

from ..abi import ResultCode
from ._claims import epoch_bytes
from ._core import SENT_MEMORY, Claim, LaneOut, Out
from ._journal import Journaled
from ._wire import HEAD_SIZE, encode, name_token

_log = logging.getLogger("vudo.nats")
#: Room left in a NATS message for the subject, reply and header when checking the size.
_ENVELOPE = 512
#: Delay before a message refused by a full inbox is offered again.
_FULL_RETRY = 0.05
_H_ID = "Nats-Msg-Id"


def _no_message(e: Exception) -> bool:
    """Whether a JetStream delete failed because the message is not in the stream (received,
    purged or deleted already): nats-py raises ``NotFoundError`` or, as servers 2.9 answer
    (code 500, err_code 10057), ``ServerError`` with "no message found"."""
    from nats.js.errors import APIError, NotFoundError

    if isinstance(e, NotFoundError):
        return True
    return isinstance(e, APIError) and "no message found" in str(e.description or "")


class Outbox(Journaled):
    """The sending half of the broker."""

    outbox_size: int
    window: int
    retry_after: float
    sent: int
    failed: int
    refused: int
    _max_payload: int
    _outbox: deque[Out]
    _inflight: dict[int, Out]
    _out_seq: int
    _wake_scheduled: bool
    _need_resend: bool
    _resending: bool
    _wake: asyncio.Event | None
    _ack_prefix: str
    _blocked: dict[str, list[Out]]
    _sent_seqs: dict[str, deque[tuple[int, str]]]
    _taken_back: deque[tuple[float, int, str]]
    _origin: bytes
    _lanes_out: dict[str, LaneOut]

    def post(self, from_: str, to: str, payload: bytes, channel: int = 0) -> ResultCode:
        """Queue a message for ``to`` without waiting for the network.

        OK (accepted: it will be stored, see docs/distributed.md), NOT_FOUND (no such name in
        the session) or ERROR (NATS unreachable, outbox full, recipient's inbox full in the
        stream, payload too large, or broker closed).
        """
        if self._closed or not self._connected:
            return ResultCode.ERROR
        claim = self._lookup(to)
        if claim is None:
            return ResultCode.NOT_FOUND
        data = payload if type(payload) is bytes else bytes(payload)
        if len(data) + HEAD_SIZE + len(from_) * 4 > self._max_payload - _ENVELOPE:
            _log.warning("message %r -> %r of %d bytes exceeds the NATS maximum payload",
                         from_, to, len(data))
            return ResultCode.ERROR
        if to in self._blocked:
            self.refused += 1
            return ResultCode.ERROR  # its inbox in the stream is full (max_inbox)
        subject = self._subject(claim.owner, name_token(to))
        now = time.time() * 1000.0
        with self._lock:
            if len(self._outbox) + len(self._inflight) >= self.outbox_size:
                if self.debug:
                    _log.debug("outbox full (%d); refused message %r -> %r",
                               self.outbox_size, from_, to)
                return ResultCode.ERROR
            # The lane sequence is taken under the lock: it counts accepted messages in order.
            state = self._lanes_out.get(to)
            if state is None or state.epoch != claim.epoch:
                state = LaneOut(claim.epoch)
            lane = state.last + 1
            floor = state.floor(lane)
            frame = encode(from_, channel, now, epoch_bytes(claim.epoch), self._origin, lane,
                           floor, data)
            seq = self._out_seq + 1
            item = Out(seq, to, subject, frame, claim.epoch, f"{self._instance}{seq:x}",
                       lane=lane)
            if self._journal is not None:
                try:
                    self._journal.accept(item)  # before OK: a kill now cannot lose it
                except OSError as e:
                    _log.error("cannot write the outbox journal %s: %r", self._journal.path, e)
                    return ResultCode.ERROR
            self._out_seq = seq
            state.last = lane
            state.unconfirmed.append(item)
            self._lanes_out[to] = state
            self._outbox.append(item)
            wake = not self._wake_scheduled
            self._wake_scheduled = True
        if wake:
            self._loop.call_soon_threadsafe(self._wake_publisher)
        return ResultCode.OK

    def send(self, from_: str, to: str, channel: int, payload: bytes) -> bool:
        """Seed-compatible send: ``True`` if the message was accepted."""
        return self.post(from_, to, payload, channel) == ResultCode.OK

    def broadcast(self, from_: str, payload: bytes, channel: int = 0) -> int:
        """Send to every name of the session, the sender included; return how many accepted it."""
        data = bytes(payload)
        return sum(1 for n in self.spirits() if self.post(from_, n, data, channel) == ResultCode.OK)

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

    # the loop side -------------------------------------------------------------------------
    def _wake_publisher(self) -> None:
        with self._lock:
            self._wake_scheduled = False
        if self._wake is not None:
            self._wake.set()

    async def _publish(self, item: Out) -> None:
        claim = self._registry.get(item.to)
        if claim is not None and claim.epoch == item.epoch:
            # Route to the current holder: a take-over since post() moved the name.
            item.subject = self._subject(claim.owner, name_token(item.to))
        item.sent_at = time.monotonic()
        await self._nc.publish(item.subject, item.data, reply=f"{self._ack_prefix}.{item.seq}",
                               headers={_H_ID: item.msg_id})

    async def _publisher(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            # Nothing new goes out while unconfirmed messages wait to be re-sent: it would be
            # stored before them and break per-sender order.
            while self._connected and not self._resending:
                with self._lock:
                    if not self._outbox or len(self._inflight) >= self.window:
                        break
                    item = self._outbox.popleft()
                    self._inflight[item.seq] = item
                    if item.to in self._blocked:
                        self._block(item)  # waits its turn behind a refused message
                        continue
                try:
                    await self._publish(item)
                except Exception as e:
                    _log.debug("publish failed: %r", e)
                    self._need_resend = self._resending = True
                    break

    async def _resend_all(self) -> None:
        """Publish every unconfirmed message again, oldest first (ids make repeats harmless)."""
        self._need_resend = False
        with self._lock:
            # A message in doubt (its PubAck lost with the connection) to a recipient whose
            # inbox was full joins the queue of refused ones and goes again in its turn, under
            # its id: re-sent now it would be stored ahead of them, and left for later it would
            # be overtaken by newer messages once they are stored.
            for o in self._inflight.values():
                queue = self._blocked.get(o.to)
                if queue is not None and o not in queue:
                    self._block(o)
            items = sorted((o for o in self._inflight.values() if o.to not in self._blocked),
                           key=lambda o: o.seq)
            full = list(self._blocked)
        if items and self._connected:
            # Stop and wait on the oldest first: while the stream is still coming back some
            # re-sends would be refused and later ones stored, overtaking them.
            first = items[0]
            try:
                reply = await self._nc.request(first.subject, first.data,
                                               timeout=self.request_timeout,
                                               headers={_H_ID: first.msg_id})
            except Exception as e:
                _log.debug("re-publish of the oldest message failed: %r", e)
                self._need_resend = True
                return
            self._settle(first.seq, reply.data)
            with self._lock:
                if first.seq in self._inflight:
                    self._need_resend = True
                    return  # refused (stream not ready, inbox full): try again later
            items = items[1:]
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
        for to in full:
            self._send_head(to)
        self._resending = False
        if self._wake is not None:
            self._wake.set()

    async def _outbox_tick(self) -> None:
        with self._lock:
            oldest = min(self._inflight.values(), key=lambda o: o.seq, default=None)
            more = bool(self._outbox) and len(self._inflight) < self.window
        if oldest is not None:
            age = time.monotonic() - oldest.sent_at
            # A refused publish (JetStream starting, inbox full) is retried soon; a missing
            # PubAck (lost with a connection) after ``retry_after``.
            if age > self.retry_after or self._resending or (self._need_resend and age > 0.1):
                await self._resend_all()
        elif self._resending:
            self._resending = False
        with self._lock:
            stuck = [lst[0].to for lst in self._blocked.values()
                     if time.monotonic() - lst[0].sent_at > 4 * _FULL_RETRY]
        for to in stuck:
            self._send_head(to)
        if more and self._wake is not None:
            self._wake.set()

    async def _on_puback(self, msg: Any) -> None:
        try:
            seq = int(msg.subject.rsplit(".", 1)[1])
        except ValueError:
            return
        self._settle(seq, msg.data)

    def _settle(self, seq: int, data: bytes) -> None:
        """Apply JetStream's answer to the publish of outbox message ``seq`` (on the loop)."""
        error: dict[str, Any] | None = None
        stored = 0
        if data:
            try:
                resp = json.loads(data)
                error = resp.get("error")
                stored = int(resp.get("seq", 0))
            except ValueError:
                error = {"code": 0, "description": "unreadable reply"}
        else:
            error = {"code": 503, "description": "no responders (stream unavailable)"}
        wake = False
        with self._lock:
            item = self._inflight.get(seq)
            if item is None:
                return
            blocked = self._blocked.get(item.to)
            ring = self._sent_seqs.get(item.to)
            if error is None and blocked and blocked[0].seq < item.seq and item not in blocked:
                # Stored while an earlier message to the same inbox waits for room: remove
                # this copy and send it again after that one, so order per sender holds.
                _log.debug("taking back message %d to %r (stored as %d, out of order)",
                           item.seq, item.to, stored)
                item.deleting = True
                self._block(item)
                self._spawn(self._take_back(item, stored))
                return
            if error is None:
                del self._inflight[seq]
                self._finalized(item)
                self.sent += 1
                if blocked and blocked[0] is item:
                    blocked.pop(0)
                    if blocked:
                        self._loop.call_soon(self._send_head, item.to)
                    else:
                        del self._blocked[item.to]
                wake = bool(self._outbox)
                claim = self._registry.get(item.to)
                if claim is None or claim.epoch != item.epoch:
                    # The name was released while this message was in flight: it must not
                    # stay in the stream for nobody (or reach the next holder of the name).
                    self._spawn(self._delete(stored))
                elif stored:
                    if ring is None:
                        ring = self._sent_seqs[item.to] = deque(maxlen=SENT_MEMORY)
                    ring.append((stored, item.epoch))
            else:
                item.attempts += 1
                description = str(error.get("description", ""))
                if "maximum messages per subject" in description or error.get("err_code") in (
                        10077, 10078):
                    # The inbox is full: from now on its messages go one at a time, in order,
                    # each retried until there is room; posts to it return ERROR meanwhile.
                    if item not in (blocked or ()):
                        self._block(item)
                    self._loop.call_later(_FULL_RETRY, self._send_head, item.to)
                elif error.get("code") != 503 and item.attempts >= 5:
                    del self._inflight[seq]
                    self._finalized(item)
                    self.failed += 1
                    _log.error("JetStream refused a message to %s: %s", item.subject,
                               description)
                else:
                    self._need_resend = self._resending = True  # e.g. a leader election
            if not self._outbox and not self._inflight:
                self._changed.notify_all()
        if wake and self._wake is not None:
            self._wake.set()

    def _finalized(self, item: Out) -> None:
        """``item`` is stored (or given up on) for good (with the lock)."""
        self._journal_done(item.seq)
        item.confirmed = True
        state = self._lanes_out.get(item.to)
        if state is not None:
            state.trim()

    def _block(self, item: Out) -> None:
        """Queue ``item`` behind the refused messages to its recipient (with the lock)."""
        queue = self._blocked.setdefault(item.to, [])
        if item not in queue:  # twice in the queue, it would stay its head forever
            bisect.insort(queue, item, key=lambda o: o.seq)

    def _send_head(self, to: str) -> None:
        """Offer the oldest refused message to ``to`` again (on the loop)."""
        with self._lock:
            lst = self._blocked.get(to)
            head = lst[0] if lst else None
        if head is None or head.deleting or not self._connected:
            return
        head.sent_at = time.monotonic()
        self._spawn(self._publish(head))

    async def _take_back(self, item: Out, sseq: int, unsure: bool = False) -> None:
        """Delete the stored copy of an overtaking message; it is sent again in its turn.

        ``unsure``: an earlier attempt got no answer, so it may have deleted the copy itself;
        a copy gone now is then sent again rather than presumed received (never lost, at the
        price of a possible repeat)."""
        try:
            await self._js.delete_msg(self._stream, sseq)
            taken_back = True
        except Exception as e:
            if not _no_message(e):  # no answer (an outage): the copy may still be there
                _log.debug("deleting an overtaking copy failed (%r); trying again", e)
                self._loop.call_later(
                    0.2, lambda: self._spawn(self._take_back(item, sseq, unsure=True)))
                return
            # Received already: it stays delivered (out of order).
            taken_back = unsure
        with self._lock:
            lst = self._blocked.get(item.to, [])
            item.deleting = False
            if taken_back:
                self._taken_back.append((time.monotonic(), sseq, item.msg_id))
                item.attempts += 1
                item.msg_id = f"{self._instance}{item.seq:x}r{item.attempts}"  # a new copy
                if self._journal is not None:
                    self._journal.accept(item)  # the old id would be dropped as a duplicate
                head = bool(lst) and lst[0] is item
            else:
                _log.debug("message %d to %r overtook a refused one and was received",
                           item.seq, item.to)
                if item in lst:
                    lst.remove(item)
                self._inflight.pop(item.seq, None)
                self._finalized(item)
                self.sent += 1
                head = bool(lst)
                if not lst:
                    self._blocked.pop(item.to, None)
        if head:
            self._send_head(item.to)

    async def _redelete(self) -> None:
        """After a reconnection, delete again the copies taken back in the last 2 minutes: a
        server killed before it wrote a delete to its files brings the copy back. Only a
        message still carrying the old copy's id goes (a restarted server may reuse sequences).
        """
        horizon = time.monotonic() - 120.0
        while self._taken_back and self._taken_back[0][0] < horizon:
            self._taken_back.popleft()

        async def again(sseq: int, msg_id: str) -> None:
            try:
                m = await self._js.get_msg(self._stream, sseq)
            except Exception as e:
                if _no_message(e):
                    return
                raise
            if (m.headers or {}).get(_H_ID) == msg_id:
                await self._delete(sseq)

        todo = [(s, mid) for _, s, mid in self._taken_back]
        for i in range(0, len(todo), 64):
            await asyncio.gather(*(again(s, mid) for s, mid in todo[i:i + 64]))

    async def _delete(self, sseq: int) -> None:
        try:
            await self._js.delete_msg(self._stream, sseq)
        except Exception as e:
            if not _no_message(e):
                raise  # received, purged or deleted already is fine; anything else is not

    def _claim_changed(self, name: str, old: Claim, new: Claim | None) -> None:
        if new is not None and new.epoch == old.epoch:
            return  # a take-over keeps the epoch: the messages are the new holder's now
        self._lanes_out.pop(name, None)  # a fresh claim starts a fresh lane
        ring = self._sent_seqs.pop(name, None)
        if not ring:
            return
        # Released: the releaser purged what was stored before its purge; remove what this
        # process stored after it (deleting a message already gone is a cheap no-op).
        stale = [s for s, epoch in ring if epoch == old.epoch]

        async def delete_all() -> None:
            await asyncio.gather(*(self._delete(s) for s in stale), return_exceptions=True)

        self._loop.call_soon_threadsafe(self._spawn, delete_all())
