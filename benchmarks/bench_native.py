"""The native core against the pure-Python fallback and plain wasmtime-py, in one run.

Run: ``python benchmarks/bench_native.py`` (``--quick`` for a short run). Each row prints the
median time per operation of the native core, of the pure-Python fallback (Spirits loaded under
``_native_core.fallback()`` in the same process), of plain wasmtime-py, the ratio
fallback/native and the target of the native-core issue. When ``node`` is on the PATH, Node's
own WebAssembly runs the same exports with equivalent JS imports (informational: plain JS calls
skip all of vudo's host work). A second table shows ``add`` under each GIL policy.

Messaging (``--messages`` sets the count of the memory run, default a million): send + recv +
free of 64 bytes between two Spirits of one Séance on four paths: the C host functions (native),
the native call path with the Python host functions (the broker a ``MessageBus`` subclass, so
the C functions stand aside: the path before they were wired), the pure-Python call path on the
C bus (``fallback()``), and the old all-Python path (a ``VUDO_NATIVE=0`` subprocess, timed the
same way); then ``vudo_pending`` native vs fallback, and the receiver's RSS, memory and heap
before, after the first batch and after all messages were received and freed.
"""

from __future__ import annotations

import argparse
import functools
import json
import operator
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import wasmtime

import vudo
from vudo._runtime import cnative as _native_core
from vudo._runtime import engine as _engine
from vudo._runtime.core import core_summary

WAT = """
(module
  (import "vudo" "vudo_print" (func $print (param i32 i32)))
  (import "vudo" "vudo_now" (func $now (result i64)))
  (import "env" "tick" (func $tick (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 1024) "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
  (func (export "add") (param i64 i64) (result i64) local.get 0 local.get 1 i64.add)
  (func (export "host_tick") (param $n i32)
    (loop $l
      (drop (call $tick))
      (br_if $l (local.tee $n (i32.sub (local.get $n) (i32.const 1))))))
  (func (export "host_now") (param $n i32)
    (loop $l
      (drop (call $now))
      (br_if $l (local.tee $n (i32.sub (local.get $n) (i32.const 1))))))
  (func (export "host_print64") (param $n i32)
    (loop $l
      (call $print (i32.const 1024) (i32.const 64))
      (br_if $l (local.tee $n (i32.sub (local.get $n) (i32.const 1))))))
)
"""

NODE_JS = r"""
const fs = require("fs");
const [wasmPath, n] = [process.argv[2], Number(process.argv[3])];
const dec = new TextDecoder();
let mem;
const imports = {
  vudo: {
    vudo_print: (p, l) => { dec.decode(new Uint8Array(mem.buffer, p, l)); },
    vudo_now: () => BigInt(Date.now()),
  },
  env: { tick: () => 0 },
};
const instance = new WebAssembly.Instance(new WebAssembly.Module(fs.readFileSync(wasmPath)),
  imports);
mem = instance.exports.memory;
const ex = instance.exports;
function med(f, ops) {
  f();
  const xs = [];
  for (let r = 0; r < 7; r++) {
    const t = process.hrtime.bigint(); f(); xs.push(Number(process.hrtime.bigint() - t) / ops);
  }
  xs.sort((a, b) => a - b);
  return xs[3] / 1000;  // microseconds
}
const out = {
  add: med(() => { for (let i = 0; i < n; i++) ex.add(1n, 2n); }, n),
  tick: med(() => ex.host_tick(n), n),
  now: med(() => ex.host_now(n), n),
  print: med(() => ex.host_print64(n), n),
};
console.log(JSON.stringify(out));
"""


class NullLogger:
    """Discards everything, so the benchmark measures the host path, not the terminal."""

    def log(self, level: vudo.LogLevel, message: str) -> None:
        pass

    def debug(self, message: str) -> None:
        pass

    info = warn = error = print = println = debug


def measure(fn: Callable[[], object], ops: int, repeats: int) -> float:
    """Median seconds per operation of ``fn`` (which performs ``ops`` operations)."""
    fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) / ops)
    return statistics.median(samples)


