"""The NATS delivery contract under faults, with several OS processes (docs/distributed.md).

Each fault of the contract has a test: receivers SIGKILLed at random points, nats-server killed
with a full publish window, a holder stalled past its lease while another process takes its
name, a release while another process floods the name, a full remote inbox, and one node of a
three-node JetStream cluster killed and restarted mid-stream. The random-kill and server-kill
tests run a few iterations here and many with ``VUDO_SLOW=1`` (the slow tier, ``-m slow``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from nats_fixtures import *  # noqa: F403 (the fixtures: server, session, procs)
from nats_fixtures import NATS_SERVER
from nats_helpers import NatsCluster, NatsServer, Peer, spawn, stored, wait_until

from vudo.abi import ResultCode
from vudo.nats import NatsBroker

SLOW = bool(os.environ.get("VUDO_SLOW"))
slow = pytest.mark.slow


def stream_leader(url: str, session: str) -> str:
    """The server name of the node leading the session's stream."""
    import nats

    async def leader() -> str:
        nc = await nats.connect(url.split(","))
        try:
            info = await nc.jetstream().stream_info(f"VUDO_{session}")
            assert info.cluster is not None and info.cluster.leader
            return str(info.cluster.leader)
        finally:
            await nc.close()

    return asyncio.run(leader())


def iter_lines(p: Peer) -> list[str]:
    """The lines a child printed so far (without waiting)."""
    out = []
    while True:
        try:
            out.append(p.read_line(0))
        except (TimeoutError, EOFError):
            return out


def receive_all(b: NatsBroker, name: str, n: int, timeout: float = 30.0) -> list[bytes]:
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        m = b.recv(name)
        if m is None:
            assert time.monotonic() < deadline, f"got {len(got)} of {n}"
            b.wait_pending(name, 0.2)
            continue
        got.append(m.payload)
    return got


# --- receiver killed at random points ---------------------------------------------------------

def _random_kills(url: str, session: str, procs: list[Peer], kills: int, seed: int) -> None:
    rng = random.Random(seed)
    n = 150 * (kills + 1)
    first = spawn("fin", url, session, "--me", "sink", "--owner", "sink-host")
    procs.append(first)
    first.wait_for_line("READY")
    sender = spawn("send", url, session, "--me", "src", "--to", "sink", "--count", str(n))
    procs.append(sender)
    runs: list[list[str]] = []
    current = first
    for k in range(kills + 1):
        lines: list[str] = []
        target = rng.randint(20, 140)
        while True:
            try:
                line = current.read_line(30)
            except EOFError:
                break
            except TimeoutError:
                raise AssertionError(f"run {k}: stuck after {lines[-3:]}; stderr "
                                     f"{current.stderr_text()}") from None
            lines.append(line)
            gots = sum(1 for ln in lines if ln.startswith("GOT"))
            if k < kills and gots >= target:
                current.kill()  # wherever it is: in recv, printing, acknowledging...
            elif k == kills and line.startswith("GOT"):
                seen = {ln.split()[1] for run in (*runs, lines) for ln in run
                        if ln.startswith("GOT")}
                if len(seen) == n:
                    current.kill()
        current.wait(10)
        # A kill between print()'s writes leaves "GOT" or "FIN" without its payload.
        runs.append([ln for ln in lines if len(ln.split()) == 2])
        if k < kills:
            current = spawn("fin", url, session, "--me", "sink", "--owner", "sink-host")
            procs.append(current)
    sender.wait_for_line("DONE", 30)
    expected = [f"src:{i}" for i in range(n)]
    finished_before: set[str] = set()
    received: set[str] = set()
    for lines in runs:
        got = [ln.split()[1] for ln in lines if ln.startswith("GOT")]
        # Nothing finished in an earlier run comes again, and each run sees the messages in
        # the order they were sent.
        assert not finished_before & set(got), finished_before & set(got)
        idx = [int(p.split(":")[1]) for p in got]
        assert idx == sorted(idx) and len(set(idx)) == len(idx)
        finished_before |= {ln.split()[1] for ln in lines if ln.startswith("FIN")}
        received |= set(got)
    assert received == set(expected)  # nothing lost


def test_receiver_killed_at_random_points_loses_nothing_and_repeats_only_unfinished(
    server: NatsServer, session: str, procs: list[Peer]
) -> None:
    _random_kills(server.url, session, procs, kills=3, seed=1)


