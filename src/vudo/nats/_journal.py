"""The sender's journal: accepted messages survive a SIGKILL of the sending process.

With ``NatsBroker(journal=DIR, owner=...)`` every message ``post`` accepts is written to an
append-only file before ``post`` returns OK, and every message JetStream confirmed (or refused
for good) is marked done in it. A process restarted with the same ``owner`` and ``DIR`` re-sends
what is not marked done, oldest first and with the original ``Nats-Msg-Id``, before anything it
posts itself: a copy that was stored before the kill is dropped by the stream's duplicate filter
(within its 2-minute window), so each accepted message is stored once and in order.

A plain ``write`` to a regular file reaches the kernel before ``post`` returns, which is what a
process kill needs; it is not synced to disk (a power loss may lose the last writes, as with
JetStream's own store). The file is emptied whenever nothing is unconfirmed and rewritten with
only the unconfirmed messages when it grows past :data:`COMPACT_BYTES`.

Records (little-endian)::

    A: b"A" [u64 seq][u16 len to][u16 len subject][u16 len epoch][u16 len msg id][u32 len data]
          [to][subject][epoch][msg id][data][u32 crc32 of everything before it]
    C: b"C" [u64 seq]            (repeated; the message is done)

A later ``A`` for the same sequence replaces the earlier one (a message re-sent under a new id).
A torn or corrupt tail (a crash inside a write) ends the file.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import zlib
from collections import deque
from collections.abc import Iterable
from pathlib import Path

from ..errors import BrokerUnavailable
from ._claims import Claims
from ._core import Out

_log = logging.getLogger("vudo.nats")

_A = struct.Struct("<cQHHHHI")
_C = struct.Struct("<cQ")
_CRC = struct.Struct("<I")
#: Journal size past which it is rewritten with only the unconfirmed messages.
COMPACT_BYTES = 16 * 1024 * 1024


def _write_all(fd: int, data: bytes) -> int:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    return len(data)


def _pack_accept(item: Out) -> bytes:
    to, subject, epoch, mid = (s.encode() for s in (item.to, item.subject, item.epoch,
                                                     item.msg_id))
    body = b"".join((_A.pack(b"A", item.seq, len(to), len(subject), len(epoch), len(mid),
                             len(item.data)), to, subject, epoch, mid, item.data))
    return body + _CRC.pack(zlib.crc32(body))


class Journal:
    """One owner's journal file, locked against a second live process with the same owner."""

    def __init__(self, directory: str | os.PathLike[str], session: str, owner_token: str,
                 url: str) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.path = d / f"vudo-{session}-{owner_token}.journal"
        self._lock_fd = os.open(d / f"vudo-{session}-{owner_token}.lock",
                                os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise BrokerUnavailable(
                url, f"journal {self.path} is in use by another live process with this owner"
            ) from None
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        self._size = os.fstat(self._fd).st_size
        #: Sequences stored since the last write of done marks (written by the broker's loop).
        self.pending_done: list[int] = []

    def load(self) -> list[Out]:
        """The messages accepted and not done, oldest first (their ``seq`` as recorded)."""
        data = self.path.read_bytes()
        live: dict[int, Out] = {}
        pos = 0
        while pos < len(data):
            kind = data[pos:pos + 1]
            if kind == b"C" and pos + _C.size <= len(data):
                live.pop(_C.unpack_from(data, pos)[1], None)
                pos += _C.size
                continue
            if kind != b"A" or pos + _A.size > len(data):
                break
            _, seq, lt, ls, le, lm, ld = _A.unpack_from(data, pos)
            end = pos + _A.size + lt + ls + le + lm + ld
            if end + _CRC.size > len(data) or \
                    _CRC.unpack_from(data, end)[0] != zlib.crc32(data[pos:end]):
                break  # torn by a crash inside a write: nothing after it was accepted
            p = pos + _A.size
            fields = []
            for n in (lt, ls, le, lm):
                fields.append(data[p:p + n].decode())
                p += n
            to, subject, epoch, mid = fields
            live[seq] = Out(seq, to, subject, data[p:end], epoch, mid)
            pos = end + _CRC.size
        return sorted(live.values(), key=lambda o: o.seq)

    def accept(self, item: Out) -> None:
        """Record ``item`` as accepted (call before ``post`` returns OK). Raises ``OSError``."""
        self._size += _write_all(self._fd, _pack_accept(item))

    def done(self, seqs: Iterable[int]) -> None:
        """Mark messages as stored (or refused for good): they are not re-sent at restart."""
        record = b"".join(_C.pack(b"C", s) for s in seqs)
        if record:
            self._size += _write_all(self._fd, record)

    def needs_compaction(self) -> bool:
        """Whether the file grew past :data:`COMPACT_BYTES`."""
        return self._size > COMPACT_BYTES

    def rewrite(self, items: Iterable[Out]) -> None:
        """Replace the file by one holding only ``items`` (the unconfirmed messages)."""
        records = b"".join(_pack_accept(o) for o in items)
        if not records:
            os.ftruncate(self._fd, 0)
            self._size = 0
            return
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _write_all(fd, records)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)  # atomic: a crash leaves the old file or the new one
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
        self._size = len(records)

    def close(self) -> None:
        """Close the file and release the owner's lock (the file stays for the next start)."""
        os.close(self._fd)
        os.close(self._lock_fd)


class Journaled(Claims):
    """The broker's side of the journal: marking messages done, replaying at start."""

    _journal: Journal | None
    _outbox: deque[Out]
    _inflight: dict[int, Out]
    _out_seq: int

    def _journal_done(self, seq: int) -> None:
        """Mark outbox message ``seq`` done in the journal (on the loop, with the lock). The
        marks of one loop iteration go in one write: a crash before it only makes a restart
        re-send messages already stored, which the duplicate filter drops."""
        journal = self._journal
        if journal is None:
            return
        if not journal.pending_done:
            self._loop.call_soon(self._journal_flush)
        journal.pending_done.append(seq)

    def _journal_flush(self) -> None:
        journal = self._journal
        if journal is None:
            return
        with self._lock:
            done, journal.pending_done = journal.pending_done, []
            try:
                if not self._outbox and not self._inflight:
                    journal.rewrite(())  # nothing unconfirmed: start the file afresh
                elif journal.needs_compaction():
                    journal.rewrite(sorted((*self._outbox, *self._inflight.values()),
                                           key=lambda o: o.seq))
                else:
                    journal.done(done)
            except OSError as e:
                _log.error("cannot write the outbox journal %s: %r", journal.path, e)

    def _replay_journal(self) -> None:
        """Queue what an earlier run with this owner accepted and JetStream never confirmed
        (at start, before anything is posted), oldest first, under its original message id."""
        journal = self._journal
        if journal is None:
            return
        kept = []
        with self._lock:
            for item in journal.load():
                claim = self._registry.get(item.to)
                if claim is None or claim.epoch != item.epoch:
                    continue  # the name was released since: release discards its messages
                self._out_seq += 1
                item.seq = self._out_seq
                kept.append(item)
            journal.rewrite(kept)
            self._outbox.extend(kept)
        if kept:
            _log.info("re-sending %d message(s) accepted by an earlier run of owner %r",
                      len(kept), self.owner)