def calls(call: Callable[[], object], n: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(n):
            call()

    return run


def add_calls(add: Callable[[int, int], object], n: int) -> Callable[[], None]:
    """``n`` calls of ``add(1, 2)`` straight from the loop (no lambda in between: its frame
    would cost about as much as the native call itself)."""
    def run() -> None:
        for _ in range(n):
            add(1, 2)

    return run


def load() -> vudo.Spirit:
    return vudo.load_spirit(WAT, name="bench", logger=NullLogger(), imports={"tick": lambda: 0})


def plain() -> tuple[wasmtime.Store, dict[str, wasmtime.Func]]:
    store = wasmtime.Store(_engine.get_engine())
    store.set_fuel(2**63 - 1)
    store.set_epoch_deadline(2**62)
    module = wasmtime.Module(_engine.get_engine(), WAT)

    def p_print(caller: wasmtime.Caller, ptr: int, length: int) -> None:
        mem = caller["memory"]
        assert isinstance(mem, wasmtime.Memory)
        bytes(mem.read(caller, ptr, ptr + length)).decode("utf-8", "replace")

    host: dict[str, Callable[..., object]] = {
        "vudo_print": p_print,
        "vudo_now": lambda _c: time.time_ns() // 1_000_000,
        "tick": lambda _c: 0,
    }
    externs = []
    for imp in module.imports:
        assert isinstance(imp.type, wasmtime.FuncType)
        externs.append(wasmtime.Func(store, imp.type, host[imp.name or ""], access_caller=True))
    inst = wasmtime.Instance(store, module, externs)
    funcs = {k: v for k, v in inst.exports(store).items() if isinstance(v, wasmtime.Func)}
    return store, funcs


def node_figures(n: int) -> dict[str, float] | None:
    node = shutil.which("node")
    if node is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "m.wasm").write_bytes(wasmtime.wat2wasm(WAT))
        Path(tmp, "b.js").write_text(NODE_JS)
        out = subprocess.run([node, str(Path(tmp, "b.js")), str(Path(tmp, "m.wasm")), str(n)],
                             capture_output=True, text=True, timeout=300, check=True)
    return {k: float(v) for k, v in json.loads(out.stdout).items()}


MSG_WAT = """
(module
  (import "vudo" "vudo_send" (func $send (param i32 i32 i32 i32) (result i32)))
  (import "vudo" "vudo_recv" (func $recv (result i32)))
  (import "vudo" "vudo_pending" (func $pending (result i32)))
  (import "vudo" "vudo_free_message" (func $free (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "{peer}")
  (data (i32.const 1024) "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
  (func (export "send") (result i32)
    (call $send (i32.const 16) (i32.const 1) (i32.const 1024) (i32.const 64)))
  (func (export "recv") (result i32)
    (local $m i32)
    (local.set $m (call $recv))
    (if (local.get $m) (then (call $free (local.get $m))))
    (local.get $m))
  (func (export "pending_n") (param $n i32)
    (loop $l
      (drop (call $pending))
      (br_if $l (local.tee $n (i32.sub (local.get $n) (i32.const 1))))))
  (func (export "send_n") (param $n i32) (result i32) (local $i i32)
    (block $done (loop $l
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (br_if $done (i32.ne (call $send (i32.const 16) (i32.const 1) (i32.const 1024)
                                        (i32.const 64)) (i32.const 0)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l)))
    (local.get $i))
  (func (export "recv_all") (result i32) (local $m i32) (local $count i32)
    (block $done (loop $l
      (local.set $m (call $recv))
      (br_if $done (i32.eqz (local.get $m)))
      (call $free (local.get $m))
      (local.set $count (i32.add (local.get $count) (i32.const 1)))
      (br $l)))
    (local.get $count))
)
"""


def message_pair(broker: Any = None) -> tuple[vudo.Seance, vudo.Spirit, vudo.Spirit]:
    seance = vudo.Seance(broker=broker) if broker is not None else vudo.Seance()
    a = seance.summon("a", MSG_WAT.replace("{peer}", "b"))
    b = seance.summon("b", MSG_WAT.replace("{peer}", "a"))
    return seance, a, b


