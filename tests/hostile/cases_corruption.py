"""Corpus: calls that used to return wrong results or touch a store without its lock."""

from __future__ import annotations

from harness import Case

_MULTI = """(module
  (import "env" "three" (func $three (result i32 i32 i32)))
  (import "env" "spread" (func $spread (param i32) (result i32 i64 f64 i32)))
  (import "env" "re" (func $re (param i32) (result i32 i32)))
  (func (export "three") (result i32 i32 i32) call $three)
  (func (export "spread") (param i32) (result i32 i64 f64 i32) (call $spread (local.get 0)))
  (func (export "re") (param i32) (result i32 i32) (call $re (local.get 0))))"""

_MULTI_SETUP = """
s = None
def re(x):
    if x > 0:
        a, b = s.call("re", x - 1)  # re-entrant: the same import, one level down
        return (a + 10, b + 100)
    return (1, 2)
s = vudo.load_spirit(WASM, imports={
    ("env", "three"): lambda: (7, 8, 9),
    ("env", "spread"): lambda x: (x, -x, x / 2, 2 * x),
    ("env", "re"): re,
})
"""

CASES = [
    Case("multi_result_import_without_params", _MULTI,
         _MULTI_SETUP + 'attempt(lambda: s.call("three"))',
         check=lambda o: o.get("result") == [7, 8, 9]),
    Case("multi_result_import_more_results_than_params", _MULTI,
         _MULTI_SETUP + 'attempt(lambda: [s.call("spread", v) for v in (3, -5)])',
         check=lambda o: o.get("result") == [[3, -3, 1.5, 6], [-5, 5, -2.5, -10]]),
    Case("multi_result_import_re_entrant", _MULTI,
         _MULTI_SETUP + 'attempt(lambda: s.call("re", 3))',
         check=lambda o: o.get("result") == [31, 302]),
    Case("signal_handler_calls_into_the_running_spirit", """
        (module (import "env" "work" (func $w (param i32) (result i32)))
          (func (export "add") (param i32 i32) (result i32) local.get 0 local.get 1 i32.add)
          (func (export "run") (param i32) (result i32) (local i32)
            (loop $l (local.set 1 (call $w (local.get 1)))
              (br_if $l (i32.lt_u (local.get 1) (local.get 0))))
            local.get 1))""", """
        wrong = []
        calls = [0]
        def on_alarm(signum, frame):
            calls[0] += 1
            r = s.call("add", 1000, 2000)
            if r != 3000:
                wrong.append(r)
        signal.signal(signal.SIGALRM, on_alarm)
        s = vudo.load_spirit(WASM, imports={("env", "work"): lambda x: x + 1})
        signal.setitimer(signal.ITIMER_REAL, 0.0003, 0.0003)
        results = set()
        for i in range(300):
            results.add(s.call("run", 5000))
            results.add(s.call("add", 2, 3))
        signal.setitimer(signal.ITIMER_REAL, 0)
        report(result=sorted(results), wrong=wrong, handled=calls[0] > 0)
        """, check=lambda o: o["result"] == [5, 5000] and o["wrong"] == [] and o["handled"]),
    Case("memory_grow_from_another_thread_waits_for_the_call", """
        (module (import "env" "block" (func $b)) (memory (export "memory") 1)
          (func (export "hold") call $b))""", """
        inside, release = threading.Event(), threading.Event()
        def block():
            inside.set()
            release.wait(10)
        s = vudo.load_spirit(WASM, imports={("env", "block"): block})
        caller = threading.Thread(target=lambda: s.call("hold"))
        caller.start()
        inside.wait(10)
        finished = threading.Event()
        def grow():
            s.memory.grow(1)
            finished.set()
        other = threading.Thread(target=grow, daemon=True)
        other.start()
        early = finished.wait(1.0)  # must not run while the call holds the Spirit
        release.set()
        caller.join(10)
        report(result={"ran_during_call": early, "ran_after": finished.wait(10)})
        """, check=lambda o: o["result"] == {"ran_during_call": False, "ran_after": True}),
    Case("message_larger_than_the_receiver_can_allocate", """
        (module (import "vudo" "vudo_recv" (func $recv (result i32)))
          (memory (export "memory") 1)
          (func (export "recv") (result i32) call $recv))""", """
        with vudo.Seance() as session:
            rx = session.summon("rx", WASM, limits=vudo.Limits(max_memory=2 * 65536))
            big = session.send("tx", "rx", b"x" * (1 << 20))
            small = session.send("tx", "rx", b"hi")
            got = [rx.call("recv") for _ in range(3)]
            report(result={"delivered": any(got), "pending": session.pending("rx"),
                           "big": int(big)})
        """, check=lambda o: o["result"]["delivered"] and o["result"]["pending"] == 0),
]
