"""Shared test fixtures.

The compile cache's disk directory is pointed at a throwaway directory for the whole session
(explicitly with ``vudo.configure_cache``, and through ``VUDO_CACHE_DIR`` for the CLI run in
subprocesses), so tests never write to the user's cache.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import tempfile

_SESSION_CACHE_DIR = tempfile.mkdtemp(prefix="vudo-test-cache-")
os.environ["VUDO_CACHE_DIR"] = _SESSION_CACHE_DIR
atexit.register(shutil.rmtree, _SESSION_CACHE_DIR, ignore_errors=True)

# A shell without job control starts background jobs with SIGINT ignored, and an ignored
# signal stays ignored across exec: the Ctrl-C tests' subprocesses would never see their
# SIGINT. A terminal user's processes have the default, so the tests run with it.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
import wasmtime  # noqa: E402

import vudo  # noqa: E402

# Configured explicitly for this process; the variable above covers subprocesses (the CLI).
vudo.configure_cache(_SESSION_CACHE_DIR)

#: The repository root (the directory holding ``src/`` and ``tests/``).
REPO_ROOT = Path(__file__).resolve().parents[1]
#: Real DOL-compiled Spirits kept beside the repository (``../shared/spirits``); may be absent.
SHARED_SPIRITS = REPO_ROOT.parent / "shared" / "spirits"


def compile_wat(text: str) -> bytes:
    """Compile WAT text to wasm bytes."""
    return bytes(wasmtime.wat2wasm(text))


@pytest.fixture
def wat() -> Callable[[str], bytes]:
    """``wat(text) -> bytes``: compile WAT text to a wasm module."""
    return compile_wat


@pytest.fixture
def load_wat() -> Iterator[Callable[..., vudo.Spirit]]:
    """``load_wat(text, **options) -> Spirit``; every Spirit loaded is closed after the test."""
    loaded: list[vudo.Spirit] = []

    def load(text: str, **options: Any) -> vudo.Spirit:
        spirit = vudo.load_spirit(compile_wat(text), **options)
        loaded.append(spirit)
        return spirit

    yield load
    for spirit in loaded:
        spirit.close()


@pytest.fixture
def shared_spirits() -> Path:
    """The directory of real compiled Spirits; skips the test when it is absent."""
    if not SHARED_SPIRITS.is_dir():
        pytest.skip(f"real Spirits not available: {SHARED_SPIRITS} does not exist")
    return SHARED_SPIRITS
