"""Message throughput and round-trip latency: NATS JetStream across processes vs the in-process bus.

    PYTHONPATH=src python benchmarks/bench_nats.py [--messages 20000] [--round-trips 500]

Starts a throw-away ``nats-server -js`` on a free loopback port (``nats-server`` must be
installed: ``apt-get install nats-server``), then measures, in one run:

* in-process :class:`~vudo.broker.MessageBus`: one thread posting, another receiving
  (throughput), and two threads answering each other (round trip);
* :class:`~vudo.nats.NatsBroker` across two OS processes: a sender process posting as fast as
  ``post`` accepts, this process receiving (throughput, for both acknowledgement modes), and a
  ping-pong against an echo process (round trip).

Throughput is counted at the receiver, from the first message received to the last.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Literal

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from nats_helpers import NatsServer, find_nats_server, spawn  # noqa: E402

from vudo import Message, MessageBus  # noqa: E402
from vudo.nats import NatsBroker  # noqa: E402


def _pcts(samples: list[float]) -> tuple[float, float]:
    """Median and 99th percentile in microseconds."""
    s = sorted(samples)
    return statistics.median(s) * 1e6, s[min(len(s) - 1, int(len(s) * 0.99))] * 1e6


def bench_bus_throughput(n: int, size: int) -> float:
    """Messages/s through a MessageBus from one thread to another."""
    bus = MessageBus(capacity=n + 1)
    bus.register("a")
    bus.register("b")
    payload = b"x" * size
    arrived = threading.Semaphore(0)
    bus.on_message("b", lambda _m: arrived.release())
    got = 0

    def consume() -> None:
        nonlocal got
        while got < n:
            arrived.acquire()
            if bus.recv("b") is not None:
                got += 1

    t = threading.Thread(target=consume)
    t0 = time.perf_counter()
    t.start()
    for _ in range(n):
        bus.post("a", "b", payload)
    t.join()
    return n / (time.perf_counter() - t0)


def bench_bus_rtt(k: int) -> list[float]:
    """Round trips between two threads answering each other through a MessageBus."""
    bus = MessageBus()
    bus.register("ping")
    bus.register("pong")
    ev = {"ping": threading.Event(), "pong": threading.Event()}
    for name in ev:
        bus.on_message(name, lambda m: ev[m.to].set())

    def echo() -> None:
        for _ in range(k):
            ev["pong"].wait()
            ev["pong"].clear()
            m = bus.recv("pong")
            assert m is not None
            bus.post("pong", "ping", m.payload)

    t = threading.Thread(target=echo)
    t.start()
    rtts = []
    for i in range(k):
        t0 = time.perf_counter()
        bus.post("ping", "pong", str(i).encode())
        ev["ping"].wait()
        ev["ping"].clear()
        assert bus.recv("ping") is not None
        rtts.append(time.perf_counter() - t0)
    t.join()
    return rtts


def _recv_wait(b: NatsBroker, name: str, timeout: float = 30.0) -> Message:
    deadline = time.monotonic() + timeout
    while True:
        m = b.recv(name)
        if m is not None:
            return m
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} received nothing for {timeout}s")
        b.wait_pending(name, 0.5)


def bench_nats_throughput(
    url: str, n: int, size: int, ack: Literal["sync", "async"]
) -> tuple[float, float]:
    """(messages/s received, messages/s the sender's posts were confirmed) across processes."""
    session = f"bench{ack}{time.monotonic_ns() % 10**9}"
    with NatsBroker(url, session=session, ack=ack) as sink:
        sink.register("sink")
        sender = spawn("send", url, session, "--me", "src", "--to", "sink",
                       "--count", str(n), "--size", str(size))
        try:
            sender.wait_for_line("READY", 30)
            _recv_wait(sink, "sink")
            t0 = time.perf_counter()
            for _ in range(n - 1):
                _recv_wait(sink, "sink")
            recv_rate = (n - 1) / (time.perf_counter() - t0)
            sent = sender.wait_for_line("SENT", 60).split()
            send_rate = n / float(sent[3])
            sender.finish(30)
        finally:
            if sender.poll() is None:
                sender.kill()
    return recv_rate, send_rate


def bench_nats_rtt(url: str, k: int) -> list[float]:
    """Round trips to an echo Spirit name held by another process."""
    session = f"benchrtt{time.monotonic_ns() % 10**9}"
    with NatsBroker(url, session=session) as b:
        b.register("ping")
        pong = spawn("pong", url, session)
        try:
            pong.wait_for_line("READY", 30)
            assert b.wait_registered("pong", 10)
            for i in range(20):  # warm-up
                b.post("ping", "pong", b"w%d" % i)
                _recv_wait(b, "ping")
            rtts = []
            for i in range(k):
                t0 = time.perf_counter()
                b.post("ping", "pong", str(i).encode())
                _recv_wait(b, "ping")
                rtts.append(time.perf_counter() - t0)
            b.post("ping", "pong", b"stop")
            b.flush(10)
            pong.wait_for_line("DONE", 30)
        finally:
            if pong.poll() is None:
                pong.kill()
    return rtts


def main() -> None:
    """Run every measurement and print one table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--round-trips", type=int, default=500)
    ap.add_argument("--size", type=int, default=64, help="payload bytes (throughput runs)")
    args = ap.parse_args()
    binary = find_nats_server()
    if binary is None:
        raise SystemExit("nats-server not found (apt-get install nats-server)")
    n, k, size = args.messages, args.round_trips, args.size

    rows: list[tuple[str, str, str]] = []
    rows.append(("MessageBus, 2 threads", f"{bench_bus_throughput(n, size):,.0f} msg/s", ""))
    med, p99 = _pcts(bench_bus_rtt(k))
    rows.append(("MessageBus, 2 threads", "", f"median {med:,.0f} us, p99 {p99:,.0f} us"))
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(binary, Path(tmp))
        server.start()
        try:
            for ack in ("sync", "async"):
                recv_rate, send_rate = bench_nats_throughput(server.url, n, size, ack)
                rows.append((f"NATS, 2 processes, ack={ack}",
                             f"{recv_rate:,.0f} msg/s received "
                             f"(sender confirmed {send_rate:,.0f} msg/s)", ""))
            med, p99 = _pcts(bench_nats_rtt(server.url, k))
            rows.append(("NATS, 2 processes, ack=sync", "", f"median {med:,.0f} us, "
                         f"p99 {p99:,.0f} us"))
        finally:
            server.stop()

    print(f"{n} messages of {size} bytes; {k} round trips; nats-server on loopback")
    print(f"{'broker':34} {'throughput':48} round trip")
    for name, thr, rtt in rows:
        print(f"{name:34} {thr:48} {rtt}")


if __name__ == "__main__":
    main()
