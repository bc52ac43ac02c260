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
message seen from an origin starts its lane: a receiver restarted mid-stream does not wait
for messages an earlier run finished.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Generic, Protocol, TypeVar


class _Stored(Protocol):
    @property
    def sseq(self) -> int: ...
    @property
    def origin(self) -> bytes: ...
    @property
    def lane(self) -> int: ...


Held = TypeVar("Held", bound=_Stored)  # the inbox's Held: kept generic, _core imports this

#: Seconds a message waits for an earlier one of its lane before it is handed on anyway.
HOLD_LIMIT = 10.0
#: Lane sequences remembered per lane to recognise second copies.
_RECENT = 4096
#: Lanes kept per inbox; the least recently used one without held messages goes first (a
#: sender seen again after that starts a fresh lane).
MAX_LANES = 256


class _Lane(Generic[Held]):
    __slots__ = ("held", "hi", "recent", "recent_order")

    def __init__(self, hi: int) -> None:
        self.hi = hi  # every lane sequence up to it was handed on (or given up on)
        self.held: dict[int, tuple[Held, float]] = {}
        self.recent: set[int] = set()
        self.recent_order: deque[int] = deque()

    def remember(self, rseq: int) -> None:
        self.recent.add(rseq)
        self.recent_order.append(rseq)
        if len(self.recent_order) > _RECENT:
            self.recent.discard(self.recent_order.popleft())

    def release(self, ready: list[Held]) -> None:
        """Hand on the held messages that follow ``hi`` without a gap."""
        while (nxt := self.held.pop(self.hi + 1, None)) is not None:
            self.hi += 1
            self.remember(self.hi)
            ready.append(nxt[0])


class Lanes(Generic[Held]):
    """The lanes of one inbox, by origin (call with the broker's lock)."""

    __slots__ = ("_by_origin",)

    def __init__(self) -> None:
        self._by_origin: OrderedDict[bytes, _Lane[Held]] = OrderedDict()

    def admit(self, held: Held, now: float) -> tuple[list[Held], Held | None]:
        """``(messages to queue now, in order; a superseded copy to acknowledge or None)``."""
        rseq = held.lane
        if not rseq:
            return [held], None  # a frame without a lane (an older sender)
        lane = self._by_origin.get(held.origin)
        if lane is None:
            if len(self._by_origin) >= MAX_LANES:
                idle = next((o for o, ln in self._by_origin.items() if not ln.held), None)
                if idle is not None:
                    del self._by_origin[idle]
            lane = self._by_origin[held.origin] = _Lane[Held](rseq - 1)
        else:
            self._by_origin.move_to_end(held.origin)
        if rseq <= lane.hi:
            if rseq in lane.recent:
                return [], held  # a second copy of one handed on
            lane.remember(rseq)
            return [held], None  # older than where the lane started here: late, not lost
        other = lane.held.get(rseq)
        if other is not None:
            if other[0].sseq >= held.sseq:
                return [], held
            lane.held[rseq] = (held, other[1])
            return [], other[0]
        if rseq != lane.hi + 1:
            lane.held[rseq] = (held, now)
            return [], None
        lane.hi = rseq
        lane.remember(rseq)
        ready = [held]
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
            lane.hi = first - 1
            lane.release(ready)
        return ready, skipped

    def held(self) -> list[Held]:
        """Every message held back."""
        return [h for lane in self._by_origin.values() for h, _ in lane.held.values()]

    def rewind(self, queued: list[Held]) -> None:
        """Messages handed on to the inbox's queue were dropped from it unread (the consumer
        is re-created and delivers them again): let them in again."""
        for h in queued:
            lane = self._by_origin.get(h.origin) if h.lane else None
            if lane is not None:
                lane.hi = min(lane.hi, h.lane - 1)
                lane.recent.discard(h.lane)

    def drop_held(self) -> None:
        """Forget what is held (the consumer was re-created: it delivers them again)."""
        for lane in self._by_origin.values():
            lane.held.clear()
