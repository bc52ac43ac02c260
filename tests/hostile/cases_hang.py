"""Corpus: calls that used to hang past every bound (or swallow Ctrl-C)."""

from __future__ import annotations

from typing import Any

from harness import Case

SPIN = """(module
  (import "env" "tick" (func $tick (param i32) (result i32)))
  (import "vudo" "vudo_sleep" (func $sleep (param i32)))
  (func (export "spin") (loop $l br $l))
  (func (export "host_loop") (local i32)
    (loop $l (local.set 0 (call $tick (local.get 0))) br $l))
  (func (export "once") (result i32) (call $tick (i32.const 41)))
  (func (export "sleep") (call $sleep (i32.const 3000000)))  ;; 50 min: under max_sleep
  (func (export "one") (result i32) i32.const 1))"""

#: Prelude of the signal cases: a Spirit with a busy host function, a timer that signals.
_SIGNAL_SETUP = """
busy = [0.0]
def tick(x):
    end = time.monotonic() + busy[0]
    while time.monotonic() < end:  # a host function that keeps the GIL, in Python code
        pass
    return x + 1
s = vudo.load_spirit(WASM, imports={("env", "tick"): tick}, **OPTIONS)
def signal_soon(signum=signal.SIGINT, delay=0.3):
    threading.Timer(delay, lambda: os.kill(os.getpid(), signum)).start()
def after():
    return s.call("one")
"""


def _stopped_by(kind: str, within: float = 20.0) -> Any:
    def check(o: dict[str, Any]) -> bool:
        return kind in o.get("raised", []) and o.get("after") == 1 and o["seconds"] < within
    return check


def _signal_case(name: str, function: str, *, signum: str = "signal.SIGINT",
                 kind: str = "KeyboardInterrupt", options: str = "{}", busy: float = 0.0,
                 setup: str = "") -> Case:
    return Case(name, SPIN, f"""
        OPTIONS = {options}
        {setup}
        {_SIGNAL_SETUP.strip().replace(chr(10), chr(10) + "        ")}
        busy[0] = {busy}
        signal_soon({signum})
        t0 = time.monotonic()
        o = outcome_of(lambda: s.call({function!r}))
        busy[0] = 0.0
        report(**o, seconds=time.monotonic() - t0, after=outcome_of(after).get("result"))
        """, check=_stopped_by(kind))


_TERM = "signal.signal(signal.SIGTERM, lambda n, f: sys.exit(3))"
_ASYNC_SELF = """
import asyncio
async def main():
    async with vudo.AsyncSeance() as session:
        async def h() -> int:
            return await session.invoke("me", "inner")
        await session.summon("me", WASM, imports={("env", "h"): h})
        return await asyncio.wait_for(session.invoke("me", "outer"), 10)
o = outcome_of(lambda: asyncio.run(main()))
report(**o)
os._exit(0)  # a deadlocked worker thread must not turn the report into a hang
"""

