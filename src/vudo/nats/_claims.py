"""Names and liveness: claims in the names bucket, the lease, the registry view.

A claim is a KV key per name holding ``{owner, epoch, host, pid}``. A live broker keeps a key in
the liveness bucket (TTL = ``lease``) fresh. A claim can be taken over when its owner is this
same ``owner`` or has no liveness key. The lease is also a fence: a broker hands out messages
only while its last *confirmed* heartbeat was sent less than ``0.9 * lease`` ago, because no
other process can take one of its names before that heartbeat's key expires. After a longer
gap it re-reads every claim it holds before handing out anything again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import os
import socket
import time
import uuid
from typing import Any

from ._core import Claim, Core, Inbox
from ._wire import name_from_token, name_token

_log = logging.getLogger("vudo.nats")
#: Fraction of the lease during which a confirmed heartbeat keeps this broker's claims valid.
LEASE_MARGIN = 0.9


@functools.lru_cache(maxsize=65_536)
def epoch_bytes(epoch: str) -> bytes:
    """The 8 bytes a message frame carries for a claim epoch."""
    return hashlib.blake2b(epoch.encode(), digest_size=8).digest()


class Claims(Core):
    """Claiming, releasing and watching names; the liveness heartbeat and lease fence."""

    _watcher: Any
    _watch_task: asyncio.Task[None] | None

    # liveness ------------------------------------------------------------------------------
    async def _heartbeat_once(self) -> None:
        sent = time.monotonic()
        info = {"host": socket.gethostname(), "pid": os.getpid(), "instance": self._instance}
        await self._alive.put(self._owner_token, json.dumps(info).encode())
        if sent > self._valid_until:
            # The key may have expired before this put (a stall or an outage): another process
            # may hold one of our names now. Check every claim before serving again.
            await self._verify_claims()
        self._valid_until = max(self._valid_until, sent + LEASE_MARGIN * self.lease)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            if self._connected:
                try:
                    await self._heartbeat_once()
                except Exception as e:
                    _log.debug("liveness heartbeat failed: %r", e)

    async def _verify_claims(self) -> None:
        from nats.js.errors import KeyNotFoundError

        with self._lock:
            inboxes = list(self._inboxes.values())
        for inbox in inboxes:
            try:
                entry = await self._names.get(inbox.token)
                owner = str(json.loads(entry.value)["owner"])
                ours = owner == self.owner and int(entry.revision) == inbox.revision
            except KeyNotFoundError:
                owner, ours = "", False
            if not ours:
                with self._lock:
                    self._lose(inbox, owner)

    def holds_lease(self) -> bool:
        """Whether this broker's claims are fenced valid right now (see the module docs)."""
        return self._connected and time.monotonic() < self._valid_until

    async def _is_alive(self, owner: str) -> bool:
        from nats.js.errors import KeyNotFoundError

        try:
            await self._alive.get(name_token(owner))
        except KeyNotFoundError:
            return False
        return True

    # registry view ---------------------------------------------------------------------------
    @staticmethod
    def _parse(entry: Any) -> Claim | None:
        if entry.operation in ("DEL", "PURGE") or not entry.value:
            return None
        try:
            info = json.loads(entry.value)
            return Claim(str(info["owner"]), str(info["epoch"]), int(entry.revision))
        except (ValueError, KeyError, TypeError):
            _log.warning("ignoring malformed claim %r", entry.key)
            return None

    async def _restart_watch(self, timeout: float | None = None) -> None:
        """(Re)start the KV watch; the registry view is rebuilt from its initial snapshot.
        ``timeout``: seconds to wait for each value (``request_timeout`` by default)."""
        wait = 2 * (timeout or self.request_timeout)
        if self._watch_task is not None:
            self._watch_task.cancel()
            self._watch_task = None
        if self._watcher is not None:
            old, self._watcher = self._watcher, None
            try:
                await old.stop()
            except Exception as e:
                _log.debug("stopping the old KV watch: %r", e)
        # nats-py may signal the end of the initial values before they arrived (it compares
        # the consumer's pending count, read after the server pushed them, with what it had
        # read so far), and an empty view would make a journal replay drop messages as
        # released. So the snapshot lasts until it reached the bucket's last revision.
        state = (await self._names.status()).stream_info.state
        last = int(state.last_seq) if state.messages else 0
        watcher = await self._names.watchall()
        try:
            snapshot = await self._snapshot(watcher, last, wait)
        except BaseException:  # timed out or cancelled (a recovery attempt): not kept
            with contextlib.suppress(Exception):
                await watcher.stop()
            raise
        with self._lock:
            old_view, self._registry = self._registry, snapshot
            for name, claim in old_view.items():
                if snapshot.get(name) != claim:
                    self._claim_changed(name, claim, snapshot.get(name))
            for inbox in list(self._inboxes.values()):
                self._check_lost(inbox, snapshot.get(inbox.name))
            self._changed.notify_all()
        self._watcher = watcher
        self._watch_task = asyncio.get_running_loop().create_task(self._watch_loop(watcher))

    async def _snapshot(self, watcher: Any, last: int, wait: float) -> dict[str, Claim]:
        snapshot: dict[str, Claim] = {}
        seen, marked = 0, False
        while not (marked and seen >= last):
            try:
                entry = await watcher.updates(timeout=wait)
            except Exception:
                if not marked:
                    raise
                break  # an entry nats-py skips (a marker of a newer server) never comes
            if entry is None:
                marked = True
                continue
            seen = max(seen, int(entry.revision))
            claim = self._parse(entry)
            if claim is None:
                snapshot.pop(name_from_token(entry.key), None)
            else:
                snapshot[name_from_token(entry.key)] = claim
        return snapshot

    async def _watch_loop(self, watcher: Any) -> None:
        async for entry in watcher:
            if entry is None:
                continue
            name = name_from_token(entry.key)
            claim = self._parse(entry)
            with self._lock:
                old = self._registry.get(name)
                if claim is None:
                    self._registry.pop(name, None)
                else:
                    self._registry[name] = claim
                if old is not None and old != claim:
                    self._claim_changed(name, old, claim)
                inbox = self._inboxes.get(name)
                if inbox is not None and int(entry.revision) > inbox.revision:
                    self._check_lost(inbox, claim)
                self._changed.notify_all()

    def _check_lost(self, inbox: Inbox, claim: Claim | None) -> None:
        if claim is None or claim.owner != self.owner or claim.revision != inbox.revision:
            if claim is not None and claim.owner == self.owner:
                return  # our own newer write (a re-registration in flight)
            self._lose(inbox, claim.owner if claim else "")

    def _claim_changed(self, name: str, old: Claim, new: Claim | None) -> None:
        """Hook for the outbox (call with the lock): ``name``'s claim changed or went away."""

    def _lookup(self, name: str) -> Claim | None:
        claim = self._registry.get(name)
        if claim is not None:
            return claim
        # A name claimed a moment ago elsewhere may not have reached the watch yet: ask once.
        try:
            return self._call(self._fetch_claim(name), 2 * self.request_timeout)
        except Exception as e:
            _log.debug("claim lookup of %r failed: %r", name, e)
            return None

    async def _fetch_claim(self, name: str) -> Claim | None:
        from nats.js.errors import KeyNotFoundError

        try:
            entry = await self._names.get(name_token(name))
        except KeyNotFoundError:
            return None
        return self._parse(entry)

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

    # claiming and releasing ------------------------------------------------------------------
    async def _claim(self, inbox: Inbox) -> str | None:
        """Claim ``inbox.name``; return the previous holder's owner on a take-over."""
        from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

        def value(epoch: str) -> bytes:
            return json.dumps({
                "owner": self.owner, "epoch": epoch, "host": socket.gethostname(),
                "pid": os.getpid(),
            }).encode()

        previous: str | None = None
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
            except KeyWrongLastSequenceError:
                raise ValueError(
                    f"{inbox.name!r} was claimed concurrently by another process"
                ) from None
            previous = holder
            break
        else:
            raise ValueError(f"could not claim {inbox.name!r}: the claim kept changing")
        inbox.epoch, inbox.revision = epoch_bytes(epoch), int(revision)
        with self._lock:
            self._registry[inbox.name] = Claim(self.owner, epoch, int(revision))
            self._changed.notify_all()
        return previous

    async def _release_claim(self, inbox: Inbox) -> bool:
        """Delete our claim; ``False`` if it is not ours any more (someone took it over)."""
        from nats.js.errors import APIError

        try:
            await self._names.delete(inbox.token, last=inbox.revision)
        except APIError as e:
            if e.err_code in (10071, 10164):  # wrong last sequence: the claim is not ours now
                return False
            raise
        with self._lock:
            if self._registry.get(inbox.name, None) is not None and \
                    self._registry[inbox.name].revision <= inbox.revision:
                del self._registry[inbox.name]
        return True
