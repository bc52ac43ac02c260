"""WAT Spirits and small helpers shared by the Séance, bus and concurrency tests.

The Spirits are written here in WAT against the host ABI (``host-abi.md``), so the tests
exercise the real host functions through real WebAssembly.
"""

from __future__ import annotations

import struct
from typing import Any

import vudo

#: Where the host writes a target name / a payload inside a MESSENGER's own memory.
NAME_AT = 256
PAYLOAD_AT = 4096

#: A Spirit exposing the messaging, effect and debug host functions as exports, plus an echo
#: server and a drain loop written in wasm.
MESSENGER = r"""
(module
  (import "vudo" "vudo_send" (func $send (param i32 i32 i32 i32) (result i32)))
  (import "vudo" "vudo_recv" (func $recv (result i32)))
  (import "vudo" "vudo_pending" (func $pending (result i32)))
  (import "vudo" "vudo_broadcast" (func $broadcast (param i32 i32) (result i32)))
  (import "vudo" "vudo_free_message" (func $free_message (param i32)))
  (import "vudo" "vudo_subscribe" (func $subscribe (param i32 i32) (result i32)))
  (import "vudo" "vudo_emit_effect" (func $emit (param i32 i32 i32) (result i32)))
  (import "vudo" "vudo_panic" (func $panic (param i32 i32)))
  (import "vudo" "vudo_sleep" (func $sleep (param i32)))
  (import "vudo" "vudo_now" (func $now (result i64)))
  (memory (export "memory") 1)
  (func (export "send") (param i32 i32 i32 i32) (result i32)
    (call $send (local.get 0) (local.get 1) (local.get 2) (local.get 3)))
  (func (export "recv") (result i32) (call $recv))
  (func (export "pending") (result i32) (call $pending))
  (func (export "broadcast") (param i32 i32) (result i32)
    (call $broadcast (local.get 0) (local.get 1)))
  (func (export "free_message") (param i32) (call $free_message (local.get 0)))
  (func (export "subscribe") (param i32 i32) (result i32)
    (call $subscribe (local.get 0) (local.get 1)))
  (func (export "emit") (param i32 i32 i32) (result i32)
    (call $emit (local.get 0) (local.get 1) (local.get 2)))
  (func (export "panic") (param i32 i32) (call $panic (local.get 0) (local.get 1)))
  (func (export "trap") (unreachable))
  (func (export "add") (param i32 i32) (result i32) (i32.add (local.get 0) (local.get 1)))
  ;; sleep, then report the clock
  (func (export "nap") (param i32) (result i64) (call $sleep (local.get 0)) (call $now))
  (func (export "spin") (param i64) (result i64) (local $i i64)
    (block $done (loop $l
      (br_if $done (i64.ge_u (local.get $i) (local.get 0)))
      (local.set $i (i64.add (local.get $i) (i64.const 1)))
      (br $l)))
    (local.get $i))
  ;; Take the oldest message and send its payload back to its sender.
  ;; Returns 1 when the inbox is empty, else vudo_send's result code.
  (func (export "echo") (result i32) (local $m i32) (local $n i32) (local $code i32)
    (local.set $m (call $recv))
    (if (i32.eqz (local.get $m)) (then (return (i32.const 1))))
    (local.set $n (i32.load (local.get $m)))
    (local.set $code (call $send
      (i32.add (local.get $m) (i32.const 4)) (local.get $n)
      (i32.add (i32.add (local.get $m) (i32.const 8)) (local.get $n))
      (i32.load (i32.add (i32.add (local.get $m) (i32.const 4)) (local.get $n)))))
    (call $free_message (local.get $m))
    (local.get $code))
  ;; Receive and free every waiting message; return how many.
  (func (export "drain") (result i32) (local $m i32) (local $count i32)
    (block $done (loop $l
      (local.set $m (call $recv))
      (br_if $done (i32.eqz (local.get $m)))
      (call $free_message (local.get $m))
      (local.set $count (i32.add (local.get $count) (i32.const 1)))
      (br $l)))
    (local.get $count))
  ;; Receive and free every waiting message whose payload is a u32 sequence number; check
  ;; that they arrive in order (the next expected number lives at address 64). Returns how
  ;; many were taken, or -1 at the first one out of order.
  (func (export "drain_in_order") (result i32) (local $m i32) (local $count i32) (local $n i32)
    (block $done (loop $l
      (local.set $m (call $recv))
      (br_if $done (i32.eqz (local.get $m)))
      (local.set $n (i32.load (local.get $m)))
      (if (i32.ne
            (i32.load (i32.add (i32.add (local.get $m) (i32.const 8)) (local.get $n)))
            (i32.load (i32.const 64)))
        (then (call $free_message (local.get $m)) (return (i32.const -1))))
      (i32.store (i32.const 64) (i32.add (i32.load (i32.const 64)) (i32.const 1)))
      (call $free_message (local.get $m))
      (local.set $count (i32.add (local.get $count) (i32.const 1)))
      (br $l)))
    (local.get $count))
  ;; Send `count` messages to the Spirit named at NAME_AT (length given), each payload the u32
  ;; sequence number starting at the number stored at address 68. Stops at the first refusal.
  ;; Returns how many were sent.
  (func (export "produce") (param $to_len i32) (param $count i32) (result i32) (local $i i32)
    (block $done (loop $l
      (br_if $done (i32.ge_u (local.get $i) (local.get $count)))
      (i32.store (i32.const 72) (i32.load (i32.const 68)))
      (br_if $done (i32.ne
        (call $send (i32.const 256) (local.get $to_len) (i32.const 72) (i32.const 4))
        (i32.const 0)))
      (i32.store (i32.const 68) (i32.add (i32.load (i32.const 68)) (i32.const 1)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l)))
    (local.get $i))
)
"""

