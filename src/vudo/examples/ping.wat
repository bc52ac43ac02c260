;; ping.wat: one half of a ping-pong pair (see pong.wat and pingpong.toml).
;;
;; `start(n)` plays n exchanges with the Spirit called "pong": it sends the first ping, and each
;; call of `step()` takes every reply out of the inbox and sends the next ping until n were sent.
;; A ping's payload is 8 bytes: "ping" followed by its sequence number (u32, little-endian).
;;
;; A received message is one block the host writes into this Spirit's memory:
;;   [sender_len u32][sender bytes][payload_len u32][payload bytes]
;; and is handed back with vudo_free_message once read.
;;
;;   vudo seance example:pingpong
(module
  (import "vudo" "vudo_send" (func $send (param i32 i32 i32 i32) (result i32)))
  (import "vudo" "vudo_recv" (func $recv (result i32)))
  (import "vudo" "vudo_free_message" (func $free_message (param i32)))
  (import "vudo" "vudo_log" (func $log (param i32 i32 i32)))

  ;; No maximum: the host grows the memory to hold received messages.
  (memory (export "memory") 1)
  (data (i32.const 1024) "pong")                 ;; the peer's name, 4 bytes
  (data (i32.const 1032) "ping")                 ;; outgoing payload: "ping" + u32 sequence
  (data (i32.const 1040) "all pongs received")   ;; 18 bytes
  (data (i32.const 1064) "unexpected reply")     ;; 16 bytes
  (data (i32.const 1088) "could not send a ping");; 21 bytes

  (global $wanted (mut i32) (i32.const 0))
  (global $sent (mut i32) (i32.const 0))
  (global $received (mut i32) (i32.const 0))

  ;; Send ping number sent+1 to "pong"; returns vudo_send's result code (0 is Ok).
  (func $send_ping (result i32)
    (local $code i32)
    (i32.store (i32.const 1036) (i32.add (global.get $sent) (i32.const 1)))
    (local.set $code (call $send (i32.const 1024) (i32.const 4) (i32.const 1032) (i32.const 8)))
    (if (i32.eqz (local.get $code))
      (then (global.set $sent (i32.add (global.get $sent) (i32.const 1))))
      (else (call $log (i32.const 3) (i32.const 1088) (i32.const 21))))
    (local.get $code))

  ;; start(n) -> result code of the first send (0 when n is 0)
  (func (export "start") (param $n i32) (result i32)
    (global.set $wanted (local.get $n))
    (global.set $sent (i32.const 0))
    (global.set $received (i32.const 0))
    (if (result i32) (i32.gt_s (local.get $n) (i32.const 0))
      (then (call $send_ping))
      (else (i32.const 0))))

  ;; step() -> replies received so far. Reads every waiting reply, checks that it echoes the
  ;; ping it answers, and sends the next ping while fewer than n were sent.
  (func (export "step") (result i32)
    (local $msg i32) (local $payload i32) (local $len i32)
    (block $empty
      (loop $next
        (local.set $msg (call $recv))
        (br_if $empty (i32.eqz (local.get $msg)))
        ;; payload_len follows the sender; the payload follows payload_len
        (local.set $payload
          (i32.add (i32.add (local.get $msg) (i32.const 4)) (i32.load (local.get $msg))))
        (local.set $len (i32.load (local.get $payload)))
        (local.set $payload (i32.add (local.get $payload) (i32.const 4)))
        (global.set $received (i32.add (global.get $received) (i32.const 1)))
        (if (i32.or
              (i32.ne (local.get $len) (i32.const 8))
              (i32.or
                (i32.ne (i32.load (local.get $payload)) (i32.load (i32.const 1032)))
                (i32.ne (i32.load offset=4 (local.get $payload)) (global.get $received))))
          (then (call $log (i32.const 2) (i32.const 1064) (i32.const 16))))   ;; WARN
        (call $free_message (local.get $msg))
        (if (i32.lt_s (global.get $sent) (global.get $wanted))
          (then (drop (call $send_ping))))
        (if (i32.eq (global.get $received) (global.get $wanted))
          (then (call $log (i32.const 1) (i32.const 1040) (i32.const 18))))   ;; INFO
        (br $next)))
    (global.get $received))

  ;; received() -> replies received so far
  (func (export "received") (result i32)
    (global.get $received))

  ;; done() -> 1 once every ping got its reply, else 0
  (func (export "done") (result i32)
    (i32.ge_s (global.get $received) (global.get $wanted))))
