"""The sender's journal (``NatsBroker(journal=...)``): its file format, the owner's lock, and
the replay by a broker restarted with the same owner. The SIGKILL loop is in
``tests/test_nats_faults.py``."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from nats_helpers import NatsServer, find_nats_server

from vudo.abi import ResultCode
from vudo.nats._core import Out
from vudo.nats._journal import Journal
from vudo.nats._wire import encode

pytest.importorskip("nats", reason="nats-py is not installed (pip install 'vudo[nats]')")
NATS_SERVER = find_nats_server()

from vudo.nats import BrokerUnavailable, NatsBroker, name_token  # noqa: E402
from vudo.nats._claims import epoch_bytes  # noqa: E402


def out(seq: int, to: str = "b", data: bytes = b"x", mid: str = "") -> Out:
    return Out(seq, to, f"vudo.s.in.o.{to}", data, "e1", mid or f"id{seq}")


def test_journal_keeps_accepted_minus_done_and_survives_a_torn_tail(tmp_path: Path) -> None:
    j = Journal(tmp_path, "s", "o", "nats://x")
    for i in range(1, 6):
        j.accept(out(i, data=bytes([i]) * i))
    j.done([2, 4])
    j.accept(out(3, mid="id3r1"))  # re-sent under a new id: the newer record wins
    with open(j.path, "ab") as f:
        f.write(out(6).msg_id.encode() + b"A\x06")  # a write torn by a crash
    loaded = j.load()
    assert [(o.seq, o.msg_id, o.data) for o in loaded] == [
        (1, "id1", b"\x01"), (3, "id3r1", b"x"), (5, "id5", b"\x05" * 5)]
    j.rewrite(loaded[1:])
    assert [o.seq for o in j.load()] == [3, 5]
    j.rewrite(())
    assert j.load() == [] and j.path.stat().st_size == 0
    j.close()


def test_journal_refuses_a_second_live_process_with_the_same_owner(tmp_path: Path) -> None:
    j = Journal(tmp_path, "s", "o", "nats://x")
    try:
        with pytest.raises(BrokerUnavailable, match="in use"):
            Journal(tmp_path, "s", "o", "nats://x")
        Journal(tmp_path, "s", "other", "nats://x").close()
    finally:
        j.close()
    Journal(tmp_path, "s", "o", "nats://x").close()  # free again once closed


def test_a_journal_needs_a_stable_owner(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="owner"):
        NatsBroker("nats://127.0.0.1:1", journal=tmp_path)


class EarlyMarker:
    """A KV watcher that says its initial values are over before they arrived, as nats-py's
    ``watch`` does when the consumer's pending count is read after the server pushed them."""

    def __init__(self, watcher: Any) -> None:
        self._watcher, self._first = watcher, True

    async def updates(self, timeout: float = 5.0) -> Any:
        if self._first:
            self._first = False
            return None
        return await self._watcher.updates(timeout)

    def __aiter__(self) -> Any:
        return self._watcher.__aiter__()

    async def stop(self) -> None:
        await self._watcher.stop()


def early_marker(monkeypatch: pytest.MonkeyPatch) -> None:
    from nats.js.kv import KeyValue

    real = KeyValue.watchall

    async def watchall(self: Any, **kwargs: Any) -> EarlyMarker:
        return EarlyMarker(await real(self, **kwargs))

    monkeypatch.setattr(KeyValue, "watchall", watchall)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    if NATS_SERVER is None:
        pytest.skip("nats-server not found (apt-get install nats-server)")
    srv = NatsServer(NATS_SERVER, tmp_path_factory.mktemp("nats"))
    srv.start()
    yield srv
    srv.stop()


@pytest.mark.parametrize("racy_watch", [False, True], ids=["watch", "early-marker-watch"])
def test_restart_with_the_same_owner_resends_what_was_never_stored(
    server: NatsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, racy_watch: bool
) -> None:
    session = "j" + uuid.uuid4().hex[:10]
    with NatsBroker(server.url, session=session) as sink:
        sink.register("sink")
        sink.register("gone")
        epoch = sink._registry["sink"].epoch
        gone_epoch = sink._registry["gone"].epoch
        sink.unregister("gone")
        # What a sender killed before its outbox reached JetStream leaves in its journal.
        token = name_token("src-1")
        j = Journal(tmp_path, session, token, server.url)
        subject = f"vudo.{session}.in.{name_token(sink.owner)}.sink"
        for i, (to, ep) in enumerate([("sink", epoch), ("gone", gone_epoch), ("sink", epoch)]):
            lane = [1, 1, 2][i]  # lanes count per recipient
            frame = encode("src", 0, 0.0, epoch_bytes(ep), b"journal1", lane, lane,
                           f"m{i}".encode())
            j.accept(Out(i + 1, to, subject, frame, ep, f"old{i}"))
        j.close()
        if racy_watch:  # the registry view must still be whole before the replay reads it
            early_marker(monkeypatch)
        with NatsBroker(server.url, session=session, owner="src-1", journal=tmp_path) as src:
            assert src.flush(10)
            assert src.post("src", "sink", b"new") == ResultCode.OK
            assert src.flush(10)
        got = []
        while len(got) < 3:
            assert sink.wait_pending("sink", 10), f"only {got}"
            m = sink.recv("sink")
            if m is not None:
                got.append(m.payload)
        # The released name's message is dropped; the rest first, in order, then the new one.
        assert got == [b"m0", b"m2", b"new"]
        j = Journal(tmp_path, session, token, server.url)
        assert j.load() == []  # everything stored: nothing left to re-send
        j.close()


# --- ack="sync" on the blocking acknowledgement connection ------------------------------------

def _ack_pending(url: str, stream: str, consumer: str) -> int:
    import asyncio

    import nats

    async def count() -> int:
        nc = await nats.connect(url)
        try:
            info = await nc.jetstream().consumer_info(stream, consumer)
            return int(info.num_ack_pending)
        finally:
            await nc.close()

    return asyncio.run(count())


def test_sync_finish_is_confirmed_from_the_spirits_thread_and_survives_a_broken_socket(
    server: NatsServer,
) -> None:
    session = "k" + uuid.uuid4().hex[:10]
    with NatsBroker(server.url, session=session, ack="sync") as b:
        b.register("me")
        for i in range(3):
            assert b.post("me", "me", f"m{i}".encode()) == ResultCode.OK
        assert b.flush(10)
        got = []
        while len(got) < 3:
            assert b.wait_pending("me", 10)
            m = b.recv("me")
            if m is not None:
                got.append(m)
        assert b.done("me", got[-1])
        assert b._acker is not None  # confirmed on the blocking connection, not the loop
        # done() returned: the server has every acknowledgement (confirmed, in order).
        assert _ack_pending(server.url, b._stream, b._consumer) == 0
        assert b.post("me", "me", b"again") == ResultCode.OK
        assert b.flush(10) and b.wait_pending("me", 10)
        m = b.recv("me")
        assert m is not None and m.payload == b"again"
        b._acker._sock.close()  # the connection breaks: the loop's path takes over
        assert b.done("me", m)
        assert _ack_pending(server.url, b._stream, b._consumer) == 0
        assert b.recv("me") is None
