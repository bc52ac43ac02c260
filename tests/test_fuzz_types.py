"""Fuzz: random valid modules with unusual value types and signatures load or fail cleanly.

Every module is valid WebAssembly (wasmtime compiles it); its imports and exports draw their
params and results from all value types, SIMD and GC references included. Loading must either
work (only types vudo passes) or raise ``LoadError`` naming an unsupported type; calling an
export with well-typed Python values must return or raise a ``VudoError``. Anything else, a
crash above all, fails the property. ``scripts/fuzz.py`` runs this with the ``long`` profile.
"""

from __future__ import annotations

import os

import wasmtime
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vudo
from vudo import LoadError, VudoError

_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile("types", max_examples=60, deadline=None, suppress_health_check=_HEALTH)
settings.register_profile(
    "types-long", max_examples=int(os.environ.get("VUDO_FUZZ_EXAMPLES", "20000")),
    deadline=None, suppress_health_check=_HEALTH,
)
FUZZ = settings.get_profile(
    "types-long" if os.environ.get("HYPOTHESIS_PROFILE") == "long" else "types")

#: Types a result can be produced for with a constant (WAT, its constant instruction).
RESULT_TYPES = {
    "i32": "i32.const 0", "i64": "i64.const 0", "f32": "f32.const 0", "f64": "f64.const 0",
    "v128": "v128.const i64x2 0 0", "funcref": "ref.null func", "externref": "ref.null extern",
    "anyref": "ref.null any", "eqref": "ref.null eq", "i31ref": "ref.null i31",
    "structref": "ref.null struct", "arrayref": "ref.null array", "exnref": "ref.null exn",
    "nullref": "ref.null none", "nullfuncref": "ref.null nofunc",
    "nullexternref": "ref.null noextern", "(ref null $s)": "ref.null $s",
    "(ref null $f)": "ref.null $f", "(ref i31)": "(ref.i31 (i32.const 1))",
}
#: Types that may also appear as params (non-nullable ones cannot be made from Python).
PARAM_TYPES = [*RESULT_TYPES, "(ref func)", "(ref extern)", "(ref $s)", "(ref $f)"]
PASSABLE = {"i32": 0, "i64": 0, "f32": 0.0, "f64": 0.0, "funcref": None, "externref": None}
IMPORTABLE = {"i32", "i64", "f32", "f64"}

signatures = st.tuples(
    st.lists(st.sampled_from(PARAM_TYPES), max_size=4),
    st.lists(st.sampled_from(sorted(RESULT_TYPES)), max_size=3),
)


def _func_type(params: list[str], results: list[str]) -> str:
    p = "".join(f" (param {t})" for t in params)
    r = "".join(f" (result {t})" for t in results)
    return p + r


def module_text(imports: list[tuple[list[str], list[str]]],
                exports: list[tuple[list[str], list[str]]], aliases: int) -> str:
    """A valid module: the imports, exports returning constants, extra names for export 0."""
    parts = ["(module", "(type $s (struct (field i32)))", "(type $f (func))"]
    parts += [f'(import "env" "h{i}" (func $h{i}{_func_type(p, r)}))'
              for i, (p, r) in enumerate(imports)]
    for i, (p, r) in enumerate(exports):
        body = " ".join(RESULT_TYPES[t] for t in r)
        parts.append(f'(func $e{i} (export "e{i}"){_func_type(p, r)} {body})')
    parts += [f'(export "alias{i}" (func $e0))' for i in range(aliases if exports else 0)]
    return " ".join(parts) + ")"


def _host(results: list[str]) -> object:
    values = tuple(PASSABLE.get(t) for t in results)
    return (lambda *_: values) if len(values) > 1 else (lambda *_: values[0] if values else None)


@FUZZ
@given(
    imports=st.lists(signatures, max_size=3),
    exports=st.lists(signatures, min_size=1, max_size=4),
    aliases=st.integers(0, 40),
)
def test_random_signatures_load_or_fail_cleanly(
    imports: list[tuple[list[str], list[str]]], exports: list[tuple[list[str], list[str]]],
    aliases: int,
) -> None:
    wasm = bytes(wasmtime.wat2wasm(module_text(imports, exports, aliases)))
    odd_import = any(t not in IMPORTABLE for p, r in imports for t in (*p, *r))
    odd_export = any(t not in PASSABLE for p, r in exports for t in (*p, *r))
    host = {("env", f"h{i}"): _host(r) for i, (_, r) in enumerate(imports)}
    try:
        spirit = vudo.load_spirit(wasm, imports=host)
    except LoadError as exc:
        assert odd_import or odd_export, exc
        assert "unsupported value type" in exc.cause
        return
    assert not (odd_import or odd_export)
    with spirit:
        assert len(spirit.functions) == len(exports) + aliases
        for i, (params, results) in enumerate(exports):
            try:
                value = spirit.call(f"e{i}", *(PASSABLE[t] for t in params))
            except VudoError:
                continue
            expected = [PASSABLE[t] for t in results]
            got = [] if value is None and not results else (
                list(value) if len(results) > 1 else [value])
            assert got == expected
            if params:  # a value of the wrong kind is a TypeError, never a crash
                wrong = ["x" if PASSABLE[t] is None else None for t in params]
                try:
                    spirit.call(f"e{i}", *wrong)
                except TypeError:
                    pass
                else:
                    raise AssertionError(f"e{i} accepted {wrong!r}")
