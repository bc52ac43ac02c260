"""NatsBroker: the MessageBroker over NATS JetStream, across threads and OS processes.

Each test starts from a fresh session name; a throw-away ``nats-server -js`` runs on a free
loopback port (one per module, plus a private one for the server-restart test). Skipped when
``nats-server`` or ``nats-py`` is not installed.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # nats_helpers, whatever the rootdir

from nats_fixtures import *  # noqa: F403 (the fixtures: server, session, procs)
from nats_fixtures import NATS_SERVER
from nats_helpers import (
    NatsServer,
    Peer,
    free_port,
    spawn,
    wait_until,
)

from vudo import Message, MessageBroker
from vudo.abi import ResultCode
from vudo.errors import VudoError
from vudo.nats import BrokerUnavailable, NatsBroker, name_token
from vudo.nats._wire import name_from_token as _name_from_token


def recv_wait(b: NatsBroker, name: str, timeout: float = 10.0) -> Message:
    """Receive one message, waiting for its arrival (no blind sleeps)."""
    deadline = time.monotonic() + timeout
    while True:
        m = b.recv(name)
        if m is not None:
            return m
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{name} received nothing within {timeout}s"
        b.wait_pending(name, min(remaining, 0.5))


def finish(p: Peer, timeout: float = 30.0) -> None:
    assert p.finish(timeout) == 0, p.stderr_text()


# --- single process ----------------------------------------------------------------------------

def test_name_token_is_injective_and_subject_safe() -> None:
    names = ["a", "a.b", "a_2Eb", "a b", "é", "ping-pong", "x>*", "_"]
    tokens = [name_token(n) for n in names]
    assert len(set(tokens)) == len(names)
    assert all(t.replace("_", "").replace("-", "").isalnum() for t in tokens)
    assert [_name_from_token(t) for t in tokens] == names
    with pytest.raises(ValueError):
        name_token("")


def test_unreachable_server_raises_broker_unavailable() -> None:
    t0 = time.monotonic()
    with pytest.raises(BrokerUnavailable) as exc:
        NatsBroker(f"nats://127.0.0.1:{free_port()}", session="x", connect_timeout=1.0)
    assert isinstance(exc.value, VudoError)
    assert "127.0.0.1" in str(exc.value)
    assert time.monotonic() - t0 < 8


def test_broker_semantics_match_the_message_bus(server: NatsServer, session: str) -> None:
    with NatsBroker(server.url, session=session) as a, NatsBroker(server.url, session=session) as b:
        assert isinstance(a, MessageBroker)
        a.register("alice")
        b.register("bob", capacity=50)
        assert b.wait_registered("alice", 5) and a.wait_registered("bob", 5)
        assert a.spirits() == ["alice", "bob"] and b.spirits() == ["alice", "bob"]
        assert a.is_registered("bob") and not a.is_registered("carol")
        with pytest.raises(ValueError):
            a.register("alice")
        with pytest.raises(ValueError, match="already registered"):
            a.register("bob")  # claimed by another live process

        assert a.post("alice", "carol", b"x") == ResultCode.NOT_FOUND
        seen: list[Message] = []
        got_two = threading.Event()

        def hook(m: Message) -> None:
            seen.append(m)
            if len(seen) == 2:
                got_two.set()

        unsubscribe = b.on_message("bob", hook)
        with pytest.raises(KeyError):
            a.on_message("bob", hook)  # bob's inbox is in the other process
        assert a.post("alice", "bob", b"one", 7) == ResultCode.OK
        assert a.post("alice", "bob", b"two") == ResultCode.OK
        assert got_two.wait(5)
        unsubscribe()
        assert b.pending("bob") == 2 and b.pending("bob", 7) == 1
        peeked = b.peek("bob", 0)
        assert peeked is not None and peeked.payload == b"one"
        m = b.recv("bob", channel=5)
        assert m is None
        m2 = b.recv("bob", 0)
        assert m2 is not None and (m2.from_, m2.to, m2.channel, m2.payload) == (
            "alice", "bob", 7, b"one")
        assert abs(m2.timestamp - time.time() * 1000) < 60_000
        m3 = b.recv("bob")
        assert m3 is not None and m3.payload == b"two" and m3.channel == 0
        assert b.recv("bob") is None and b.pending("bob") == 0
        assert a.recv("bob") is None and a.pending("bob") == 0  # not local to a

        assert a.broadcast("alice", b"all", 3) == 2
        assert recv_wait(a, "alice").payload == b"all"
        assert recv_wait(b, "bob").channel == 3

        # clear() drops what is queued for this process's Spirits
        a.post("alice", "bob", b"stale")
        assert a.flush(5)
        b.clear()
        assert b.pending("bob") == 0
        a.post("alice", "bob", b"fresh")
        assert recv_wait(b, "bob").payload == b"fresh"

        # clear(name) drops only that name's messages (as MessageBus.clear(name) does)
        b.register("carol")
        assert a.wait_registered("carol", 5)
        a.post("alice", "bob", b"b1")
        a.post("alice", "carol", b"c1")
        assert a.flush(5)
        wait_until(lambda: b.pending("bob") == 1 and b.pending("carol") == 1, 5, "delivery")
        b.clear("bob")
        assert b.pending("bob") == 0 and b.pending("carol") == 1
        assert recv_wait(b, "carol").payload == b"c1"
        b.unregister("carol")

        b.unregister("bob")
        assert a.wait_registered("alice", 1)
        wait_until(lambda: not a.is_registered("bob"), 5, "bob to disappear from a's view")
        assert a.post("alice", "bob", b"x") == ResultCode.NOT_FOUND
        b.unregister("bob")  # no-op
        a.register("bob")  # the name is free again; nothing sent earlier survives
        assert a.recv("bob") is None


def test_inbox_is_durable_and_acknowledged_on_recv(server: NatsServer, session: str) -> None:
    sender = NatsBroker(server.url, session=session)
    r1 = NatsBroker(server.url, session=session, owner="worker-1")
    r1.register("w")
    for i in range(5):
        assert sender.post("s", "w", bytes([i])) == ResultCode.OK
    assert sender.flush(5)
    assert recv_wait(r1, "w").payload == b"\x00"
    wait_until(lambda: r1.pending("w") == 4, 5, "prefetch")
    r1.close()  # four prefetched, unacknowledged messages: they stay in JetStream
    assert sender.is_registered("w")  # the claim survives its process
    assert sender.post("s", "w", b"\x05") == ResultCode.OK  # queued while nobody listens
    r2 = NatsBroker(server.url, session=session, owner="worker-2")
    r2.register("w")  # r1 closed, so its claim is free to take over
    assert [recv_wait(r2, "w").payload[0] for _ in range(5)] == [1, 2, 3, 4, 5]
    sender.flush(5)
    assert r2.recv("w") is None
    r2.close()
    sender.close()


def test_outbox_back_pressure(server: NatsServer, session: str) -> None:
    with NatsBroker(server.url, session=session, outbox_size=8, window=1) as b:
        b.register("x")
        codes = [b.post("x", "x", str(i).encode()) for i in range(500)]
        assert ResultCode.ERROR in codes  # the outbox filled faster than JetStream confirmed
        accepted = [str(i).encode() for i, c in enumerate(codes) if c == ResultCode.OK]
        assert b.flush(10)
        got = [recv_wait(b, "x").payload for _ in accepted]
        assert got == accepted


def test_dead_process_claim_is_taken_over_after_its_lease(
    server: NatsServer, session: str, procs: list[Peer]
) -> None:
    lease = 1.0
    p = spawn("claim", server.url, session, "--me", "ghost", "--lease", str(lease))
    procs.append(p)
    p.wait_for_line("READY")
    p.wait(10)  # SIGKILLed itself: the claim stays, its liveness key expires
    with NatsBroker(server.url, session=session, lease=lease) as b:
        assert b.wait_registered("ghost", 5)
        assert b.post("me", "ghost", b"while you were dead") == ResultCode.OK
        taken = False
        deadline = time.monotonic() + 10 * lease
        while not taken:
            try:
                b.register("ghost")
                taken = True
            except ValueError:
                assert time.monotonic() < deadline, "dead claim never became free"
                time.sleep(0.1)
        assert recv_wait(b, "ghost").payload == b"while you were dead"


def test_a_process_presumed_dead_stops_serving_a_name_taken_over(
    server: NatsServer, session: str
) -> None:
    import asyncio

    import nats

    with NatsBroker(server.url, session=session, owner="slow") as a, \
            NatsBroker(server.url, session=session) as b:
        a.register("x")

        async def forget_a() -> None:  # as if a stalled past its lease
            nc = await nats.connect(server.url)
            kv = await nc.jetstream().key_value(f"vudo_{session}_alive")
            await kv.delete(name_token("slow"))
            await nc.close()

        asyncio.run(forget_a())
        b.register("x")  # a looks dead: b takes the name over
        wait_until(lambda: "x" not in a.local_spirits(), 5, "a to give the name up")
        assert b.post("b", "x", b"for the new holder") == ResultCode.OK
        assert recv_wait(b, "x").payload == b"for the new holder"
        assert a.recv("x") is None


# --- several processes ----------------------------------------------------------------------

def test_ping_pong_across_two_processes(
    server: NatsServer, session: str, procs: list[Peer]
) -> None:
    pong = spawn("pong", server.url, session)
    procs.append(pong)
    pong.wait_for_line("READY")
    ping = spawn("ping", server.url, session, "--count", "50")
    procs.append(ping)
    ping.wait_for_line("READY")
    rtt = ping.wait_for_line("RTT").split()
    assert int(rtt[1]) > 0
    ping.wait_for_line("DONE")
    pong.wait_for_line("DONE")
    assert ping.wait(10) == 0 and pong.wait(10) == 0


def test_broadcast_across_three_processes(
    server: NatsServer, session: str, procs: list[Peer]
) -> None:
    names = ["a", "b", "c"]
    for me in names:
        procs.append(spawn("bcast", server.url, session, "--me", me, "--count", "20",
                           "--peers", *[n for n in names if n != me]))
    # The children wait for each other's registration before broadcasting, then each checks
    # it got every broadcast exactly once, in order per sender, itself included.
    results = [c.wait_for_line("RESULT", 40) for c in procs]
    assert results == ["RESULT ok"] * 3
    for c in procs:
        finish(c)


def test_receiver_killed_and_restarted_gets_every_message_once_in_order(
    server: NatsServer, session: str, procs: list[Peer]
) -> None:
    n = 300
    first = spawn("recv", server.url, session, "--me", "sink", "--owner", "sink-host",
                  "--count", str(2 * n), "--die-after", "120")
    procs.append(first)
    first.wait_for_line("READY")
    senders = [
        spawn("send", server.url, session, "--me", s, "--to", "sink", "--count", str(n),
              "--pace", "0.003")
        for s in ("s1", "s2")
    ]
    procs.extend(senders)
    out = first.lines_until_exit()
    assert first.wait(10) == -9
    assert int(out[-1].split()[1]) > 0  # "DYING <pending>": it held unreceived messages
    lines = [ln for ln in out if ln.startswith("GOT")]
    assert len(lines) == 120
    # Restarted with the same owner id, so it takes its name back at once; the senders may
    # still be sending.
    second = spawn("recv", server.url, session, "--me", "sink", "--owner", "sink-host",
                   "--count", str(2 * n - len(lines)))
    procs.append(second)
    lines += [ln for ln in second.lines_until_exit() if ln.startswith("GOT")]
    assert second.wait(10) == 0, second.stderr_text()
    for s in senders:
        s.wait_for_line("DONE", 30)
    per_sender: dict[str, list[int]] = {"s1": [], "s2": []}
    for line in lines:
        _, sender, payload = line.split()
        name, i = payload.split(":")
        assert name == sender
        per_sender[sender].append(int(i))
    assert per_sender == {"s1": list(range(n)), "s2": list(range(n))}


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["graceful", "killed"])
def test_server_restart_loses_no_acknowledged_message(
    tmp_path: Path, session: str, procs: list[Peer], stop: int
) -> None:
    assert NATS_SERVER is not None
    srv = NatsServer(NATS_SERVER, tmp_path / "restart")
    srv.start()
    try:
        n = 400
        with NatsBroker(srv.url, session=session) as sink:
            sink.register("sink")
            sender = spawn("send", srv.url, session, "--me", "src", "--to", "sink",
                           "--count", str(n), "--pace", "0.002")
            procs.append(sender)
            got = [recv_wait(sink, "sink").payload for _ in range(100)]
            srv.stop(stop)
            wait_until(lambda: not sink.connected, 10, "the broker to notice the outage")
            assert sink.post("sink", "sink", b"x") == ResultCode.ERROR  # sends fail meanwhile
            srv.start()
            while len(got) < n:
                got.append(recv_wait(sink, "sink", 30).payload)
            assert got == [f"src:{i}".encode() for i in range(n)]
            sent = sender.wait_for_line("SENT", 30).split()
            assert int(sent[1]) == n
            assert sink.recv("sink") is None
    finally:
        srv.stop()


_RECV_INTO_PLEN = """
    (local.set $p (call $recv))
    (if (i32.eqz (local.get $p)) (then (return (i32.const -1))))
    (local.set $slen (i32.load (local.get $p)))
    (local.set $plen (i32.load (i32.add (i32.add (local.get $p) (i32.const 4))
                                        (local.get $slen))))
