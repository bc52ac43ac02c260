"""Running ``vudo`` as a user does: a real ``python -m vudo`` subprocess, optionally on a
pseudo-terminal, with its own compile cache."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import textwrap
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = REPO_ROOT / "src" / "vudo" / "examples"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def vudo(
    *args: str | Path, cwd: Path | None = None, stdin: bytes | None = None,
    env: dict[str, str] | None = None, timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """``python -m vudo ARGS`` in a subprocess; text stdout/stderr."""
    environ = {**os.environ, "VUDO_CACHE_DIR": "", **(env or {})}
    environ.pop("FORCE_COLOR", None)
    proc = subprocess.run(
        [sys.executable, "-m", "vudo", *map(str, args)], cwd=cwd or REPO_ROOT, env=environ,
        input=stdin, capture_output=True, timeout=timeout,
    )
    return subprocess.CompletedProcess(proc.args, proc.returncode,
                                       proc.stdout.decode("utf-8", "replace"),
                                       proc.stderr.decode("utf-8", "replace"))


def vudo_bytes(*args: str | Path, stdin: bytes | None = None,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """Like :func:`vudo`, keeping stdout as bytes."""
    environ = {**os.environ, "VUDO_CACHE_DIR": "", **(env or {})}
    return subprocess.run([sys.executable, "-m", "vudo", *map(str, args)], cwd=REPO_ROOT,
                          env=environ, input=stdin, capture_output=True, timeout=60)


def vudo_on_terminal(*args: str | Path, cwd: Path | None = None,
                     timeout: float = 60) -> tuple[int, str]:
    """Run ``vudo ARGS`` with stdout and stderr on one pseudo-terminal; return the exit code
    and everything it drew, with ANSI sequences removed and carriage returns kept."""
    controller, terminal = pty.openpty()
    environ = {**os.environ, "VUDO_CACHE_DIR": "", "TERM": "xterm", "COLUMNS": "120"}
    proc = subprocess.Popen([sys.executable, "-m", "vudo", *map(str, args)], cwd=cwd or REPO_ROOT,
                            stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal,
                            env=environ)
    os.close(terminal)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.5)
            if ready:
                try:
                    data = os.read(controller, 65536)
                except OSError:  # the terminal closed: the process is gone
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(controller)
    return code, _ANSI.sub("", b"".join(chunks).decode("utf-8", "replace"))


def write(folder: Path, name: str, text: str) -> Path:
    """Write dedented ``text`` to ``folder/name``."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path
