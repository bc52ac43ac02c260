"""Recording a session as Chrome trace-event JSON (opened by Perfetto and chrome://tracing).

A :class:`TraceRecorder` collects three kinds of event, one lane (``tid``) per Spirit plus one
for the host:

- calls into a Spirit (``ph: "X"`` slices, category ``call``), from :meth:`Seance.invoke`;
- host function calls (instant events, category ``host``), from the ``vudo.trace`` log records
  Spirits loaded with ``trace=True`` write;
- messages (category ``message``): an instant ``send`` on the sender's lane and ``recv`` on the
  receiver's, joined by a flow (``ph: "s"``/``"f"``) with the same ``id``; ``args`` carry
  ``from``, ``to``, ``channel``, ``bytes`` and ``id``.

Use it through ``Seance(trace="session.json")``; the file is written when the session is
dismissed (or :meth:`TraceRecorder.save` is called).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ._host import ForwardingBroker, Message, MessageBroker
from .abi import ResultCode

__all__ = ["TraceRecorder", "TracingBroker"]

_PID = 1
_HOST_LANE = "host"


class TraceRecorder:
    """Collects trace events in memory; :meth:`save` writes them as one JSON document."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        #: Where :meth:`save` writes by default (``None``: only when given a path).
        self.path = Path(path) if path is not None else None
        self._events: list[dict[str, Any]] = []
        self._lanes: dict[str, int] = {}
        self._lock = threading.Lock()
        self._start = time.perf_counter()
        self._next_id = 0
        self._in_flight: dict[tuple[str, int], deque[int]] = {}
        self._handler: _HostCallHandler | None = None
        self._closed = False

    # ------------------------------------------------------------------ events
    def _now(self) -> float:
        return round((time.perf_counter() - self._start) * 1e6, 3)

    def _lane(self, name: str) -> int:
        """The ``tid`` of ``name``'s lane (created, with its name, on first use)."""
        tid = self._lanes.get(name)
        if tid is None:
            tid = self._lanes[name] = len(self._lanes) + 1
            self._events.append({"name": "thread_name", "ph": "M", "pid": _PID, "tid": tid,
                                 "args": {"name": name}})
        return tid

    def lane(self, name: str) -> None:
        """Make sure ``name`` has a lane (so Spirits that never act still show)."""
        with self._lock:
            self._lane(name)

    @contextmanager
    def call(self, spirit: str, function: str) -> Iterator[None]:
        """Record the call of ``spirit.function`` as a slice on the Spirit's lane."""
        start = self._now()
        ok = False
        try:
            yield
            ok = True
        finally:
            end = self._now()
            with self._lock:
                self._events.append({
                    "name": function, "cat": "call", "ph": "X", "pid": _PID,
                    "tid": self._lane(spirit), "ts": start, "dur": round(end - start, 3),
                    "args": {"spirit": spirit, "ok": ok},
                })

    def host_call(self, spirit: str, function: str, detail: str) -> None:
        """Record that ``spirit`` called the host function ``function`` (ignored for a Spirit
        without a lane here: the log records come from every Spirit of the process)."""
        ts = self._now()
        with self._lock:
            if spirit not in self._lanes:
                return
            self._events.append({
                "name": function, "cat": "host", "ph": "i", "s": "t", "pid": _PID,
                "tid": self._lane(spirit), "ts": ts, "args": {"call": detail},
            })

    def sent(self, from_: str, to: str, channel: int, size: int) -> None:
        """Record a message accepted for ``to``."""
        ts = self._now()
        with self._lock:
            self._next_id += 1
            mid = self._next_id
            self._in_flight.setdefault((to, channel), deque()).append(mid)
            args = {"from": from_, "to": to, "channel": channel, "bytes": size, "id": mid}
            tid = self._lane(from_)
            self._lane(to)
            self._events.append({"name": f"send -> {to}", "cat": "message", "ph": "i",
                                 "s": "t", "pid": _PID, "tid": tid, "ts": ts, "args": args})
            self._events.append({"name": "message", "cat": "message", "ph": "s", "id": mid,
                                 "pid": _PID, "tid": tid, "ts": ts})

    def received(self, message: Message) -> None:
        """Record that ``message.to`` took ``message`` from its inbox."""
        ts = self._now()
        with self._lock:
            queue = self._in_flight.get((message.to, message.channel))
            mid = queue.popleft() if queue else 0
            tid = self._lane(message.to)
            args = {"from": message.from_, "to": message.to, "channel": message.channel,
                    "bytes": len(message.payload), "id": mid}
            self._events.append({"name": f"recv <- {message.from_}", "cat": "message",
                                 "ph": "i", "s": "t", "pid": _PID, "tid": tid, "ts": ts,
                                 "args": args})
            if mid:
                self._events.append({"name": "message", "cat": "message", "ph": "f",
                                     "bp": "e", "id": mid, "pid": _PID, "tid": tid, "ts": ts})

    # ------------------------------------------------------------------ host calls
    def capture_host_calls(self, *, propagate: bool = False) -> None:
        """Record the ``vudo.trace`` log records (one per host call of a Spirit loaded with
        ``trace=True``) until :meth:`close`; they then stop reaching other log handlers,
        unless ``propagate`` (``vudo run --trace FILE --log-host-calls`` shows them too)."""
        if self._handler is None:
            self._handler = _HostCallHandler(self)
            self._handler.install(propagate=propagate)

    # ------------------------------------------------------------------ output
    def events(self) -> list[dict[str, Any]]:
        """A copy of the events so far, in the order they were recorded."""
        with self._lock:
            return list(self._events)

    def document(self) -> dict[str, Any]:
        """The Chrome trace-event document (JSON object format)."""
        return {"traceEvents": self.events(), "displayTimeUnit": "ms",
                "otherData": {"producer": "vudo", "lanes": list(self._lanes)}}

    def save(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Write the document to ``path`` (default: the recorder's) and return where."""
        target = Path(path) if path is not None else self.path
        if target is None:
            raise ValueError("TraceRecorder.save needs a path (none was given when created)")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(self.document()), encoding="utf-8")
        return target

    def close(self) -> None:
        """Stop capturing host calls and write the file (when the recorder has a path)."""
        if self._closed:
            return
        self._closed = True
        if self._handler is not None:
            self._handler.uninstall()
            self._handler = None
        if self.path is not None:
            self.save()


class _HostCallHandler(logging.Handler):
    """Turns ``vudo.trace`` records (``"%s: %s%r -> %r"``: Spirit, function, args, result)
    into host-call events, and keeps them from other handlers while it is installed."""

    def __init__(self, recorder: TraceRecorder) -> None:
        super().__init__(logging.DEBUG)
        self.recorder = recorder
        self._logger = logging.getLogger("vudo.trace")
        self._saved = (self._logger.propagate, self._logger.level)

    def install(self, *, propagate: bool = False) -> None:
        self._logger.addHandler(self)
        self._logger.propagate = propagate
        self._logger.setLevel(logging.DEBUG)

    def uninstall(self) -> None:
        self._logger.removeHandler(self)
        self._logger.propagate, level = self._saved
        self._logger.setLevel(level)

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args
        if isinstance(args, tuple) and len(args) == 4:
            spirit, function, call_args, result = args
            self.recorder.host_call(str(spirit), str(function), f"{call_args!r} -> {result!r}")


class TracingBroker(ForwardingBroker):
    """A :class:`~vudo.broker.MessageBroker` that forwards to another and records messages.

    Optional broker methods (``flush``, ``register_channel``...) are forwarded as they are.
    """

    def __init__(self, inner: MessageBroker, recorder: TraceRecorder) -> None:
        super().__init__(inner)
        self.recorder = recorder

    def register(self, name: str, *, capacity: int | None = None) -> None:
        """Create the inbox of ``name`` (and its lane)."""
        self.inner.register(name, capacity=capacity)
        self.recorder.lane(name)

    def post(self, from_: str, to: str, payload: bytes, channel: int = 0) -> ResultCode:
        """Queue a message, recording it when it was accepted."""
        code = self.inner.post(from_, to, payload, channel)
        if code == ResultCode.OK:
            self.recorder.sent(from_, to, channel, len(payload))
        return code

    def requeue(self, message: Message) -> None:
        """Put a message back (the inner broker's requeue); it is recorded again when taken."""
        self.inner.requeue(message)

    def broadcast(self, from_: str, payload: bytes, channel: int = 0) -> int:
        """Send to every Spirit, recording one message per delivery (in inbox order)."""
        recipients = self.inner.spirits()
        n = self.inner.broadcast(from_, payload, channel)
        for to in recipients[:n]:
            self.recorder.sent(from_, to, channel, len(payload))
        return n

    def recv(self, name: str, channel: int = 0) -> Message | None:
        """Take the oldest message, recording it."""
        message = self.inner.recv(name, channel)
        if message is not None:
            self.recorder.received(message)
        return message
