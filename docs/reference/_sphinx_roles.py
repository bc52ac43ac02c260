"""A Griffe extension for the API reference: turn the Sphinx roles of vudo's docstrings into links.

vudo's docstrings are plain prose with reST inline markup (``:class:`~vudo.errors.LoadError```,
``:meth:`register```, ``literal``). mkdocstrings renders Markdown, where a role would show as
raw text, so before the docstrings are parsed this extension rewrites each role into an
mkdocs-autorefs cross-reference to the object it names, resolved in the docstring's scope
(``:meth:`register``` in a class docstring is that class's method). References that resolve to
nothing rendered (``time.time_ns``, ``wasmtime.Memory``) are marked optional and render as code,
so they never fail ``mkdocs build --strict``. It also turns a reST ``::`` before a literal block
into ``:``, fences doctests (``>>>``) as code, and drops the reST escape ``\\ ``.

mkdocs.yml loads it in the mkdocstrings Python handler's options:
``extensions: [!relative $config_dir/docs/reference/_sphinx_roles.py:SphinxRoles]``.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

_ROLE = re.compile(
    r":(?:py:)?(?P<role>class|func|meth|attr|data|mod|exc|obj|const):`(?P<body>[^`]+)`"
)
_TITLED = re.compile(r"^(?P<title>.*?)\s*<(?P<target>[^<>]+)>$")
_LITERAL_BLOCK = re.compile(r"(?<=\S)::$", re.MULTILINE)
#: A doctest: ``>>>`` lines with their continuation and output lines, up to a blank line.
_DOCTEST = re.compile(r"^(?P<indent>[ \t]*)>>> .*(?:\n(?P=indent)(?!\s*$).*)*", re.MULTILINE)


class SphinxRoles(griffe.Extension):
    """Rewrite reST roles in every docstring of a loaded package into autorefs links.

    Also reads Sphinx's attribute doc comments (``#: text`` on the lines above an assignment,
    or after it on the same line) as the attribute's docstring, as autodoc does.
    """

    def on_attribute_instance(
        self, *, node: Any, attr: griffe.Attribute, agent: Any, **kwargs: Any
    ) -> None:
        """Give an attribute without a docstring the text of its ``#:`` comment."""
        if attr.docstring is not None or attr.lineno is None:
            return
        try:
            lines = attr.lines_collection[attr.filepath]  # type: ignore[index]
        except Exception:  # no source (a compiled module)
            return
        comment = _doc_comment(lines, attr.lineno)
        if comment:
            attr.docstring = griffe.Docstring(comment, lineno=attr.lineno, parent=attr)

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        """Rewrite the docstrings of ``pkg`` and of everything it contains."""
        self._walk(pkg, loader, set())

    def _walk(self, obj: griffe.Object, loader: griffe.GriffeLoader, seen: set[str]) -> None:
        if obj.path in seen:
            return
        seen.add(obj.path)
        if obj.docstring is not None:
            obj.docstring.value = self._rewrite(obj.docstring.value, obj, loader)
        for member in obj.members.values():
            if not member.is_alias and isinstance(member, griffe.Object):
                self._walk(member, loader, seen)

    def _rewrite(self, text: str, obj: griffe.Object, loader: griffe.GriffeLoader) -> str:
        def link(match: re.Match[str]) -> str:
            body = match["body"].strip()
            titled = _TITLED.match(body)
            if titled:
                title, target = titled["title"], titled["target"]
            else:
                short = body.startswith("~")
                target = body.lstrip("~.")
                title = target.rsplit(".", 1)[-1] if short else target
            identifier = _resolve(target, obj, loader)
            return (
                f'<autoref identifier="{html.escape(identifier)}" optional>'
                f"<code>{html.escape(title)}</code></autoref>"
            )

        text = _ROLE.sub(link, text)
        text = _LITERAL_BLOCK.sub(":", text)
        text = _DOCTEST.sub(_fence_doctest, text)
        return text.replace("\\ ", "")


def _doc_comment(lines: list[str], lineno: int) -> str:
    """The ``#:`` comment documenting the assignment on line ``lineno`` (1-based), or ``""``."""
    _, sep, trailing = lines[lineno - 1].partition("  #: ")
    if sep:
        return trailing.strip()
    above: list[str] = []
    i = lineno - 2
    while i >= 0 and lines[i].strip().startswith("#:"):
        above.insert(0, lines[i].strip()[2:].strip())
        i -= 1
    return " ".join(above)


def _fence_doctest(match: re.Match[str]) -> str:
    """Fence a doctest as a ``pycon`` block (Markdown would read ``>>>`` as quotes)."""
    indent = match["indent"]
    return f"{indent}```pycon\n{match[0]}\n{indent}```"


def _resolve(target: str, obj: griffe.Object, loader: griffe.GriffeLoader) -> str:
    """The canonical path of ``target`` as seen from ``obj``, or ``target`` unchanged."""
    first, _, rest = target.partition(".")
    candidates = [target]
    try:
        scoped = obj.resolve(first)
    except Exception:  # not a name in scope: try it as an absolute path
        pass
    else:
        candidates.insert(0, f"{scoped}.{rest}" if rest else scoped)
    cls = obj if obj.is_class else obj.parent if obj.parent and obj.parent.is_class else None
    if cls is not None:  # a method the class inherits
        try:
            inherited = cls.all_members[first]
        except Exception:
            pass
        else:
            path = inherited.target_path if inherited.is_alias else inherited.path
            candidates.insert(0, f"{path}.{rest}" if rest else path)
    for path in candidates:
        try:
            found = loader.modules_collection[path]
            return str(found.final_target.path if found.is_alias else found.path)
        except Exception:  # unknown here (another package, or a private name)
            continue
    return target
