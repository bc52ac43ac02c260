"""A Spirit receiving and freeing a million messages keeps its memory bounded.

    python benchmarks/bench_messages.py [--messages 1000000] [--batch 10000] [--payload 64]

A producer Spirit sends ``--messages`` messages with ``vudo_send`` (in batches that fit the
consumer's inbox), and a consumer Spirit takes each with ``vudo_recv`` and releases it with
``vudo_free_message``, checking inside wasm that they arrive in order. Both loops are wasm;
every send and receive goes through the host functions and the session's MessageBus.

Printed: throughput of each side, and the consumer's memory (``memory.size``) and host heap
(allocator ``heap_bytes`` and ``in_use``) before, after the first batch and at the end, with
the process's peak RSS. Bounded means the figures after the first batch and at the end match.
"""

from __future__ import annotations

import argparse
import platform
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import vudo

SPIRIT = r"""
(module
  (import "vudo" "vudo_send" (func $send (param i32 i32 i32 i32) (result i32)))
  (import "vudo" "vudo_recv" (func $recv (result i32)))
  (import "vudo" "vudo_free_message" (func $free_message (param i32)))
  (memory (export "memory") 1)
  ;; address 0: next sequence number to send; 8: next expected; 16..: payload; 256: target
  (func (export "produce") (param $to_len i32) (param $len i32) (param $count i32) (result i32)
    (local $i i32)
    (block $done (loop $l
      (br_if $done (i32.ge_u (local.get $i) (local.get $count)))
      (i32.store (i32.const 16) (i32.load (i32.const 0)))
      (br_if $done (i32.ne
        (call $send (i32.const 256) (local.get $to_len) (i32.const 16) (local.get $len))
        (i32.const 0)))
      (i32.store (i32.const 0) (i32.add (i32.load (i32.const 0)) (i32.const 1)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l)))
    (local.get $i))
  ;; take and free every waiting message; -1 at the first one out of order
  (func (export "consume") (result i32) (local $m i32) (local $n i32) (local $count i32)
    (block $done (loop $l
      (local.set $m (call $recv))
      (br_if $done (i32.eqz (local.get $m)))
      (local.set $n (i32.load (local.get $m)))
      (if (i32.ne
            (i32.load (i32.add (i32.add (local.get $m) (i32.const 8)) (local.get $n)))
            (i32.load (i32.const 8)))
        (then (call $free_message (local.get $m)) (return (i32.const -1))))
      (i32.store (i32.const 8) (i32.add (i32.load (i32.const 8)) (i32.const 1)))
      (call $free_message (local.get $m))
      (local.set $count (i32.add (local.get $count) (i32.const 1)))
      (br $l)))
    (local.get $count))
)
"""


def heap_figures(mem: vudo.WasmMemory) -> tuple[int, int, int]:
    alloc = mem.allocator
    return mem.size, int(getattr(alloc, "heap_bytes", -1)), alloc.in_use


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--payload", type=int, default=64, help="payload bytes (>= 4)")
    args = parser.parse_args()
    total, batch, length = args.messages, args.batch, max(4, args.payload)

    with vudo.Seance(inbox_capacity=batch) as seance:
        producer = seance.summon("producer", SPIRIT)
        consumer = seance.summon("consumer", SPIRIT)
        target = b"consumer"
        producer.memory.write_bytes(256, target)
        produce = producer.function("produce")
        consume = consumer.function("consume")
        mem = consumer.memory

        before = heap_figures(mem)
        after_first: tuple[int, int, int] | None = None
        sent = received = 0
        t_send = t_recv = 0.0
        while received < total:
            start = time.perf_counter()
            n = produce(len(target), length, min(batch, total - sent))
            t_send += time.perf_counter() - start
            sent += n
            start = time.perf_counter()
            got = consume()
            t_recv += time.perf_counter() - start
            if got < 0:
                raise SystemExit(f"message out of order after {received}")
            if got != n:
                raise SystemExit(f"sent {n}, received {got}")
            received += got
            if after_first is None:
                after_first = heap_figures(mem)
        after = heap_figures(mem)
        assert after_first is not None
        assert seance.pending("consumer") == 0

    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(f"vudo {vudo.__version__}, Python {platform.python_version()}, {platform.machine()}")
    print(f"{received:,} messages of {length} bytes, batches of {batch:,}, FIFO checked in wasm")
    print(f"  vudo_send          : {sent / t_send:12,.0f} msg/s ({t_send:.2f} s)")
    print(f"  vudo_recv + free   : {received / t_recv:12,.0f} msg/s ({t_recv:.2f} s)")
    print("  consumer memory    :   memory.size   heap_bytes   in_use")
    for label, (size, heap, in_use) in (
        ("before", before), ("after 1st batch", after_first), ("at the end", after)
    ):
        print(f"    {label:<16} {size:12,} {heap:12,} {in_use:8,}")
    bounded = after == after_first and after[2] == 0
    print(f"  bounded: {'yes' if bounded else 'NO'}"
          f" (grew by {after[0] - before[0]:,} bytes in all)")
    print(f"  process peak RSS   : {rss_kib / 1024:.1f} MiB")
    if not bounded:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
