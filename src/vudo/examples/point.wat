;; point.wat: a gene, `Point { x: i64, y: i64 }`, built inside the Spirit.
;;
;; The layout is the default one of host-abi.md: 16 bytes, x at offset 0, y at offset 8,
;; alignment 8. `new_Point` places the gene in the Spirit's own memory with a private bump
;; allocator (a mutable global starting at 1024, as DOL-compiled Spirits do) and returns its
;; address; gene methods are exported as `Point.<method>` and take that address first.
;;
;;   vudo run example:point new_Point 3 4             # the address, e.g. 1024
;;   vudo stubs example:point                         # a typed Protocol: proxy.Point.x(p)
;;
;; From Python:
;;   spirit = vudo.load_spirit(path)
;;   p = spirit.call("new_Point", 3, 4)
;;   spirit.memory.read_gene(p, vudo.gene_layout("Point", [("x", "i64"), ("y", "i64")]))
;;   # {'x': 3, 'y': 4}
(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))

  ;; new_Point(x, y) -> address of a fresh 16-byte Point
  (func (export "new_Point") (param $x i64) (param $y i64) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (local.get $p) (i32.const 16)))
    (i64.store offset=0 (local.get $p) (local.get $x))
    (i64.store offset=8 (local.get $p) (local.get $y))
    (local.get $p))

  ;; Point.x(self) -> x
  (func (export "Point.x") (param $self i32) (result i64)
    (i64.load offset=0 (local.get $self)))

  ;; Point.y(self) -> y
  (func (export "Point.y") (param $self i32) (result i64)
    (i64.load offset=8 (local.get $self)))

  ;; Point.length_squared(self) -> x*x + y*y
  (func (export "Point.length_squared") (param $self i32) (result i64)
    (local $x i64) (local $y i64)
    (local.set $x (i64.load offset=0 (local.get $self)))
    (local.set $y (i64.load offset=8 (local.get $self)))
    (i64.add (i64.mul (local.get $x) (local.get $x)) (i64.mul (local.get $y) (local.get $y))))

  ;; Point.translate(self, dx, dy): moves the point in place
  (func (export "Point.translate") (param $self i32) (param $dx i64) (param $dy i64)
    (i64.store offset=0 (local.get $self)
      (i64.add (i64.load offset=0 (local.get $self)) (local.get $dx)))
    (i64.store offset=8 (local.get $self)
      (i64.add (i64.load offset=8 (local.get $self)) (local.get $dy)))))
