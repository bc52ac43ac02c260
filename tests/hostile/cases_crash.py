"""Corpus: inputs that used to kill the host process (SIGSEGV, SIGABRT)."""

from __future__ import annotations

from typing import Any

from harness import Case

LOAD = "attempt(lambda: vudo.load_spirit(WASM).functions)"


def _cli_refuses(type_text: str) -> Any:
    def check(outcome: dict[str, Any]) -> bool:
        result = outcome.get("result") or {}
        return result.get("returncode") in (1, 2) and type_text in result.get("output", "")
    return check


_UNUSUAL = [
    ("export_v128_param", '(module (func (export "f") (param v128)))', "v128"),
    ("export_v128_result",
     '(module (func (export "f") (result v128) v128.const i64x2 1 2))', "v128"),
    ("import_v128", '(module (import "vudo" "x" (func (param v128))))', "v128"),
    ("export_anyref", '(module (func (export "f") (param anyref)))', "anyref"),
    ("export_exnref_result",
     '(module (func (export "f") (result exnref) ref.null exn))', "exnref"),
    ("export_eqref", '(module (func (export "f") (param eqref) (result i32) i32.const 0))',
     "eqref"),
    ("export_typed_funcref",
     '(module (type $t (func)) (func (export "f") (param (ref null $t))))', "(ref null $0)"),
    ("export_non_null_funcref", '(module (func (export "f") (param (ref func))))',
     "(ref func)"),
    ("export_struct_ref",
     '(module (type $s (struct (field i32))) (func (export "f") (param (ref $s))))',
     "(ref $0)"),
    ("import_externref", '(module (import "env" "h" (func (param externref))))', "externref"),
    ("import_funcref_result", '(module (import "env" "h" (func (result funcref))))', "funcref"),
    ("import_i31ref_with_fine_exports",
     '(module (import "env" "h" (func (param i31ref))) (func (export "ok")))', "i31ref"),
]

