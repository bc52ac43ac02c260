;; calculator.wat: the smallest useful Spirit. No imports, no memory: three exported functions
;; on 64-bit integers, the type DOL uses for `Int`.
;;
;;   vudo run example:calculator add 2 3          # 5
;;   vudo run example:calculator multiply 6 7     # 42
;;   vudo run example:calculator divide 7 0       # traps: integer divide by zero (exit code 1)
(module
  ;; add(a, b) -> a + b
  (func (export "add") (param $a i64) (param $b i64) (result i64)
    (i64.add (local.get $a) (local.get $b)))

  ;; multiply(a, b) -> a * b
  (func (export "multiply") (param $a i64) (param $b i64) (result i64)
    (i64.mul (local.get $a) (local.get $b)))

  ;; divide(a, b) -> a / b, rounded towards zero; traps when b is 0
  (func (export "divide") (param $a i64) (param $b i64) (result i64)
    (i64.div_s (local.get $a) (local.get $b))))
