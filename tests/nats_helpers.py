"""Helpers for the NATS tests and benchmark: a throw-away ``nats-server`` and peer processes.

Imported by ``tests/test_nats.py`` and ``benchmarks/bench_nats.py``; run as a script it is one
peer process of a multi-process test::

    python tests/nats_helpers.py ROLE URL SESSION [options]

Every role prints ``READY`` once its names are registered and then one line per event, flushed
at once, so the parent can follow it with :func:`wait_for_line`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HELPER = Path(__file__).resolve()


def find_nats_server() -> str | None:
    """Path of the ``nats-server`` binary: on PATH, or in /usr/sbin or /usr/bin."""
    found = shutil.which("nats-server")
    if found:
        return found
    for d in ("/usr/sbin", "/usr/bin", "/usr/local/bin"):
        p = Path(d) / "nats-server"
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return None


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(cond: Callable[[], bool], timeout: float, what: str, step: float = 0.01) -> None:
    """Poll ``cond`` until it is true; ``TimeoutError`` naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


def stored(url: str, session: str, name_token: str) -> int:
    """Messages the session's stream holds for ``name_token`` under any owner."""
    import nats

    async def count() -> int:
        nc = await nats.connect(url.split(","))
        try:
            info = await nc.jetstream().stream_info(
                f"VUDO_{session}", subjects_filter=f"vudo.{session}.in.*.{name_token}")
            return sum((info.state.subjects or {}).values())
        finally:
            await nc.close()

    return asyncio.run(count())