"""
_IMPORTS = """
  (import "vudo" "vudo_send" (func $send (param i32 i32 i32 i32) (result i32)))
  (import "vudo" "vudo_recv" (func $recv (result i32)))
  (import "vudo" "vudo_free_message" (func $free (param i32)))
  (memory (export "memory") 1)
"""
#: Sends "hello, pong" to "pong"; ``check`` returns the length of the reply it received.
PING_WAT = f"""(module {_IMPORTS}
  (data (i32.const 16) "pong")
  (data (i32.const 32) "hello, pong")
  (func (export "start") (result i32)
    (call $send (i32.const 16) (i32.const 4) (i32.const 32) (i32.const 11)))
  (func (export "check") (result i32) (local $p i32) (local $slen i32) (local $plen i32)
    {_RECV_INTO_PLEN}
    (call $free (local.get $p))
    (local.get $plen)))
"""
#: ``serve`` takes one message and echoes its payload plus "!" back to "ping".
PONG_WAT = f"""(module {_IMPORTS}
  (data (i32.const 16) "ping")
  (func (export "serve") (result i32) (local $p i32) (local $slen i32) (local $plen i32)
    (local $body i32)
    {_RECV_INTO_PLEN}
    (local.set $body (i32.add (i32.add (local.get $p) (i32.const 8)) (local.get $slen)))
    (i32.store8 (i32.add (local.get $body) (local.get $plen)) (i32.const 33))
    (drop (call $send (i32.const 16) (i32.const 4) (local.get $body)
                      (i32.add (local.get $plen) (i32.const 1))))
    (call $free (local.get $p))
    (local.get $plen)))
