"""Order per sender at the receiver (``vudo/nats/_order.py``): the lanes on their own, then a
broker fed the copies a restarted nats-server brings back (a taken-back message again ahead
of the one it overtook)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from vudo.nats import _order
from vudo.nats._order import HOLD_LIMIT, Lanes


@dataclass(eq=False)
class Copy:
    sseq: int
    lane: int
    origin: bytes = b"A"
    floor: int = 0  # 0: the frame says nothing below its own lane
    sent_ms: float = 0.0

    @property
    def message(self) -> SimpleNamespace:
        return SimpleNamespace(timestamp=self.sent_ms)


def admit(lanes: Lanes[Copy], *copies: Copy, now: float = 0.0) -> list[tuple[int, int]]:
    """Admit each copy; what was handed on, as (lane, sseq)."""
    out = []
    for c in copies:
        ready, _ = lanes.admit(c, now)
        out += [(r.lane, r.sseq) for r in ready]
    return out


def test_in_order_messages_pass_straight_through() -> None:
    lanes: Lanes[Copy] = Lanes()
    assert admit(lanes, Copy(1, 1), Copy(2, 2), Copy(3, 3)) == [(1, 1), (2, 2), (3, 3)]
    assert lanes.held() == []


def test_a_message_ahead_of_a_gap_waits_until_the_gap_fills() -> None:
    lanes: Lanes[Copy] = Lanes()
    assert admit(lanes, Copy(1, 1)) == [(1, 1)]
    assert admit(lanes, Copy(10, 4), Copy(11, 3)) == []  # 2 is missing: both wait
    assert {c.lane for c in lanes.held()} == {3, 4}
    assert admit(lanes, Copy(12, 2)) == [(2, 12), (3, 11), (4, 10)]
    assert lanes.held() == []


def test_a_second_copy_of_a_message_handed_on_is_superseded() -> None:
    lanes: Lanes[Copy] = Lanes()
    admit(lanes, Copy(1, 1), Copy(2, 2))
    again = Copy(9, 2)
    assert lanes.admit(again, 0.0) == ([], again)  # to acknowledge, never handed out


def test_of_two_held_copies_the_later_stored_stays() -> None:
    lanes: Lanes[Copy] = Lanes()
    admit(lanes, Copy(1, 1))
    old, new = Copy(5, 3), Copy(8, 3)
    assert lanes.admit(old, 0.0) == ([], None)
    assert lanes.admit(new, 0.0) == ([], old)  # the sender deletes the earlier copy
    assert lanes.admit(Copy(4, 3), 0.0)[1] is not None  # an even earlier one goes too
    assert admit(lanes, Copy(9, 2)) == [(2, 9), (3, 8)]


def test_a_gap_that_never_fills_is_given_up_after_the_hold_limit() -> None:
    lanes: Lanes[Copy] = Lanes()
    admit(lanes, Copy(1, 1))
    admit(lanes, Copy(3, 3), now=100.0)
    assert lanes.overdue(100.0 + HOLD_LIMIT / 2) == ([], [])
    ready, skipped = lanes.overdue(100.0 + HOLD_LIMIT + 0.1)
    assert [c.lane for c in ready] == [3] and skipped == [(2, 2)]
    assert admit(lanes, Copy(4, 2)) == [(2, 4)]  # late, but never lost
    assert lanes.admit(Copy(5, 2), 0.0)[0] == []  # and a copy of it is one


def test_the_first_message_of_a_sender_starts_its_lane() -> None:
    lanes: Lanes[Copy] = Lanes()  # a receiver restarted after messages 1..499 were finished
    assert admit(lanes, Copy(7, 500), Copy(8, 501)) == [(500, 7), (501, 8)]
    assert admit(lanes, Copy(9, 1, origin=b"B")) == [(1, 9)]  # lanes are per sender


def test_a_first_message_sent_after_registration_waits_for_its_floor() -> None:
    lanes: Lanes[Copy] = Lanes()  # 1-4 were refused by a full inbox; 5 found room first
    ready, _ = lanes.admit(Copy(9, 5, floor=1, sent_ms=2000.0), 0.0, registered_ms=1000.0)
    assert ready == []
    assert admit(lanes, Copy(10, 1, floor=1), Copy(11, 2), Copy(12, 3)) == [
        (1, 10), (2, 11), (3, 12)]
    assert admit(lanes, Copy(13, 4)) == [(4, 13), (5, 9)]


def test_a_first_message_sent_before_registration_starts_its_lane() -> None:
    lanes: Lanes[Copy] = Lanes()  # an earlier run of the inbox may have finished 1-4
    ready, _ = lanes.admit(Copy(9, 5, floor=1, sent_ms=500.0), 0.0, registered_ms=1000.0)
    assert [c.lane for c in ready] == [5]


def test_a_higher_floor_moves_the_lane_up_and_late_messages_still_come() -> None:
    lanes: Lanes[Copy] = Lanes()
    admit(lanes, Copy(1, 1))
    assert admit(lanes, Copy(5, 4)) == []  # waits for 2 and 3
    # The sender had 2-5 stored before it sent 6: 4 goes on, then 6.
    assert admit(lanes, Copy(7, 6, floor=6)) == [(4, 5), (6, 7)]
    assert admit(lanes, Copy(8, 3)) == [(3, 8)]  # late, never lost
    assert lanes.admit(Copy(9, 4), 0.0)[0] == []  # a copy of one handed on
    assert admit(lanes, Copy(10, 7, floor=7)) == [(7, 10)]


def test_messages_dropped_from_the_queue_unread_are_let_in_again() -> None:
    lanes: Lanes[Copy] = Lanes()
    queued = [Copy(1, 1), Copy(2, 2)]
    admit(lanes, *queued)
    lanes.rewind(queued, [])  # the consumer was re-created: it delivers them again
    assert admit(lanes, Copy(1, 1), Copy(2, 2)) == [(1, 1), (2, 2)]


def test_a_rewind_does_not_wait_for_messages_handed_out_from_the_middle() -> None:
    lanes: Lanes[Copy] = Lanes()  # 1 and 3 queued, 2 taken by a recv on another channel
    admit(lanes, Copy(1, 1), Copy(2, 2), Copy(3, 3))
    lanes.rewind([Copy(1, 1), Copy(3, 3)], [Copy(2, 2)])
    assert admit(lanes, Copy(1, 1), Copy(3, 3)) == [(1, 1), (3, 3)]
    assert lanes.admit(Copy(2, 2), 0.0)[0] == []  # a copy of the one handed out


def test_idle_lanes_are_forgotten_but_never_one_with_held_messages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_order, "MAX_LANES", 3)
    lanes: Lanes[Copy] = Lanes()
    admit(lanes, Copy(1, 1, b"held"), Copy(2, 3, b"held"))  # lane "held" waits for 2
    for i in range(10):
        admit(lanes, Copy(10 + i, 1, bytes([i])))
    assert admit(lanes, Copy(30, 2, b"held")) == [(2, 30), (3, 2)]


# --- a broker fed what a restarted server brings back -----------------------------------------

from nats_fixtures import *  # noqa: E402, F403
from nats_helpers import NatsServer, stored  # noqa: E402

from vudo.nats import NatsBroker, name_token  # noqa: E402
from vudo.nats._claims import epoch_bytes  # noqa: E402
from vudo.nats._wire import encode  # noqa: E402


def _publish(url: str, subject: str, frames: list[tuple[bytes, str]]) -> None:
    import nats

    async def run() -> None:
        nc = await nats.connect(url)
        js = nc.jetstream()
        for data, mid in frames:
            await js.publish(subject, data, headers={"Nats-Msg-Id": mid})
        await nc.close()

    asyncio.run(run())


@contextlib.contextmanager
def _sink(server: NatsServer, session: str) -> Iterator[tuple[NatsBroker, bytes, str]]:
    """A broker holding "sink", its claim epoch and the subject its messages are stored on."""
    with NatsBroker(server.url, session=session) as sink:
        sink.register("sink")
        epoch = epoch_bytes(sink._registry["sink"].epoch)
        yield sink, epoch, f"vudo.{session}.in.{name_token(sink.owner)}.sink"


def _receive(sink: NatsBroker, n: int, timeout: float) -> list[bytes]:
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        assert time.monotonic() < deadline, f"got {got}"
        m = sink.recv("sink")
        if m is None:
            sink.wait_pending("sink", 0.2)
        else:
            got.append(m.payload)
    return got


def test_a_copy_brought_back_ahead_of_the_message_it_overtook_waits_for_it(
    server: NatsServer, session: str
) -> None:
    with _sink(server, session) as (sink, epoch, subject):

        def frame(lane: int) -> bytes:
            return encode("src", 0, 0.0, epoch, b"sender-1", lane, 1, f"m{lane}".encode())

        # What the stream holds after the kill: message 3's taken-back copy came back before
        # 2 (refused while the inbox was full) was stored, then 3 was re-sent under a new id.
        _publish(server.url, subject, [(frame(1), "x1"), (frame(3), "x3"), (frame(2), "x2"),
                                       (frame(3), "x3r1")])
        assert _receive(sink, 3, 10) == [b"m1", b"m2", b"m3"]
        assert sink.done("sink")
        assert sink.wait_pending("sink", 0.5) is False  # the second copy is not handed out
        assert sink.pending("sink") == 0
        deadline = time.monotonic() + 10
        while stored(server.url, session, "sink"):  # nothing stranded
            assert time.monotonic() < deadline, "a copy stayed in the stream"
            time.sleep(0.05)


def test_after_clear_a_sender_starts_a_fresh_lane(server: NatsServer, session: str) -> None:
    with _sink(server, session) as (sink, epoch, subject):

        def frame(lane: int) -> bytes:
            return encode("src", 0, 0.0, epoch, b"sender-2", lane, lane, f"m{lane}".encode())

        _publish(server.url, subject, [(frame(1), "y1")])
        assert sink.wait_pending("sink", 10)
        sink.clear()  # 2-4 were purged before this receiver saw them
        _publish(server.url, subject, [(frame(5), "y5")])
        assert sink.wait_pending("sink", 5)  # not held back waiting for 2-4 (10 s)
        m = sink.recv("sink")
        assert m is not None and m.payload == b"m5"


def test_a_message_that_overtook_its_senders_first_ones_waits_for_them(
    server: NatsServer, session: str
) -> None:
    with _sink(server, session) as (sink, epoch, subject):
        now = time.time() * 1000.0 + 1000.0  # sent after the inbox was registered

        def frame(lane: int) -> bytes:
            return encode("src", 0, now, epoch, b"sender-3", lane, 1, f"m{lane}".encode())

        # A full inbox refused 1-3; 4 found room first, then 1-3 were stored in turn.
        _publish(server.url, subject, [(frame(4), "z4"), (frame(1), "z1"), (frame(2), "z2"),
                                       (frame(3), "z3")])
        # Well inside the 10 s a gap may wait.
        assert _receive(sink, 4, 5) == [b"m1", b"m2", b"m3", b"m4"]
