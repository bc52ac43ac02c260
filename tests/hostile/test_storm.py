"""Slow tier: signal storms. SIGINT every 100-500 us, at random points, while a Spirit sleeps,
fails an assertion, spins, or calls host functions; many iterations, each process bounded.

The process must survive every storm (no signal exit, no hang), each interrupted call must
end in ``KeyboardInterrupt`` or its own documented outcome, and the Spirit must stay usable.
Run with ``pytest -m slow`` (``.ci/run`` does).
"""

from __future__ import annotations

import pytest
from harness import Case, run_case, verdict

STORM_WAT = """(module
  (import "env" "tick" (func $tick (param i32) (result i32)))
  (import "vudo" "vudo_sleep" (func $sleep (param i32)))
  (import "vudo" "vudo_assert" (func $assert (param i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "storm")
  (func (export "spin") (loop $l br $l))
  (func (export "host_loop") (local i32)
    (loop $l (local.set 0 (call $tick (local.get 0))) br $l))
  (func (export "sleep") (call $sleep (i32.const 3000000)))  ;; 50 min: under max_sleep
  (func (export "assert_loop") (local i32)
    (loop $l (call $assert (i32.const 1) (i32.const 0) (i32.const 5))
      (local.set 0 (i32.add (local.get 0) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get 0) (i32.const 200000))))
    (call $assert (i32.const 0) (i32.const 0) (i32.const 5)))
  (func (export "one") (result i32) i32.const 1))"""

STORM_DRIVER = """
import random
random.seed({seed})
s = vudo.load_spirit(WASM, imports={{("env", "tick"): lambda x: x + 1}}, **{options})
storm, stop = [False], [False]
def killer():
    pid = os.getpid()
    while not stop[0]:
        if storm[0]:
            os.kill(pid, signal.SIGINT)
            time.sleep(random.uniform(0.0001, 0.0005))
        else:
            time.sleep(0.001)
threading.Thread(target=killer, daemon=True).start()

def quietly(fn):
    # Run fn with the storm off; a late SIGINT of the last storm may still land: retry.
    for _ in range(1000):
        try:
            storm[0] = False
            time.sleep(0.005)
            return fn()
        except KeyboardInterrupt:
            continue
    raise RuntimeError("the storm never ended")

kinds = {{}}
for i in range({iterations}):
    try:
        storm[0] = True
        s.call({function!r})
        kind = "returned"
    except KeyboardInterrupt:
        kind = "KeyboardInterrupt"
    except vudo.VudoError as exc:
        kind = type(exc).__name__
    quietly(lambda: None)
    kinds[kind] = kinds.get(kind, 0) + 1
stop[0] = True
report(result=kinds, after=quietly(lambda: s.call("one")))
"""

#: What each function may end with, besides KeyboardInterrupt.
ALLOWED = {
    "spin": set(), "host_loop": set(), "sleep": set(),
    "assert_loop": {"SpiritAssertionError"},
}


def storm_case(function: str, *, limits: bool, iterations: int = 60, seed: int = 0) -> Case:
    options = "{'limits': vudo.Limits(timeout=600)}" if limits else "{}"
    allowed = {"KeyboardInterrupt"} | ALLOWED[function]
    return Case(
        f"storm_{function}{'_limited' if limits else ''}", STORM_WAT,
        STORM_DRIVER.format(seed=seed, options=options, iterations=iterations,
                            function=function),
        check=lambda o: set(o["result"]) <= allowed and o["after"] == 1
        and o["result"].get("KeyboardInterrupt", 0) > 0,
        bound=240,
    )


STORMS = [storm_case(f, limits=lim, seed=i)
          for i, (f, lim) in enumerate((f, lim) for f in ALLOWED for lim in (False, True))]


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("case", STORMS, ids=[c.name for c in STORMS])
def test_signal_storm(case: Case) -> None:
    run = run_case(case)
    problem = verdict(case, run)
    assert problem is None, f"{case.name}: {problem}\n{run.describe()}"
