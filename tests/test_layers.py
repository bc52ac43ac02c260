"""The architecture holds: no import cycle anywhere in ``src/vudo``, small modules, a small
``Spirit``, a lean ``import vudo``, and old import paths that warn."""

from __future__ import annotations

import ast
import subprocess
import sys
import warnings
from pathlib import Path

import grimp
import pytest

import vudo

SRC = Path(vudo.__file__).parent


def _cycles() -> list[list[str]]:
    """Strongly connected components of the module import graph (TYPE_CHECKING included)."""
    graph = grimp.build_graph("vudo", exclude_type_checking_imports=False)
    modules = sorted(graph.modules)
    edges = {m: graph.find_modules_directly_imported_by(m) for m in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(m: str) -> None:  # Tarjan's algorithm
        index[m] = low[m] = len(index)
        stack.append(m)
        on_stack.add(m)
        for n in edges[m]:
            if n == "vudo":  # every submodule implicitly runs the package __init__
                continue
            if n not in index:
                visit(n)
                low[m] = min(low[m], low[n])
            elif n in on_stack:
                low[m] = min(low[m], index[n])
        if low[m] == index[m]:
            component = []
            while True:
                n = stack.pop()
                on_stack.discard(n)
                component.append(n)
                if n == m:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for m in modules:
        if m not in index:
            visit(m)
    return found


def test_no_import_cycles() -> None:
    assert _cycles() == []


def test_modules_stay_small() -> None:
    big = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py")
           if (n := len(p.read_text().splitlines())) > 460}
    assert big == {}


def test_spirit_class_stays_small() -> None:
    tree = ast.parse((SRC / "_spirit" / "spirit.py").read_text())
    [cls] = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Spirit"]
    assert cls.end_lineno is not None and cls.end_lineno - cls.lineno < 300


def test_import_vudo_loads_no_httpx_sqlite_or_nats() -> None:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import vudo"],
        capture_output=True, text=True, check=True,
    ).stderr
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in out.splitlines()}
    assert not imported & {"httpx", "sqlite3", "_sqlite3", "nats"}


def test_nats_broker_is_reachable_lazily_from_the_top_level() -> None:
    pytest.importorskip("nats")
    from vudo.nats import NatsBroker

    assert vudo.NatsBroker is NatsBroker


@pytest.mark.parametrize(("old", "name"), [
    ("vudo.spirit", "load_spirit"), ("vudo.seance", "Seance"), ("vudo.broker", "MessageBus"),
    ("vudo.loa", "LoaContext"), ("vudo.limits", "Limits"), ("vudo.memory", "WasmMemory"),
    ("vudo.effects", "Permissions"), ("vudo", "SpiritTimeout"), ("vudo", "ResultCode"),
])
def test_old_import_paths_work_with_a_deprecation_warning(old: str, name: str) -> None:
    module = __import__(old, fromlist=[name])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = getattr(module, name)
    assert value is not None
    assert any(issubclass(w.category, DeprecationWarning) for w in caught)


def test_the_public_surface_is_small_and_documented() -> None:
    assert len(vudo.__all__) <= 40
    for name in vudo.__all__:
        if name == "__version__":
            continue
        assert getattr(vudo, name).__doc__, name
