"""The C message bus and host heap (vudo._nbus) against the Python ones, side by side.

    python benchmarks/bench_bus.py [--repeat 5] [--n 200000] [--million 1000000]

1. post + recv of a 64-byte payload, called from Python: the Python ``MessageBus`` vs
   ``vudo._nbus.MessageBus``.
2. A message's whole trip through a Spirit's host heap (send, receive into a heap block,
   free): the Python path (``MessageBus`` + ``FreeListAllocator`` + the block written as the
   messaging Loa does) vs the C host function bodies, called in a C loop as the native core
   calls them from wasm (no Python in the loop).
3. A million messages received and freed through the C bodies: the memory and host heap
   before and after (flat means equal), and the process's peak RSS.

Medians of ``--repeat`` runs; ratios are Python / C in the same run.
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from vudo._memory.allocator import FreeListAllocator as PyFreeList
from vudo._providers import PyMessageBus
from vudo._runtime import native as _nbus_select

PAGE = 65536
_U32 = struct.Struct("<I").pack


def median_us(fn, n: int, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn(n)
        runs.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(runs)


def post_recv(cls: type, payload: bytes):
    bus = cls()
    bus.register("a")
    bus.register("b")
    post, recv = bus.post, bus.recv

    def run(n: int) -> None:
        for _ in range(n):
            post("a", "b", payload)
            recv("b")

    return run


def python_heap_path(payload: bytes):
    """What the Python Loas do per message: post, recv, build the block, alloc, write, free."""
    mem = bytearray(64 * PAGE)
    size = [PAGE]

    def grow(min_bytes: int) -> tuple[int, int] | None:
        pages = -(-min_bytes // PAGE)
        if size[0] + pages * PAGE > len(mem):
            return None
        start, size[0] = size[0], size[0] + pages * PAGE
        return start, pages * PAGE

    def zero(ptr: int, n: int) -> None:
        mem[ptr:ptr + n] = bytes(n)

    def move(dst: int, src: int, n: int) -> None:
        mem[dst:dst + n] = mem[src:src + n]

    heap = PyFreeList(grow, zero, move)
    bus = PyMessageBus()
    bus.register("a")
    bus.register("b")
    outstanding: set[int] = set()
    sender = _U32(1) + b"a"

    def run(n: int) -> None:
        for _ in range(n):
            bus.post("a", "b", bytes(mem[1000:1000 + len(payload)]))  # vudo_send reads memory
            msg = bus.recv("b")
            block = b"".join((sender, _U32(len(msg.payload)), msg.payload))
            ptr = heap.alloc(len(block), 8, zero=False)
            mem[ptr:ptr + len(block)] = block
            outstanding.add(ptr)
            outstanding.remove(ptr)  # vudo_free_message
            heap.free(ptr)

    return run


def c_heap_path(nbus, payload_len: int):
    bus = nbus.MessageBus()
    bus.register("a")
    bus.register("b")
    heap = nbus.FreeListAllocator(None, None, None)
    mem = bytearray(64 * PAGE)
    state = {"size": PAGE}

    def run(n: int) -> None:
        state["size"] = nbus._bench_roundtrip(bus, heap, mem, state["size"], "a", "b", n,
                                              payload_len)

    return run, heap, state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--n", type=int, default=200_000, help="operations per run")
    parser.add_argument("--million", type=int, default=1_000_000)
    args = parser.parse_args()
    nbus = _nbus_select.native_module()
    print(f"python {platform.python_version()} on {platform.machine()}, "
          f"{args.repeat} runs of {args.n:,}, medians")
    if nbus is None:
        print("vudo._nbus is not available (not built, or VUDO_NATIVE=0): nothing to compare")
        return
    payload = bytes(range(64))

    py = median_us(post_recv(PyMessageBus, payload), args.n, args.repeat)
    c = median_us(post_recv(nbus.MessageBus, payload), args.n, args.repeat)
    print(f"post+recv 64 B from Python       python {py:7.3f} us   C {c:7.3f} us   "
          f"{py / c:5.1f}x")

    py = median_us(python_heap_path(payload), args.n, args.repeat)
    run, _, _ = c_heap_path(nbus, 64)
    c = median_us(run, args.n * 5, args.repeat)
    print(f"send+recv+free 64 B via the heap python {py:7.3f} us   C {c:7.3f} us   "
          f"{py / c:5.1f}x")

    run, heap, state = c_heap_path(nbus, 64)
    run(1_000)
    before = (state["size"], heap.heap_bytes, heap.in_use)
    start = time.perf_counter()
    run(args.million)
    took = time.perf_counter() - start
    after = (state["size"], heap.heap_bytes, heap.in_use)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.million:,} messages received and freed in C: {took:.2f} s "
          f"({took / args.million * 1e6:.3f} us each)")
    print(f"  memory/heap_bytes/in_use after 1,000: {before}   at the end: {after}   "
          f"{'flat' if before == after else 'GREW'}; peak RSS {rss:.0f} MiB")


if __name__ == "__main__":
    main()
