"""docs/guide/other-languages.md is true: its C and AssemblyScript sources are the ones
``scripts/build_spirits.py`` compiled into ``tests/spirits/wasm/doc_*.wasm`` (the manifest test
checks those hashes), and its Python and ``vudo run`` examples run against those modules.

The page's Python blocks are ``no-run`` for tests/test_docs.py, which has no compiled modules in
its directory; they run here instead, in page order, sharing one namespace.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "guide" / "other-languages.md"
SPIRITS = Path(__file__).parent / "spirits"
_FENCE = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<body>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
#: module name used on the page -> the committed build of its source
BUILDS = {"greet_c.wasm": "doc_greet_c.wasm", "greet_as.wasm": "doc_greet_as.wasm",
          "hello.wasm": "doc_hello.wasm"}


def blocks() -> list[tuple[str, str]]:
    return [(m["info"].strip(), m["body"]) for m in _FENCE.finditer(PAGE.read_text())]


@pytest.mark.parametrize("name", ["greet.c", "greet.ts", "hello.c"])
def test_page_sources_are_the_built_sources(name: str) -> None:
    shown = [body for info, body in blocks() if info.endswith(f"file={name}")]
    assert len(shown) == 1
    assert shown[0] == (SPIRITS / "src" / "docs" / name).read_text()


def test_page_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for shown, built in BUILDS.items():
        shutil.copy(SPIRITS / "wasm" / built, tmp_path / shown)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    ran = 0
    for info, body in blocks():
        if info == "python no-run":
            exec(compile(body, str(PAGE), "exec"), namespace)
            ran += 1
    assert ran == 3
    # The `vudo run` example (files/name.txt was written by the blocks above).
    console = [body for info, body in blocks() if info == "console no-run" and "vudo run" in body]
    assert len(console) == 1
    command, *expected = console[0].splitlines()
    argv = command.removeprefix("$ vudo ").split()
    done = subprocess.run([sys.executable, "-m", "vudo", *argv], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "VUDO_CACHE_DIR": ""})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == expected
