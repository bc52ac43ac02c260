"""Confirmed acknowledgements straight from the Spirit's thread, on a small blocking connection.

With ``ack="sync"`` finishing a message waits until JetStream confirmed its acknowledgement.
Going through the broker's event loop costs two thread hops per message on top of the round
trip; this module sends the acknowledgements on a second, blocking NATS connection owned by the
calling thread instead (guarded by a lock), so the thread sleeps in ``recv`` on the socket and
the kernel wakes it when the confirmation arrives.

It speaks the few NATS protocol lines it needs (``CONNECT``, ``SUB``, ``PUB``, ``PING``/``PONG``,
``MSG``/``HMSG``) and is used only for a plain connection: a server that asks for TLS or
credentials makes :meth:`FastAcker.open` return ``None`` and the broker keeps the loop's path.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import uuid

from ._core import Held
from ._outbox import Outbox

_log = logging.getLogger("vudo.nats")

_CONNECT = json.dumps({"verbose": False, "pedantic": False, "lang": "python-vudo",
                       "version": "1", "protocol": 1, "headers": True,
                       "no_responders": True}).encode()


class AckFailed(Exception):
    """The server did not confirm (no responder: the consumer is gone; or an error line)."""


class FastAcker:
    """One blocking connection that publishes ``+ACK`` and waits for the confirmation."""

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        self._sock = sock
        self._timeout = timeout
        self._buf = bytearray()
        self._inbox = f"_INBOX.vack{uuid.uuid4().hex}"
        self._n = 0
        self.lock = threading.Lock()

    @classmethod
    def open(cls, host: str, port: int, timeout: float) -> FastAcker | None:
        """Connect to ``host:port``; ``None`` if the server needs TLS or credentials."""
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            acker = cls(sock, timeout)
            line = acker._line()
            if not line.startswith(b"INFO "):
                raise AckFailed(f"unexpected greeting {line[:40]!r}")
            info = json.loads(line[5:])
            if info.get("tls_required") or info.get("auth_required"):
                sock.close()
                return None
            sock.sendall(b"CONNECT " + _CONNECT + b"\r\nSUB " + acker._inbox.encode() +
                         b".* 1\r\nPING\r\n")
            while (line := acker._line()) != b"PONG":
                if line.startswith(b"-ERR"):
                    raise AckFailed(line.decode(errors="replace"))
            return acker
        except BaseException:
            sock.close()
            raise

    def ack(self, replies: list[str]) -> None:
        """Acknowledge every reply subject, confirming the last (a consumer applies them in
        order). Call with :attr:`lock`. Raises ``OSError`` or :class:`AckFailed`."""
        self._n += 1
        token = str(self._n).encode()
        out = [b"PUB %s 4\r\n+ACK\r\n" % r.encode() for r in replies[:-1]]
        out.append(b"PUB %s %s.%s 4\r\n+ACK\r\n" % (replies[-1].encode(), self._inbox.encode(),
                                                     token))
        self._sock.sendall(b"".join(out))
        while True:
            line = self._line()
            if line.startswith((b"MSG ", b"HMSG ")):
                parts = line.split()
                size = int(parts[-1])
                payload = self._take(size + 2)
                if parts[1].rsplit(b".", 1)[-1] != token:
                    continue  # a late answer to an earlier request that timed out
                if parts[0] == b"HMSG" and b" 503" in payload[: int(parts[-2])]:
                    raise AckFailed("no responders: the consumer is gone")
                return
            if line == b"PING":
                self._sock.sendall(b"PONG\r\n")
            elif line.startswith(b"-ERR"):
                raise AckFailed(line.decode(errors="replace"))

    def close(self) -> None:
        """Close the connection."""
        self._sock.close()

    def _fill(self) -> None:
        chunk = self._sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("the NATS server closed the acknowledgement connection")
        self._buf += chunk

    def _line(self) -> bytes:
        while (i := self._buf.find(b"\r\n")) < 0:
            self._fill()
        line = bytes(self._buf[:i])
        del self._buf[:i + 2]
        return line

    def _take(self, n: int) -> bytes:
        while len(self._buf) < n:
            self._fill()
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data


class FastAcks(Outbox):
    """The broker's side: when to use the blocking connection, opening and dropping it."""

    _acks: list[Held]
    _ack_scheduled: bool
    _acker: FastAcker | None
    _acker_retry_at: float

    def _finish_here(self, helds: list[Held]) -> bool:
        """Send and confirm the pending acknowledgements from this thread on the blocking
        acknowledgement connection (no thread hop); ``False`` to use the loop's path."""
        acker = self._fast_acker()
        if acker is None:
            return False
        with acker.lock:
            with self._lock:
                batch = self._acks
                if any(h.reply is None for h in batch):
                    return False  # swept messages are deleted through the JetStream API
                self._acks, self._ack_scheduled = [], False
            # Acknowledging twice is harmless: if the ticker sent ours meanwhile (unconfirmed),
            # send them again to get the confirmation. Newest first, as Inboxes._send_acks.
            replies = [h.reply for h in sorted(batch or helds, key=lambda h: h.sseq,
                                               reverse=True) if h.reply is not None]
            try:
                if replies:
                    acker.ack(replies)
                return True
            except (OSError, AckFailed) as e:
                _log.debug("acknowledging on the blocking connection failed: %r", e)
                with self._lock:
                    self._acks[:0] = batch
                if isinstance(e, OSError):
                    self._drop_acker()
                return False

    def _fast_acker(self) -> FastAcker | None:
        acker = self._acker
        if acker is not None or not self._connected or \
                time.monotonic() < self._acker_retry_at:
            return acker
        with self._lock:
            if self._acker is not None:
                return self._acker
            self._acker_retry_at = time.monotonic() + 5.0  # one attempt at a time, not often
        url = getattr(self._nc, "connected_url", None)
        if url is None or url.scheme not in ("nats", "") or not url.hostname:
            return None
        try:  # not under the broker's lock: the loop must not wait for this connection
            fresh = FastAcker.open(url.hostname, url.port or 4222, self.request_timeout)
        except (OSError, AckFailed, ValueError) as e:
            _log.debug("no blocking acknowledgement connection: %r", e)
            return None
        if fresh is None:
            return None
        with self._lock:
            if self._acker is None and not self._closed:
                self._acker, fresh = fresh, None
            acker = self._acker
        if fresh is not None:
            fresh.close()
        return acker

    def _drop_acker(self) -> None:
        with self._lock:
            acker, self._acker = self._acker, None
            self._acker_retry_at = time.monotonic() + 0.5
        if acker is not None:
            acker.close()
