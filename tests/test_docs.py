"""The documentation is true: its examples run, and the site builds without a warning.

Every fenced block of ``docs/**/*.md`` and ``README.md`` is checked according to its info string,
in page order, in a fresh temporary directory per page:

- ```` ```python ````: executed; the blocks of one page share one namespace, so a block can use
  the names of the blocks above it. Standard output is captured. Expected values are asserts.
- ```` ```console ````: each ``$ command`` runs in ``bash`` (``python`` is this interpreter,
  ``vudo`` its ``python -m vudo``); its output (stdout and stderr) must equal the lines below it,
  where a line ``...`` stands for any number of lines and ``...`` inside a line for any text. The
  command must exit with 0, or with N when it ends with the comment ``# exit code N``.
- ```` ```LANG file=NAME ```` (any language): written to ``NAME`` for the blocks below.
- ```` ```python no-run ```` / ```` ```console no-run ````, and every other language: shown only.
- ```` ```python typing-error ````: runs as above, but shows a typing mistake on purpose, so it
  may hold a ``# type: ignore[code]`` (``tests/test_docs_typing.py`` checks every Python block,
  ``no-run`` ones included, with ``mypy --strict``).

A failure names the page, the block number and its line.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS = REPO_ROOT / "docs"
PAGES = [*sorted(DOCS.rglob("*.md")), REPO_ROOT / "README.md"]

_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\n`]*)\n"
    r"(?P<body>.*?)^(?P=indent)(?P=fence)[ \t]*$",
    re.MULTILINE | re.DOTALL,
)
_EXIT_CODE = re.compile(r"#\s*exit code (\d+)\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    page: Path
    number: int  # 1-based, among the page's fenced blocks
    line: int  # line of the block's first body line in the page
    lang: str
    markers: tuple[str, ...]
    body: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO_ROOT)}, block {self.number} (line {self.line})"

    @property
    def file(self) -> str | None:
        for marker in self.markers:
            if marker.startswith("file="):
                return marker[len("file="):]
        return None

    @property
    def runs(self) -> bool:
        if "no-run" in self.markers:
            return False
        return self.file is not None or self.lang in ("python", "console")


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of ``page``, in order (indented ones, in lists, dedented)."""
    text = page.read_text(encoding="utf-8")
    found = []
    for number, m in enumerate(_FENCE.finditer(text), start=1):
        info = m["info"].split()
        indent = m["indent"]
        body = "".join(
            line[len(indent):] if line.startswith(indent) else line.lstrip()
            for line in m["body"].splitlines(keepends=True)
        )
        line = text.count("\n", 0, m.start("body")) + 1
        lang = info[0] if info else ""
        found.append(Block(page, number, line, lang, tuple(info[1:]), body))
    return found


def _pages_with_examples() -> list[Path]:
    return [page for page in PAGES if any(b.runs for b in blocks(page))]


# ------------------------------------------------------------------------------------------
# Running the blocks
# ------------------------------------------------------------------------------------------
def run_python(block: Block, namespace: dict[str, object]) -> None:
    # Padded so that tracebacks give the line numbers of the Markdown page.
    source = "\n" * (block.line - 1) + block.body
    code = compile(source, str(block.page), "exec")
    with contextlib.redirect_stdout(io.StringIO()):
        exec(code, namespace)


def _line_matches(pattern: str, line: str) -> bool:
    regex = ".*".join(re.escape(part) for part in pattern.split("..."))
    return re.fullmatch(regex, line) is not None


def output_matches(expected: list[str], actual: list[str]) -> bool:
    """Whether ``actual`` fits ``expected``; a line ``...`` matches any number of lines."""
    if not expected:
        return not actual
    head, rest = expected[0], expected[1:]
    if head.strip() == "...":
        return any(output_matches(rest, actual[i:]) for i in range(len(actual) + 1))
    return bool(actual) and _line_matches(head, actual[0]) and output_matches(rest, actual[1:])