class NatsServer:
    """A ``nats-server -js`` on a free loopback port with its store in ``store_dir``."""

    def __init__(self, binary: str, store_dir: Path, port: int | None = None,
                 extra: list[str] | None = None) -> None:
        self.binary = binary
        self.extra = extra or []
        self.cmdline = " ".join(self.extra) + " "
        self.store_dir = store_dir
        self.port = port or free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = store_dir / "nats-server.log"

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it accepts connections."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-js", "-sd", str(self.store_dir), "-a", "127.0.0.1",
                 "-p", str(self.port), *self.extra],
                stdout=log, stderr=subprocess.STDOUT,
            )

        def accepting() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                return False

        wait_until(accepting, timeout, "nats-server to accept connections")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Stop the server (``SIGTERM``: graceful) and wait for it to exit."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        """Stop and start again on the same port and store."""
        self.stop()
        self.start()


class NatsCluster:
    """Three ``nats-server -js`` nodes on loopback ports, routed to each other (JetStream R3)."""

    def __init__(self, binary: str, store_dir: Path, size: int = 3) -> None:
        self.cluster_ports = [free_port() for _ in range(size)]
        routes = ",".join(f"nats://127.0.0.1:{p}" for p in self.cluster_ports)
        self.nodes = [
            NatsServer(binary, store_dir / f"n{i}", extra=[
                "-n", f"n{i}", "--cluster_name", "vudo",
                "--cluster", f"nats://127.0.0.1:{self.cluster_ports[i]}", "--routes", routes])
            for i in range(size)
        ]
        self.url = ",".join(n.url for n in self.nodes)

    def start(self, timeout: float = 30.0) -> None:
        """Start every node and wait until JetStream has a meta leader."""
        try:
            for n in self.nodes:
                n.start()
            wait_until(self._jetstream_ready, timeout, "the cluster's JetStream", step=0.2)
        except BaseException:
            self.stop()  # never leave a node running
            raise

    def _jetstream_ready(self) -> bool:
        import asyncio

        import nats

        async def probe() -> bool:
            nc = await nats.connect(self.url.split(","), connect_timeout=1, allow_reconnect=False)
            try:
                await nc.jetstream(timeout=1).account_info()
                return True
            except Exception:
                return False
            finally:
                await nc.close()

        try:
            return asyncio.run(probe())
        except Exception:
            return False

    def stop(self) -> None:
        """Stop every node."""
        for n in self.nodes:
            n.stop()


# --- peer processes ---------------------------------------------------------------------------

class Peer(subprocess.Popen[str]):
    """A child process whose stdout lines and stderr text are collected by reader threads
    (reading a pipe with ``select`` plus buffered ``readline`` can miss buffered lines)."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        super().__init__(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=env,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.err: list[str] = []
        threading.Thread(target=self._pump_out, daemon=True).start()
        threading.Thread(target=self._pump_err, daemon=True).start()

    def _pump_out(self) -> None:
        assert self.stdout is not None
        for line in self.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _pump_err(self) -> None:
        assert self.stderr is not None
        for line in self.stderr:
            self.err.append(line)

    def stderr_text(self) -> str:
        """What the child wrote on stderr so far (the last 3000 characters)."""
        return "".join(self.err)[-3000:]

    def read_line(self, timeout: float) -> str:
        """The next stdout line; ``TimeoutError``, or ``EOFError`` once the output closed."""
        try:
            line = self.lines.get(timeout=max(0.0, timeout))
        except queue.Empty:
            raise TimeoutError("no line from the child process") from None
        if line is None:
            self.lines.put(None)  # stay at EOF for later readers
            raise EOFError("the child process closed its output")
        return line

    def wait_for_line(self, prefix: str, timeout: float = 20.0) -> str:
        """Read lines until one starts with ``prefix``; return it."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.read_line(deadline - time.monotonic())
            except (TimeoutError, EOFError) as e:
                time.sleep(0.05)  # let the stderr reader catch up for the message
                raise AssertionError(
                    f"waiting for {prefix!r} from {self.args!r}: {e}; "
                    f"stderr: {self.stderr_text()}"
                ) from e
            if line.startswith(prefix):
                return line

    def lines_until_exit(self, timeout: float = 30.0) -> list[str]:
        """Every stdout line until the child closes its output (exits or is killed)."""
        deadline = time.monotonic() + timeout
        out = []
        while True:
            try:
                out.append(self.read_line(deadline - time.monotonic()))
            except EOFError:
                return out
            except TimeoutError as e:
                raise AssertionError(
                    f"child still running after {timeout}s; last lines {out[-5:]}; "
                    f"stderr: {self.stderr_text()}"
                ) from e

    def finish(self, timeout: float = 30.0) -> int:
        """Tell a role waiting on stdin to close, and wait for it to exit."""
        assert self.stdin is not None
        if not self.stdin.closed:
            try:
                self.stdin.write("\n")
                self.stdin.flush()
            except BrokenPipeError:
                pass  # it did not wait for us
        return self.wait(timeout)


def spawn(role: str, url: str, session: str, *args: str) -> Peer:
    """Start ``python tests/nats_helpers.py role url session *args`` with vudo importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT / "src"), env.get("PYTHONPATH", "")) if p
    )
    env["PYTHONUNBUFFERED"] = "1"
    return Peer([sys.executable, str(HELPER), role, url, session, *args], env)


def _broker(args: argparse.Namespace) -> object:
    sys.path.insert(0, str(ROOT / "src"))
    if os.environ.get("VUDO_NATS_LOG"):  # diagnostics of a failing fault test, on stderr
        import logging

        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr,
                            format="%(relativeCreated)d %(message)s")
    from vudo.nats import NatsBroker

    return NatsBroker(args.url, session=args.session, owner=args.owner, lease=args.lease,
                      max_inbox=args.max_inbox, replicas=args.replicas, ack=args.ack)


def _say(*parts: object) -> None:
    print(*parts, flush=True)


def _recv_wait(broker: object, name: str, timeout: float) -> object:
    from vudo.nats import NatsBroker

    assert isinstance(broker, NatsBroker)
    deadline = time.monotonic() + timeout
    while True:
        msg = broker.recv(name)
        if msg is not None:
            return msg
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"{name} received nothing for {timeout}s")
        broker.wait_pending(name, min(remaining, 0.5))