def roundtrip(n: int, repeats: int, broker: Any = None) -> float:
    """Median seconds of one send (a) + recv + free (b) of 64 bytes."""
    seance, a, b = message_pair(broker)
    send, recv = a.function("send"), b.function("recv")

    def run() -> None:
        for _ in range(n):
            send()
            recv()

    try:
        return measure(run, n, repeats)
    finally:
        seance.dismiss()


OLD_PATH = """
import sys; sys.path.insert(0, {bench!r})
import bench_native as b
print(b.roundtrip({n}, {repeats}))
"""


def old_path(n: int, repeats: int) -> float:
    """The same round trip on the all-Python path (call path, host functions, bus, heap)."""
    code = OLD_PATH.format(bench=str(Path(__file__).resolve().parent), n=n, repeats=repeats)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=600, check=True, env={**os.environ, "VUDO_NATIVE": "0"})
    return float(out.stdout.split()[-1])


def rss_bytes() -> int:
    """The process's resident set now (not the peak)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def million(total: int, batch: int = 10_000) -> None:
    """Receive and free ``total`` messages natively; RSS, memory and heap stay flat."""
    seance = vudo.Seance(inbox_capacity=batch)
    a = seance.summon("a", MSG_WAT.replace("{peer}", "b"))
    b = seance.summon("b", MSG_WAT.replace("{peer}", "a"))
    send_n, recv_all = a.function("send_n"), b.function("recv_all")
    heap = b.memory.allocator

    def figures() -> tuple[int, int, int]:
        return rss_bytes(), b.memory.size, heap.in_use

    before = figures()
    first: tuple[int, int, int] | None = None
    done = 0
    start = time.perf_counter()
    while done < total:
        sent = send_n(min(batch, total - done))
        got = recv_all()
        if got != sent:
            raise SystemExit(f"sent {sent}, received {got}")
        done += got
        if first is None:
            first = figures()
    elapsed = time.perf_counter() - start
    after = figures()
    assert first is not None
    seance.dismiss()
    print(f"\n{done:,} messages of 64 B sent, received and freed natively "
          f"({done / elapsed:,.0f} msg/s both ways):")
    print(f"  {'':18s} {'RSS':>10s} {'memory.size':>12s} {'heap in_use':>12s}")
    for label, (rss, size, used) in (("before", before), ("after 1st batch", first),
                                     ("after all", after)):
        print(f"  {label:18s} {rss / 2**20:8.1f} MiB {size:12,} {used:12,}")
    grew = (after[0] - first[0]) / 2**20
    flat = after[1:] == first[1:] and after[2] == 0
    print(f"  flat: {'yes' if flat else 'NO'} (RSS {grew:+.1f} MiB since the first batch)")


def messaging(n: int, repeats: int, total: int) -> None:
    """The messaging rows: four paths side by side, vudo_pending, a million messages."""

    class PlainSubclass(vudo.MessageBus):  # type: ignore[misc, valid-type]
        """Overrides nothing, but is not the C class: the Python host functions serve."""

    k = max(n // 4, 2000)
    nat = roundtrip(k, repeats)
    before = roundtrip(k, repeats, broker=PlainSubclass())
    with _native_core.fallback():
        fb = roundtrip(max(k // 5, 1000), repeats)
    old = old_path(max(k // 5, 1000), repeats)
    print("\nmessage send + recv + free, 64 B, two Spirits (us; target: >= 10x the old path, "
          "~0.5 us):")
    for label, t in (("native (C host functions)", nat),
                     ("native call path, Python host fns", before),
                     ("fallback (ctypes, Python host fns)", fb),
                     ("old path (VUDO_NATIVE=0)", old)):
        print(f"  {label:38s} {t * 1e6:8.3f}   {t / nat:5.1f}x native")
    seance, a, _b = message_pair()
    pend = a.function("pending_n")
    p_nat = measure(lambda: pend(n), n, repeats)
    seance.dismiss()
    with _native_core.fallback():
        seance, a, _b = message_pair()
    pend = a.function("pending_n")
    p_fb = measure(lambda: pend(max(n // 10, 1000)), max(n // 10, 1000), repeats)
    seance.dismiss()
    print(f"\nwasm -> vudo_pending (target >= 15x): native {p_nat * 1e6:.3f} us, fallback "
          f"{p_fb * 1e6:.3f} us, {p_fb / p_nat:.1f}x")
    million(total)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    parser.add_argument("--messages", type=int, default=1_000_000,
                        help="messages received and freed in the memory run")
    parser.add_argument("--only-messaging", action="store_true",
                        help="skip the call rows (only the messaging figures)")
    args = parser.parse_args()
    n, repeats = (20_000, 5) if args.quick else (200_000, 7)
    if not _native_core.available():
        print(f"native core unavailable: {_native_core.reason()}")
        return
    print(core_summary())
    if args.only_messaging:
        messaging(n, repeats, args.messages)
        return
    native = load()
    store, wt = plain()
    base_n = max(n // 20, 500)
    node = node_figures(n)

    def spirit_rows(s: vudo.Spirit, k: int) -> dict[str, float]:
        add = s.function("add")
        tick, now, prn = s.function("host_tick"), s.function("host_now"), s.function(
            "host_print64")
        return {
            "add": measure(add_calls(add, k), k, repeats),
            "tick": measure(lambda: tick(k), k, repeats),
            "now": measure(lambda: now(k), k, repeats),
            "print": measure(lambda: prn(k), k, repeats),
        }

    # The native rows first: the fallback's epoch ticker is a Python thread, and while it lives
    # the auto GIL policy releases the GIL around every native call (a real program using one
    # path has no such thread).
    nat = spirit_rows(native, n)
    with _native_core.fallback():
        fallback = load()
    assert type(native.function("add")) is not type(fallback.function("add"))
    fb = spirit_rows(fallback, max(n // 5, 1000))
    w_add = wt["add"]
    pw = {
        "add": measure(add_calls(functools.partial(w_add, store), base_n), base_n, repeats),
        "tick": measure(lambda: wt["host_tick"](store, base_n), base_n, repeats),
        "now": measure(lambda: wt["host_now"](store, base_n), base_n, repeats),
        "print": measure(lambda: wt["host_print64"](store, base_n), base_n, repeats),
    }
    labels = {
        "add": ("add(i64, i64) via Spirit.function", ">= 6x"),
        "tick": ("wasm -> Python host fn, no args", ">= 3x"),
        "now": ("wasm -> vudo_now, default providers", ">= 15x"),
        "print": ("wasm -> vudo_print 64 B into a logger", ">= 2x"),
    }
    print(f"vudo {vudo.__version__}, wasmtime {_engine.wasmtime_version}, Python "
          f"{sys.version.split()[0]}, {os.cpu_count()} CPUs; medians of {repeats} runs, us/op")
    print(f"{'case':40s} {'native':>8s} {'fallback':>9s} {'wasmtime-py':>12s} "
          f"{'fb/native':>10s} {'target':>7s} {'node':>7s}")
    for key, (label, target) in labels.items():
        node_us = f"{node[key]:7.3f}" if node else "    n/a"
        print(f"{label:40s} {nat[key] * 1e6:8.3f} {fb[key] * 1e6:9.3f} {pw[key] * 1e6:12.3f} "
              f"{fb[key] / nat[key]:9.1f}x {target:>7s} {node_us}")
    if node is None:
        print("(node not found: Node's WebAssembly column skipped)")
    loop = measure(add_calls(operator.add, n), n, repeats)
    print(f"(the Python loop itself, calling the C function operator.add(1, 2): "
          f"{loop * 1e6:.3f} us; add net of it: {(nat['add'] - loop) * 1e6:.3f} us native)")

    add = native.function("add")
    print("\nadd(i64, i64) by GIL policy (native, this thread only):")
    for policy in ("hold", "release", "auto"):
        _native_core.set_gil_policy(policy)
        t = measure(add_calls(add, n), n, repeats)
        print(f"  {policy:8s} {t * 1e6:7.3f} us")
    _native_core.set_gil_policy("auto")
    print(textwrap.dedent(f"""
        native calls so far (held, released at start, released at a tick):
          {_native_core.gil_stats()}"""))
    messaging(n, repeats, args.messages)


if __name__ == "__main__":
    main()
