"""``vudo stubs``: a typed Python interface (a ``typing.Protocol``) for a Spirit's exports.

The generated module type-checks under ``mypy --strict`` and is used as
``spirit.as_(Calculator).add(1, 2)``. Gene methods exported as ``Gene.method`` become a nested
Protocol reached through a read-only property (``proxy.Counter.increment(p)``), which is how
:class:`vudo.SpiritProxy` exposes them. Exports whose names cannot be Python attributes get a
typed module-level function with a sanitized name instead.
"""

from __future__ import annotations

import builtins
import keyword
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import click
import wasmtime

from ._args import format_signature, func_signature
from ._errors import UsageFailure
from ._options import Settings, common_options
from ._output import dump_json, json_errors
from ._sources import read_module, resolve_source

__all__ = ["generate_stubs", "stubs_command"]

_PY_TYPES = {"i32": "int", "i64": "int", "f32": "float", "f64": "float"}
_SHADOWS = {"int", "float", "tuple", "property", "object"}


@dataclass(slots=True)
class _Func:
    export: str
    params: tuple[str, ...]
    results: tuple[str, ...]


@dataclass(slots=True)
class _Group:
    path: tuple[str, ...]
    methods: dict[str, _Func] = field(default_factory=dict)
    groups: dict[str, _Group] = field(default_factory=dict)
    class_name: str = ""

    def all_functions(self) -> list[_Func]:
        out = list(self.methods.values())
        for g in self.groups.values():
            out += g.all_functions()
        return out


def _attribute_ok(part: str) -> bool:
    """Whether ``part`` can be written as ``proxy.<part>`` and declared in a class body."""
    return part.isidentifier() and not keyword.iskeyword(part) and not part.startswith("__")


def _sanitize(name: str) -> str:
    text = re.sub(r"\W", "_", name).strip("_") or "export"
    if text[0].isdigit():
        text = "_" + text
    if keyword.iskeyword(text):
        text += "_"
    return text


class _Names:
    """Module-level names, kept unique (and, where asked, clear of the exports' names)."""

    def __init__(self, taken: set[str]) -> None:
        self.taken = taken
        self.used = {"annotations", "TYPE_CHECKING", "Any", "Protocol", "cast", "Spirit",
                     "builtins"}

    def claim(self, wanted: str, *, avoid_exports: bool = False) -> str:
        """A fresh module-level name; ``avoid_exports`` for names used inside class bodies,
        where a member of the same name would shadow them."""
        if wanted in dir(builtins):
            wanted += "_"
        name, n = wanted, 2
        while name in self.used or (avoid_exports and name in self.taken):
            name = f"{wanted}_{n}"
            n += 1
        self.used.add(name)
        return name


def _doc(text: str) -> str:
    """``text`` made safe inside a triple-quoted docstring."""
    return repr(text)[1:-1].replace('"', '\\"')


def _camel(text: str) -> str:
    parts = [p for p in re.split(r"[^0-9A-Za-z]+", text) if p]
    name = "".join(p[:1].upper() + p[1:] for p in parts) or "Spirit"
    return "_" + name if name[0].isdigit() else name


class _Writer:
    def __init__(self, t: dict[str, str]) -> None:
        self.t = t  # Python type names, possibly qualified with builtins
        self.uses_any = False

    def py(self, wasm_type: str) -> str:
        name = _PY_TYPES.get(wasm_type)
        if name is None:
            self.uses_any = True
            return "Any"
        return self.t[name]

    def result(self, results: tuple[str, ...]) -> str:
        if not results:
            return "None"
        if len(results) == 1:
            return self.py(results[0])
        return f"{self.t['tuple']}[{', '.join(self.py(r) for r in results)}]"

    def params(self, params: tuple[str, ...], first: str) -> str:
        items = [first] + [f"a{i}: {self.py(p)}" for i, p in enumerate(params)]
        if params:
            items.append("/")
        return ", ".join(items)