"""


def test_spirits_through_a_seance_across_processes(
    server: NatsServer, session: str, procs: list[Peer], tmp_path: Path
) -> None:
    pytest.importorskip("vudo.seance", reason="vudo.seance does not exist yet")
    wasmtime = pytest.importorskip("wasmtime")
    ping_wasm, pong_wasm = tmp_path / "ping.wasm", tmp_path / "pong.wasm"
    ping_wasm.write_bytes(bytes(wasmtime.wat2wasm(PING_WAT)))
    pong_wasm.write_bytes(bytes(wasmtime.wat2wasm(PONG_WAT)))
    pong = spawn("seance", server.url, session, "--me", "pong", "--to", "ping",
                 "--wasm", str(pong_wasm), "--calls", "wait", "serve")
    ping = spawn("seance", server.url, session, "--me", "ping", "--to", "pong",
                 "--wasm", str(ping_wasm), "--calls", "start", "wait", "check")
    procs.extend([pong, ping])
    assert ping.wait_for_line("CALL start", 30) == "CALL start 0"  # ResultCode.OK
    assert pong.wait_for_line("CALL serve", 30) == "CALL serve 11"
    assert ping.wait_for_line("CALL check", 30) == "CALL check 12"  # "hello, pong!"
    for p in (ping, pong):
        finish(p)
    # Dismissing the Seances released both names.
    with NatsBroker(server.url, session=session) as b:
        assert b.spirits() == []
