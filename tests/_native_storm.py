"""Driven by test_native.py in a subprocess: calls Spirits in a loop while the parent storms
SIGINT at it, until the file named by argv[1] exists; then checks the Spirits still work.

Exit status 0 with a summary line on stdout. A KeyboardInterrupt escaping as anything else is
an exception exit (1); a crash shows as a negative return code.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys

import vudo

WAT = """
(module
  (import "vudo" "vudo_sleep" (func $sleep (param i32)))
  (import "vudo" "vudo_now" (func $now (result i64)))
  (import "env" "ping" (func $ping (result i32)))
  (memory (export "memory") 1)
  (func (export "spin") (loop $l (br $l)))
  (func (export "host_loop") (param $n i32)
    (loop $l
      (drop (call $ping))
      (drop (call $now))
      (br_if $l (local.tee $n (i32.sub (local.get $n) (i32.const 1))))))
  (func (export "nap") (call $sleep (i32.const 20)))
  (func (export "add") (param i64 i64) (result i64) local.get 0 local.get 1 i64.add)
)
"""

armed = False


def on_sigint(_sig: int, _frame: object) -> None:
    if armed:
        raise KeyboardInterrupt


def main() -> int:
    global armed
    stop = sys.argv[1]
    pings = [0]

    def ping() -> int:
        pings[0] += 1
        return 0

    limited = vudo.load_spirit(WAT, name="limited", imports={"ping": ping},
                               limits=vudo.Limits(timeout=0.02))
    free = vudo.load_spirit(WAT, name="free", imports={"ping": ping})
    steps = [
        lambda: limited.call("spin"),
        lambda: limited.call("host_loop", 1_000_000_000),
        lambda: limited.call("nap"),
        lambda: free.call("host_loop", 2_000),
        lambda: free.call("nap"),
    ]
    interrupts = errors = calls = 0
    signal.signal(signal.SIGINT, on_sigint)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test asks on a hang
    print("ready", flush=True)
    i = 0
    while not os.path.exists(stop):
        # Armed only around the call: the storm must hit vudo, not this loop (3.11+ runs
        # signal handlers only at calls, function entries and backward jumps, so none runs
        # between an `except` and its first statement).
        try:
            armed = True
            steps[i % len(steps)]()
            armed = False
        except KeyboardInterrupt:
            armed = False
            interrupts += 1
        except vudo.VudoError:
            armed = False
            errors += 1  # the limited Spirit's timeouts
        calls += 1
        i += 1
    # Every Spirit is still usable after the storm.
    assert free.call("add", 2, 3) == 5 and limited.call("add", 4, 5) == 9
    before = pings[0]
    free.call("host_loop", 100)
    assert pings[0] == before + 100
    print(f"calls={calls} interrupts={interrupts} errors={errors}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
