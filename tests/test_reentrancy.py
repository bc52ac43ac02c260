"""Re-entrancy and threads on the fast call path.

Each export has one preallocated argument/result buffer, so these tests prove that a host
function calling back into its own Spirit (the same export included), and several threads
calling one Spirit at once, never see each other's arguments or results.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

import vudo
from vudo import Spirit

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
