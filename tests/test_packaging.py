"""The package as a user gets it: ``python -m build`` from a clean copy of the tracked files,
the wheel installed in a fresh venv, and the ``vudo`` command it installs run."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_wheel_builds_from_a_clean_copy_and_runs_in_a_fresh_venv(tmp_path: Path) -> None:
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("needs a git checkout to know which files are tracked")
    try:
        import build  # noqa: F401
    except ImportError:
        pytest.skip("the 'build' package is not installed (pip install -e '.[dev]')")
    listed = _run("git", "ls-files", "-z", cwd=REPO_ROOT)
    assert listed.returncode == 0, listed.stderr
    clean = tmp_path / "src-copy"
    for name in filter(None, listed.stdout.split("\0")):
        source = REPO_ROOT / name
        if source.is_file():  # a tracked file deleted in the work tree is not shipped
            (clean / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, clean / name)
    dist = tmp_path / "dist"
    built = _run(sys.executable, "-m", "build", "--wheel", "--outdir", dist, clean)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    [wheel] = dist.glob("vudo-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        metadata = z.read(next(n for n in names if n.endswith("dist-info/METADATA"))).decode()
    assert "vudo/examples/calculator.wat" in names and "vudo/py.typed" in names
    assert any(n.endswith("licenses/LICENSE") for n in names)
    for version in ("3.11", "3.12", "3.13"):
        assert f"Programming Language :: Python :: {version}" in metadata
    venv = tmp_path / "venv"
    assert _run(sys.executable, "-m", "venv", venv).returncode == 0
    pip = _run(venv / "bin" / "python", "-m", "pip", "install", "-q", wheel)
    assert pip.returncode == 0, pip.stderr[-2000:]
    ran = _run(venv / "bin" / "vudo", "run", "example:calculator", "add", "2", "3", cwd=tmp_path)
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, "5\n", "")
