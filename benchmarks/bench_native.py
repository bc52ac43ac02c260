"""The native core against the pure-Python fallback and plain wasmtime-py, in one run.

Run: ``python benchmarks/bench_native.py`` (``--quick`` for a short run). Each row prints the
median time per operation of the native core, of the pure-Python fallback (Spirits loaded under
``_native_core.fallback()`` in the same process), of plain wasmtime-py, the ratio
fallback/native and the target of the native-core issue. When ``node`` is on the PATH, Node's
own WebAssembly runs the same exports with equivalent JS imports (informational: plain JS calls
skip all of vudo's host work). A second table shows ``add`` under each GIL policy.
"""

from __future__ import annotations

import argparse
import json
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

import wasmtime

import vudo
from vudo._runtime import cnative as _native_core
from vudo._runtime import engine as _engine

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    args = parser.parse_args()
    n, repeats = (20_000, 5) if args.quick else (200_000, 7)
    if not _native_core.available():
        print(f"native core unavailable: {_native_core.reason()}")
        return
    native = load()
    with _native_core.fallback():
        fallback = load()
    assert type(native.function("add")) is not type(fallback.function("add"))
    store, wt = plain()
    base_n = max(n // 20, 500)
    node = node_figures(n)

    def spirit_rows(s: vudo.Spirit, k: int) -> dict[str, float]:
        add = s.function("add")
        tick, now, prn = s.function("host_tick"), s.function("host_now"), s.function(
            "host_print64")
        return {
            "add": measure(calls(lambda: add(1, 2), k), k, repeats),
            "tick": measure(lambda: tick(k), k, repeats),
            "now": measure(lambda: now(k), k, repeats),
            "print": measure(lambda: prn(k), k, repeats),
        }

    nat = spirit_rows(native, n)
    fb = spirit_rows(fallback, max(n // 5, 1000))
    w_add = wt["add"]
    pw = {
        "add": measure(calls(lambda: w_add(store, 1, 2), base_n), base_n, repeats),
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

    add = native.function("add")
    print("\nadd(i64, i64) by GIL policy (native, this thread only):")
    for policy in ("hold", "release", "auto"):
        _native_core.set_gil_policy(policy)
        t = measure(calls(lambda: add(1, 2), n), n, repeats)
        print(f"  {policy:8s} {t * 1e6:7.3f} us")
    _native_core.set_gil_policy("auto")
    print(textwrap.dedent(f"""
        native calls so far (held, released at start, released at a tick):
          {_native_core.gil_stats()}"""))


if __name__ == "__main__":
    main()
