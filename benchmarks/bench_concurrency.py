"""Speed-up of N CPU-bound Spirits run at once over running them one after the other.

    python benchmarks/bench_concurrency.py [--spirits N] [--iterations K] [--repeat R]

N defaults to ``os.cpu_count()`` (2 if unknown). Each Spirit runs a pure-wasm loop of K
xorshift64 steps (no host calls). The same N Spirits of one Séance are run:

* one after the other on one thread (the baseline);
* all at once through ``Seance.invoke`` on N threads;
* all at once through ``AsyncSeance.invoke`` gathered on one event loop.

Every figure is the best of R runs. The ideal speed-up is N (fewer when other processes
compete for the cores). Every run checks that each Spirit returned the expected value.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import vudo

# xorshift64 for `n` steps from a seed: pure arithmetic in a loop, nothing to optimise away.
CPU_BOUND = r"""
(module
  (func (export "churn") (param $seed i64) (param $n i64) (result i64) (local $x i64)
    (local.set $x (local.get $seed))
    (block $done (loop $l
      (br_if $done (i64.eqz (local.get $n)))
      (local.set $x (i64.xor (local.get $x) (i64.shl (local.get $x) (i64.const 13))))
      (local.set $x (i64.xor (local.get $x) (i64.shr_u (local.get $x) (i64.const 7))))
      (local.set $x (i64.xor (local.get $x) (i64.shl (local.get $x) (i64.const 17))))
      (local.set $n (i64.sub (local.get $n) (i64.const 1)))
      (br $l)))
    (local.get $x))
)
"""

MASK = (1 << 64) - 1


def expected(seed: int, n: int) -> int:
    """The loop's result computed in Python (for a few steps) - used on a short run."""
    x = seed & MASK
    for _ in range(n):
        x ^= (x << 13) & MASK
        x ^= x >> 7
        x ^= (x << 17) & MASK
    return x - (1 << 64) if x >= 1 << 63 else x


def machine_ticks() -> tuple[int, int] | None:
    """(busy, total) CPU ticks of the whole machine from /proc/stat (Linux), else None."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return sum(fields) - fields[3] - fields[4], sum(fields)  # minus idle and iowait


class Best:
    """The fastest of several timed runs: wall time, cores this process kept busy (CPU time /
    wall time) and cores the whole machine kept busy meanwhile (other processes included)."""

    def __init__(self) -> None:
        self.wall = float("inf")
        self.cores = 0.0
        self.machine: float | None = None

    def time(self, run: Callable[[], list[int]]) -> list[int]:
        ticks, start, cpu = machine_ticks(), time.perf_counter(), time.process_time()
        results = run()
        wall, used = time.perf_counter() - start, time.process_time() - cpu
        after = machine_ticks()
        if wall < self.wall:
            self.wall, self.cores, self.machine = wall, used / wall, None
            if ticks is not None and after is not None and after[1] > ticks[1]:
                ncpu = os.cpu_count() or 1
                self.machine = (after[0] - ticks[0]) / (after[1] - ticks[1]) * ncpu
        return results


def best_of(repeat: int, run: Callable[[], list[int]]) -> tuple[Best, list[int]]:
    best, results = Best(), []
    for _ in range(repeat):
        results = best.time(run)
    return best, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spirits", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--iterations", type=int, default=300_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n, iters = args.spirits, args.iterations
    names = [f"cpu{i}" for i in range(n)]
    seeds = [0x9E3779B97F4A7C15 + i for i in range(n)]
    seeds = [s - (1 << 64) if s >= 1 << 63 else s for s in seeds]
    work = list(zip(names, seeds, strict=True))

    with vudo.Seance() as seance:
        for name in names:
            seance.summon(name, CPU_BOUND)
        # correctness first, on a short run
        for name, seed in work:
            assert seance.invoke(name, "churn", seed, 1000) == expected(seed, 1000)

        def one_after_another() -> list[int]:
            return [seance.invoke(nm, "churn", sd, iters) for nm, sd in work]

        pool = ThreadPoolExecutor(n)

        def on_threads() -> list[int]:
            futures = [pool.submit(seance.invoke, nm, "churn", sd, iters) for nm, sd in work]
            return [f.result() for f in futures]

        one_after_another()  # warm-up: page in code and memory
        t_seq, r_seq = best_of(args.repeat, one_after_another)
        t_thr, r_thr = best_of(args.repeat, on_threads)
        pool.shutdown()
        assert r_thr == r_seq

    # The same through the asyncio face, on one event loop.
    loop = asyncio.new_event_loop()
    aseance = vudo.AsyncSeance()
    for name in names:
        loop.run_until_complete(aseance.summon(name, CPU_BOUND))

    async def all_at_once() -> list[int]:
        return list(await asyncio.gather(
            *(aseance.invoke(nm, "churn", sd, iters) for nm, sd in work)
        ))

    t_async, r_async = best_of(args.repeat, lambda: loop.run_until_complete(all_at_once()))
    loop.run_until_complete(aseance.dismiss())
    loop.close()
    assert r_async == r_seq

    print(f"vudo {vudo.__version__}, Python {platform.python_version()}, "
          f"{platform.machine()}, os.cpu_count()={os.cpu_count()}")
    print(f"{n} Spirits x {iters:,} xorshift steps each, best of {args.repeat}")
    print("  'cores': this process's CPU time / wall time; 'machine': cores busy on the whole")
    print("  machine meanwhile (other processes included; when it nears the core count while")
    print("  'cores' stays low, other processes took the cores)")
    rows = [
        ("one after the other", t_seq),
        (f"Seance, {n} threads", t_thr),
        ("AsyncSeance, gather", t_async),
    ]
    for label, best in rows:
        speed_up = f"speed-up x{t_seq.wall / best.wall:.2f}" if best is not t_seq else "baseline"
        machine = f"{best.machine:4.2f}" if best.machine is not None else " n/a"
        print(f"  {label:<22} {best.wall:8.3f} s   cores {best.cores:4.2f}   "
              f"machine {machine}   {speed_up}")
    print(f"  (ideal speed-up: x{n})")


if __name__ == "__main__":
    main()
