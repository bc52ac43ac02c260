"""Concurrency in a Séance: Spirits running at once, sleeping, awaiting, failing and being
dismissed independently.

Nothing here measures speed: every test synchronises through Events and Barriers with
timeouts, so it either proves the property or fails within a few seconds
(``benchmarks/bench_concurrency.py`` measures the speed-up).
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # seance_helpers, whatever the rootdir

from seance_helpers import (
    MESSENGER,
    NAME_AT,
    SPINNER,
    emit,
    put,
    spawn_payload,
    wasm_send,
    wasm_take,
)

import vudo
from vudo import Permissions
from vudo.abi import EffectId, ResultCode
from vudo.testing import MockTimeProvider

WAIT = 10.0  # longest any Event, Barrier or join may wait before the test fails
OK = ResultCode.OK


class Probe:
    """Host functions ``test.enter``/``test.tick``/``test.exit`` for one SPINNER Spirit.

    ``enter`` waits at ``barrier`` (if given) for the other Spirits to enter too; ``tick`` is
    called every 65536 loop iterations and stops the loop once ``stop`` is set. A tick after
    ``WAIT`` seconds raises, so a broken runtime fails the test instead of spinning forever.
    """

    def __init__(self, name: str, barrier: threading.Barrier | None = None) -> None:
        self.name = name
        self.barrier = barrier
        self.entered = threading.Event()
        self.spinning = threading.Event()  # set on the second tick: the loop is running
        self.ticked = threading.Event()  # set on every tick (clear it to wait for the next)
        self.exited = threading.Event()
        self.stop = threading.Event()
        self.ticks = 0
        self.deadline = time.monotonic() + 3 * WAIT

    def enter(self) -> None:
        self.entered.set()
        if self.barrier is not None:
            self.barrier.wait()  # BrokenBarrierError (a failed call) unless all enter at once

    def tick(self, i: vudo.i64) -> int:
        self.ticks += 1
        if self.ticks >= 2:
            self.spinning.set()
        self.ticked.set()
        if time.monotonic() > self.deadline:
            raise RuntimeError(f"{self.name} was never told to stop")
        return int(self.stop.is_set())

    def exit(self, i: vudo.i64) -> None:
        self.exited.set()

    def imports(self) -> dict[tuple[str, str], Any]:
        return {("test", "enter"): self.enter, ("test", "tick"): self.tick,
                ("test", "exit"): self.exit}

    def wait_next_tick(self) -> bool:
        self.ticked.clear()
        return self.ticked.wait(WAIT)


@pytest.fixture
def seance() -> Iterator[vudo.Seance]:
    with vudo.Seance() as s:
        yield s


# ------------------------------------------------------------------------------------------
# Parallelism
# ------------------------------------------------------------------------------------------
def _check_both_inside(a: Probe, b: Probe) -> None:
    """With A and B both spinning: each keeps making progress while the other is inside its
    call; stopping A leaves B spinning; then B is stopped too."""
    assert a.spinning.wait(WAIT) and b.spinning.wait(WAIT), "both Spirits must be spinning"
    # Both are inside their calls now (neither can leave before its stop is set)...
    assert not a.exited.is_set() and not b.exited.is_set()
    # ...and both keep running wasm while the other is inside too.
    assert a.wait_next_tick() and b.wait_next_tick()
    assert not a.exited.is_set() and not b.exited.is_set()
    a.stop.set()
    assert a.exited.wait(WAIT)
    # B was not stopped: it is still inside wasm, and runs on after A has finished.
    assert not b.exited.is_set()
    assert b.wait_next_tick()
    b.stop.set()


def test_two_spirits_spin_in_wasm_at_once_on_threads(seance: vudo.Seance) -> None:
    barrier = threading.Barrier(2, timeout=WAIT)
    a, b = Probe("a", barrier), Probe("b", barrier)
    seance.summon("a", SPINNER, imports=a.imports())
    seance.summon("b", SPINNER, imports=b.imports())
    with ThreadPoolExecutor(2) as pool:
        fa = pool.submit(seance.invoke, "a", "run")
        fb = pool.submit(seance.invoke, "b", "run")
        try:
            _check_both_inside(a, b)
        finally:
            a.stop.set()
            b.stop.set()
        ra, rb = fa.result(WAIT), fb.result(WAIT)
    # each ran at least three ticks' worth of iterations
    assert ra >= 3 * 65536 and rb >= 3 * 65536
    assert not barrier.broken


def test_two_spirits_spin_in_wasm_at_once_with_async_seance() -> None:
    barrier = threading.Barrier(2, timeout=WAIT)
    a, b = Probe("a", barrier), Probe("b", barrier)

    async def main() -> tuple[int, int]:
        async with vudo.AsyncSeance() as s:
            await s.summon("a", SPINNER, imports=a.imports())
            await s.summon("b", SPINNER, imports=b.imports())
            runs = asyncio.gather(s.invoke("a", "run"), s.invoke("b", "run"))
            try:
                # the event loop stays free while both Spirits run
                await asyncio.to_thread(_check_both_inside, a, b)
            finally:
                a.stop.set()
                b.stop.set()
            ra, rb = await asyncio.wait_for(runs, WAIT)
            return int(ra), int(rb)

    ra, rb = asyncio.run(main())
    assert ra >= 3 * 65536 and rb >= 3 * 65536


def test_one_spirit_runs_one_call_at_a_time(seance: vudo.Seance) -> None:
    """Calls into one Spirit are serialised on its store: a second call waits for the first."""
    events: list[str] = []
    probe = Probe("solo")
    second_entered = threading.Event()

    def enter() -> None:
        events.append("enter")
        if probe.entered.is_set():
            second_entered.set()
        probe.entered.set()

    def exit_(i: vudo.i64) -> None:
        events.append("exit")
        probe.stop.clear()

    imports = {**probe.imports(), ("test", "enter"): enter, ("test", "exit"): exit_}
    seance.summon("solo", SPINNER, imports=imports)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(seance.invoke, "solo", "run")
        assert probe.spinning.wait(WAIT)
        second = pool.submit(seance.invoke, "solo", "run")
        # while the first call spins, the second must not get in (bounded wait for a negative)
        assert not second_entered.wait(0.2)
        probe.stop.set()
        assert first.result(WAIT) > 0
        assert second_entered.wait(WAIT)
        probe.stop.set()
        assert second.result(WAIT) > 0
    assert events == ["enter", "exit", "enter", "exit"]


def test_vudo_sleep_pauses_only_its_own_spirit(seance: vudo.Seance) -> None:
    class GateClock(MockTimeProvider):
        """A clock whose sleep blocks until the test opens the gate."""

        def __init__(self) -> None:
            super().__init__(start_ms=0)
            self.asleep = threading.Event()
            self.gate = threading.Event()

        def sleep(self, ms: int) -> None:
            self.asleep.set()
            if not self.gate.wait(WAIT):
                raise RuntimeError("the gate was never opened")
            super().sleep(ms)

    clock = GateClock()
    seance.summon("sleeper", MESSENGER, time_provider=clock)
    seance.summon("server", MESSENGER)
    seance.summon("client", MESSENGER)
    with ThreadPoolExecutor(1) as pool:
        nap: Future[Any] = pool.submit(seance.invoke, "sleeper", "nap", 60_000)
        assert clock.asleep.wait(WAIT)
        try:
            # the others work normally while the sleeper sleeps
            assert seance.invoke("server", "spin", 200_000) == 200_000
            for i in range(5):
                assert wasm_send(seance, "client", "server", bytes([i])) == OK
                assert seance.invoke("server", "echo") == OK
                assert wasm_take(seance.get_spirit("client")) == ("server", bytes([i]))
            assert seance.send("host", "sleeper", b"for later") == OK  # its inbox stays open
            assert not nap.done()
        finally:
            clock.gate.set()
        assert nap.result(WAIT) == 60_000
    assert wasm_take(seance.get_spirit("sleeper")) == ("host", b"for later")


def test_mock_time_sleeps_of_concurrent_spirits_are_instant_and_recorded() -> None:
    clock = MockTimeProvider(start_ms=0)
    with vudo.Seance(time_provider=clock) as s:
        for n in ("a", "b", "c", "d"):
            s.summon(n, MESSENGER)
        with ThreadPoolExecutor(4) as pool:
            naps = list(pool.map(lambda n: s.invoke(n, "nap", 3_600_000), ["a", "b", "c", "d"]))
    assert sorted(clock.sleeps) == [3_600_000] * 4
    assert clock.now() == 4 * 3_600_000
    assert sorted(naps)[-1] == 4 * 3_600_000


# ------------------------------------------------------------------------------------------
# async def host functions
# ------------------------------------------------------------------------------------------
WAITER = r"""
(module
  (import "slow" "wait_for" (func $wait_for (param i32) (result i32)))
  (import "slow" "on_loop" (func $on_loop (result i32)))
  (func (export "go") (param i32) (result i32) (call $wait_for (local.get 0)))
  (func (export "where") (result i32) (call $on_loop))
)
"""


class SlowLoa:
    """A custom Loa of ``async def`` host functions.

    ``wait_for(x)`` awaits ``release`` (an asyncio.Event of the session's loop, or a
    threading.Event waited for in a thread) and returns ``2 * x``; ``on_loop()`` says
    whether it runs on ``expected_loop``.
    """

    def __init__(self) -> None:
        self.expected_loop: asyncio.AbstractEventLoop | None = None
        self.async_release: asyncio.Event | None = None
        self.thread_release = threading.Event()
        self.waiting = threading.Event()
        self.loops: list[asyncio.AbstractEventLoop] = []

        async def wait_for(x: int) -> int:
            self.loops.append(asyncio.get_running_loop())
            self.waiting.set()
            if self.async_release is not None:
                await asyncio.wait_for(self.async_release.wait(), WAIT)
            elif not await asyncio.to_thread(self.thread_release.wait, WAIT):
                raise RuntimeError("never released")
            return 2 * x

        async def on_loop() -> int:
            await asyncio.sleep(0)
            return int(asyncio.get_running_loop() is self.expected_loop)

        self.loa = vudo.create_loa(
            "slow", "1.0.0", {"wait_for": lambda ctx: wait_for, "on_loop": lambda ctx: on_loop}
        )

    def registry(self) -> vudo.LoaRegistry:
        return vudo.LoaRegistry([self.loa])


def test_async_host_function_runs_on_the_session_loop_while_others_run() -> None:
    slow = SlowLoa()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        slow.expected_loop = loop
        slow.async_release = asyncio.Event()
        async with vudo.AsyncSeance(loas=slow.registry()) as s:
            await s.summon("waiter", WAITER)
            await s.summon("worker", MESSENGER)
            waiting = asyncio.ensure_future(s.invoke("waiter", "go", 21))
            await asyncio.to_thread(slow.waiting.wait, WAIT)
            # the waiter is parked in its coroutine on this loop; everyone else carries on
            assert await s.invoke("worker", "spin", 300_000) == 300_000
            assert await s.invoke("worker", "add", 1, 2) == 3
            assert not waiting.done()
            slow.async_release.set()  # set from the loop: the coroutine resumes
            assert await asyncio.wait_for(waiting, WAIT) == 42
            assert await s.invoke("waiter", "where") == 1
        assert slow.loops == [loop]

    asyncio.run(main())


def test_async_host_function_on_a_private_loop_with_the_sync_seance(
    seance: vudo.Seance,
) -> None:
    slow = SlowLoa()
    seance.summon("waiter", WAITER, loas=slow.registry())
    seance.summon("worker", MESSENGER)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(seance.invoke, "waiter", "go", 5)
        assert slow.waiting.wait(WAIT)
        try:
            assert seance.invoke("worker", "spin", 300_000) == 300_000
            assert not waiting.done()
        finally:
            slow.thread_release.set()
        assert waiting.result(WAIT) == 10
    assert len(slow.loops) == 1  # it ran in an event loop of the calling thread


def test_spawned_spirits_async_host_functions_run_on_the_session_loop() -> None:
    slow = SlowLoa()

    async def main() -> None:
        slow.expected_loop = asyncio.get_running_loop()
        async with vudo.AsyncSeance(loas=slow.registry()) as s:
            s.register_module("waiter", WAITER)
            parent = await s.summon(
                "parent", MESSENGER, permissions=Permissions.allow(effects=[EffectId.SPAWN])
            )
            payload = spawn_payload("child", "waiter")
            code = await asyncio.to_thread(emit, parent, EffectId.SPAWN, payload)
            assert code == OK and s.has_spirit("child")
            assert await s.invoke("child", "where") == 1

    asyncio.run(main())


# ------------------------------------------------------------------------------------------
# Stopping and failing while others run
# ------------------------------------------------------------------------------------------
def _spin_in_thread(seance: vudo.Seance, name: str) -> tuple[threading.Thread, list[Any]]:
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(seance.invoke(name, "run"))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_dismiss_stops_a_spirit_spinning_forever_on_another_thread() -> None:
    seance = vudo.Seance()
    probe = Probe("forever")  # never told to stop
    seance.summon("forever", SPINNER, imports=probe.imports())
    thread, outcome = _spin_in_thread(seance, "forever")
    assert probe.spinning.wait(WAIT)
    seance.dismiss()  # returns without waiting for the call
    thread.join(WAIT)
    assert not thread.is_alive(), "the spinning call did not end within 10 s"
    assert len(outcome) == 1 and isinstance(outcome[0], vudo.errors.SpiritTerminated), outcome
    assert not probe.exited.is_set()  # interrupted inside the loop, not finished


def test_release_stops_one_spinning_spirit_and_leaves_the_others(seance: vudo.Seance) -> None:
    doomed, survivor = Probe("doomed"), Probe("survivor")
    seance.summon("doomed", SPINNER, imports=doomed.imports())
    seance.summon("survivor", SPINNER, imports=survivor.imports())
    t1, out1 = _spin_in_thread(seance, "doomed")
    t2, out2 = _spin_in_thread(seance, "survivor")
    try:
        assert doomed.spinning.wait(WAIT) and survivor.spinning.wait(WAIT)
        seance.release("doomed")
        t1.join(WAIT)
        assert not t1.is_alive()
        assert isinstance(out1[0], vudo.errors.SpiritTerminated)
        assert survivor.wait_next_tick() and not survivor.exited.is_set()
    finally:
        survivor.stop.set()
    t2.join(WAIT)
    assert not t2.is_alive() and isinstance(out2[0], int) and out2[0] > 0
    assert seance.spirits() == ["survivor"]


def test_a_panic_while_another_spirit_is_mid_call(seance: vudo.Seance) -> None:
    busy = Probe("busy")
    seance.summon("busy", SPINNER, imports=busy.imports())
    victim = seance.summon("victim", MESSENGER)
    seance.summon("friend", MESSENGER)
    assert seance.send("host", "friend", b"queued") == OK
    thread, outcome = _spin_in_thread(seance, "busy")
    try:
        assert busy.spinning.wait(WAIT)
        length = put(victim, NAME_AT, "kaput")
        with pytest.raises(vudo.errors.SpiritPanic):
            seance.invoke("victim", "panic", NAME_AT, length)
        assert busy.wait_next_tick() and not busy.exited.is_set()  # unaffected
        assert wasm_send(seance, "friend", "victim", b"x") == ResultCode.NOT_FOUND
    finally:
        busy.stop.set()
    thread.join(WAIT)
    assert isinstance(outcome[0], int)
    assert wasm_take(seance.get_spirit("friend")) == ("host", b"queued")


def test_concurrent_summons_respect_names_and_the_cap() -> None:
    """12 threads summon at once: 6 distinct names (two threads each), cap 4."""
    names = [f"s{i // 2}" for i in range(12)]
    start = threading.Barrier(len(names), timeout=WAIT)

    with vudo.Seance(max_spirits=4) as s:
        def summon(name: str) -> str:
            start.wait()
            try:
                s.summon(name, MESSENGER)
            except vudo.errors.SeanceError as exc:
                return "full" if "full" in str(exc) else "duplicate"
            return "ok"

        with ThreadPoolExecutor(len(names)) as pool:
            outcomes = list(pool.map(summon, names))
        assert outcomes.count("ok") == 4 == s.size
        assert sorted(s.spirits()) == sorted(s.messages.spirits())
        for name in set(names):  # a name never succeeds twice
            assert [o for n, o in zip(names, outcomes, strict=True) if n == name].count("ok") <= 1
        for name in s.spirits():
            assert s.invoke(name, "add", 1, 1) == 2


# ------------------------------------------------------------------------------------------
# Messages between Spirits running at once
# ------------------------------------------------------------------------------------------
def test_producer_and_consumer_spirits_on_two_threads(seance: vudo.Seance) -> None:
    """A producer Spirit floods a small inbox while a consumer drains it on another thread:
    nothing is lost or reordered (the consumer checks the sequence inside wasm)."""
    total = 5_000
    producer = seance.summon("producer", MESSENGER)
    seance.summon("consumer", MESSENGER, limits=vudo.Limits(max_inbox=64))
    to_len = put(producer, NAME_AT, "consumer")
    # the inbox holds 64: the 65th vudo_send is refused and the producer stops there
    assert seance.invoke("producer", "produce", to_len, 100) == 64
    deadline = time.monotonic() + 3 * WAIT

    def produce() -> int:
        sent = 64
        while sent < total and time.monotonic() < deadline:
            sent += seance.invoke("producer", "produce", to_len, min(100, total - sent))
        return sent

    def consume() -> int:
        got = 0
        while got < total and time.monotonic() < deadline:
            n = seance.invoke("consumer", "drain_in_order")
            assert n >= 0, f"message out of order after {got}"
            got += n
        return got

    with ThreadPoolExecutor(2) as pool:
        sent, got = pool.submit(produce), pool.submit(consume)
        assert sent.result(4 * WAIT) == total
        assert got.result(4 * WAIT) == total
    assert seance.pending("consumer") == 0


def test_vudo_recv_racing_a_host_consumer_loses_nothing(seance: vudo.Seance) -> None:
    spirit = seance.summon("shared", MESSENGER)
    for payload in (b"first", b"second"):
        assert seance.send("host", "shared", payload) == OK
    mem = spirit.memory
    real = mem.allocator
    host_got: list[bytes] = []

    class RaceAtAlloc:
        """Delegates to the real allocator; during vudo_recv's allocation, a host consumer
        takes the head of the inbox (the interleaving another thread can produce)."""

        def __getattr__(self, attr: str) -> Any:
            return getattr(real, attr)

        def alloc(self, *args: Any, **kwargs: Any) -> int:
            msg = seance.messages.recv("shared")
            if msg is not None:
                host_got.append(msg.payload)
            mem.allocator = real
            return real.alloc(*args, **kwargs)

    mem.allocator = RaceAtAlloc()  # type: ignore[assignment]
    taken = wasm_take(spirit)
    assert taken is not None
    rest = [m[1] for m in iter(lambda: wasm_take(spirit), None)]
    everyone = sorted([*host_got, taken[1], *rest])
    assert everyone == [b"first", b"second"]  # each message consumed exactly once


def test_receiving_and_freeing_20000_messages_keeps_memory_bounded(
    seance: vudo.Seance,
) -> None:
    producer = seance.summon("producer", MESSENGER)
    consumer = seance.summon("consumer", MESSENGER)
    to_len = put(producer, NAME_AT, "consumer")
    mem = consumer.memory
    size_at_start = mem.size
    heap: list[int] = []
    sizes: list[int] = []
    for _ in range(20):
        assert seance.invoke("producer", "produce", to_len, 1_000) == 1_000
        assert seance.invoke("consumer", "drain_in_order") == 1_000
        heap.append(getattr(mem.allocator, "heap_bytes"))  # noqa: B009 - FreeList-only stat
        sizes.append(mem.size)
    # also messages of varying sizes from the host, 1..300 bytes
    for batch in range(5):
        for i in range(1_000):
            assert seance.send("host", "consumer", bytes([batch]) * (1 + (i * 7) % 300)) == OK
        assert seance.invoke("consumer", "drain") == 1_000
        heap.append(getattr(mem.allocator, "heap_bytes"))  # noqa: B009
        sizes.append(mem.size)
    assert mem.allocator.in_use == 0  # every message block was freed
    assert len(set(sizes)) == 1 and len(set(heap)) == 1, (sizes, heap)
    assert sizes[0] - size_at_start <= vudo._memory.PAGE_SIZE  # one page of host heap was enough
    assert heap[0] <= vudo._memory.PAGE_SIZE