@slow
@pytest.mark.skipif(not SLOW, reason="slow tier: set VUDO_SLOW=1")
@pytest.mark.parametrize("seed", range(10))
def test_receiver_killed_at_random_points_many_times(
    server: NatsServer, session: str, procs: list[Peer], seed: int
) -> None:
    _random_kills(server.url, session, procs, kills=5, seed=100 + seed)


# --- sender killed at random points, with a journal -------------------------------------------

def _sender_kills(url: str, session: str, procs: list[Peer], journal: Path, kills: int,
                  seed: int) -> None:
    rng = random.Random(seed)
    n = 250 * (kills + 1)
    accepted: list[str] = []  # every payload the killed senders' post() returned OK for
    maybe: set[str] = set()  # the one each kill may have caught between post() and its print
    got: list[str] = []
    with NatsBroker(url, session=session, ack="async") as sink:
        sink.register("sink")
        start = 0
        for run in range(kills + 1):
            last = run == kills
            p = spawn("jsend", url, session, "--me", "src", "--to", "sink", "--owner", "src-1",
                      "--journal", str(journal), "--run", str(run), "--start", str(start),
                      "--count", str(n), *(["--last"] if last else []))
            procs.append(p)
            p.wait_for_line("READY")
            if last:
                lines = p.lines_until_exit(90)
                assert "SENT" in lines, f"last sender did not finish: {p.stderr_text()}"
            else:
                target = rng.randint(0, 220)  # 0: killed while re-sending what it replayed
                acc = 0
                while acc < target and start + acc < n - 1:
                    if p.wait_for_line("ACC", 30):
                        acc += 1
                p.kill()  # wherever it is: in post, writing the journal, publishing...
                lines = p.lines_until_exit(10)
                acc += sum(1 for ln in lines if ln.startswith("ACC") and len(ln.split()) == 2)
                # Lines read before the kill plus the rest of the pipe, in order.
                start += acc
                maybe.add(f"{run}:{start}")
            accepted += [f"{run}:{i}" for i in range(start - acc if not last else start,
                                                     start if not last else n)]
            while (m := sink.recv("sink")) is not None:  # receive between the kills too
                got.append(m.payload.decode())
            p.wait(10)
        while not got or got[-1] != "end":
            got += [x.decode() for x in receive_all(sink, "sink", 1, 60)]
    got.pop()
    dupes = sorted({x for x in got if got.count(x) > 1})
    assert not dupes, f"stored twice: {dupes[:10]}"
    missing = [x for x in accepted if x not in set(got)]
    assert not missing, f"{len(missing)} accepted messages lost, first {missing[:5]}"
    assert set(got) - set(accepted) <= maybe, set(got) - set(accepted) - maybe
    order = [tuple(map(int, x.split(":"))) for x in got]
    assert order == sorted(order), "out of order per sender"


def test_sender_killed_at_random_points_loses_nothing_it_accepted(
    server: NatsServer, session: str, procs: list[Peer], tmp_path: Path
) -> None:
    _sender_kills(server.url, session, procs, tmp_path / "journal", kills=3, seed=3)


@slow
@pytest.mark.skipif(not SLOW, reason="slow tier: set VUDO_SLOW=1")
@pytest.mark.parametrize("seed", range(8))
def test_sender_killed_at_random_points_many_times(
    server: NatsServer, session: str, procs: list[Peer], tmp_path: Path, seed: int
) -> None:
    _sender_kills(server.url, session, procs, tmp_path / "journal", kills=8, seed=200 + seed)


# --- nats-server killed with a full publish window -------------------------------------------