def role_pong(args: argparse.Namespace) -> None:
    """Register ``pong``; answer every message with ``pong:<payload>`` until ``stop``."""
    from vudo import Message
    from vudo.nats import NatsBroker

    b = _broker(args)
    assert isinstance(b, NatsBroker)
    b.register("pong")
    _say("READY")
    while True:
        m = _recv_wait(b, "pong", 30.0)
        assert isinstance(m, Message)
        if m.payload == b"stop":
            break
        b.post("pong", m.from_, b"pong:" + m.payload)
    b.close()
    _say("DONE")


def role_ping(args: argparse.Namespace) -> None:
    """Register ``ping``; send ``count`` pings to ``pong`` one at a time and check each answer."""
    from vudo import Message
    from vudo.nats import NatsBroker

    b = _broker(args)
    assert isinstance(b, NatsBroker)
    b.register("ping")
    _say("READY")
    if not b.wait_registered("pong", 20.0):
        raise SystemExit("pong never registered")
    rtts = []
    for i in range(args.count):
        t0 = time.perf_counter()
        assert b.post("ping", "pong", str(i).encode()) == 0
        m = _recv_wait(b, "ping", 20.0)
        rtts.append(time.perf_counter() - t0)
        assert isinstance(m, Message)
        assert m.payload == f"pong:{i}".encode(), m
        assert m.from_ == "pong"
    b.post("ping", "pong", b"stop")
    b.flush(10.0)
    rtts.sort()
    _say("RTT", f"{rtts[len(rtts) // 2] * 1e6:.0f}", f"{rtts[int(len(rtts) * 0.99)] * 1e6:.0f}")
    b.close()
    _say("DONE")


def role_bcast(args: argparse.Namespace) -> None:
    """Register ``me``; once all ``peers`` are registered broadcast ``count`` messages and
    receive ``count`` from every peer (itself included); print what arrived per sender."""
    from vudo import Message
    from vudo.nats import NatsBroker

    b = _broker(args)
    assert isinstance(b, NatsBroker)
    me = args.me
    b.register(me)
    _say("READY")
    everyone = sorted([*args.peers, me])
    for p in everyone:
        if not b.wait_registered(p, 20.0):
            raise SystemExit(f"{p} never registered")
    for i in range(args.count):
        n = b.broadcast(me, f"{me}:{i}".encode())
        assert n == len(everyone), (n, everyone)
    got: dict[str, list[int]] = {p: [] for p in everyone}
    for _ in range(args.count * len(everyone)):
        m = _recv_wait(b, me, 20.0)
        assert isinstance(m, Message)
        sender, seq = m.payload.decode().split(":")
        assert sender == m.from_
        got[sender].append(int(seq))
    b.flush(10.0)
    ok = all(got[p] == list(range(args.count)) for p in everyone)
    extra = b.pending(me)
    _say("RESULT", "ok" if ok and extra == 0 else f"bad {got} extra={extra}")
    # Stay until the parent says so: leaving early would not change anything (inboxes are
    # durable) but keeps the liveness of every peer while others still receive.
    sys.stdin.readline()
    b.close()
    _say("DONE")


def role_send(args: argparse.Namespace) -> None:
    """Send ``count`` messages ``<me>:<i>`` to ``to``, retrying while ``post`` returns ERROR."""
    from vudo.nats import NatsBroker

    b = _broker(args)
    assert isinstance(b, NatsBroker)
    b.register(args.me)
    _say("READY")
    if not b.wait_registered(args.to, 20.0):
        raise SystemExit(f"{args.to} never registered")
    t0 = time.perf_counter()
    refused = 0
    pad = b"." * max(0, args.size)
    for i in range(args.count):
        while b.post(args.me, args.to, f"{args.me}:{i}".encode() + pad) != 0:
            refused += 1  # NATS away or outbox full: back-pressure, try again shortly
            time.sleep(0.005)
        if args.pace:
            time.sleep(args.pace)
    if not b.flush(60.0):
        raise SystemExit("sends were never confirmed")
    _say("SENT", args.count, refused, f"{time.perf_counter() - t0:.6f}")
    b.close()
    _say("DONE")