def generate_stubs(module: wasmtime.Module, *, class_name: str, source: str) -> str:
    """The text of a Python module declaring ``class_name`` for the exports of ``module``."""
    funcs: list[_Func] = []
    others: list[str] = []
    for e in module.exports:
        if isinstance(e.type, wasmtime.FuncType):
            funcs.append(_Func(e.name, *func_signature(e.type)))
        else:
            kind = type(e.type).__name__.replace("Type", "").lower()
            others.append(f"{kind} {e.name!r}")

    taken = {part for f in funcs for part in f.export.split(".")}
    names = _Names(taken)
    outer = names.claim(class_name)
    root = _Group(())
    helpers: list[tuple[_Func, str]] = []
    for f in funcs:
        parts = f.export.split(".")
        if not all(_attribute_ok(p) for p in parts):
            helpers.append((f, "is not a Python identifier"))
            continue
        node = root
        for p in parts[:-1]:
            node = node.groups.setdefault(p, _Group((*node.path, p)))
        node.methods[parts[-1]] = f

    # A group whose name is also an export is unreachable (proxy.<name> is that function).
    def prune(node: _Group) -> None:
        for gname in list(node.groups):
            group = node.groups[gname]
            if gname in node.methods:
                shadow = ".".join((*node.path, gname))
                helpers.extend((f, f"is shadowed by the export {shadow!r}")
                               for f in group.all_functions())
                del node.groups[gname]
            else:
                prune(group)

    prune(root)

    groups: list[_Group] = []

    def collect(node: _Group) -> None:
        for group in node.groups.values():
            group.class_name = names.claim(
                "".join(_camel(p) for p in group.path) + "Methods", avoid_exports=True
            )
            groups.append(group)
            collect(group)

    collect(root)
    helper_names = [(f, why, names.claim(_sanitize(f.export))) for f, why in helpers]
    bind_name = names.claim("bind")

    qualify = bool(taken & (_SHADOWS | {"builtins"}))
    alias = "builtins"
    if "builtins" in taken:
        alias = "_builtins"
        while alias in taken:
            alias = "_" + alias
    prefix = f"{alias}." if qualify else ""
    w = _Writer({t: prefix + t for t in ("int", "float", "tuple", "property")})

    def render_class(node: _Group, cname: str, doc: str) -> list[str]:
        lines = [f"class {cname}(Protocol):", f'    """{doc}"""', ""]
        for gname, group in node.groups.items():
            full = ".".join((*group.path, ""))
            lines += [
                f"    @{w.t['property']}",
                f"    def {gname}(self) -> {group.class_name}:",
                f'        """The exports ``{_doc(full)}*``: '
                f'``proxy.{".".join(group.path)}.<method>``."""',
                "        ...",
                "",
            ]
        for mname, f in node.methods.items():
            lines += [
                f"    def {mname}({w.params(f.params, 'self')}) -> {w.result(f.results)}:",
                f'        """``{_doc(f.export)}{format_signature(f.params, f.results)}``"""',
                "        ...",
                "",
            ]
        if node is root:
            for f, why, hname in helper_names:
                lines.append(f"    # {f.export!r} {why}: call it with {hname}(spirit, ...) below")
            if helper_names:
                lines.append("")
        return lines

    body: list[str] = []
    for group in reversed(groups):
        body += render_class(group, group.class_name,
                             f"Methods of ``{'.'.join(group.path)}`` (exported as "
                             f"``{'.'.join(group.path)}.<method>``).")
        body.append("")
    body += render_class(root, outer, f"The exports of ``{_doc(source)}``.")
    body.append("")
    for f, why, hname in helper_names:
        args = ", ".join(f"a{i}" for i in range(len(f.params)))
        call = f"spirit.call({f.export!r}{', ' if args else ''}{args})"
        body += [
            "",
            f"# The export {f.export!r} {why}; sanitized to {hname}.",
            f"def {hname}({w.params(f.params, 'spirit: Spirit')}) -> {w.result(f.results)}:",
            f'    """Call the export ``{_doc(f.export)}'
            f'{format_signature(f.params, f.results)}``."""',
        ]
        if f.results:
            body.append(f"    return cast({w.result(f.results)!r}, {call})")
        else:
            body.append(f"    {call}")
        body.append("")
    body += [
        "",
        f"def {bind_name}(spirit: Spirit) -> {outer}:",
        f'    """``spirit.as_({outer})``, typed as ``{outer}``: checks now that every method is',
        '    exported."""',
        "    protocol: Any = " + outer,
        f"    return cast({outer!r}, spirit.as_(protocol))",
    ]

    example = _example(root, outer)
    header = [
        f'"""Typed interface of the Spirit ``{_doc(source)}``, generated by ``vudo stubs``.',
        "",
        "Usage::",
        "",
        "    import vudo",
        "",
        f"    spirit = vudo.load_spirit({_doc(repr(source))})",
        f"    proxy = spirit.as_({outer})  # or {bind_name}(spirit)",
        *([f"    {example}"] if example else []),
        "",
        "Regenerate this file rather than editing it.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
    ]
    if qualify:
        header.append(f"import builtins{'' if alias == 'builtins' else ' as ' + alias}")
    typing_names = ["TYPE_CHECKING", "Any", "Protocol", "cast"]
    header += [
        f"from typing import {', '.join(typing_names)}",
        "",
        "if TYPE_CHECKING:",
        "    from vudo import Spirit",
        "",
    ]
    if others:
        header += [f"# Other exports: {', '.join(others)}.", ""]
    header.append("")
    text = "\n".join(header + body).rstrip("\n") + "\n"
    return re.sub(r"\n{4,}", "\n\n\n", text)


