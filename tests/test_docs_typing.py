"""The documentation's Python examples type-check with ``mypy --strict``, as a user's code would.

Every ```` ```python ```` block of ``docs/**/*.md`` and ``README.md`` is checked, ``no-run``
ones included (they are not run because they need a NATS server or a compiled module, not
because they are wrong). The blocks of a page share one namespace when they run, so they are
checked as one module per page, each block at its own line: a mypy error at line N of the
module is line N of the page. A ```` ```python file=NAME ```` block is the module ``NAME``,
which the page's commands import. The page's ``$ vudo stubs ... -o NAME.py`` commands are run
first, so the examples that import the generated module are checked against it (and it is
checked too).

A block that deliberately shows a mistake is marked ``typing-error`` in its info string; it is
the only kind of block allowed a ``# type: ignore[code]`` (and the ignore must name its code).
``--strict`` includes ``--warn-unused-ignores``, so such an ignore cannot outlive its error.

mypy runs once, in a subprocess, over every page; its cache lives in pytest's cache folder.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from test_docs import PAGES, REPO_ROOT, Block, blocks, console_commands

TYPING_ERROR = "typing-error"
_IGNORE = re.compile(r"#\s*type:\s*ignore(?P<code>\[[\w\-, ]+\])?")
_MYPY_LINE = re.compile(
    r"^(?P<file>[^:\n]+\.py):(?P<line>\d+): (?P<kind>error|note): (?P<text>.*)$"
)

pytest.importorskip("mypy", reason="mypy is not installed (pip install -e '.[dev]')")


def python_blocks(page: Path) -> list[Block]:
    """The ``python`` blocks of ``page`` (run or not)."""
    return [b for b in blocks(page) if b.lang == "python"]


def _shown(page: Path) -> Path:
    """``page`` relative to the repository (a page elsewhere, by its name)."""
    return page.relative_to(REPO_ROOT) if page.is_relative_to(REPO_ROOT) else Path(page.name)


def _module_name(page: Path) -> str:
    relative = _shown(page).with_suffix("")
    return "page_" + re.sub(r"\W", "_", "_".join(relative.parts))


def write_modules(folder: Path, pages: list[Path]) -> dict[str, tuple[Path, list[Block]]]:
    """Write one module per page (and one per ``file=NAME.py`` block) into ``folder``; return
    ``{file name: (page, its blocks)}`` so errors can be mapped back."""
    written: dict[str, tuple[Path, list[Block]]] = {}
    for page in pages:
        shared = [b for b in python_blocks(page) if b.file is None]
        for block in python_blocks(page):
            if block.file is not None:
                name = Path(block.file).name
                assert name not in written, f"{_shown(page)}:{block.line}: a second module {name}"
                # Padded so the module's lines are the page's.
                (folder / name).write_text("\n" * (block.line - 1) + block.body, encoding="utf-8")
                written[name] = (page, [block])
        if not shared:
            continue
        lines: list[str] = []
        for block in shared:
            lines.extend([""] * (block.line - 1 - len(lines)))
            lines.extend(block.body.splitlines())
        name = _module_name(page) + ".py"
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
        written[name] = (page, shared)
    return written


def stubs_commands(page: Path) -> list[list[str]]:
    """The arguments of the page's ``$ vudo stubs ... -o FILE.py`` commands that write a module
    (``--check`` ones only compare)."""
    found = []
    for block in blocks(page):
        if block.lang != "console":
            continue
        for command, _output in console_commands(block):
            argv = shlex.split(command, comments=True)
            if argv[:2] == ["vudo", "stubs"] and "-o" in argv and "--check" not in argv:
                found.append(argv[1:])
    return found


def generate_stubs(folder: Path, pages: list[Path]) -> None:
    """Run the ``vudo stubs -o`` commands of ``pages`` in ``folder``."""
    for page in pages:
        for argv in stubs_commands(page):
            proc = subprocess.run([sys.executable, "-m", "vudo", *argv], cwd=folder,
                                  capture_output=True, text=True, timeout=120, check=False)
            assert proc.returncode == 0, f"{page}: vudo {shlex.join(argv)}:\n{proc.stderr}"


def _block_at(page_blocks: list[Block], line: int) -> Block | None:
    for block in page_blocks:
        if block.line <= line < block.line + block.body.count("\n") + 1:
            return block
    return None


def test_ignores_only_in_blocks_that_show_a_typing_error() -> None:
    wrong = []
    for page in PAGES:
        for block in python_blocks(page):
            for m in _IGNORE.finditer(block.body):
                if TYPING_ERROR not in block.markers or m["code"] is None:
                    wrong.append(f"{block.where}: {m[0]!r}")
    assert not wrong, (
        "a '# type: ignore[code]' belongs only in a block marked 'python typing-error' (one "
        "that shows a mistake on purpose), with its error code:\n" + "\n".join(wrong)
    )


def mypy_problems(pages: list[Path], folder: Path, cache: Path) -> list[str]:
    """Run ``mypy --strict`` once over the examples of ``pages``; one line per error, named
    ``page:line (block N): message``."""
    generate_stubs(folder, pages)
    written = write_modules(folder, pages)
    assert written, "no Python examples found"
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--python-version", "3.11",
         "--config-file", str(REPO_ROOT / "pyproject.toml"), "--cache-dir", str(cache),
         "--no-error-summary", "--show-error-codes", "--hide-error-context",
         *sorted(written)],
        cwd=folder, capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode in (0, 1), f"mypy failed to run:\n{proc.stdout}{proc.stderr}"
    problems: list[str] = []
    for line in proc.stdout.splitlines():
        m = _MYPY_LINE.match(line)
        if m is None or m["kind"] != "error":
            if m is None and line.strip():
                problems.append(line)
            continue
        page, page_blocks = written.get(Path(m["file"]).name, (None, []))
        if page is None:  # an error outside the examples (in vudo itself): show it as it is
            problems.append(line)
            continue
        block = _block_at(page_blocks, int(m["line"]))
        where = f"{_shown(page)}:{m['line']}"
        if block is not None:
            where += f" (block {block.number})"
        problems.append(f"{where}: {m['text']}")
    return problems


def _cache(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    return cache.mkdir("mypy-docs") if cache is not None else tmp_path / "mypy-cache"


def test_examples_type_check_strictly(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    problems = mypy_problems(PAGES, tmp_path, _cache(request, tmp_path))
    assert not problems, (
        f"{len(problems)} mypy --strict errors in the documentation's examples:\n"
        + "\n".join(problems)
    )


def test_errors_are_reported_at_the_line_of_the_page(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    pages = tmp_path / "pages"
    pages.mkdir()
    page = pages / "page.md"
    page.write_text(
        "# t\n\n```python\nimport vudo\n```\n\ntext\n\n"          # block 1, line 4
        "```python no-run\nbus = vudo.MessageBus()\nbus.recv('a').payload\n```\n\n"  # line 11
        "```python typing-error\nvudo.gene_layout('P', {'x': 'i33'})  # type: ignore[dict-item]\n"
        "```\n\n```console\n$ vudo --version\n```\n\n```python\nvudo.not_a_name\n```\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    out.mkdir()
    problems = mypy_problems([page], out, _cache(request, tmp_path))
    assert [p.split(": ", 1)[0] for p in problems] == [
        "page.md:11 (block 2)", "page.md:23 (block 5)",
    ], problems
    # The ignore of the typing-error block was needed (--strict reports an unused one), and
    # ``vudo.<anything>`` is an error, not Any.
    assert "Message | None" in problems[0] and "not_a_name" in problems[1]
