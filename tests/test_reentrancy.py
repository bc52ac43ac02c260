"""Re-entrancy and threads on the fast call path.

Each export has one preallocated argument/result buffer, so these tests prove that a host
function calling back into its own Spirit (the same export included), and several threads
calling one Spirit at once, never see each other's arguments or results. Then: host functions
calling other Spirits from several threads (a waits-for cycle is refused with DeadlockError;
a waiting call ends at its own timeout, cancel_call or dismissal), async host functions that
invoke their own Spirit, and calls refused for want of Python or native stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable

import pytest

import vudo
from vudo import Spirit
from vudo._runtime import cnative, stackcheck
from vudo.errors import DeadlockError

# depth(n) = n == 0 ? 0 : 1 + host_depth(n - 1), where the host calls depth again;
# mix(a, b) keeps its arguments live across the host call and combines them afterwards.
REENTRANT = """
(module
  (import "test" "host_depth" (func $host_depth (param i64) (result i64)))
  (import "test" "host_mix" (func $host_mix (param i64 i64) (result i64)))
  (func (export "depth") (param $n i64) (result i64)
    (if (result i64) (i64.eqz (local.get $n))
      (then (i64.const 0))
      (else (i64.add (i64.const 1) (call $host_depth (i64.sub (local.get $n) (i64.const 1)))))))
  (func (export "mix") (param $a i64) (param $b i64) (result i64)
    (i64.add
      (i64.mul (local.get $a) (i64.const 1000))
      (i64.add (local.get $b) (call $host_mix (local.get $a) (local.get $b)))))
  (func (export "square") (param $x i64) (result i64)
    (i64.mul (local.get $x) (local.get $x)))
)
"""


def load_reentrant(fail_at: int | None = None) -> Spirit:
    holder: list[Spirit] = []

    def host_depth(n: vudo.i64) -> vudo.i64:
        if n == fail_at:
            raise ValueError(f"no deeper than {n}")
        result: int = holder[0].call("depth", n)  # the same export, from inside it
        return result

    def host_mix(a: vudo.i64, b: vudo.i64) -> vudo.i64:
        # Other calls into the Spirit overwrite the shared buffers of "mix" and "square".
        if a > 0:
            holder[0].call("mix", a - 1, b + 1)
        result: int = holder[0].call("square", a + b)
        return result

    spirit = vudo.load_spirit(
        REENTRANT, name="reentrant",
        imports={("test", "host_depth"): host_depth, ("test", "host_mix"): host_mix},
    )
    holder.append(spirit)
    return spirit


def mix(a: int, b: int) -> int:
    """What the Spirit's ``mix`` computes."""
    return a * 1000 + b + (a + b) ** 2


@pytest.mark.parametrize("n", [0, 1, 5, 50])
def test_a_host_function_may_call_the_same_export_recursively(n: int) -> None:
    spirit = load_reentrant()
    assert spirit.call("depth", n) == n


def test_nested_calls_do_not_clobber_the_outer_call_arguments_or_result() -> None:
    spirit = load_reentrant()
    for a, b in [(0, 0), (3, 4), (7, -2), (20, 11)]:
        assert spirit.call("mix", a, b) == mix(a, b)
    proxy = spirit.as_()
    assert proxy.mix(5, 6) == mix(5, 6)


def test_a_failure_deep_in_a_reentrant_call_surfaces_at_the_top() -> None:
    spirit = load_reentrant(fail_at=2)
    with pytest.raises(vudo.errors.HostFunctionError) as info:
        spirit.call("depth", 6)
    assert isinstance(info.value.__cause__, ValueError)
    assert "no deeper than 2" in str(info.value)
    assert spirit.call("depth", 2) == 2  # the host raises only when asked for 2 from inside
    assert not spirit.terminated


def test_threads_calling_one_spirit_get_their_own_results() -> None:
    spirit = load_reentrant()
    square: Callable[[int], int] = spirit.function("square")
    errors: list[str] = []
    start = threading.Barrier(4)

    def worker(k: int) -> None:
        start.wait(timeout=10)
        for i in range(2_000):
            x = k * 100_000 + i
            got = square(x)
            if got != x * x:
                errors.append(f"thread {k}: square({x}) = {got}")
            if i % 100 == 0 and spirit.call("mix", k, i) != mix(k, i):
                errors.append(f"thread {k}: mix({k}, {i}) wrong")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []


