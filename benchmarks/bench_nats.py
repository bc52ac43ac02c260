"""NatsBroker beside raw nats-py doing the same JetStream work, in one run.

    PYTHONPATH=src python benchmarks/bench_nats.py [--messages 20000] [--round-trips 500]

Starts a throw-away ``nats-server -js -m <port>`` on loopback (``apt-get install nats-server``)
and measures, across OS processes:

* receive while another process sends, ``ack="sync"`` and ``ack="async"``: NatsBroker
  (``recv`` finishing the previous message) beside raw nats-py (a push consumer on the same kind
  of stream, ``ack_sync()`` / ``ack()`` per message; the raw sender publishes the same framed
  payload with one ``Nats-Msg-Id`` header and a window of PubAcks);
* sending 10,000 messages and waiting until JetStream stored them, without and with the
  sender's journal (``journal=``);
* round trip between two processes, both sides ``ack="sync"``, beside raw nats-py;
* server CPU per message with 1 and with 1,000 receiving Spirits (the server process's CPU
  time from ``/proc``; ``/varz`` ``cpu`` is sampled as a check), each on a fresh server,
  alternating, medians of ``--cpu-reps``: receivers that free each message (as a Spirit's
  ``vudo_free_message``), and receivers whose next ``recv`` finishes the previous one;
* time to register 1,000 Spirits, and recovery after a server kill with 1,000 registered.

The raw nats-py code is in this file (``raw_*`` roles); the benchmark runs itself as the peer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Literal

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from nats_helpers import NatsServer, find_nats_server, free_port, spawn  # noqa: E402

from vudo.nats import NatsBroker  # noqa: E402
from vudo.nats._wire import encode  # noqa: E402


def _median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


def _peer(*args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, __file__, "--role", *args], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _line(p: subprocess.Popen[str], prefix: str) -> str:
    assert p.stdout is not None
    for line in p.stdout:
        if line.startswith(prefix):
            return line.strip()
    raise RuntimeError(f"peer exited before {prefix!r}")


# --- raw nats-py ---------------------------------------------------------------------------

async def _ignore(_msg: object) -> None:
    """PubAcks the raw round trip does not wait for (NatsBroker's post does not either)."""

async def _raw_stream(js: object, name: str, subjects: list[str]) -> None:
    from nats.js import api

    await js.add_stream(api.StreamConfig(  # type: ignore[attr-defined]
        name=name, subjects=subjects, retention=api.RetentionPolicy.WORK_QUEUE,
        storage=api.StorageType.FILE, discard=api.DiscardPolicy.NEW,
        max_msgs_per_subject=10_000, discard_new_per_subject=True, duplicate_window=120.0))


async def raw_send(url: str, subject: str, n: int, size: int, window: int = 1024) -> float:
    """Publish ``n`` framed messages with a window of unconfirmed PubAcks; seconds taken."""
    import nats

    nc = await nats.connect(url)
    inflight = asyncio.Semaphore(window)
    done = asyncio.Event()
    confirmed = 0

    async def on_ack(_msg: object) -> None:
        nonlocal confirmed
        confirmed += 1
        inflight.release()
        if confirmed == n:
            done.set()

    inbox = nc.new_inbox()
    await nc.subscribe(inbox + ".*", cb=on_ack)
    payload = b"x" * size
    t0 = time.perf_counter()
    for i in range(n):
        await inflight.acquire()
        data = encode("src", 0, time.time() * 1000.0, b"12345678", b"rawsendr", i + 1, i + 1,
                      payload)
        await nc.publish(subject, data, reply=f"{inbox}.{i}",
                         headers={"Nats-Msg-Id": f"raw{t0}{i:x}"})
    await done.wait()
    elapsed = time.perf_counter() - t0
    await nc.close()
    return elapsed


async def raw_receive(url: str, stream: str, subject: str, n: int,
                      ack: Literal["sync", "async"], ready: threading.Event | None) -> float:
    """Receive ``n`` messages through a push consumer, acknowledging each; msg/s."""
    import nats
    from nats.js import api

    nc = await nats.connect(url)
    js = nc.jetstream()
    got = 0
    t0 = 0.0
    finished = asyncio.Event()
    sub = await js.subscribe(subject, durable="raw", manual_ack=True, pending_msgs_limit=-1,
                             config=api.ConsumerConfig(max_ack_pending=10_000))
    if ready is not None:
        ready.set()
    async for msg in sub.messages:
        if got == 0:
            t0 = time.perf_counter()
        if ack == "sync":
            await msg.ack_sync()
        else:
            await msg.ack()
        got += 1
        if got == n:
            finished.set()
            break
    rate = (n - 1) / (time.perf_counter() - t0)
    await nc.close()
    return rate


async def raw_echo(url: str, session: str) -> None:
    """Answer every message on ``raw.<session>.pong`` to ``raw.<session>.ping`` (ack_sync)."""
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream()
    inbox = nc.new_inbox()
    await nc.subscribe(inbox, cb=_ignore)
    sub = await js.subscribe(f"raw.{session}.pong", durable="pong", manual_ack=True)
    print("READY", flush=True)
    async for msg in sub.messages:
        await msg.ack_sync()
        if msg.data == b"stop":
            break
        await nc.publish(f"raw.{session}.ping", msg.data, reply=inbox,
                         headers={"Nats-Msg-Id": f"e{time.monotonic_ns()}"})
    await nc.close()


async def raw_rtt(url: str, session: str, k: int) -> list[float]:
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream()
    await _raw_stream(js, f"RAWRTT_{session}", [f"raw.{session}.>"])
    sub = await js.subscribe(f"raw.{session}.ping", durable="ping", manual_ack=True)
    inbox = nc.new_inbox()
    await nc.subscribe(inbox, cb=_ignore)
    echo = _peer("raw_echo", url, session)
    await asyncio.get_running_loop().run_in_executor(None, _line, echo, "READY")
    rtts = []
    for i in range(k + 20):
        t0 = time.perf_counter()
        await nc.publish(f"raw.{session}.pong", b"%d" % i, reply=inbox,
                         headers={"Nats-Msg-Id": f"p{time.monotonic_ns()}"})
        msg = await sub.next_msg(timeout=10)
        await msg.ack_sync()
        if i >= 20:
            rtts.append(time.perf_counter() - t0)
    await nc.publish(f"raw.{session}.pong", b"stop", reply=inbox)
    await nc.flush()
    echo.wait(10)
    await nc.close()
    return rtts


def bench_raw_receive(url: str, n: int, size: int, ack: Literal["sync", "async"]) -> float:
    session = f"r{ack}{time.monotonic_ns() % 10**9}"

    async def run() -> float:
        import nats

        nc = await nats.connect(url)
        await _raw_stream(nc.jetstream(), f"RAW_{session}", [f"raw.{session}.>"])
        await nc.close()
        ready = threading.Event()
        subject = f"raw.{session}.in.o.sink"
        sender = threading.Thread(target=lambda: (ready.wait(10), _peer(
            "raw_send", url, subject, str(n), str(size)).wait()))
        sender.start()
        rate = await raw_receive(url, f"RAW_{session}", subject, n, ack, ready)
        sender.join()
        return rate

    return asyncio.run(run())


# --- NatsBroker ------------------------------------------------------------------------------

def bench_vudo_receive(url: str, n: int, size: int, ack: Literal["sync", "async"]) -> float:
    session = f"v{ack}{time.monotonic_ns() % 10**9}"
    with NatsBroker(url, session=session, ack=ack) as sink:
        sink.register("sink")
        sender = spawn("send", url, session, "--me", "src", "--to", "sink", "--count", str(n),
                       "--size", str(size))
        got, t0 = 0, 0.0
        while got < n:
            if sink.recv("sink") is None:
                sink.wait_pending("sink", 0.5)
                continue
            if got == 0:
                t0 = time.perf_counter()
            got += 1
        rate = (n - 1) / (time.perf_counter() - t0)
        sender.wait_for_line("SENT", 60)
        sender.finish(30)
    return rate


def bench_vudo_send(url: str, n: int, size: int, journal: str | None) -> float:
    """Post ``n`` messages to a Spirit of another broker and wait until all are stored; msg/s
    (with ``journal``, each accepted message is first written to the sender's journal)."""
    session = f"vsend{time.monotonic_ns() % 10**9}"
    with NatsBroker(url, session=session, max_inbox=n + 1) as sink:
        sink.register("sink")
        with NatsBroker(url, session=session, owner="bench-src", journal=journal,
                        outbox_size=n + 1) as src:
            assert src.wait_registered("sink", 10)
            payload = b"x" * size
            t0 = time.perf_counter()
            for _ in range(n):
                if src.post("src", "sink", payload) != 0:
                    raise RuntimeError("a post was refused")
            assert src.flush(60)
            return n / (time.perf_counter() - t0)


def bench_vudo_rtt(url: str, k: int) -> list[float]:
    session = f"vrtt{time.monotonic_ns() % 10**9}"
    with NatsBroker(url, session=session) as b:
        b.register("ping")
        pong = spawn("pong", url, session)
        pong.wait_for_line("READY", 30)
        assert b.wait_registered("pong", 10)
        rtts = []
        for i in range(k + 20):
            t0 = time.perf_counter()
            b.post("ping", "pong", str(i).encode())
            while b.recv("ping") is None:
                b.wait_pending("ping", 5)
            if i >= 20:
                rtts.append(time.perf_counter() - t0)
        b.post("ping", "pong", b"stop")
        b.flush(10)
        pong.wait_for_line("DONE", 30)
    return rtts


def vudo_spread(url: str, session: str, spirits: int, n: int) -> None:
    """Peer: post ``n`` messages round-robin to Spirits ``s0..`` (retrying back-pressure)."""
    with NatsBroker(url, session=session) as b:
        names = [f"s{i}" for i in range(spirits)]
        for name in names:
            b.wait_registered(name, 30)
        print("READY", flush=True)
        for i in range(n):
            while b.post("src", names[i % spirits], b"x" * 64) != 0:
                time.sleep(0.001)
        b.flush(60)
        print("SENT", flush=True)


class ServerCpu:
    """CPU the server spends, from ``/varz`` (sampled ``cpu`` percent) and from ``/proc``."""

    def __init__(self, server: NatsServer, monitor: int) -> None:
        self.server, self.monitor = server, monitor
        self.varz_seconds = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._proc0 = self._proc_seconds()

    def _proc_seconds(self) -> float:
        assert self.server.proc is not None
        fields = Path(f"/proc/{self.server.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def _sample(self) -> None:
        last = time.perf_counter()
        while not self._stop.wait(0.1):
            with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor}/varz") as r:
                cpu = float(json.load(r)["cpu"])
            now = time.perf_counter()
            self.varz_seconds += cpu / 100 * (now - last)
            last = now

    def __enter__(self) -> ServerCpu:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.proc_seconds = self._proc_seconds() - self._proc0


def bench_server_cpu(server: NatsServer, monitor: int, spirits: int, n: int,
                     finish: bool = True) -> tuple[float, float]:
    """Server CPU microseconds per message (varz, /proc) with ``spirits`` receivers.

    ``finish``: each message is finished once received, as a Spirit that frees it; without,
    it is finished by the name's next ``recv``, so every name keeps one message in the stream
    and nats-server 2.9 walks the stream to the name's next message at each removal."""
    session = f"cpu{spirits}x{time.monotonic_ns() % 10**9}"
    with NatsBroker(server.url, session=session, ack="async") as b:
        names = [f"s{i}" for i in range(spirits)]
        for name in names:
            b.register(name)
        sender = _peer("vudo_spread", server.url, session, str(spirits), str(n))
        _line(sender, "READY")
        with ServerCpu(server, monitor) as cpu:
            got = 0
            while got < n:
                before = got
                for name in names:
                    while b.recv(name) is not None:
                        if finish:
                            b.done(name)  # as a Spirit's vudo_free_message does
                        got += 1
                if got == before:
                    time.sleep(0.001)
            _line(sender, "SENT")
            b.flush(10)
        sender.wait(30)
    return cpu.varz_seconds / n * 1e6, cpu.proc_seconds / n * 1e6


def server_cpu_pair(binary: str, n: int, spirits: int, finish: bool,
                    reps: int) -> dict[int, tuple[float, float]]:
    """Median server CPU per message, ``(varz, /proc)``, with 1 and with ``spirits``
    receivers, each run on a fresh server (what earlier runs left in a server costs it CPU
    too), the two alternating."""
    runs: dict[int, list[tuple[float, float]]] = {1: [], spirits: []}
    for _ in range(reps):
        for k in (1, spirits):
            monitor = free_port()
            with tempfile.TemporaryDirectory() as tmp:
                server = NatsServer(binary, Path(tmp), extra=["-m", str(monitor)])
                server.start()
                try:
                    runs[k].append(bench_server_cpu(server, monitor, k, n, finish))
                finally:
                    server.stop()
    return {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v))
            for k, v in runs.items()}


