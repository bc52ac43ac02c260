"""``vudo run`` as a user runs it (real subprocesses): grants, Python Loas, stdin and URL
sources, ``--json`` documents, exact output and argument numbering."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import EXAMPLES, vudo, vudo_bytes, write

import vudo as vudo_lib
from vudo.cli._grants import Grants
from vudo.errors import LinkError

EFFECTS_WAT = """\
(module
  (import "vudo" "vudo_emit_effect" (func $emit (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 1024) "hello.txt")
  (data (i32.const 1100) "http://127.0.0.1:9/x")
  (data (i32.const 1200) "SELECT 1")
  (func (export "read") (result i32) (call $emit (i32.const 10) (i32.const 1024) (i32.const 9)))
  (func (export "get") (result i32) (call $emit (i32.const 20) (i32.const 1100) (i32.const 20)))
  (func (export "query") (result i32)
    (call $emit (i32.const 30) (i32.const 1200) (i32.const 8))))
"""

LOA_WAT = """\
(module
  (import "triple" "triple" (func $triple (param i32) (result i32)))
  (func (export "go") (param i32) (result i32) (call $triple (local.get 0))))
"""

LOA_PY = """\
import vudo

def _triple(ctx):
    def triple(x: int) -> int:
        return 3 * x
    return triple

LOA = vudo.create_loa("triple", "1.0.0", {"triple": _triple})

def make():
    return LOA

NOT_A_LOA = 42
"""


# ------------------------------------------------------------------------------------------
# grants
# ------------------------------------------------------------------------------------------
def test_effects_are_refused_until_granted(tmp_path: Path) -> None:
    wat = write(tmp_path, "fx.wat", EFFECTS_WAT)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "hello.txt").write_text("hi")
    refused = vudo("run", wat, "read")
    assert refused.returncode == 0 and refused.stdout == "-5\n"  # NOT_PERMITTED
    assert "fx" in refused.stderr and "not granted" in refused.stderr
    granted = vudo("run", wat, "read", "--allow-fs", tmp_path / "data")
    assert (granted.returncode, granted.stdout) == (0, "0\n"), granted.stderr
    assert vudo("run", wat, "get").stdout == "-5\n"
    assert vudo("run", wat, "get", "--allow-host", "127.0.0.1").stdout == "0\n"
    assert vudo("run", wat, "get", "--allow-host", "example.org").stdout != "0\n"
    both = vudo("run", wat, "get", "--allow-host", "example.org", "--allow-host", "127.0.0.1")
    assert both.stdout == "0\n", both.stderr  # repeatable: each one is granted
    assert vudo("run", wat, "query").stdout == "-5\n"
    db = tmp_path / "app.db"
    assert vudo("run", wat, "query", "--db", db, "--db-write").stdout == "0\n"


DB_WRITE_WAT = """\
(module
  (import "vudo" "vudo_emit_effect" (func $emit (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 1200) "CREATE TABLE t (x)")
  (func (export "create") (result i32)
    (call $emit (i32.const 30) (i32.const 1200) (i32.const 18))))
"""


def test_db_is_read_only_unless_db_write(tmp_path: Path) -> None:
    wat = write(tmp_path, "db.wat", DB_WRITE_WAT)

    def tables(db: Path) -> list[str]:
        with contextlib.closing(sqlite3.connect(db)) as conn:
            return [row[0] for row in conn.execute("SELECT name FROM sqlite_master")]

    r = vudo("run", wat, "create", "--db", tmp_path / "ro.db")
    assert r.returncode == 0 and "not permitted" in r.stderr, r.stderr
    assert tables(tmp_path / "ro.db") == []
    r = vudo("run", wat, "create", "--db", tmp_path / "rw.db", "--db-write")
    assert r.returncode == 0, r.stderr
    assert "dropped" not in r.stderr  # vudo run lets the effect finish before it exits
    assert tables(tmp_path / "rw.db") == ["t"]


def test_write_grants_need_their_resource(tmp_path: Path) -> None:
    wat = write(tmp_path, "fx.wat", EFFECTS_WAT)
    r = vudo("run", wat, "read", "--allow-fs-write")
    assert r.returncode == 2
    assert r.stderr.strip() == \
        "error: --allow-fs-write needs --allow-fs DIR (the folder to write in)"
    r = vudo("run", wat, "query", "--db-write")
    assert r.returncode == 2 and "--db-write needs --db FILE" in r.stderr
    r = vudo("run", wat, "read", "--allow-fs", tmp_path / "missing")
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_grants_build_permissions_key_by_key(tmp_path: Path) -> None:
    session = Grants(fs_root=tmp_path, hosts=("a.example",), env={"A": "1", "B": "2"})
    spirit = Grants(hosts=("b.example",), env={"B": "3"}, fs_write=True)
    merged = spirit.over(session)
    perms = merged.permissions()
    assert perms is not None
    assert perms.fs_root == tmp_path and perms.fs_write
    assert perms.http_hosts == frozenset({"b.example"})  # a list given replaces
    assert dict(perms.wasi_env) == {"A": "1", "B": "3"}  # env merges by variable
    assert Grants().permissions() is None


def test_env_and_dir_reach_the_spirits_permissions(tmp_path: Path) -> None:
    r = vudo("run", EXAMPLES / "calculator.wat", "add", "1", "2", "--env", "A=1", "--env", "B",
             "--json")
    assert r.returncode == 2 and "--env 'B' must be written NAME=VALUE" in r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] is False and doc["error"]["exit_code"] == 2
    r = vudo("run", EXAMPLES / "calculator.wat", "add", "1", "2", "--env", "A=1=2",
             "--dir", f"{tmp_path}::/data", "--json")
    assert r.returncode == 0, r.stderr
    grants = json.loads(r.stdout)["grants"]
    assert grants["env"] == {"A": "1=2"} and grants["dirs"] == [[str(tmp_path), "/data"]]


WASI_WAT = """\
(module
  (import "wasi_snapshot_preview1" "environ_sizes_get"
    (func $sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $prestat (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "env_count") (result i32)
    (drop (call $sizes (i32.const 0) (i32.const 4))) (i32.load (i32.const 0)))
  (func (export "has_dir") (result i32) (call $prestat (i32.const 3) (i32.const 8))))
"""


def test_wasi_spirits_see_env_and_dirs(tmp_path: Path) -> None:
    wat = write(tmp_path, "wasi.wat", WASI_WAT)
    try:
        vudo_lib.load_spirit(wat).close()
    except LinkError as exc:
        pytest.skip(f"this build does not load WASI Spirits yet ({exc.unresolved[0]})")
    r = vudo("run", wat, "env_count", "--env", "A=1", "--env", "B=2")
    assert (r.returncode, r.stdout) == (0, "2\n"), r.stderr
    r = vudo("run", wat, "has_dir", "--dir", tmp_path)
    assert (r.returncode, r.stdout) == (0, "0\n"), r.stderr


def test_loa_adds_python_host_functions(tmp_path: Path) -> None:
    wat = write(tmp_path, "uses_loa.wat", LOA_WAT)
    write(tmp_path, "myloa.py", LOA_PY)
    missing = vudo("run", wat, "go", "5", cwd=tmp_path)
    assert missing.returncode == 1 and "triple.triple" in missing.stderr
    for ref in ("myloa:LOA", "myloa:make"):
        r = vudo("run", wat, "go", "5", "--loa", ref, cwd=tmp_path)
        assert (r.returncode, r.stdout) == (0, "15\n"), r.stderr
    bad = {
        "myloa": "must be written MODULE:ATTRIBUTE",
        "nosuch:LOA": "cannot import 'nosuch'",
        "myloa:nope": "has no attribute 'nope'",
        "myloa:NOT_A_LOA": "is a int, not a vudo.Loa",
    }
    for ref, message in bad.items():
        r = vudo("run", wat, "go", "5", "--loa", ref, cwd=tmp_path)
        assert r.returncode == 2 and message in r.stderr, (ref, r.stderr)
        assert "Traceback" not in r.stderr


# ------------------------------------------------------------------------------------------
# sources: stdin and URLs
# ------------------------------------------------------------------------------------------
def test_spirit_from_stdin() -> None:
    wat = (EXAMPLES / "calculator.wat").read_bytes()
    r = vudo("run", "-", "add", "2", "3", stdin=wat)
    assert (r.returncode, r.stdout) == (0, "5\n"), r.stderr
    wasm = vudo_lib.abi.__name__ and __import__("wasmtime").wat2wasm(wat.decode())
    r = vudo("run", "-", "multiply", "-4", "3", stdin=bytes(wasm))
    assert (r.returncode, r.stdout) == (0, "-12\n"), r.stderr
    empty = vudo("run", "-", "add", "1", "2", stdin=b"")
    assert empty.returncode == 2 and "nothing on stdin" in empty.stderr
    junk = vudo("run", "-", "add", "1", "2", stdin=b"hello")
    assert junk.returncode == 2 and "-: not a WebAssembly module" in junk.stderr


class _Server:
    def __init__(self, files: dict[str, bytes]) -> None:
        self.hits: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits.append(self.path)
                body = files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def server() -> Iterator[_Server]:
    body = (EXAMPLES / "calculator.wat").read_bytes()
    s = _Server({"/calc.wat": body, "/big.wat": body * 3})
    try:
        yield s
    finally:
        s.close()


def test_spirit_from_a_url(server: _Server, tmp_path: Path) -> None:
    body = (EXAMPLES / "calculator.wat").read_bytes()
    digest = hashlib.sha256(body).hexdigest()
    url = f"{server.url}/calc.wat"
    r = vudo("run", url, "add", "2", "3")
    assert (r.returncode, r.stdout) == (0, "5\n"), r.stderr
    r = vudo("run", url, "add", "2", "3", "--sha256", "0" * 64)
    assert r.returncode == 2
    assert f"SHA-256 is {digest}, expected {'0' * 64} (--sha256)" in r.stderr
    assert vudo("run", url, "add", "1", "1", "--sha256", "xyz").returncode == 2
    r = vudo("run", f"{server.url}/nope.wat", "add", "1", "1")
    assert r.returncode == 2 and "HTTP 404" in r.stderr
    r = vudo("run", f"{server.url}/big.wat", "add", "1", "1", "--max-download", "1KiB")
    assert r.returncode == 2 and "more than 1024 bytes (--max-download)" in r.stderr
    # pinned downloads are kept by hash: the second run does not fetch
    cache = {"VUDO_CACHE_DIR": str(tmp_path / "cache")}
    hits = len(server.hits)
    for _ in range(2):
        r = vudo("run", url, "add", "2", "3", "--sha256", digest, env=cache)
        assert (r.returncode, r.stdout) == (0, "5\n"), r.stderr
    assert len(server.hits) == hits + 1
    assert (tmp_path / "cache" / "downloads" / f"{digest}.wasm").read_bytes() == body


def test_unreachable_url_is_a_usage_error() -> None:
    r = vudo("run", "http://127.0.0.1:9/calc.wasm", "add", "1", "2")
    assert r.returncode == 2 and r.stderr.startswith("error: http://127.0.0.1:9/calc.wasm: ")
    assert "download failed" in r.stderr and "Traceback" not in r.stderr


# ------------------------------------------------------------------------------------------
# output
# ------------------------------------------------------------------------------------------
def test_run_prints_exactly_what_the_spirit_printed() -> None:
    r = vudo_bytes("run", "example:greeter")
    assert r.returncode == 0, r.stderr
    spirit = vudo_lib.load_spirit(EXAMPLES / "greeter.wat")
    assert b"Traceback" not in r.stderr and r.stdout.startswith(b"Hello")
    spirit.close()


def test_argument_numbers_match_python(tmp_path: Path) -> None:
    spirit = vudo_lib.load_spirit(EXAMPLES / "calculator.wat")
    with pytest.raises(TypeError, match=r"argument 1 must be int"):
        spirit.call("add", 1, "x")
    spirit.close()
    r = vudo("run", EXAMPLES / "calculator.wat", "add", "1", "x")
    assert r.returncode == 2
    assert r.stderr == "error: argument 1 of add (i64): 'x' is not an integer\n"


def test_run_json_document_has_stable_keys() -> None:
    r = vudo("run", "example:calculator", "add", "2", "3", "--json")
    doc = json.loads(r.stdout)
    assert list(doc) == ["command", "ok", "spirit", "source", "function", "args", "result",
                         "output", "logs", "grants", "trace", "seconds", "error"]
    assert (doc["command"], doc["ok"], doc["result"], doc["error"]) == ("run", True, 5, None)
    r = vudo("run", "example:calculator", "divide", "1", "0", "--json")
    doc = json.loads(r.stdout)
    assert r.returncode == 1 and doc["ok"] is False
    assert doc["error"]["exit_code"] == 1 and doc["error"]["type"] == "SpiritTrap"
    r = vudo("run", "missing.wasm", "--json")
    assert r.returncode == 2
    assert json.loads(r.stdout) == {"command": "run", "ok": False, "error": {
        "type": "UsageFailure", "message": "missing.wasm: no such file", "exit_code": 2}}


def test_inspect_and_stubs_check_json(tmp_path: Path) -> None:
    r = vudo("inspect", "example:calculator", "--json")
    doc = json.loads(r.stdout)
    assert r.returncode == 0 and doc["command"] == "inspect" and doc["ok"] is True
    assert {"links", "imports", "exports", "memories", "error"} <= set(doc)
    stub = tmp_path / "api.py"
    r = vudo("stubs", "example:calculator", "-o", stub, "--check", "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["state"] == "missing"
    assert vudo("stubs", "example:calculator", "-o", stub).returncode == 0
    r = vudo("stubs", "example:calculator", "-o", stub, "--check", "--json")
    assert r.returncode == 0
    assert json.loads(r.stdout) == {"command": "stubs", "ok": True, "file": str(stub),
                                    "source": str(EXAMPLES / "calculator.wat"),
                                    "class": "Calculator", "state": "up to date",
                                    "error": None}
    stub.write_text(stub.read_text() + "# edited\n")
    r = vudo("stubs", "example:calculator", "-o", stub, "--check")
    assert r.returncode == 1 and "is outdated; regenerate it with: vudo stubs" in r.stderr


def test_stubs_create_missing_folders_or_say_why(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "api.py"
    r = vudo("stubs", "example:calculator", "-o", target)
    assert r.returncode == 0 and target.read_text().startswith('"""Typed interface')
    (tmp_path / "plain").write_text("x")
    r = vudo("stubs", "example:calculator", "-o", tmp_path / "plain" / "api.py")
    assert r.returncode == 2
    assert r.stderr == (f"error: cannot write {tmp_path / 'plain' / 'api.py'}: "
                        f"{tmp_path / 'plain'} is a file, not a folder\n")
