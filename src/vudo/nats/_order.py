"""Order per sender at the receiver, whatever a restarted server brings back.

Every frame carries its sending broker's *origin* (random bytes per broker instance) and a
*lane sequence*: 1, 2, 3... over the messages that broker accepted for one name and claim
epoch (see ``_wire``). The sender already keeps its messages in order in the stream (it takes
back a copy stored ahead of a refused one); this is the second line, for when the server
undoes that: a nats-server killed before it wrote a delete brings the taken-back copy back at
restart, ahead of the message it overtook.

An inbox hands a message on only once every earlier message of its lane was handed on: a
message that arrives ahead of a gap is held (it counts against the inbox in the stream, not
in ``pending``) until the gap fills, or for :data:`HOLD_LIMIT` seconds if it never does (a
message the sender gave up on). A second copy of a message already handed on is dropped; of
two copies held, the later stored one stays (the sender deletes the earlier). The first
message seen from an origin starts its lane at the frame's floor (the sender's lowest lane
sequence not yet stored when it accepted the message) if it was sent after the inbox was
registered, else at itself: a receiver restarted mid-stream does not wait for messages an
earlier run finished. A higher floor later moves the lane up. A lane costs a few integers.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any, Generic, Protocol, TypeVar


class _Stored(Protocol):
    @property
    def sseq(self) -> int: ...
    @property
    def origin(self) -> bytes: ...
    @property
    def lane(self) -> int: ...
    @property
    def floor(self) -> int: ...
    @property
    def message(self) -> Any: ...


Held = TypeVar("Held", bound=_Stored)  # the inbox's Held: kept generic, _core imports this

#: Seconds a message waits for an earlier one of its lane before it is handed on anyway.
HOLD_LIMIT = 10.0
#: Lanes kept per inbox; the least recently used one without held messages goes first (a
#: sender seen again after that starts a fresh lane).
MAX_LANES = 256
#: Given-up gaps remembered per lane, so a message of one that comes late is still handed on.
_GAPS = 64


class _Lane(Generic[Held]):
    __slots__ = ("base", "gaps", "held", "hi", "passed")

    def __init__(self, first: int) -> None:
        self.base = first  # where the lane started here: older ones are late, not copies
        self.hi = first - 1  # every lane sequence up to it was handed on (or given up on)
        self.held: dict[int, tuple[Held, float]] = {}
        self.gaps: deque[list[int]] = deque(maxlen=_GAPS)
        self.passed: set[int] = set()  # above ``hi``, handed on before a rewind

    def late(self, rseq: int) -> bool:
        """Whether ``rseq`` (at most ``hi``) was never handed on here (so is no copy)."""
        if rseq < self.base:
            return True
        for gap in self.gaps:
            if gap[0] <= rseq <= gap[1]:
                self.gaps.remove(gap)  # one message may fill it; a second copy then is one
                if gap[0] < rseq:
                    self.gaps.append([gap[0], rseq - 1])
                if rseq < gap[1]:
                    self.gaps.append([rseq + 1, gap[1]])
                return True
        return False

    def skip_to(self, hi: int, ready: list[Held]) -> None:
        """Move the lane up to ``hi``: hand on what waits at or below it in order, remember the
        sequences never seen as gaps (should one still come, it is late, not a copy), then
        release what follows without a gap."""
        prev = self.hi
        for k in sorted(k for k in self.held if k <= hi):
            ready.append(self.held.pop(k)[0])
            if k > prev + 1:
                self.gaps.append([prev + 1, k - 1])
            prev = k
        if hi > prev:
            self.gaps.append([prev + 1, hi])
        self.hi = hi
        self.release(ready)

    def release(self, ready: list[Held]) -> None:
        """Hand on the held messages that follow ``hi`` without a gap."""
        while True:
            nxt = self.held.pop(self.hi + 1, None)
            if nxt is not None:
                ready.append(nxt[0])
            elif self.hi + 1 in self.passed:
                self.passed.discard(self.hi + 1)
            else:
                return
            self.hi += 1


class Lanes(Generic[Held]):
    """The lanes of one inbox, by origin (call with the broker's lock)."""

    __slots__ = ("_by_origin",)

    def __init__(self) -> None:
        self._by_origin: OrderedDict[bytes, _Lane[Held]] = OrderedDict()

    def admit(self, held: Held, now: float,
              registered_ms: float = 0.0) -> tuple[list[Held], Held | None]:
        """``(messages to queue now, in order; a superseded copy to acknowledge or None)``.

        ``registered_ms``: when the inbox was registered. A sender's first message seen here
        starts its lane at the frame's floor if it was sent after that (the earlier messages
        it waits for were stored after it was sent, so only this inbox can have had them),
        else at itself (an earlier run of the inbox may have finished them)."""
        rseq = held.lane
        if not rseq:
            return [held], None  # a frame without a lane (an older sender)
        floor = held.floor  # 0: the frame says nothing about earlier messages
        lane = self._by_origin.get(held.origin)
        ready: list[Held] = []
        if lane is None:
            if len(self._by_origin) >= MAX_LANES:
                idle = next((o for o, ln in self._by_origin.items() if not ln.held), None)
                if idle is not None:
                    del self._by_origin[idle]
            sent_after = held.message.timestamp >= registered_ms
            lane = _Lane[Held](floor if floor and sent_after else rseq)
            self._by_origin[held.origin] = lane
        else:
            self._by_origin.move_to_end(held.origin)
            if floor - 1 > lane.hi:
                # The sender had seen everything below the floor stored before it sent this
                # one: what of it is not here came earlier (stream order) or was finished by
                # an earlier run. Hand on what waits below it and move the lane up.
                lane.skip_to(floor - 1, ready)
        if rseq <= lane.hi:
            return ([*ready, held], None) if lane.late(rseq) else (ready, held)
        if rseq in lane.passed:
            return ready, held  # a second copy of one handed on
        other = lane.held.get(rseq)
        if other is not None:
            if other[0].sseq >= held.sseq:
                return ready, held
            lane.held[rseq] = (held, other[1])
            return ready, other[0]
        if rseq != lane.hi + 1:
            lane.held[rseq] = (held, now)
            return ready, None
        lane.hi = rseq
        ready.append(held)
        lane.release(ready)
        return ready, None

    def overdue(self, now: float) -> tuple[list[Held], list[tuple[int, int]]]:
        """Give up gaps older than :data:`HOLD_LIMIT`: the messages now handed on, and the
        skipped ranges of lane sequences (for a warning)."""
        ready: list[Held] = []
        skipped: list[tuple[int, int]] = []
        for lane in self._by_origin.values():
            if not lane.held or min(t for _, t in lane.held.values()) > now - HOLD_LIMIT:
                continue
            first = min(lane.held)
            skipped.append((lane.hi + 1, first - 1))
            lane.skip_to(first - 1, ready)
        return ready, skipped

    def rewind(self, queued: list[Held], taken: list[Held]) -> None:
        """``queued`` messages were dropped from the inbox's queue unread (the consumer is
        re-created and delivers them again): let them in again; ``taken`` were handed out and
        are not delivered to the lanes again."""
        for h in queued:
            lane = self._by_origin.get(h.origin) if h.lane else None
            if lane is not None and h.lane <= lane.hi:
                lane.hi = h.lane - 1
        for h in taken:
            lane = self._by_origin.get(h.origin) if h.lane else None
            if lane is not None and h.lane > lane.hi:
                lane.passed.add(h.lane)

    def held(self) -> list[Held]:
        """Every message held back."""
        return [h for lane in self._by_origin.values() for h, _ in lane.held.values()]

    def drop_held(self) -> None:
        """Forget what is held (the consumer was re-created: it delivers them again)."""
        for lane in self._by_origin.values():
            lane.held.clear()