def role_jsend(args: argparse.Namespace) -> None:
    """With a journal in ``--journal``, post ``<run>:<i>`` to ``to`` for i from ``--start`` to
    ``count`` - 1, printing ``ACC <run>:<i>`` once each was accepted (the parent SIGKILLs this
    role at random points and restarts it with the same owner); with ``--last`` it then posts
    ``end``, prints ``SENT`` once JetStream stored everything and closes."""
    from vudo.nats import NatsBroker

    b = NatsBroker(args.url, session=args.session, owner=args.owner, journal=args.journal,
                   outbox_size=200, window=64)
    _say("READY", b.outbox_pending())  # what the journal of the killed run gave back
    if not b.wait_registered(args.to, 20.0):
        raise SystemExit(f"{args.to} never registered")
    for i in range(args.start, args.count):
        payload = f"{args.run}:{i}"
        while b.post(args.me, args.to, payload.encode()) != 0:
            b.flush(0.05)  # outbox full: back-pressure
        _say("ACC", payload)
    if args.last:
        while b.post(args.me, args.to, b"end") != 0:
            b.flush(0.05)
        if not b.flush(60.0):
            raise SystemExit("sends were never confirmed")
        _say("SENT")
        b.close()
        _say("DONE")
        return
    sys.stdin.readline()  # killed here or earlier by the parent


def role_recv(args: argparse.Namespace) -> None:
    """Register ``me`` and print ``GOT <from> <payload>`` per message until ``count`` arrived;
    with ``--die-after K`` SIGKILL itself after the K-th message of this run."""
    from vudo import Message
    from vudo.nats import NatsBroker

    b = _broker(args)
    assert isinstance(b, NatsBroker)
    b.register(args.me)
    _say("READY")
    n = 0
    while n < args.count:
        m = _recv_wait(b, args.me, 30.0)
        assert isinstance(m, Message)
        _say("GOT", m.from_, m.payload.decode())
        b.done(args.me, m)  # the work (printing) is done: never deliver it again
        n += 1
        if args.die_after and n == args.die_after:
            # Die with prefetched, unacknowledged messages in the local inbox and senders
            # still sending: this is the crash the broker must survive.
            b.wait_pending(args.me, 5.0)
            _say("DYING", b.pending(args.me))
            os.kill(os.getpid(), signal.SIGKILL)
    b.close()
    _say("DONE")


def role_fin(args: argparse.Namespace) -> None:
    """Register ``me``; per message print ``GOT <payload>``, finish it, print ``FIN <payload>``
    (the parent kills this role at random points and checks what was redelivered)."""
    from vudo.broker import Message
    from vudo.nats import NatsBroker

    b = _broker(args)
    assert isinstance(b, NatsBroker)
    b.register(args.me)
    _say("READY")
    while True:
        m = _recv_wait(b, args.me, 60.0)
        assert isinstance(m, Message)
        _say("GOT", m.payload.decode())
        assert b.done(args.me, m)
        _say("FIN", m.payload.decode())


def role_holder(args: argparse.Namespace) -> None:
    """Register ``me``; on a stdin line receive for ``--pace`` seconds printing ``GOT``, then
    print ``END <local names>`` (for the stalled-holder test)."""
    from vudo.broker import Message
    from vudo.nats import NatsBroker

    b = _broker(args)
    assert isinstance(b, NatsBroker)
    b.register(args.me)
    _say("READY")
    b.wait_pending(args.me, 10.0)
    _say("PENDING", b.pending(args.me))
    sys.stdin.readline()
    deadline = time.monotonic() + args.pace
    while time.monotonic() < deadline:
        m = b.recv(args.me)
        if m is None:
            b.wait_pending(args.me, 0.05)
            continue
        assert isinstance(m, Message)
        _say("GOT", m.payload.decode())
    _say("END", ",".join(b.local_spirits()) or "-")
    os.kill(os.getpid(), signal.SIGKILL)