def _server_kill(tmp_path: Path, session: str, procs: list[Peer], seed: int,
                 n: int = 6000, max_inbox: int = 0) -> None:
    """Two senders of ``n`` messages each, the server SIGKILLed mid-stream; every message
    arrives once and in order per sender. With ``max_inbox`` below ``2 * n`` the inbox is
    full when the server dies (messages refused, others in flight, then the outage)."""
    assert NATS_SERVER is not None
    rng = random.Random(seed)
    srv = NatsServer(NATS_SERVER, tmp_path / f"kill{seed}")
    srv.start()
    try:
        with NatsBroker(srv.url, session=session, ack="async",
                        max_inbox=max_inbox or 4 * n) as sink:
            sink.register("sink")
            senders = [spawn("send", srv.url, session, "--me", s, "--to", "sink", "--count",
                             str(n), "--size", "200") for s in ("a", "b")]
            procs.extend(senders)
            # Both have registered before the kill: a register whose reply the outage loses
            # raises BrokerUnavailable (docs/distributed.md), which is not this test's subject.
            for s in senders:
                s.wait_for_line("READY")
            if max_inbox:
                # Let the senders fill the inbox before the outage.
                wait_until(lambda: stored(srv.url, session, "sink") >= max_inbox, 30,
                           "the inbox to fill")
            got = receive_all(sink, "sink", rng.randint(min(500, n // 4), min(3000, n // 2)))
            srv.stop(signal.SIGKILL)  # the senders have their whole window in flight
            wait_until(lambda: not sink.connected, 10, "the broker to notice the outage")
            srv.start()
            try:
                got += receive_all(sink, "sink", 2 * n - len(got), 60)
            except AssertionError as exc:
                if os.environ.get("VUDO_NATS_LOG"):
                    for s in senders:
                        (tmp_path / f"sender-{s.args[6]}-{seed}.log").write_text("".join(s.err))
                last = {p.split(b".")[0].decode().split(":")[0]: p[:12] for p in got}
                left = {s.args[6]: [ln for ln in iter_lines(s) if ln.startswith("SENT")]
                        for s in senders}
                raise AssertionError(f"{exc}; last per sender {last}; stored now "
                                     f"{stored(srv.url, session, 'sink')}; senders {left}; stderr "
                                     f"{[s.stderr_text()[-2000:] for s in senders]}") from None
            for s in senders:
                s.wait_for_line("SENT", 60)
            if os.environ.get("VUDO_NATS_LOG"):
                for s in senders:
                    s.wait(30)
                    (tmp_path / f"sender-{s.args[6]}-{seed}.log").write_text("".join(s.err))
            per: dict[str, list[int]] = {"a": [], "b": []}
            for p in got:
                who, i = p.split(b".")[0].decode().split(":")
                per[who].append(int(i))
            for who, seqs in per.items():
                bad = next((i for i, v in enumerate(seqs) if v != i), None)
                assert bad is None and len(seqs) == n, (
                    f"{who}: {len(seqs)} messages; first out of place at {bad}: "
                    f"{seqs[max(0, (bad or 0) - 3):(bad or 0) + 5]}")
            assert sink.recv("sink") is None
    finally:
        srv.stop()


def test_server_killed_with_a_full_window_keeps_order_per_sender(
    tmp_path: Path, session: str, procs: list[Peer]
) -> None:
    _server_kill(tmp_path, session, procs, seed=7)


@slow
@pytest.mark.skipif(not SLOW, reason="slow tier: set VUDO_SLOW=1")
@pytest.mark.parametrize("seed", range(8))
def test_server_killed_with_a_full_window_many_times(
    tmp_path: Path, session: str, procs: list[Peer], seed: int
) -> None:
    _server_kill(tmp_path, session, procs, seed=seed)


def test_server_killed_while_the_inbox_is_full_keeps_order_per_sender(
    tmp_path: Path, session: str, procs: list[Peer]
) -> None:
    _server_kill(tmp_path, session, procs, seed=11, n=3000, max_inbox=2000)


@slow
@pytest.mark.skipif(not SLOW, reason="slow tier: set VUDO_SLOW=1")
@pytest.mark.parametrize("seed", range(8))
def test_server_killed_while_the_inbox_is_full_many_times(
    tmp_path: Path, session: str, procs: list[Peer], seed: int
) -> None:
    _server_kill(tmp_path, session, procs, seed=50 + seed, n=3000, max_inbox=2000)


# --- a holder stalled past its lease ---------------------------------------------------------

def test_stalled_holder_hands_out_nothing_after_its_name_was_taken(
    server: NatsServer, session: str, procs: list[Peer]
) -> None:
    lease = 1.0
    holder = spawn("holder", server.url, session, "--me", "x", "--lease", str(lease),
                   "--pace", "3")
    procs.append(holder)
    holder.wait_for_line("READY")
    with NatsBroker(server.url, session=session, lease=lease) as b:
        for i in range(10):
            assert b.post("b", "x", f"before:{i}".encode()) == ResultCode.OK
        assert b.flush(5)
        assert holder.wait_for_line("PENDING") != "PENDING 0"  # delivered, not received
        holder.send_signal(signal.SIGSTOP)  # stalls with ten messages in its local inbox
        try:
            deadline = time.monotonic() + 20 * lease
            while True:
                try:
                    b.register("x")
                    break
                except ValueError:
                    assert time.monotonic() < deadline, "the stalled claim never became free"
                    time.sleep(0.05)
            for i in range(5):
                assert b.post("b", "x", f"after:{i}".encode()) == ResultCode.OK
        finally:
            holder.send_signal(signal.SIGCONT)
        assert holder.stdin is not None
        holder.stdin.write("go\n")
        holder.stdin.flush()
        lines = holder.lines_until_exit(20)
        assert [ln for ln in lines if ln.startswith("GOT")] == []
        assert lines[-1] == "END -"  # it noticed and closed the inbox
        got = receive_all(b, "x", 15)
        assert got == [f"before:{i}".encode() for i in range(10)] + [
            f"after:{i}".encode() for i in range(5)]


# --- release while another process sends -----------------------------------------------------

def test_release_under_load_strands_nothing_and_later_sends_get_not_found(
    server: NatsServer, session: str, procs: list[Peer]
) -> None:
    with NatsBroker(server.url, session=session) as b:
        b.register("sink")
        flood = spawn("flood", server.url, session, "--me", "src", "--to", "sink")
        procs.append(flood)
        receive_all(b, "sink", 200)
        b.unregister("sink")
        flood.wait_for_line("NOTFOUND", 30)
        flood.wait_for_line("FLUSHED", 30)
        assert flood.wait(10) == 0
        wait_until(lambda: stored(server.url, session, "sink") == 0, 10,
                   "messages stored after the release to be removed")
        assert b.post("me", "sink", b"late") == ResultCode.NOT_FOUND


# --- a full remote inbox ---------------------------------------------------------------------

def test_full_remote_inbox_refuses_sends_and_loses_none_accepted(
    server: NatsServer, session: str, procs: list[Peer]
) -> None:
    cap = 100
    ghost = spawn("claim", server.url, session, "--me", "slow", "--lease", "1",
                  "--max-inbox", str(cap))
    procs.append(ghost)
    ghost.wait_for_line("READY")
    ghost.wait(10)  # SIGKILLed itself: nobody receives for "slow"
    with NatsBroker(server.url, session=session, lease=1.0, outbox_size=300) as b:
        assert b.max_inbox == cap  # the session's stream fixes the limit
        codes = []
        for i in range(2000):
            codes.append(b.post("me", "slow", str(i).encode()))
            if i % 50 == 0:
                time.sleep(0.01)
        assert ResultCode.ERROR in codes
        assert stored(server.url, session, "slow") <= cap  # bounded across processes
        accepted = [str(i).encode() for i, c in enumerate(codes) if c == ResultCode.OK]
        assert len(accepted) < 2000
        deadline = time.monotonic() + 20
        while True:
            try:
                b.register("slow")
                break
            except ValueError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        got = receive_all(b, "slow", len(accepted))
        assert got == accepted  # nothing accepted was lost, and in order
        assert b.flush(10) and b.recv("slow") is None


# --- a three-node cluster --------------------------------------------------------------------

def test_cluster_node_killed_and_restarted_mid_stream_loses_nothing(
    tmp_path: Path, session: str, procs: list[Peer], caplog: pytest.LogCaptureFixture
) -> None:
    assert NATS_SERVER is not None
    caplog.set_level(logging.DEBUG, logger="vudo.nats")  # a failure shows each recovery step
    cluster = NatsCluster(NATS_SERVER, tmp_path / "cluster")
    cluster.start()
    try:
        n = 1500
        with NatsBroker(cluster.url, session=session, replicas=3,
                        request_timeout=5.0) as sink:
            sink.register("sink")
            sender = spawn("send", cluster.url, session, "--me", "src", "--to", "sink",
                           "--count", str(n), "--pace", "0.001", "--replicas", "3")
            procs.append(sender)
            got = receive_all(sink, "sink", 300, 60)
            leader = stream_leader(cluster.url, session)
            victim = next(node for node in cluster.nodes if f"-n {leader} " in node.cmdline)
            victim.stop(signal.SIGKILL)
            # Time is not this test's subject: the cluster's own elections took up to 20 s on
            # a quiet machine, and longer under load.
            got += receive_all(sink, "sink", 400, 120)
            victim.start()
            got += receive_all(sink, "sink", n - len(got), 120)
            sender.wait_for_line("SENT", 60)
            assert got == [f"src:{i}".encode() for i in range(n)]
    finally:
        cluster.stop()