def _example(root: _Group, outer: str) -> str:
    node, path = root, ["proxy"]
    while not node.methods and node.groups:
        gname, node = next(iter(node.groups.items()))
        path.append(gname)
    if not node.methods:
        return ""
    mname, f = next(iter(node.methods.items()))
    args = ", ".join("0" if _PY_TYPES.get(p) == "int" else "0.0" for p in f.params)
    return f"{'.'.join(path)}.{mname}({args})"


@click.command("stubs", short_help="Write a typed Python Protocol for a Spirit.")
@click.argument("spirit", metavar="SPIRIT")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Write the module to FILE (default: stdout); missing folders are created.")
@click.option("--name", "class_name", metavar="NAME",
              help="Name of the Protocol class (default: from the file name, e.g. Counter).")
@click.option("--check", is_flag=True,
              help="Write nothing; exit 1 unless FILE (-o) holds exactly what would be written.")
@click.option("--json", "as_json", is_flag=True, help="With --check: print the verdict as JSON.")
@common_options
@click.pass_context
def stubs_command(
    ctx: click.Context, spirit: str, output: Path | None, class_name: str | None,
    check: bool, as_json: bool,
) -> None:
    """Write a typed Python interface for SPIRIT's exports.

    The module declares a typing.Protocol with one method per exported function (i32/i64 ->
    int, f32/f64 -> float, several results -> tuple[...]). Gene methods such as
    Counter.increment are grouped in a nested Protocol reached as proxy.Counter.increment.
    Names that are not Python identifiers are sanitized into module-level functions (a
    comment says so). Use it with mypy:

    \b
      vudo stubs counter.wasm -o counter_api.py
      vudo stubs counter.wasm -o counter_api.py --check   # in CI: is it up to date?
      # in your code:
      from counter_api import Counter
      proxy = vudo.load_spirit("counter.wasm").as_(Counter)
      proxy.Counter.get_value(proxy.new_Counter(5))

    Exit codes: 0 written (or up to date with --check); 1 --check found FILE missing or
    different; 2 usage error (missing file, not a module, bad --name, folder not creatable).
    """
    ctx.ensure_object(Settings)
    if as_json and not check:
        raise UsageFailure("--json goes with --check (the stubs themselves are Python)")
    with json_errors(as_json, "stubs"):
        if check and output is None:
            raise UsageFailure("--check needs -o FILE (the stubs to compare with)")
        path = resolve_source(spirit)
        _wasm, module = read_module(path)
        name = class_name or _camel(path.stem)
        if not name.isidentifier() or keyword.iskeyword(name):
            raise click.BadParameter(f"{name!r} is not a Python identifier", param_hint="--name")
        text = generate_stubs(module, class_name=name, source=path.name)
    if check:
        assert output is not None
        ctx.exit(_check(output, text, name, str(path), as_json))
    if output is None:
        sys.stdout.write(text)
        return
    _write(output, text)
    click.echo(f"wrote {output} (class {name})", err=True)


def _check(output: Path, text: str, name: str, source: str, as_json: bool) -> int:
    """Compare FILE with the stubs; print the verdict; 0 when identical, else 1."""
    try:
        current: str | None = output.read_text(encoding="utf-8")
    except FileNotFoundError:
        current = None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageFailure(f"{output}: cannot read: {getattr(exc, 'strerror', None) or exc}") \
            from None
    state = "missing" if current is None else ("up to date" if current == text else "outdated")
    if as_json:
        click.echo(dump_json({"command": "stubs", "ok": state == "up to date", "file": str(output),
                              "source": source, "class": name, "state": state, "error": None}))
    elif state == "up to date":
        click.echo(f"{output} is up to date", err=True)
    else:
        click.echo(f"error: {output} is {state}; regenerate it with: vudo stubs {source} "
                   f"-o {output}", err=True)
    return 0 if state == "up to date" else 1


def _write(output: Path, text: str) -> None:
    """Write the stubs, creating missing folders, or say clearly why it cannot."""
    folder = output.parent
    blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise UsageFailure(f"cannot write {output}: {blocker} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageFailure(f"cannot create the folder {folder} for {output}: "
                           f"{exc.strerror or exc}") from None
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageFailure(f"cannot write {output}: {exc.strerror or exc}") from None