def role_flood(args: argparse.Namespace) -> None:
    """Post ``<me>:<i>`` to ``to`` as fast as accepted until ``post`` says NOT_FOUND; print
    ``NOTFOUND <accepted>`` and, once JetStream confirmed everything, ``FLUSHED``."""
    from vudo.abi import ResultCode
    from vudo.nats import NatsBroker

    b = _broker(args)
    assert isinstance(b, NatsBroker)
    _say("READY")
    if not b.wait_registered(args.to, 20.0):
        raise SystemExit(f"{args.to} never registered")
    i = 0
    while True:
        code = b.post(args.me, args.to, f"{args.me}:{i}".encode())
        if code == ResultCode.NOT_FOUND:
            break
        if code == ResultCode.OK:
            i += 1
        else:
            time.sleep(0.001)
    _say("NOTFOUND", i)
    if not b.flush(30.0):
        raise SystemExit("sends were never confirmed")
    _say("FLUSHED")
    b.close()


def role_claim(args: argparse.Namespace) -> None:
    """Register ``me`` and die by SIGKILL (leaving a claim whose owner is gone)."""
    b = _broker(args)
    from vudo.nats import NatsBroker

    assert isinstance(b, NatsBroker)
    b.register(args.me)
    _say("READY")
    os.kill(os.getpid(), signal.SIGKILL)


def role_seance(args: argparse.Namespace) -> None:
    """Summon Spirit ``me`` from ``--wasm`` in a Seance over a NatsBroker, then run ``--calls``
    in order: ``wait`` waits for a message in its inbox, anything else invokes that export
    and prints ``CALL <export> <result>``. Dismisses the Seance when stdin gets a line."""
    sys.path.insert(0, str(ROOT / "src"))
    from vudo import Seance
    from vudo.nats import NatsBroker

    b = NatsBroker(args.url, session=args.session, owner=args.owner)
    seance = Seance(broker=b)
    seance.summon(args.me, Path(args.wasm).read_bytes())
    _say("READY")
    if args.to and not b.wait_registered(args.to, 20.0):
        raise SystemExit(f"{args.to} never registered")
    for call in args.calls:
        if call == "wait":
            if not b.wait_pending(args.me, 20.0):
                raise SystemExit("nothing arrived")
            continue
        _say("CALL", call, seance.invoke(args.me, call))
    b.flush(10.0)
    sys.stdin.readline()
    seance.dismiss()  # releases the names and closes the broker
    _say("DONE")


def main(argv: list[str] | None = None) -> None:
    """Run one peer role (see the module docstring)."""
    p = argparse.ArgumentParser()
    p.add_argument("role")
    p.add_argument("url")
    p.add_argument("session")
    p.add_argument("--me", default="")
    p.add_argument("--to", default="")
    p.add_argument("--peers", nargs="*", default=[])
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--owner", default=None)
    p.add_argument("--lease", type=float, default=10.0)
    p.add_argument("--die-after", type=int, default=0)
    p.add_argument("--pace", type=float, default=0.0)
    p.add_argument("--size", type=int, default=0, help="bytes of padding per sent message")
    p.add_argument("--max-inbox", type=int, default=10_000)
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("--ack", default="sync")
    p.add_argument("--wasm", default="")
    p.add_argument("--calls", nargs="*", default=[])
    p.add_argument("--journal", default=None)
    p.add_argument("--run", type=int, default=0)
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--last", action="store_true")
    args = p.parse_args(argv)
    import faulthandler

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # stack dump of a hung peer
    roles: dict[str, Callable[[argparse.Namespace], None]] = {
        "pong": role_pong, "ping": role_ping, "bcast": role_bcast, "send": role_send,
        "recv": role_recv, "claim": role_claim, "seance": role_seance,
        "fin": role_fin, "holder": role_holder, "flood": role_flood,
        "jsend": role_jsend,
    }
    roles[args.role](args)


if __name__ == "__main__":
    main()