# --------------------------------------------------------------------------------------------
# Re-entrant and cross-Spirit calls from host functions, on other threads and event loops.
# Each test runs with the native lock and with the pure-Python one (cnative.fallback()).

# `outer` calls the host import `other`, which calls into some Spirit; `inner` returns 7.
CROSS = """
(module (import "env" "other" (func $o (result i32)))
  (func (export "outer") (result i32) call $o)
  (func (export "inner") (result i32) i32.const 7))
"""

PATHS = pytest.mark.parametrize("python_path", [False, True], ids=["native", "python"])


def _paths(python_path: bool) -> contextlib.AbstractContextManager[None]:
    return cnative.fallback() if python_path else contextlib.nullcontext()


def _run_threads(*targets: Callable[[], object]) -> list[object]:
    """Run each target on its own thread; their results or exceptions, in order."""
    out: list[object] = [None] * len(targets)

    def run(i: int) -> None:
        try:
            out[i] = targets[i]()
        except BaseException as exc:  # the test inspects it
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(targets))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "a call is still waiting: deadlock"
    return out


@PATHS
def test_two_spirits_calling_each_other_from_two_threads_fail_fast(python_path: bool) -> None:
    both_inside = threading.Barrier(2)
    with vudo.Seance() as session:
        def other_of(peer: str) -> Callable[[], int]:
            def other() -> int:
                both_inside.wait(10)  # each thread now holds its own Spirit
                result: int = session.invoke(peer, "inner")
                return result
            return other

        with _paths(python_path):
            session.summon("a", CROSS, imports={("env", "other"): other_of("b")})
            session.summon("b", CROSS, imports={("env", "other"): other_of("a")})
        out = _run_threads(lambda: session.invoke("a", "outer"),
                           lambda: session.invoke("b", "outer"))
    refused = [o for o in out if isinstance(o, DeadlockError)]
    assert out.count(7) == 1 and len(refused) == 1, out  # the second waiter, at once
    err = refused[0]
    assert err.function == "outer" and {err.spirit, err.waiting_for} == {"a", "b"}
    assert "would deadlock" in str(err) and f"Spirit {err.waiting_for!r}" in str(err)
    assert session.dismissed


@PATHS
def test_a_longer_waits_for_cycle_through_three_spirits_is_refused(python_path: bool) -> None:
    all_inside = threading.Barrier(3)
    with vudo.Seance() as session:
        def other_of(peer: str) -> Callable[[], int]:
            def other() -> int:
                all_inside.wait(10)
                result: int = session.invoke(peer, "inner")
                return result
            return other

        with _paths(python_path):
            for me, peer in [("a", "b"), ("b", "c"), ("c", "a")]:
                session.summon(me, CROSS, imports={("env", "other"): other_of(peer)})
        out = _run_threads(*(lambda n=n: session.invoke(n, "outer") for n in "abc"))
    assert out.count(7) == 2 and sum(isinstance(o, DeadlockError) for o in out) == 1, out


def _held_elsewhere(session: vudo.Seance, name: str) -> tuple[threading.Event, threading.Thread]:
    """Start a call on ``name`` that holds its lock until the returned event is set."""
    entered, release = threading.Event(), threading.Event()

    def hold() -> int:
        entered.set()
        release.wait(30)
        return 0

    session.summon(name, CROSS, imports={("env", "other"): hold})
    holder = threading.Thread(target=lambda: session.invoke(name, "outer"), daemon=True)
    holder.start()
    assert entered.wait(10)
    return release, holder


@PATHS
@pytest.mark.parametrize("stop", ["timeout", "dismiss", "cancel_call"])
def test_a_call_waiting_for_a_busy_spirit_is_stopped_by_its_own_limits(
    python_path: bool, stop: str
) -> None:
    waiting = threading.Event()
    with vudo.Seance() as session:
        def call_busy() -> int:
            waiting.set()
            result: int = session.invoke("busy", "inner")  # blocks: "busy" is held
            return result

        with _paths(python_path):
            release, holder = _held_elsewhere(session, "busy")
            limits = vudo.Limits(timeout=0.2) if stop == "timeout" else None
            caller = session.summon("caller", CROSS, imports={("env", "other"): call_busy},
                                    **({"limits": limits} if limits else {}))
        result: list[object] = []
        t = threading.Thread(target=lambda: result.extend(_run_threads(
            lambda: session.invoke("caller", "outer"))), daemon=True)
        t.start()
        assert waiting.wait(10)
        if stop == "dismiss":
            caller.interrupt()
        elif stop == "cancel_call":
            caller.cancel_call()
        t.join(30)
        assert not t.is_alive()
        expected = {"timeout": vudo.errors.SpiritTimeout, "dismiss": vudo.errors.SpiritTerminated,
                    "cancel_call": vudo.errors.CallCancelled}[stop]
        assert isinstance(result[0], expected), result
        assert result[0].spirit == "caller"
        release.set()
        holder.join(10)
        if stop == "cancel_call":
            caller.cancel_done()
            assert session.invoke("caller", "inner") == 7  # the Spirit stays usable