CASES = [
    *(Case(f"load_{name}", wat, LOAD, raises="LoadError", text=text)
      for name, wat, text in _UNUSUAL),
    Case("load_names_the_function", '(module (func (export "weird") (param v128)))', LOAD,
         raises="LoadError", text="export 'weird' uses v128"),
    Case("seance_summon_v128", '(module (func (export "f") (param v128)))', """
        with vudo.Seance() as s:
            attempt(lambda: s.summon("odd", WASM))
        """, raises="LoadError", text="v128"),
    *(Case(f"cli_{command}_{name}", wat, f"attempt(lambda: cli({command!r}))",
           check=_cli_refuses(text))
      for command in ("inspect", "run", "stubs")
      for name, wat, text in _UNUSUAL[:6]),
    # A host exception whose __str__ raises: vudo's error path must still report it.
    Case("host_exception_str_raises", """
        (module (import "env" "h" (func $h)) (func (export "f") call $h))""", """
        class Nasty(Exception):
            def __str__(self):
                raise RuntimeError("no text for you")
        def h():
            raise Nasty()
        s = vudo.load_spirit(WASM, imports={("env", "h"): h})
        attempt(lambda: s.call("f"))
        """, raises="HostFunctionError", text="Nasty"),
    Case("host_exception_repr_and_str_raise", """
        (module (import "env" "h" (func $h (result i32))) (func (export "f") (result i32)
          call $h))""", """
        class Worse(Exception):
            def __str__(self):
                raise self
            __repr__ = __str__
        def h():
            raise Worse()
        s = vudo.load_spirit(WASM, imports={("env", "h"): h})
        first = outcome_of(lambda: s.call("f"))
        report(**outcome_of(lambda: s.call("f")), first=first)
        """, raises="HostFunctionError", text="Worse"),
    Case("host_returns_garbage_type", """
        (module (import "env" "h" (func $h (result i32))) (func (export "f") (result i32)
          call $h))""", """
        s = vudo.load_spirit(WASM, imports={("env", "h"): lambda: "not an int"})
        attempt(lambda: s.call("f"))
        """, raises="HostFunctionError"),
    # A bad pointer while the Python stack is a few frames from the recursion limit: the host
    # function (or ctypes decoding the trap afterwards) may find no stack left.
    Case("bad_pointer_near_recursion_limit", """
        (module (import "vudo" "vudo_log" (func $log (param i32 i32 i32)))
          (memory (export "memory") 1)
          (func (export "bad") (call $log (i32.const 2) (i32.const -256) (i32.const 1000))))""",
         """
        s = vudo.load_spirit(WASM)
        seen = []
        def deep(n):
            if n == 0:
                seen.append(outcome_of(lambda: s.call("bad")))
                return
            deep(n - 1)
        limit = sys.getrecursionlimit()
        for margin in range(2, 60, 3):
            deep(limit - margin - 12)
        kinds = sorted({o["raised"][0] for o in seen if "raised" in o})
        report(result=kinds, after=outcome_of(lambda: s.call("bad")))
        """, check=lambda o: set(o["result"]) <= {"MemoryAccessError", "StackExhausted"}
         and "MemoryAccessError" in o["after"].get("raised", [])),
    # References: Python ints are not funcrefs; one Spirit's funcref is not another's.
    Case("funcref_arg_python_int", """
        (module (func (export "f") (param funcref) (result i32) i32.const 1))""", """
        s = vudo.load_spirit(WASM)
        attempt(lambda: s.call("f", 0xdeadbeef))
        """, raises="TypeError", text="funcref"),
    Case("funcref_arg_used_by_call_indirect", """
        (module (type $t (func (result i32))) (table 1 funcref)
          (func (export "f") (param funcref) (result i32)
            (table.set (i32.const 0) (local.get 0)) (call_indirect (type $t) (i32.const 0))))""",
         """
        s = vudo.load_spirit(WASM)
        bad = [outcome_of(lambda v=v: s.call("f", v)) for v in (1, 2**40, -1, 1.5, "x", b"")]
        attempt(lambda: [o["raised"][0] for o in bad])
        """, check=lambda o: o["result"] == ["TypeError"] * 6),
    Case("externref_arg_python_int", """
        (module (func (export "f") (param externref) (result externref) local.get 0))""", """
        s = vudo.load_spirit(WASM)
        assert s.call("f", None) is None
        attempt(lambda: s.call("f", 12345))
        """, raises="TypeError", text="externref"),
    Case("funcref_round_trip_same_spirit", """
        (module (type $t (func (result i32))) (table 1 funcref) (elem declare func $k)
          (func $k (result i32) i32.const 7)
          (func (export "get") (result funcref) ref.func $k)
          (func (export "use") (param funcref) (result i32)
            (table.set (i32.const 0) (local.get 0)) (call_indirect (type $t) (i32.const 0))))""",
         """
        s = vudo.load_spirit(WASM)
        attempt(lambda: s.call("use", s.call("get")))
        """, check=lambda o: o.get("result") == 7),
    Case("funcref_passed_to_another_spirit", """
        (module (type $t (func (result i32))) (table 1 funcref) (elem declare func $k)
          (memory (export "memory") 1)
          (func $k (result i32) (i32.store (i32.const 0) (i32.const 99)) i32.const 7)
          (func (export "get") (result funcref) ref.func $k)
          (func (export "use") (param funcref) (result i32)
            (table.set (i32.const 0) (local.get 0)) (call_indirect (type $t) (i32.const 0))))""",
         """
        a = vudo.load_spirit(WASM, name="a")
        b = vudo.load_spirit(WASM, name="b")
        attempt(lambda: b.call("use", a.call("get")))
        """, raises="ForeignReferenceError", text="Spirit 'a'"),
    Case("funcref_null_traps_cleanly", """
        (module (type $t (func (result i32))) (table 1 funcref)
          (func (export "use") (param funcref) (result i32)
            (table.set (i32.const 0) (local.get 0)) (call_indirect (type $t) (i32.const 0))))""",
         """
        s = vudo.load_spirit(WASM)
        attempt(lambda: s.call("use", None))
        """, raises="SpiritTrap"),
    # Deep wasm recursion where the native stack is small.
    Case("deep_recursion_thread_512k", """
        (module (func $r (export "r") (param i32) (result i32)
          (if (result i32) (i32.eqz (local.get 0)) (then (i32.const 0))
            (else (i32.add (i32.const 1) (call $r (i32.sub (local.get 0) (i32.const 1))))))))""",
         """
        threading.stack_size(512 * 1024)
        s = vudo.load_spirit(WASM)
        out = []
        t = threading.Thread(target=lambda: out.append(outcome_of(lambda: s.call("r", 10**8))))
        t.start(); t.join()
        report(**out[0])
        """, raises="SpiritTrap", text="call stack exhausted"),
    Case("deep_recursion_ulimit_s_512", """
        (module (func $r (export "r") (param i32) (result i32)
          (if (result i32) (i32.eqz (local.get 0)) (then (i32.const 0))
            (else (i32.add (i32.const 1) (call $r (i32.sub (local.get 0) (i32.const 1))))))))""",
         """
        s = vudo.load_spirit(WASM)
        attempt(lambda: s.call("r", 10**8))
        """, raises="SpiritTrap", text="call stack exhausted", stack_limit=512 * 1024),
    Case("deep_recursion_thread_shrunk_after_load", """
        (module (func $r (export "r") (param i32) (result i32)
          (if (result i32) (i32.eqz (local.get 0)) (then (i32.const 0))
            (else (i32.add (i32.const 1) (call $r (i32.sub (local.get 0) (i32.const 1))))))))""",
         """
        s = vudo.load_spirit(WASM)
        threading.stack_size(256 * 1024)
        out = []
        t = threading.Thread(target=lambda: out.append(outcome_of(lambda: s.call("r", 10**8))))
        t.start(); t.join()
        report(**out[0], after=outcome_of(lambda: s.call("r", 10)))
        """, raises="StackExhausted", text="native stack",  # refused: the budget is fixed
         check=lambda o: o["after"] == {"result": 10}),
]
