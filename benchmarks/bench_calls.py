"""The boundary-crossing benchmarks: vudo against plain wasmtime-py, side by side in one run.

Run: ``python benchmarks/bench_calls.py`` (``--quick`` for a short run). Each case prints our
median time per operation, the plain-wasmtime-py median measured in the same run, their ratio,
and the target from the performance issue. Medians of several repeats, because machines are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import wasmtime

import vudo
from vudo._runtime import cache as _cache
from vudo._runtime import engine as _engine

CALLS_WAT = """
(module
  (import "vudo" "vudo_print" (func $print (param i32 i32)))
  (import "vudo" "vudo_pending" (func $pending (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 1024) "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
  (func (export "empty"))
  (func (export "add") (param i64 i64) (result i64) local.get 0 local.get 1 i64.add)
  (func (export "host_noargs") (param $n i32)
    (loop $l
      (drop (call $pending))
      (br_if $l (local.tee $n (i32.sub (local.get $n) (i32.const 1))))))
  (func (export "host_print64") (param $n i32)
    (loop $l
      (call $print (i32.const 1024) (i32.const 64))
      (br_if $l (local.tee $n (i32.sub (local.get $n) (i32.const 1))))))
)
"""

# Two Spirits bouncing one 64-byte message: send to the peer, the peer receives and frees it.
MSG_WAT = """
(module
  (import "vudo" "vudo_send" (func $send (param i32 i32 i32 i32) (result i32)))
  (import "vudo" "vudo_recv" (func $recv (result i32)))
  (import "vudo" "vudo_free_message" (func $free (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "{peer}")
  (data (i32.const 1024) "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
  (func (export "send") (result i32)
    (call $send (i32.const 16) (i32.const {peer_len}) (i32.const 1024) (i32.const 64)))
  (func (export "recv") (result i32)
    (local $m i32)
    (local.set $m (call $recv))
    (if (local.get $m) (then (call $free (local.get $m))))
    (local.get $m))
)
"""

GENE = vudo.gene_layout("Point", [("x", "i64"), ("y", "i64"), ("w", "f64"), ("ok", "bool")])


class NullLogger:
    """Discards everything, so the benchmark measures the host path, not the terminal."""

    def log(self, level: vudo.abi.LogLevel, message: str) -> None:
        pass

    def debug(self, message: str) -> None:
        pass

    info = warn = error = print = println = debug


def measure(fn: Callable[[], object], ops: int, repeats: int) -> float:
    """Median seconds per operation of ``fn`` (which performs ``ops`` operations)."""
    fn()  # warm up
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) / ops)
    return statistics.median(samples)


def loop(call: Callable[[], object], n: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(n):
            call()

    return run


def plain_wasmtime_instance(
    wat: str, host: dict[str, Callable[..., object]]
) -> tuple[wasmtime.Store, wasmtime.Instance]:
    """The same module linked the ordinary wasmtime-py way (Func with Python callables)."""
    store = wasmtime.Store(_engine.get_engine())
    store.set_fuel(2**63 - 1)
    store.set_epoch_deadline(2**62)
    module = wasmtime.Module(_engine.get_engine(), wat)
    externs: list[wasmtime.Func] = []
    for imp in module.imports:
        ty = imp.type
        assert isinstance(ty, wasmtime.FuncType)
        externs.append(wasmtime.Func(store, ty, host[imp.name or ""], access_caller=True))
    return store, wasmtime.Instance(store, module, externs)


def bench_calls(n: int, repeats: int) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    spirit = vudo.load_spirit(CALLS_WAT, name="bench", logger=NullLogger())
    captured: list[str] = []

    def plain_print(caller: wasmtime.Caller, ptr: int, length: int) -> None:
        mem = caller["memory"]
        assert isinstance(mem, wasmtime.Memory)
        captured.append(bytes(mem.read(caller, ptr, ptr + length)).decode("utf-8", "replace"))
        captured.clear()

    def plain_pending(caller: wasmtime.Caller) -> int:
        return 0

    store, inst = plain_wasmtime_instance(
        CALLS_WAT, {"vudo_print": plain_print, "vudo_pending": plain_pending}
    )
    ex = inst.exports(store)
    w_empty, w_add = ex["empty"], ex["add"]
    w_noargs, w_print = ex["host_noargs"], ex["host_print64"]
    assert isinstance(w_empty, wasmtime.Func) and isinstance(w_add, wasmtime.Func)
    assert isinstance(w_noargs, wasmtime.Func) and isinstance(w_print, wasmtime.Func)
    base_n = max(n // 20, 200)  # the plain path is ~30x slower: fewer iterations, same quality

    empty = spirit.function("empty")
    add = spirit.function("add")
    proxy = spirit.as_()
    rows.append(case("empty call (Spirit.function)", measure(loop(empty, n), n, repeats),
                     measure(loop(lambda: w_empty(store), base_n), base_n, repeats),
                     "-"))
    rows.append(case("add(i64, i64) (Spirit.function)",
                     measure(loop(lambda: add(1, 2), n), n, repeats),
                     measure(loop(lambda: w_add(store, 1, 2), base_n), base_n, repeats),
                     "< 1 us, >= 30x"))
    rows.append(case("add(i64, i64) (typed proxy)",
                     measure(loop(lambda: proxy.add(1, 2), n), n, repeats),
                     measure(loop(lambda: w_add(store, 1, 2), base_n), base_n, repeats),
                     "< 1 us, >= 30x"))
    rows.append(case("add(i64, i64) (Spirit.call)",
                     measure(loop(lambda: spirit.call("add", 1, 2), n), n, repeats),
                     measure(loop(lambda: w_add(store, 1, 2), base_n), base_n, repeats),
                     "-"))
    host_n = n * 5
    noargs = spirit.function("host_noargs")
    print64 = spirit.function("host_print64")
    rows.append(case("host call, no args (vudo_pending)",
                     measure(lambda: noargs(host_n), host_n, repeats),
                     measure(lambda: w_noargs(store, n), n, repeats),
                     "< 1 us, >= 10x"))
    rows.append(case("host call, vudo_print 64 bytes",
                     measure(lambda: print64(host_n), host_n, repeats),
                     measure(lambda: w_print(store, n), n, repeats),
                     "< 2 us"))

    # Gene write + read (host side) against wasmtime-py Memory.read/write with struct.
    mem = spirit.memory
    ptr = mem.alloc(GENE.size)
    values = {"x": 1, "y": 2, "w": 0.5, "ok": True}
    w_mem = ex["memory"]
    assert isinstance(w_mem, wasmtime.Memory)
    fmt = struct.Struct("<qqdi4x")

    def plain_gene() -> None:
        w_mem.write(store, fmt.pack(1, 2, 0.5, 1), 4096)
        fmt.unpack(bytes(w_mem.read(store, 4096, 4096 + fmt.size)))

    def our_gene() -> None:
        mem.write_gene(ptr, values, GENE)
        mem.read_gene(ptr, GENE)

    gene_n = max(n // 10, 1000)
    rows.append(case("gene write + read (4 fields)",
                     measure(loop(our_gene, gene_n), gene_n, repeats),
                     measure(loop(plain_gene, gene_n), gene_n, repeats), "-"))
    rows += bench_codegen(n, repeats)
    rows += bench_messages(n, repeats)
    return rows


def plain_closure(spirit: vudo.Spirit, name: str) -> Callable[..., object]:
    """The fallback call path written as one ordinary closure (a loop over the arguments)
    instead of generated per-signature code, on the same FFI: what code generation buys."""
    import ctypes

    from vudo._runtime import ffi

    func = spirit.exports[name]
    params, results = spirit.signature(name)
    buf = (ffi.ValRaw * max(len(params), len(results), 1))()
    trapbuf = ctypes.c_void_p()
    state, lock = spirit._state, spirit._lock
    c = ctypes.c_void_p
    ctx, faddr = c(ffi.context_address(spirit.store)), c(ctypes.addressof(func._func))
    baddr, taddr = c(ctypes.addressof(buf)), c(ctypes.addressof(trapbuf))
    nslots = ctypes.c_size_t(max(len(params), len(results)))
    call_unchecked = ffi.call_unchecked

    def call(*args: object) -> object:
        if len(args) != len(params):
            raise TypeError("arity")
        with lock:
            if state.guard is not None:
                state.guard(name)
            for slot, t, value in zip(buf, params, args, strict=False):
                setattr(slot, t, value)
            err = call_unchecked(ctx, faddr, baddr, nslots, taddr)
            if err or trapbuf.value:
                state.failed(name, err, trapbuf)
            return getattr(buf[0], results[0]) if results else None

    return call


def bench_codegen(n: int, repeats: int) -> list[dict[str, object]]:
    """Generated call path against a plain closure, both on the pure-Python path."""
    from vudo._runtime import cnative

    with cnative.fallback():
        spirit = vudo.load_spirit(CALLS_WAT, name="codegen", logger=NullLogger())
    generated, closure = spirit.function("add"), plain_closure(spirit, "add")
    assert generated(1, 2) == closure(1, 2) == 3
    return [case("add(i64, i64): generated vs plain closure (fallback)",
                 measure(loop(lambda: generated(1, 2), n), n, repeats),
                 measure(loop(lambda: closure(1, 2), n), n, repeats), "-")]


def bench_messages(n: int, repeats: int) -> list[dict[str, object]]:
    """Send + recv + free of a 64-byte message between two Spirits of one Séance."""
    with vudo.Seance() as seance:
        a = seance.summon("a", MSG_WAT.format(peer="b", peer_len=1))
        b = seance.summon("b", MSG_WAT.format(peer="a", peer_len=1))
        send, recv = a.function("send"), b.function("recv")

        def ours() -> None:
            for _ in range(n):
                send()
                recv()

        our = measure(ours, n, repeats)

    # The floor of this path: the same two calls and three host calls, doing nothing.
    noop = {"vudo_send": lambda _a, _b, _c, _d: 0, "vudo_recv": lambda: 8,
            "vudo_free_message": lambda _p: None}
    floor_spirit = vudo.load_spirit(MSG_WAT.format(peer="a", peer_len=1), imports=noop)
    f_send, f_recv = floor_spirit.function("send"), floor_spirit.function("recv")

    def floor() -> None:
        for _ in range(n):
            f_send()
            f_recv()

    floor_row = case("  floor: same calls, no-op host functions", measure(floor, n, repeats),
                     None, "FFI only")

    # Baseline: the same two modules on plain wasmtime-py with a deque as the bus.
    inbox: deque[tuple[str, bytes]] = deque()
    blocks: dict[int, int] = {}

    def p_send(caller: wasmtime.Caller, to_ptr: int, to_len: int, ptr: int, length: int) -> int:
        mem = caller["memory"]
        assert isinstance(mem, wasmtime.Memory)
        mem.read(caller, to_ptr, to_ptr + to_len)
        inbox.append(("a", bytes(mem.read(caller, ptr, ptr + length))))
        return 0

    def p_recv(caller: wasmtime.Caller) -> int:
        if not inbox:
            return 0
        sender, payload = inbox.popleft()
        mem = caller["memory"]
        assert isinstance(mem, wasmtime.Memory)
        block = struct.pack("<I", len(sender)) + sender.encode() + struct.pack("<I", len(payload))
        mem.write(caller, block + payload, 2048)
        blocks[2048] = len(block)
        return 2048

    def p_free(caller: wasmtime.Caller, ptr: int) -> None:
        blocks.pop(ptr, None)

    host = {"vudo_send": p_send, "vudo_recv": p_recv, "vudo_free_message": p_free}
    store, inst = plain_wasmtime_instance(MSG_WAT.format(peer="a", peer_len=1), host)
    ex = inst.exports(store)
    w_send, w_recv = ex["send"], ex["recv"]
    assert isinstance(w_send, wasmtime.Func) and isinstance(w_recv, wasmtime.Func)
    base_n = max(n // 20, 200)

    def plain() -> None:
        for _ in range(base_n):
            w_send(store)
            w_recv(store)

    return [case("message send + recv round trip, 64 bytes", our,
                 measure(plain, base_n, repeats), "< 5 us"), floor_row]


def bench_load(repeats: int) -> list[dict[str, object]]:
    """Cold load (compile) vs cached load, in this process and in a fresh one."""
    wasm = wasmtime.wat2wasm(CALLS_WAT)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = _cache.CompileCache(Path(tmp))

        def cold() -> None:
            cache.clear()
            for f in Path(tmp).iterdir():
                f.unlink()
            cache.get_or_compile(bytes(wasm))

        def plain_compile() -> None:
            wasmtime.Module(_engine.get_engine(), wasm)

        rows.append(case("load: compile (cold cache)", measure(cold, 1, repeats),
                         measure(plain_compile, 1, repeats), "-"))
        cache.get_or_compile(bytes(wasm))
        rows.append(case("load: cached module (memory)",
                         measure(lambda: cache.get_or_compile(bytes(wasm)), 1, repeats),
                         measure(plain_compile, 1, repeats), "no compile"))
        # A new process: the disk cache must serve the module without compiling.
        script = textwrap.dedent(f"""
            import json, sys, time
            from pathlib import Path
            from vudo._runtime import cache as _cache
            cache = _cache.CompileCache(Path({tmp!r}))
            t = time.perf_counter()
            cache.get_or_compile(Path({tmp!r}, "m.wasm").read_bytes())
            print(json.dumps({{"s": time.perf_counter() - t, **cache.stats}}))
        """)
        Path(tmp, "m.wasm").write_bytes(bytes(wasm))
        out = json.loads(subprocess.check_output([sys.executable, "-c", script], text=True))
        rows.append(case("load: new process, disk cache", out["s"], None,
                         f"compiled={out['compiled']} disk_hits={out['disk_hits']}"))
    return rows


def case(name: str, ours: float, base: float | None, target: str) -> dict[str, object]:
    return {"case": name, "vudo_us": ours * 1e6, "wasmtime_py_us": None if base is None else
            base * 1e6, "ratio": None if base is None else base / ours, "target": target}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    parser.add_argument("--json", action="store_true", help="print JSON rows")
    args = parser.parse_args()
    n, repeats = (20_000, 5) if args.quick else (100_000, 7)
    rows = bench_calls(n, repeats) + bench_load(repeats)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"vudo {vudo.__version__}, wasmtime {_engine.wasmtime_version}, "
          f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; medians of {repeats} runs")
    print(f"{'case':44s} {'vudo':>10s} {'wasmtime-py':>12s} {'ratio':>8s}  target")
    for r in rows:
        base = "-" if r["wasmtime_py_us"] is None else f"{r['wasmtime_py_us']:10.2f}us"
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:7.1f}x"
        print(f"{r['case']:44s} {r['vudo_us']:8.2f}us {base:>12s} {ratio:>8s}  {r['target']}")


if __name__ == "__main__":
    main()