#: A Spirit that enters a host function, spins in pure wasm calling ``test.tick(i)`` every
#: 65536 iterations until it returns nonzero, then calls ``test.exit(i)`` and returns ``i``.
SPINNER = r"""
(module
  (import "test" "enter" (func $enter))
  (import "test" "tick" (func $tick (param i64) (result i32)))
  (import "test" "exit" (func $exit (param i64)))
  (func (export "run") (result i64) (local $i i64)
    (call $enter)
    (block $done (loop $l
      (local.set $i (i64.add (local.get $i) (i64.const 1)))
      (if (i64.eqz (i64.and (local.get $i) (i64.const 0xFFFF)))
        (then (br_if $done (call $tick (local.get $i)))))
      (br $l)))
    (call $exit (local.get $i))
    (local.get $i))
)
"""

#: A Spirit whose start function calls ``test.started`` (which may block), then does nothing.
SLOW_START = r"""
(module
  (import "test" "started" (func $started))
  (func $start (call $started))
  (start $start)
  (func (export "f") (result i32) (i32.const 1))
)
"""


def put(spirit: vudo.Spirit, at: int, data: bytes | str) -> int:
    """Write ``data`` into the Spirit's memory at ``at``; return its length."""
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    spirit.memory.write_bytes(at, raw)
    return len(raw)


def wasm_send(seance: Any, sender: str, to: str, payload: bytes) -> int:
    """Make the MESSENGER ``sender`` call ``vudo_send(to, payload)`` from inside wasm."""
    spirit = seance.get_spirit(sender)
    to_len = put(spirit, NAME_AT, to)
    length = put(spirit, PAYLOAD_AT, payload)
    return int(spirit.call("send", NAME_AT, to_len, PAYLOAD_AT, length))


def read_message(spirit: vudo.Spirit, ptr: int) -> tuple[str, bytes]:
    """Decode a ``vudo_recv`` block ``[sender_len u32][sender][payload_len u32][payload]``."""
    mem = spirit.memory
    n = mem.read_u32(ptr)
    sender = mem.read_bytes(ptr + 4, n).decode("utf-8")
    length = mem.read_u32(ptr + 4 + n)
    return sender, mem.read_bytes(ptr + 8 + n, length)


def wasm_take(spirit: vudo.Spirit) -> tuple[str, bytes] | None:
    """``vudo_recv`` from inside wasm, decode the block, ``vudo_free_message`` it."""
    ptr = spirit.call("recv")
    if ptr == 0:
        return None
    try:
        return read_message(spirit, ptr)
    finally:
        spirit.call("free_message", ptr)


def spawn_payload(name: str, ref: str) -> bytes:
    """The SPAWN effect payload ``[name_len u32][name][module ref]``."""
    raw = name.encode("utf-8")
    return struct.pack("<I", len(raw)) + raw + ref.encode("utf-8")


def emit(spirit: vudo.Spirit, effect_id: int, payload: bytes) -> int:
    """Make a MESSENGER emit an effect from inside wasm; return the result code."""
    length = put(spirit, PAYLOAD_AT, payload)
    return int(spirit.call("emit", int(effect_id), PAYLOAD_AT, length))