def console_commands(block: Block) -> list[tuple[str, list[str]]]:
    """``(command, expected output lines)`` per ``$`` line of a console block."""
    commands: list[tuple[str, list[str]]] = []
    for line in block.body.splitlines():
        if line.startswith("$ "):
            commands.append((line[2:], []))
        elif commands:
            commands[-1][1].append(line.rstrip())
        elif line.strip():
            raise AssertionError(f"{block.where}: output before the first '$ ' command")
    return commands


def run_console(block: Block, cwd: Path) -> None:
    env = {
        **os.environ,
        "COLUMNS": "100",
        "NO_COLOR": "1",
        "TERM": "dumb",
        "PYTHONUNBUFFERED": "1",
    }
    python = shlex.quote(sys.executable)
    prelude = f'vudo() {{ {python} -m vudo "$@"; }}\npython() {{ {python} "$@"; }}\n'
    for command, expected in console_commands(block):
        m = _EXIT_CODE.search(command)
        want_code = int(m[1]) if m else 0
        proc = subprocess.run(
            ["bash", "-c", prelude + command], cwd=cwd, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, timeout=120, check=False,
        )
        actual = [line.rstrip() for line in proc.stdout.rstrip().splitlines()]
        while expected and not expected[-1]:
            expected.pop()
        problems = []
        if proc.returncode != want_code:
            problems.append(f"exit code {proc.returncode}, expected {want_code}")
        if not output_matches(expected, actual):
            problems.append("output differs")
        if problems:
            raise AssertionError(
                f"{block.where}: $ {command}\n{'; '.join(problems)}\n"
                "--- expected\n" + "\n".join(expected) + "\n--- actual\n" + "\n".join(actual)
            )


@pytest.mark.parametrize(
    "page", _pages_with_examples(), ids=lambda p: str(p.relative_to(REPO_ROOT))
)
def test_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for block in blocks(page):
        if not block.runs:
            continue
        if block.file is not None:
            target = tmp_path / block.file
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.body, encoding="utf-8")
        elif block.lang == "python":
            try:
                run_python(block, namespace)
            except Exception:
                pytest.fail(f"{block.where} failed:\n{traceback.format_exc()}", pytrace=False)
        else:
            if shutil.which("bash") is None:
                pytest.skip("console examples need bash")
            run_console(block, tmp_path)


# ------------------------------------------------------------------------------------------
# The checker itself, and the site
# ------------------------------------------------------------------------------------------
def test_blocks_are_found_with_their_markers(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# t\n\n```python\nx = 1\n```\n\n- item\n\n    ```python no-run\n    y = 2\n    ```\n\n"
        "```toml file=a.toml\nk = 1\n```\n\n```console\n$ vudo --version\nvudo ...\n```\n"
    )
    found = blocks(page)
    assert [(b.lang, b.markers, b.line, b.runs) for b in found] == [
        ("python", (), 4, True),
        ("python", ("no-run",), 10, False),
        ("toml", ("file=a.toml",), 14, True),
        ("console", (), 18, True),
    ]
    assert found[1].body == "y = 2\n"
    assert found[2].file == "a.toml"


def test_output_wildcards() -> None:
    assert output_matches(["a", "...", "d"], ["a", "b", "c", "d"])
    assert output_matches(["a", "...", "b"], ["a", "b"])
    assert output_matches(["x ... z"], ["x 1 2 z"])
    assert not output_matches(["a"], ["a", "b"])
    assert not output_matches(["a", "b"], ["a"])


def test_every_guide_page_has_examples() -> None:
    guide = sorted(p.name for p in (DOCS / "guide").glob("*.md"))
    assert guide, "docs/guide/ is empty"
    checked = {p.name for p in _pages_with_examples() if p.parent == DOCS / "guide"}
    assert checked == set(guide), f"guide pages without runnable examples: {set(guide) - checked}"


def test_site_builds_strictly(tmp_path: Path) -> None:
    for module in ("mkdocs", "mkdocstrings", "mkdocstrings_handlers"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install -e '.[dev]')")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
         "--config-file", str(REPO_ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=300, check=False,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}"
    assert "WARNING" not in proc.stdout, proc.stdout
    assert (tmp_path / "site" / "reference" / "spirit" / "index.html").is_file()
