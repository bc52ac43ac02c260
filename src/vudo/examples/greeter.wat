;; greeter.wat: text output and logging through the host ABI.
;;
;; vudo_println writes a line to the host's standard output; vudo_log records a message at a
;; level (DEBUG 0, INFO 1, WARN 2, ERROR 3), which `vudo run` shows on standard error. Strings
;; are passed as (pointer, length) into the exported memory; the data segments place them at
;; 1024, where DOL-compiled Spirits keep their data.
;;
;;   vudo run example:greeter                 # calls main
;;   vudo run example:greeter greet_times 3
(module
  (import "vudo" "vudo_println" (func $println (param i32 i32)))
  (import "vudo" "vudo_log" (func $log (param i32 i32 i32)))

  (memory (export "memory") 1)
  (data (i32.const 1024) "Hello from a Spirit!")   ;; 20 bytes
  (data (i32.const 1056) "greeter is starting")    ;; 19 bytes
  (data (i32.const 1088) "greeter is done")        ;; 15 bytes

  ;; main(): log, greet once, log again.
  (func (export "main")
    (call $log (i32.const 1) (i32.const 1056) (i32.const 19))   ;; INFO
    (call $println (i32.const 1024) (i32.const 20))
    (call $log (i32.const 0) (i32.const 1088) (i32.const 15)))  ;; DEBUG: shown with -v

  ;; greet_times(n) -> n: greet n times and return how many greetings were written.
  (func (export "greet_times") (param $n i32) (result i32)
    (local $i i32)
    (block $done
      (loop $again
        (br_if $done (i32.ge_s (local.get $i) (local.get $n)))
        (call $println (i32.const 1024) (i32.const 20))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $again)))
    (local.get $i)))
