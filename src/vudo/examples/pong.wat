;; pong.wat: the other half of ping-pong (see ping.wat and pingpong.toml).
;;
;; `run()` echoes every message waiting in the inbox back to whoever sent it, reading the sender
;; from the block vudo_recv returns:
;;   [sender_len u32][sender bytes][payload_len u32][payload bytes]
;; It sends the payload back unchanged, frees the block, and returns how many it echoed.
(module
  (import "vudo" "vudo_send" (func $send (param i32 i32 i32 i32) (result i32)))
  (import "vudo" "vudo_recv" (func $recv (result i32)))
  (import "vudo" "vudo_free_message" (func $free_message (param i32)))

  (memory (export "memory") 1)
  (global $echoed (mut i32) (i32.const 0))

  ;; run() -> messages echoed by this call
  (func (export "run") (result i32)
    (local $msg i32) (local $sender_len i32) (local $payload i32) (local $count i32)
    (block $empty
      (loop $next
        (local.set $msg (call $recv))
        (br_if $empty (i32.eqz (local.get $msg)))
        (local.set $sender_len (i32.load (local.get $msg)))
        ;; address of payload_len: after the sender_len field and the sender
        (local.set $payload
          (i32.add (i32.add (local.get $msg) (i32.const 4)) (local.get $sender_len)))
        (drop (call $send
          (i32.add (local.get $msg) (i32.const 4)) (local.get $sender_len)   ;; to: the sender
          (i32.add (local.get $payload) (i32.const 4))                       ;; the payload
          (i32.load (local.get $payload))))                                  ;; its length
        (call $free_message (local.get $msg))
        (local.set $count (i32.add (local.get $count) (i32.const 1)))
        (br $next)))
    (global.set $echoed (i32.add (global.get $echoed) (local.get $count)))
    (local.get $count))

  ;; echoed() -> messages echoed since the Spirit was loaded
  (func (export "echoed") (result i32)
    (global.get $echoed)))
