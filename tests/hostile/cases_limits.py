"""Corpus: limits that must hold (max_memory for the whole instance, Limits values, cache)."""

from __future__ import annotations

from harness import Case

PAGE = 65536
CAP = 16 * 1024 * 1024

_GROW_EACH = f"""
s = vudo.load_spirit(WASM, limits=vudo.Limits(max_memory={CAP}))
total = 0
for i in range(100):
    for step in (4096, 256, 16, 1):  # grow each memory as far as it will go
        while s.call(f"grow{{i}}", step) != -1:
            pass
    total += s.call(f"size{{i}}") * {PAGE}
report(result=total)
"""

_MANY_GROWABLE = "(module " + "".join(
    f'(memory $m{i} 1) '
    f'(func (export "grow{i}") (param i32) (result i32) (memory.grow $m{i} (local.get 0)))'
    f' (func (export "size{i}") (result i32) (memory.size $m{i}))'
    for i in range(100)
) + ")"

_TABLES = "(module (memory (export \"memory\") 1) " + "".join(
    f'(table $t{i} 0 funcref) (func (export "tg{i}") (param i32) (result i32)'
    f' (table.grow $t{i} (ref.null func) (local.get 0)))'
    f' (func (export "ts{i}") (result i32) (table.size $t{i}))'
    for i in range(20)
) + ")"

_BAD_LIMITS = [
    ("timeout_nan", 'timeout=float("nan")'), ("timeout_inf", 'timeout=float("inf")'),
    ("timeout_negative", "timeout=-0.5"), ("timeout_string", 'timeout="1s"'),
    ("timeout_huge", "timeout=1e300"), ("fuel_above_2_64", "fuel=2**64"),
    ("fuel_float", "fuel=1.5"), ("fuel_bool", "fuel=True"),
    ("max_memory_string", 'max_memory="16MiB"'), ("max_memory_above_2_64", "max_memory=2**64 + 1"),
    ("max_memory_float_nan", 'max_memory=float("nan")'), ("max_inbox_float", "max_inbox=2.0"),
    ("max_message_size_zero", "max_message_size=0"), ("terminate_not_bool", "terminate_on_limit=1"),
]

CASES = [
    Case("max_memory_covers_100_memories", _MANY_GROWABLE, _GROW_EACH,
         check=lambda o: 0 < o["result"] <= CAP),
    Case("max_memory_covers_memories_at_instantiation", "(module " + "".join(
        f"(memory $m{i} 8)" for i in range(40)) + ")", f"""
        attempt(lambda: vudo.load_spirit(WASM, limits=vudo.Limits(max_memory={CAP})))
        """, raises="LoadError"),
    Case("max_memory_covers_tables", _TABLES, f"""
        s = vudo.load_spirit(WASM, limits=vudo.Limits(max_memory={CAP}))
        for i in range(20):
            for step in (1 << 20, 1 << 14, 1 << 8, 1):
                while s.call(f"tg{{i}}", step) != -1:
                    pass
        tables = sum(s.call(f"ts{{i}}") for i in range(20)) * 8
        report(result=tables + s.memory.size)
        """, check=lambda o: 0 < o["result"] <= CAP),
    Case("max_memory_one_memory_gets_the_whole_budget",
         '(module (memory (export "memory") 1) (func (export "grow") (param i32) (result i32)'
         ' (memory.grow (local.get 0))))', f"""
        s = vudo.load_spirit(WASM, limits=vudo.Limits(max_memory={CAP}))
        while s.call("grow", 1) != -1:
            pass
        report(result=s.memory.size)
        """, check=lambda o: o["result"] == CAP),
    Case("max_memory_2_64_minus_1_does_not_wrap_to_unlimited",
         '(module (memory (export "memory") 1) (func (export "grow") (param i32) (result i32)'
         ' (memory.grow (local.get 0))))', """
        s = vudo.load_spirit(WASM, limits=vudo.Limits(max_memory=2**64 - 1))
        attempt(lambda: s.call("grow", 1))
        """, check=lambda o: o.get("result") == 1),
    *(Case(f"limits_{name}", "", f"attempt(lambda: vudo.Limits({expr}))",
           raises="InvalidLimitsError", text="Limits.")
      for name, expr in _BAD_LIMITS),
    Case("limits_error_is_a_value_error", "", 'attempt(lambda: vudo.Limits(fuel="x"))',
         raises="ValueError"),
    Case("limits_fuel_2_64_minus_1_runs",
         '(module (func (export "f") (result i32) i32.const 5))', """
        s = vudo.load_spirit(WASM, limits=vudo.Limits(fuel=2**64 - 1))
        attempt(lambda: s.call("f"))
        """, check=lambda o: o.get("result") == 5),
    Case("compile_cache_is_bounded", "", """
        import resource, wasmtime
        cache = vudo.configure_cache(disk=False, max_entries=64)
        for i in range(1500):
            wasm = bytes(wasmtime.wat2wasm(
                f'(module (func (export "f") (result i32) i32.const {i}))'))
            spirit = vudo.load_spirit(wasm)
            assert spirit.call("f") == i
            spirit.close()
        report(result=len(cache))
        """, check=lambda o: o["result"] == 64, bound=120),
    Case("compile_cache_disk_is_bounded", "", """
        import tempfile, wasmtime, pathlib
        d = pathlib.Path(tempfile.mkdtemp())
        vudo.configure_cache(d, disk_max_bytes=200_000)
        for i in range(60):
            vudo.load_spirit(bytes(wasmtime.wat2wasm(
                f'(module (func (export "f") (result i32) i32.const {i}))'))).close()
        report(result=sum(p.stat().st_size for p in d.glob("*.cwasm")))
        """, check=lambda o: 0 < o["result"] <= 200_000, bound=120),
]