def bench_register_and_recover(server: NatsServer, spirits: int) -> tuple[float, float]:
    session = f"reg{time.monotonic_ns() % 10**9}"
    with NatsBroker(server.url, session=session) as b:
        t0 = time.perf_counter()
        for i in range(spirits):
            b.register(f"s{i}")
        register = time.perf_counter() - t0
        server.stop(signal.SIGKILL)
        while b.connected:
            time.sleep(0.01)
        server.start()
        deadline = time.monotonic() + 30
        while b.last_recovery is None:
            if time.monotonic() > deadline:
                raise TimeoutError("the broker never recovered")
            time.sleep(0.01)
        return register, b.last_recovery


def main() -> None:
    """Run every measurement and print one table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--round-trips", type=int, default=500)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--spirits", type=int, default=1000)
    ap.add_argument("--cpu-reps", type=int, default=3, help="fresh-server runs per CPU row")
    ap.add_argument("--cpu-messages", type=int, default=0,
                    help="messages per CPU run (default --messages); the 1,000-Spirit cost "
                         "grows with the per-name backlogs a longer run builds up")
    ap.add_argument("--role", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    if args.role:
        role, *rest = args.role
        if role == "raw_send":
            asyncio.run(raw_send(rest[0], rest[1], int(rest[2]), int(rest[3])))
        elif role == "raw_echo":
            asyncio.run(raw_echo(rest[0], rest[1]))
        elif role == "vudo_spread":
            vudo_spread(rest[0], rest[1], int(rest[2]), int(rest[3]))
        return
    binary = find_nats_server()
    if binary is None:
        raise SystemExit("nats-server not found (apt-get install nats-server)")
    n, k, size = args.messages, args.round_trips, args.size
    monitor = free_port()
    rows: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(binary, Path(tmp), extra=["-m", str(monitor)])
        server.start()
        try:
            for ack in ("sync", "async"):
                ours = bench_vudo_receive(server.url, n, size, ack)  # type: ignore[arg-type]
                raw = bench_raw_receive(server.url, n, size, ack)  # type: ignore[arg-type]
                rows.append((f"receive while sending, ack={ack}", f"{ours:,.0f} msg/s",
                             f"{raw:,.0f} msg/s", f"{ours / raw:.2f}x"))
            plain = bench_vudo_send(server.url, n, size, None)
            journaled = bench_vudo_send(server.url, n, size, tmp)
            rows.append(("send + flush, journal off / on", f"{plain:,.0f} / {journaled:,.0f}",
                         "", f"{journaled / plain:.2f}x"))
            ours_rtt = _median_us(bench_vudo_rtt(server.url, k))
            raw_rtt_us = _median_us(asyncio.run(raw_rtt(server.url, "b", k)))
            rows.append(("round trip, median", f"{ours_rtt:,.0f} us", f"{raw_rtt_us:,.0f} us",
                         f"{ours_rtt / raw_rtt_us:.2f}x"))
            for finish in (True, False):
                cpu = server_cpu_pair(binary, args.cpu_messages or n, args.spirits, finish,
                                      args.cpu_reps)
                how = "freed" if finish else "next recv"
                for count in (1, args.spirits):
                    varz, proc = cpu[count]
                    # /varz updates its cpu figure about once a second: a shorter run reads 0.
                    vr = f"{varz / cpu[1][0]:.2f}x" if cpu[1][0] > 0 else "n/a"
                    ratio = f"{vr}; {proc / cpu[1][1]:.2f}x of 1" if count != 1 else ""
                    rows.append((f"server CPU/msg (varz; /proc), {count} Spirit(s), {how}",
                                 f"{varz:.1f} us; {proc:.1f} us", "", ratio))
            register, recover = bench_register_and_recover(server, args.spirits)
            rows.append((f"register {args.spirits} Spirits", f"{register:.2f} s", "", ""))
            rows.append((f"reconnect recovery, {args.spirits} Spirits", f"{recover:.3f} s", "",
                         ""))
        finally:
            server.stop()
    print(f"{n} messages of {size} bytes; {k} round trips; nats-server on loopback")
    print(f"{'workload':56} {'NatsBroker':22} {'raw nats-py':14} ratio")
    for name, ours_s, raw_s, ratio in rows:
        print(f"{name:56} {ours_s:22} {raw_s:14} {ratio}")


if __name__ == "__main__":
    main()
