"""``vudo run`` runs a WASI command as a program with its exit status; ``vudo inspect`` names the
host allocator and the memory.grow risk of Spirits from other toolchains."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

WASM = Path(__file__).parent / "spirits" / "wasm"


def vudo(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vudo", *args], capture_output=True, text=True, timeout=60,
        cwd=cwd, env={**os.environ, "VUDO_CACHE_DIR": ""},
    )


def test_run_a_wasi_command_with_a_granted_directory(tmp_path: Path) -> None:
    (tmp_path / "input.txt").write_text("from the host\n")
    done = vudo("run", str(WASM / "c_command.wasm"), "--allow-fs", str(tmp_path),
                "--env", "WHO=cli", "write", "--allow-fs-write")
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        "hello from C: 2 argument(s)\narg 1: write\nWHO=cli\nread: from the host\n"
        "wrote output.txt\n"
    )
    assert (tmp_path / "output.txt").read_text() == "written by a Spirit\n"


def test_run_exits_with_the_program_status(tmp_path: Path) -> None:
    (tmp_path / "input.txt").write_text("x\n")
    denied = vudo("run", str(WASM / "c_command.wasm"), cwd=tmp_path)
    assert denied.returncode == 76  # ENOTCAPABLE: nothing was granted
    assert "cannot open /data/input.txt: Capabilities insufficient" in denied.stderr
    exited = vudo("run", str(WASM / "c_command.wasm"), "--dir", f"{tmp_path}::/data", "exit3")
    assert exited.returncode == 3
    for grant in (["--dir", f"{tmp_path}::/data"], ["--allow-fs", str(tmp_path)]):
        read_only = vudo("run", str(WASM / "c_command.wasm"), *grant, "write")
        assert read_only.returncode == 63 and not (tmp_path / "output.txt").exists()
    as_json = json.loads(vudo("run", str(WASM / "c_command.wasm"), "--dir",
                              f"{tmp_path}::/data", "exit3", "--json").stdout)
    assert as_json["result"] == 3 and as_json["args"] == ["exit3"]


def test_inspect_names_the_host_allocator_and_the_risk() -> None:
    safe = json.loads(vudo("inspect", "--json", str(WASM / "as_export.wasm")).stdout)
    assert safe["host_allocator"] == "guest:assemblyscript" and safe["links"]
    assert not any("memory.grow" in w for w in safe["warnings"])
    risky = json.loads(vudo("inspect", "--json", str(WASM / "as_stub.wasm")).stdout)
    assert risky["host_allocator"] == "host-pages" and risky["links"]
    assert any("--exportRuntime" in w for w in risky["warnings"])
    c = json.loads(vudo("inspect", "--json", str(WASM / "c_malloc.wasm")).stdout)
    assert c["host_allocator"] == "guest:malloc" and c["links"]
    wasi = [i for i in c["imports"] if i["module"] == "wasi_snapshot_preview1"]
    assert wasi and all(i["status"] == "ok" for i in wasi)
    text = vudo("inspect", str(WASM / "as_default.wasm")).stdout
    assert "host allocator: host-pages" in text and "warning: Spirit 'as_default' grows" in text
