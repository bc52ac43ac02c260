"""Host allocations through a Spirit's own allocator against the grown-pages heap, side by side.

Run: ``python benchmarks/bench_guest_alloc.py`` (``--quick`` for a short run). The same C source
is built twice (tests/spirits/): ``c_malloc.wasm`` exports malloc/free (the host allocates
through them), ``c_nomalloc.wasm`` does not (the host uses pages it grows). Cases: a host-side
``memory.alloc``/``free`` pair, and one message delivered, received (``vudo_recv``, which
allocates the block) and checked by the guest. Prints medians per operation and their ratio.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import vudo

WASM = Path(__file__).resolve().parents[1] / "tests" / "spirits" / "wasm"


def median_ns(fn: Callable[[], None], n: int, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter_ns() - start) / n)
    return statistics.median(samples)


def cases(spirit: vudo.Spirit) -> dict[str, Callable[[], None]]:
    mem = spirit.memory
    payload = bytes((i * 31 + 64) & 0xFF for i in range(64))
    recv_check = spirit.function("recv_check")

    def alloc_free() -> None:
        mem.free(mem.alloc(64))

    def message() -> None:
        spirit.deliver("bench", payload)
        recv_check()

    return {"memory.alloc+free (64 B)": alloc_free, "deliver+vudo_recv+free (64 B)": message}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n, repeats = (2_000, 3) if args.quick else (20_000, 7)
    logging.getLogger("vudo.spirit").setLevel(logging.ERROR)  # c_nomalloc's load warning
    guest = vudo.load_spirit(WASM / "c_malloc.wasm")
    pages = vudo.load_spirit(WASM / "c_nomalloc.wasm")
    assert guest.memory.allocator_strategy == "guest:malloc"
    assert pages.memory.allocator_strategy == "host-pages"
    print(f"{'case':32} {'guest:malloc':>14} {'host-pages':>12} {'ratio':>7}")
    for (label, g), (_, p) in zip(cases(guest).items(), cases(pages).items(), strict=True):
        tg, tp = median_ns(g, n, repeats), median_ns(p, n, repeats)
        print(f"{label:32} {tg / 1000:>11.2f} us {tp / 1000:>9.2f} us {tg / tp:>6.2f}x")


if __name__ == "__main__":
    main()