CASES = [
    _signal_case("ctrl_c_spinning_limitless", "spin"),
    _signal_case("ctrl_c_host_call_loop", "host_loop"),
    _signal_case("ctrl_c_inside_a_busy_host_function", "once", busy=1.0),
    _signal_case("ctrl_c_sleeping_spirit", "sleep"),
    _signal_case("ctrl_c_spinning_with_limits", "spin",
                 options="{'limits': vudo.Limits(timeout=600, fuel=2**62)}"),
    _signal_case("sigterm_handler_exits_while_spinning", "spin", signum="signal.SIGTERM",
                 kind="SystemExit", setup=_TERM),
    _signal_case("sigterm_handler_exits_in_host_function", "once", signum="signal.SIGTERM",
                 kind="SystemExit", busy=1.0, setup=_TERM),
    _signal_case("sigterm_handler_exits_while_sleeping", "sleep", signum="signal.SIGTERM",
                 kind="SystemExit", setup=_TERM),
    Case("ctrl_c_handler_that_returns_lets_the_spirit_finish", SPIN, """
        OPTIONS = {}
        """ + _SIGNAL_SETUP.replace("\n", "\n        ") + """
        seen = []
        signal.signal(signal.SIGINT, lambda n, f: seen.append(n))
        s2 = vudo.load_spirit(WASM, imports={("env", "tick"): tick})  # wraps the new handler
        busy[0] = 1.0
        signal_soon()
        attempt(lambda: (s2.call("once"), len(seen)))
        """, check=lambda o: o.get("result") == [42, 1]),
    Case("timeout_near_the_recursion_limit", SPIN, """
        s = vudo.load_spirit(WASM, imports={("env", "tick"): lambda x: x + 1},
                             limits=vudo.Limits(timeout=0.2))
        seen = []
        def deep(n):
            if n == 0:
                seen.append(outcome_of(lambda: s.call("spin")))
                return
            deep(n - 1)
        limit = sys.getrecursionlimit()
        for margin in (3, 6, 10, 20, 40):
            deep(limit - margin - 12)
        report(result=sorted({o["raised"][0] for o in seen if "raised" in o}),
               results=[o.get("result") for o in seen])
        """, check=lambda o: set(o["result"]) <= {"SpiritTimeout", "StackExhausted"}
         and o["results"] == [None] * 5),
    Case("async_host_function_invokes_its_own_spirit", """
        (module (import "env" "h" (func $h (result i32)))
          (func (export "outer") (result i32) call $h)
          (func (export "inner") (result i32) i32.const 42))""", _ASYNC_SELF,
         check=lambda o: o.get("result") == 42),  # re-entrant, as a sync host function
    Case("two_spirits_invoke_each_other_from_two_threads", """
        (module (import "env" "other" (func $o (result i32)))
          (func (export "outer") (result i32) call $o)
          (func (export "inner") (result i32) i32.const 7))""", """
        session = vudo.Seance()
        barrier = threading.Barrier(2)
        def other_of(me, peer):
            def other():
                barrier.wait(5)  # both outer calls now hold their own Spirit's lock
                return session.invoke(peer, "inner")
            return other
        session.summon("a", WASM, imports={("env", "other"): other_of("a", "b")})
        session.summon("b", WASM, imports={("env", "other"): other_of("b", "a")})
        out = {}
        threads = [threading.Thread(target=lambda n=n: out.__setitem__(
            n, outcome_of(lambda: session.invoke(n, "outer"))), daemon=True) for n in "ab"]
        for t in threads: t.start()
        for t in threads: t.join(15)
        report(result=out if len(out) == 2 else "deadlocked")
        os._exit(0)
        """, check=lambda o: isinstance(o["result"], dict) and all(
            v.get("result") == 7 or "VudoError" in v.get("raised", [])
            for v in o["result"].values())
         and sorted(v.get("raised", ["ok"])[0] for v in o["result"].values())
         == ["DeadlockError", "ok"]),  # the second waiter is refused, the first completes
    Case("cancelled_async_invoke_frees_the_spirit", SPIN, """
        import asyncio
        async def main():
            async with vudo.AsyncSeance() as session:
                await session.summon("s", WASM, imports={("env", "tick"): lambda x: x + 1})
                task = asyncio.ensure_future(session.invoke("s", "spin"))
                await asyncio.sleep(0.3)
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
                return await asyncio.wait_for(session.invoke("s", "one"), 5)
        report(**outcome_of(lambda: asyncio.run(main())))
        os._exit(0)
        """, check=lambda o: o.get("result") == 1),
    Case("sixteen_thousand_exports_of_one_function",
         "(module (func $f (result i32) i32.const 3) "
         + "".join(f'(export "e{i}" (func $f))' for i in range(16000)) + ")", """
        t0 = time.monotonic()
        s = vudo.load_spirit(WASM)
        seconds = time.monotonic() - t0
        attempt(lambda: (len(s.functions), s.call("e15999")), seconds=seconds)
        """, check=lambda o: o.get("result") == [16000, 3] and o["seconds"] < 5),
]
