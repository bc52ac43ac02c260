"""The package as a user gets it: ``python -m build`` from a clean copy of the tracked files,
the wheel and the sdist installed in fresh venvs (the sdist with a compiler, without one, and
on every Python version the classifiers list that this machine has), and ``vudo`` run."""

from __future__ import annotations

import json
import os
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


def _clean_copy(tmp_path: Path) -> Path:
    """The tracked files of the work tree, copied to ``tmp_path / "src-copy"``."""
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
    return clean


def _smoke(python: Path, cwd: Path) -> dict[str, object]:
    """Run the installed ``vudo`` on the calculator and report which core it has."""
    ran = _run(python.parent / "vudo", "run", "example:calculator", "add", "2", "3", cwd=cwd)
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, "5\n", ""), ran
    core = _run(python, "-c", "import json, vudo._runtime.cnative as c, vudo._runtime.native "
                "as n; print(json.dumps([c.available(), n.available()]))", cwd=cwd)
    assert core.returncode == 0, core.stderr[-2000:]
    native, bus = json.loads(core.stdout)
    return {"native": native, "bus": bus}


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("sdist")
    clean = _clean_copy(tmp)
    built = _run(sys.executable, "-m", "build", "--sdist", "--outdir", tmp / "dist", clean)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    [archive] = (tmp / "dist").glob("vudo-*.tar.gz")
    return archive


def _venv_install(python: str | Path, venv: Path, what: Path,
                  env: dict[str, str] | None = None) -> Path:
    assert _run(python, "-m", "venv", venv).returncode == 0
    py = venv / "bin" / "python"
    done = subprocess.run([str(py), "-m", "pip", "install", "-q", str(what)], capture_output=True,
                          text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return py


@pytest.mark.slow
def test_the_sdist_builds_the_native_core_where_a_compiler_exists(
    sdist: Path, tmp_path: Path
) -> None:
    py = _venv_install(sys.executable, tmp_path / "venv", sdist)
    assert _smoke(py, tmp_path) == {"native": True, "bus": True}


@pytest.mark.slow
def test_the_sdist_installs_without_a_compiler_and_runs_the_fallback(
    sdist: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "CC": "/bin/false", "CXX": "/bin/false", "LDSHARED": "/bin/false"}
    py = _venv_install(sys.executable, tmp_path / "venv", sdist, env)
    assert _smoke(py, tmp_path) == {"native": False, "bus": False}


def _find_python(version: str) -> str | None:
    """A working ``python<version>``: on PATH, or installed by pyenv but not selected."""
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    found = [shutil.which(f"python{version}"),
             *map(str, sorted(root.glob(f"versions/{version}.*/bin/python{version}")))]
    for candidate in filter(None, found):
        if _run(candidate, "-c", "import venv").returncode == 0:  # a pyenv shim may refuse
            return candidate
    return None


@pytest.mark.slow
@pytest.mark.parametrize("version", ["3.12", "3.13"])
def test_the_sdist_installs_and_runs_on_each_listed_python(
    sdist: Path, tmp_path: Path, version: str
) -> None:
    if sys.version_info[:2] == tuple(map(int, version.split("."))):
        pytest.skip(f"python{version} runs these tests: the other tests cover it")
    python = _find_python(version)
    if python is None:
        pytest.skip(f"no working python{version} on this machine (PATH or pyenv)")
    py = _venv_install(python, tmp_path / "venv", sdist)
    assert _smoke(py, tmp_path)["native"] is True  # built with that version's headers


@pytest.mark.slow
def test_wheel_builds_from_a_clean_copy_and_runs_in_a_fresh_venv(tmp_path: Path) -> None:
    clean = _clean_copy(tmp_path)
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
