"""Driven by test_native_messaging.py in a subprocess: Spirits exchange messages through the
C messaging/heap host functions in a wasm loop while the parent storms SIGINT at it, until the
file named by argv[1] exists; then checks nothing was lost and the Spirits still work.

Exit status 0 with a summary line on stdout; a crash shows as a negative return code.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys

import vudo
from vudo._runtime import cnative

WAT = """
(module
  (import "vudo" "vudo_send" (func $send (param i32 i32 i32 i32) (result i32)))
  (import "vudo" "vudo_recv" (func $recv (result i32)))
  (import "vudo" "vudo_pending" (func $pending (result i32)))
  (import "vudo" "vudo_free_message" (func $free_message (param i32)))
  (import "vudo" "vudo_alloc" (func $alloc (param i32) (result i32)))
  (import "vudo" "vudo_free" (func $free (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "peer")
  ;; send n messages to "peer" (which hooks run on) and take and free what is waiting here,
  ;; allocating and freeing a block that makes the heap grow now and then
  (func (export "churn") (param $n i32) (result i32) (local $m i32) (local $got i32)
    (loop $l
      (drop (call $send (i32.const 16) (i32.const 4) (i32.const 64) (i32.const 64)))
      (local.set $m (call $recv))
      (if (local.get $m) (then
        (call $free_message (local.get $m))
        (local.set $got (i32.add (local.get $got) (i32.const 1)))))
      (local.set $m (call $alloc (i32.const 70000)))
      (call $free (local.get $m) (i32.const 70000))
      (drop (call $pending))
      (br_if $l (local.tee $n (i32.sub (local.get $n) (i32.const 1)))))
    (local.get $got))
)
"""

armed = False


def on_sigint(_sig: int, _frame: object) -> None:
    if armed:
        raise KeyboardInterrupt


def main() -> int:
    global armed
    stop = sys.argv[1]
    seance = vudo.Seance(inbox_capacity=100)
    me = seance.summon("me", WAT)
    peer = seance.summon("peer", WAT)
    assert "vudo_send" in cnative.native_host_functions(me._keepalive)
    hooked = [0]
    seance.messages.on_message("peer", lambda m: hooked.__setitem__(0, hooked[0] + 1))
    interrupts = calls = 0
    signal.signal(signal.SIGINT, on_sigint)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    print("ready", flush=True)
    while not os.path.exists(stop):
        try:
            armed = True
            me.call("churn", 500)
            peer.call("churn", 1)  # drains nothing much: "me" is its peer only by name
            armed = False
        except KeyboardInterrupt:
            armed = False
            interrupts += 1
        seance.messages.clear("peer")
        calls += 1
    # Still usable, and the heap did not leak: every received block was freed.
    seance.messages.clear("peer")
    seance.messages.clear("me")
    assert me.call("churn", 10) == 0
    assert me.memory.allocator.in_use == 0, me.memory.allocator.in_use
    assert seance.pending("peer") == 10 and hooked[0] > 0
    print(f"calls={calls} interrupts={interrupts} hooked={hooked[0]}", flush=True)
    seance.dismiss()
    return 0


if __name__ == "__main__":
    sys.exit(main())
