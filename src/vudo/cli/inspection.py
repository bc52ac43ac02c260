"""``vudo inspect``: what a Spirit imports and exports, and whether this host can link it.

Nothing is instantiated: the module is compiled (through the compile cache) and its imports are
resolved into the same link plan loading uses (:func:`vudo._linking.plan_imports`), so the report
and loading cannot disagree. Data segments and internal memories are read from the binary.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import click
import wasmtime
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .._host import LoaRegistry
from .._linking import PlannedImport, extern_kind, plan_imports
from .._memory import PAGE_SIZE
from .._memory.guest_alloc import (
    HOST_PAGES,
    export_signatures,
    memory_warning,
    recognised_allocator,
)
from .._runtime.core import core_status, core_summary
from .._runtime.wasmcode import grows_memory
from .._runtime.wasmscan import ModuleShape, ScanError, scan
from ..abi import HOST_FUNCTIONS_BY_NAME
from ._args import format_signature, func_signature
from ._options import Settings, common_options
from ._output import dump_json, json_errors, print_rich
from ._sources import read_module, resolve_source

__all__ = ["inspect_command", "inspect_module", "plan_entry"]

# Host functions that read or write the Spirit's memory (they need one to work).
_MEMORY_USERS = {"vudo_alloc", "vudo_realloc", "vudo_recv"}


# ------------------------------------------------------------------------------------------
# Checking imports
# ------------------------------------------------------------------------------------------
def _limits(minimum: int, maximum: int | None) -> dict[str, Any]:
    return {
        "min_pages": minimum,
        "max_pages": maximum,
        "min_bytes": minimum * PAGE_SIZE,
        "max_bytes": None if maximum is None else maximum * PAGE_SIZE,
    }


def _type_text(ty: Any) -> str:
    if isinstance(ty, wasmtime.FuncType):
        return format_signature(*func_signature(ty))
    if isinstance(ty, wasmtime.MemoryType):
        lim = ty.limits
        return f"memory {lim.min}{'+' if lim.max is None else f'..{lim.max}'} pages"
    if isinstance(ty, wasmtime.GlobalType):
        return f"global {'mut ' if ty.mutable else ''}{ty.content}"
    if isinstance(ty, wasmtime.TableType):
        lim = ty.limits
        return f"table {ty.element} {lim.min}{'+' if lim.max is None else f'..{lim.max}'}"
    return extern_kind(ty)


def plan_entry(planned: PlannedImport, ty: Any) -> dict[str, Any]:
    """One import of the link plan as a JSON-ready dict.

    Keys: ``module``, ``name``, ``kind``, ``type``, ``host_function`` (served by a Loa
    function), ``loa`` (its group, or the Loa's name), ``status`` (``ok``, ``variant`` or
    ``unresolved``), ``detail``, and for functions ``params``, ``results`` and ``offered``.
    The decisions are the loader's own (:func:`vudo._linking.plan_imports`).
    """
    entry: dict[str, Any] = {
        "module": planned.module, "name": planned.name, "kind": planned.kind,
        "type": _type_text(ty), "host_function": planned.host is not None,
        "loa": planned.loa, "status": planned.status, "detail": planned.detail,
    }
    if planned.kind == "func":
        entry["params"], entry["results"] = list(planned.params), list(planned.results)
        if planned.offered is not None:
            entry["offered"] = planned.offered
    return entry


def inspect_module(path: Path, loas: LoaRegistry | None = None) -> dict[str, Any]:
    """The full report on a module, as a JSON-ready dict (never instantiates it)."""
    wasm, module = read_module(path)
    plan = plan_imports(module, loas if loas is not None else LoaRegistry(), source=str(path))
    imports = [plan_entry(p, i.type) for p, i in zip(plan.imports, module.imports, strict=True)]
    exports: list[dict[str, Any]] = []
    memories: list[dict[str, Any]] = []
    for e in module.exports:
        item: dict[str, Any] = {
            "name": e.name, "kind": extern_kind(e.type), "type": _type_text(e.type),
        }
        if isinstance(e.type, wasmtime.FuncType):
            params, results = func_signature(e.type)
            item["params"], item["results"] = list(params), list(results)
            item["signature"] = format_signature(params, results)
        exports.append(item)
        if isinstance(e.type, wasmtime.MemoryType):
            memories.append({"origin": "exported", "name": e.name,
                             **_limits(e.type.limits.min, e.type.limits.max)})
    for i in module.imports:
        if isinstance(i.type, wasmtime.MemoryType):
            memories.append({"origin": "imported", "name": f"{i.module}.{i.name}",
                             **_limits(i.type.limits.min, i.type.limits.max)})
    try:
        shape = scan(wasm, data=True)
    except ScanError:  # an encoding the reader does not know: leave the extras out
        shape = ModuleShape()
    exported_count = sum(1 for m in memories if m["origin"] == "exported")
    defined = shape.memories[shape.imported_memories:]
    for minimum, maximum in defined[exported_count:]:
        memories.append({"origin": "internal", "name": None,
                         **_limits(minimum // PAGE_SIZE,
                                   None if maximum is None else maximum // PAGE_SIZE)})

    unresolved = [i for i in imports if i["status"] == "unresolved"]
    needed = sorted({i["loa"] for i in imports if i["loa"]})
    warnings: list[str] = []
    visible = [m for m in memories if m["origin"] != "internal"]
    users = [i["name"] for i in imports if i["host_function"] and _uses_memory(i["name"])]
    if users and not visible:
        warnings.append(
            f"imports {', '.join(users)}, which use(s) the Spirit's memory, but exports no "
            "memory: those calls will trap"
        )
    # The host allocator (host-abi.md, "Memory owned by the host") and the strategy-3 risk.
    signatures = export_signatures(module)
    risk = memory_warning(path.stem, grows_memory(wasm), signatures) if visible else None
    if risk is not None:
        warnings.append(risk)
    return {
        "source": str(path),
        "host_allocator": recognised_allocator(signatures) or HOST_PAGES,
        "size": len(wasm),
        "sha256": hashlib.sha256(wasm).hexdigest(),
        "links": not unresolved,
        "unresolved": len(unresolved),
        "loas": needed,
        "imports": imports,
        "exports": exports,
        "memories": memories,
        "data": {"segments": shape.data_segments, "bytes": shape.data_bytes},
        "warnings": warnings,
        "core": core_status(),
    }


def _uses_memory(name: str) -> bool:
    spec = HOST_FUNCTIONS_BY_NAME.get(name)
    if spec is None:
        return False
    return name in _MEMORY_USERS or any(p.endswith("ptr") for p, _ in spec.params)


# ------------------------------------------------------------------------------------------
# Rendering
# ------------------------------------------------------------------------------------------
def _bytes(n: int | None) -> str:
    if n is None:
        return "unbounded"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


def _render(report: dict[str, Any], console: Console) -> None:
    head = Text()
    head.append(report["source"], style="bold")
    head.append(f"  {report['size']} bytes, sha256 {report['sha256'][:16]}")
    console.print(head)
    if report["links"]:
        console.print(Text("links: yes, the host satisfies every import", style="green"))
    else:
        console.print(Text(
            f"links: NO, {report['unresolved']} import(s) the host cannot satisfy", style="bold red"
        ))
    console.print(Text(f"Loas needed: {', '.join(report['loas']) or '(none)'}"))
    console.print(Text(f"host allocator: {report['host_allocator']}"))
    console.print(Text(core_summary()))
    for warning in report["warnings"]:
        console.print(Text(f"warning: {warning}", style="yellow"))

    imports = Table(show_edge=False)
    for column in ("module", "name", "type", "host"):
        imports.add_column(column)
    styles = {"ok": "green", "variant": "yellow", "unresolved": "bold red"}
    for i in report["imports"]:
        label = {"ok": "ok", "variant": "ok (variant)", "unresolved": "UNRESOLVED"}[i["status"]]
        host = Text(label, style=styles[i["status"]])
        if i["detail"]:
            host.append(f": {i['detail']}", style="default")
        imports.add_row(Text(i["module"]), Text(i["name"]), Text(i["type"]), host)
    console.print()
    if report["imports"]:
        console.print(Text("Imports", style="bold"))
        console.print(imports)
    else:
        console.print(Text("Imports: none"))

    exports = Table(show_edge=False)
    for column in ("name", "kind", "type"):
        exports.add_column(column)
    for e in report["exports"]:
        exports.add_row(Text(e["name"]), Text(e["kind"]), Text(e.get("signature", e["type"])))
    console.print()
    if report["exports"]:
        console.print(Text("Exports", style="bold"))
        console.print(exports)
    else:
        console.print(Text("Exports: none"))

    console.print()
    if not report["memories"]:
        console.print(Text("Memory: none"))
    for m in report["memories"]:
        where = m["origin"] + (f" as {m['name']!r}" if m["name"] else " (not exported)")
        maximum = "no maximum" if m["max_pages"] is None else \
            f"max {m['max_pages']} pages ({_bytes(m['max_bytes'])})"
        console.print(Text(
            f"Memory: {where}, {m['min_pages']} pages ({_bytes(m['min_bytes'])}) initially, "
            f"{maximum}"
        ))
    data = report["data"]
    console.print(Text(f"Data: {data['segments']} segment(s), {data['bytes']} bytes"))


@click.command("inspect", short_help="Show imports, exports, memory; check that it links.")
@click.argument("spirit", metavar="SPIRIT")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@common_options
@click.pass_context
def inspect_command(ctx: click.Context, spirit: str, as_json: bool) -> None:
    """Show what SPIRIT imports and exports, and whether this host can link it.

    SPIRIT is a .wasm file, a .wat file or example:NAME. The module is compiled, never run.
    Imports are checked against the host ABI: which are vudo host functions (and of which Loa),
    under which namespace, and which the host cannot satisfy. Also shown: exports with their
    signatures, memory and its limits, data size, and the Loas the Spirit needs.

    Exit codes: 0 the Spirit links; 1 some import cannot be satisfied; 2 usage error.
    """
    ctx.ensure_object(Settings)
    with json_errors(as_json, "inspect"):
        report = inspect_module(resolve_source(spirit))
    if as_json:
        click.echo(dump_json({"command": "inspect", "ok": report["links"], **report,
                              "error": None}))
    else:
        print_rich(lambda console: _render(report, console))
    if not report["links"]:
        ctx.exit(1)