@PATHS
def test_an_async_host_function_may_invoke_its_own_spirit_and_others(python_path: bool) -> None:
    async def main() -> tuple[int, int]:
        async with vudo.AsyncSeance() as session:
            async def other() -> int:
                mine: int = await session.invoke("me", "inner")  # re-entrant
                theirs: int = await session.invoke("peer", "inner")
                return mine * 10 + theirs

            with _paths(python_path):
                await session.summon("me", CROSS, imports={("env", "other"): other})
                await session.summon("peer", CROSS, imports={("env", "other"): lambda: 0})
            first = await asyncio.wait_for(session.invoke("me", "outer"), 20)
            again = await asyncio.wait_for(session.invoke("me", "outer"), 20)
            return first, again

    assert asyncio.run(main()) == (77, 77)


@PATHS
def test_a_blocking_call_from_the_event_loop_into_a_waiting_spirit_is_refused(
    python_path: bool,
) -> None:
    async def main() -> BaseException | None:
        async with vudo.AsyncSeance() as session:
            async def other() -> int:
                result: int = session.sync.invoke("me", "inner")  # blocks the loop itself
                return result

            with _paths(python_path):
                await session.summon("me", CROSS, imports={("env", "other"): other})
            try:
                await asyncio.wait_for(session.invoke("me", "outer"), 20)
            except vudo.errors.VudoError as exc:
                return exc
            return None

    err = asyncio.run(main())
    assert isinstance(err, DeadlockError), err
    assert err.spirit == "me" and err.waiting_for == "me"


@PATHS
def test_dismissing_a_spirit_ends_a_call_awaiting_its_async_host_function(
    python_path: bool,
) -> None:
    async def main() -> BaseException | None:
        async with vudo.AsyncSeance() as session:
            entered = asyncio.Event()

            async def other() -> int:
                entered.set()
                await asyncio.Event().wait()  # never set
                return 0

            with _paths(python_path):
                spirit = await session.summon("me", CROSS, imports={("env", "other"): other})
            task = asyncio.ensure_future(session.invoke("me", "outer"))
            await asyncio.wait_for(entered.wait(), 20)
            spirit.interrupt()
            try:
                await asyncio.wait_for(task, 20)
            except vudo.errors.VudoError as exc:
                return exc
            return None

    err = asyncio.run(main())
    assert isinstance(err, vudo.errors.SpiritTerminated) and err.spirit == "me", err


# --------------------------------------------------------------------------------------------
# Stacks: Python's recursion limit and the thread's native stack.

@PATHS
def test_a_host_function_out_of_python_stack_raises_stack_exhausted(python_path: bool) -> None:
    def runaway() -> int:
        return runaway()

    with _paths(python_path):
        spirit = vudo.load_spirit(CROSS, imports={("env", "other"): runaway})
    with pytest.raises(vudo.errors.StackExhausted, match=r"host function other .*'spirit'"):
        spirit.call("outer")
    assert spirit.call("inner") == 7


DEEP = """
(module (func $r (export "r") (param i32) (result i32)
  (if (result i32) (i32.eqz (local.get 0)) (then (i32.const 0))
    (else (i32.add (i32.const 1) (call $r (i32.sub (local.get 0) (i32.const 1))))))))
"""


@PATHS
def test_a_thread_with_less_stack_than_the_wasm_budget_is_refused(python_path: bool) -> None:
    with _paths(python_path):
        spirit = vudo.load_spirit(DEEP)
    small = 192 * 1024
    assert small < stackcheck.needed()
    before = threading.stack_size(small)
    try:
        (out,) = _run_threads(lambda: spirit.call("r", 10**8))
    finally:
        threading.stack_size(before)
    assert isinstance(out, vudo.errors.StackExhausted), out
    assert "native stack" in str(out) and "'r'" in str(out)
    assert spirit.call("r", 100) == 100  # from a thread with room, it runs
