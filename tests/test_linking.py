"""Linking is decided once, in the link plan, and ``vudo inspect`` reports that same plan."""

from __future__ import annotations

from pathlib import Path

import pytest
import wasmtime
from conftest import SHARED_SPIRITS

import vudo
from vudo import LoaRegistry, create_loa, i32
from vudo._linking import plan_imports
from vudo.cli.inspection import inspect_module
from vudo.errors import LinkError

EXAMPLES = Path(vudo.__file__).parent / "examples"


def _greeter() -> vudo.Loa:
    def hello(ctx: vudo.HostContext) -> object:
        def fn(x: i32) -> i32:
            return x + 1

        return fn

    return create_loa("greeter", "1.0.0", {"hello": hello})


CASES = {
    "ok": '(module (import "vudo" "vudo_print" (func (param i32 i32))) '
          '(memory (export "memory") 1))',
    "aliases": '''(module (import "loa" "vudo_now" (func (result i64)))
        (import "env" "vudo_random" (func (result f64))))''',
    "variant": '(module (import "vudo" "vudo_error" (func (param i32 i32) (result i32))) '
               '(memory (export "memory") 1))',
    "wrong_signature": '(module (import "vudo" "vudo_now" (func (result i32))))',
    "unknown": '(module (import "vudo" "vudo_teleport" (func)))',
    "wrong_namespace": '(module (import "elsewhere" "vudo_now" (func (result i64))))',
    "global": '(module (import "vudo" "g" (global i32)))',
    "loa_namespace": '(module (import "greeter" "hello" (func (param i32) (result i32))))',
    "core_loa_namespace": '(module (import "vudo" "hello" (func (param i32) (result i32))))',
    "loa_wrong_signature": '(module (import "greeter" "hello" (func (param i64) (result i32))))',
    "memory_import": '(module (import "env" "memory" (memory 1 4)))',
    "memory_wrong_name": '(module (import "env" "mem" (memory 1)))',
    "memory_unbounded": '(module (import "vudo" "memory" (memory 2)))',
    "many": '''(module (import "vudo" "vudo_now" (func (result i64)))
        (import "vudo" "nope" (func)) (import "x" "y" (func))
        (import "vudo" "vudo_sleep" (func (param i64))))''',
}


def _modules(tmp_path: Path) -> list[Path]:
    paths = sorted(EXAMPLES.glob("*.wat"))
    for name, text in CASES.items():
        path = tmp_path / f"{name}.wat"
        path.write_text(text)
        paths.append(path)
    if SHARED_SPIRITS.is_dir():
        paths += sorted(SHARED_SPIRITS.glob("*.wasm"))
    return paths


def _load(path: Path, loas: LoaRegistry) -> set[tuple[str, str]]:
    """The imports loading refuses (empty when it links)."""
    try:
        vudo.load_spirit(path, loas=loas).close()
    except LinkError as exc:
        return {(u.module, u.name) for u in exc.unresolved}
    return set()


@pytest.mark.parametrize("with_loa", [False, True])
def test_inspect_and_loading_agree_on_every_import(tmp_path: Path, with_loa: bool) -> None:
    loas = LoaRegistry([_greeter()]) if with_loa else LoaRegistry()
    for path in _modules(tmp_path):
        report = inspect_module(path, loas)
        refused = _load(path, loas)
        reported = {(i["module"], i["name"]) for i in report["imports"]
                    if i["status"] == "unresolved"}
        assert reported == refused, path.name
        assert report["links"] == (not refused), path.name


def test_loa_functions_are_linked_under_the_loa_name(tmp_path: Path) -> None:
    loas = LoaRegistry([_greeter()])
    path = tmp_path / "m.wat"
    path.write_text('(module (import "greeter" "hello" (func $h (param i32) (result i32)))'
                    ' (func (export "run") (param i32) (result i32) local.get 0 call $h))')
    assert vudo.load_spirit(path, loas=loas).call("run", 41) == 42
    [entry] = inspect_module(path, loas)["imports"]
    assert entry["status"] == "ok" and entry["loa"] == "greeter"


def test_imported_memory_limits_from_options_are_checked_in_the_plan() -> None:
    module = wasmtime.Module(vudo._runtime.engine.get_engine(),
                             wasmtime.wat2wasm('(module (import "env" "memory" (memory 2 4)))'))
    registry = LoaRegistry()
    ok = plan_imports(module, registry, memory=vudo.MemoryOptions(initial=3, maximum=4))
    assert [p.status for p in ok.imports] == ["ok"]
    too_small = plan_imports(module, registry, memory=vudo.MemoryOptions(initial=1))
    assert [p.status for p in too_small.imports] == ["unresolved"]
    with pytest.raises(LinkError, match=r"memory 2\.\.4"):
        too_small.check()


def test_the_plan_is_made_once_per_module_and_registry() -> None:
    module = wasmtime.Module(vudo._runtime.engine.get_engine(),
                             wasmtime.wat2wasm(CASES["aliases"]))
    registry = LoaRegistry()
    first = plan_imports(module, registry)
    assert plan_imports(module, registry) is first
    registry.register(_greeter())  # a change of the registry invalidates the plan
    assert plan_imports(module, registry) is not first


def test_one_link_error_lists_every_bad_import(tmp_path: Path) -> None:
    path = tmp_path / "many.wat"
    path.write_text(CASES["many"])
    with pytest.raises(LinkError) as info:
        vudo.load_spirit(path)
    assert {(u.module, u.name) for u in info.value.unresolved} == {
        ("vudo", "nope"), ("x", "y"), ("vudo", "vudo_sleep")}
