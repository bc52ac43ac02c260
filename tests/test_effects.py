"""Tests of vudo.effects: permissions and the standard FS, HTTP and DB effects.

Spirits are played by ``FakeSpirit`` (the members the handler relies on); results are awaited
with ``StandardEffectHandler.wait_idle`` so no test sleeps.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import sys
import threading
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from effects_helpers import FakeSpirit, emit, run, warnings_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vudo._effects import (
    Permissions,
    StandardEffectHandler,
    decode_http_result,
    decode_result,
    effect_sender,
    encode_db_query,
    encode_fs_write,
    encode_http_post,
    encode_result,
)
from vudo.abi import EffectId, ResultCode

OK = ResultCode.OK
SECRET = b"top secret, outside the root"


def subscribe(handler: StandardEffectHandler, spirit: FakeSpirit, channel: str) -> int:
    target: Any = spirit
    return handler.subscribe(target, channel)


# --------------------------------------------------------------------------------------------
# Wire helpers and Permissions


def test_envelope_helpers_round_trip() -> None:
    assert decode_result(encode_result(ResultCode.NOT_FOUND, b"x")) == (-4, b"x")
    assert decode_result(encode_result(0)) == (0, b"")
    assert encode_fs_write("a", b"zz") == b"\x01\x00\x00\x00azz"
    assert encode_http_post("u", b"") == b"\x01\x00\x00\x00u"
    assert encode_db_query("SELECT ?", [1]) == b"SELECT ?\x00[1]"
    assert decode_http_result(b"\xc8\x00\x00\x00hi") == (200, b"hi")
    assert effect_sender(EffectId.HTTP_GET) == "effect:HTTP_GET"
    assert effect_sender(300) == "effect:300"
    with pytest.raises(ValueError):
        decode_result(b"\x00")


def test_permissions_default_grants_nothing_but_noop_and_terminate() -> None:
    p = Permissions.none()
    assert p == Permissions()
    assert p.allows_effect(EffectId.NOOP) and p.allows_effect(EffectId.TERMINATE)
    for e in EffectId:
        if e not in (EffectId.NOOP, EffectId.TERMINATE):
            assert not p.allows_effect(e)
    assert p.allows_channel("anything")  # channels: None = any registered channel


def test_permissions_allow_grants_implied_ids(tmp_path: Path) -> None:
    p = Permissions.allow(
        fs_root=str(tmp_path),
        fs_write=True,
        http_hosts=["Example.COM:8080"],
        database=":memory:",
        effects=[EffectId.SPAWN, 300],
        http_timeout=2.0,
    )
    assert p.effects == {
        EffectId.FS_READ,
        EffectId.FS_WRITE,
        EffectId.HTTP_GET,
        EffectId.HTTP_POST,
        EffectId.DB_QUERY,
        EffectId.SPAWN,
        300,
    }
    assert p.fs_root == tmp_path and p.http_timeout == 2.0
    assert p.http_hosts == {"example.com:8080"}
    assert p.allows_host("example.com", 8080) and not p.allows_host("example.com", 80)
    ro = Permissions.allow(fs_root=tmp_path)
    assert ro.effects == {EffectId.FS_READ}


@pytest.mark.parametrize(
    ("entry", "host", "port", "ok"),
    [
        ("127.0.0.1", "127.0.0.1", 1234, True),
        ("127.0.0.1:80", "127.0.0.1", 80, True),
        ("127.0.0.1:80", "127.0.0.1", 81, False),
        ("[::1]", "::1", 8080, True),
        ("[::1]:8080", "::1", 8080, True),
        ("::1", "::1", 1, True),
        ("api.example.com", "example.com", 80, False),
    ],
)
def test_host_rules(entry: str, host: str, port: int, ok: bool) -> None:
    assert Permissions(http_hosts=frozenset({entry})).allows_host(host, port) is ok


@pytest.mark.parametrize("entry", ["", "a:b", "a:0", "a:70000", "[::1", "[::1]x", "a/b", "u@h"])
def test_bad_host_rules_rejected(entry: str) -> None:
    with pytest.raises(ValueError):
        Permissions(http_hosts=frozenset({entry}))


def test_bad_limits_rejected() -> None:
    with pytest.raises(ValueError):
        Permissions(http_timeout=0)
    with pytest.raises(ValueError):
        Permissions(fs_max_read=-1)


# --------------------------------------------------------------------------------------------
# Capability checks


def test_ungranted_effects_refused_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    spirit = FakeSpirit("lonely")
    with StandardEffectHandler() as handler, caplog.at_level(logging.WARNING, "vudo.effects"):
        for effect in (
            EffectId.FS_READ,
            EffectId.FS_WRITE,
            EffectId.HTTP_GET,
            EffectId.HTTP_POST,
            EffectId.DB_QUERY,
            EffectId.SPAWN,
            999,
        ):
            caplog.clear()
            assert emit(handler, spirit, effect, b"x") == ResultCode.NOT_PERMITTED
            [message] = warnings_of(caplog)
            assert "'lonely'" in message
            assert (
                EffectId(effect).name if effect in EffectId._value2member_map_ else "custom (999)"
            ) in message
        assert emit(handler, spirit, EffectId.NOOP, b"") == OK
        assert emit(handler, spirit, EffectId.TERMINATE, b"bye") == OK
    assert spirit.terminated and spirit.cause is not None and "bye" in spirit.cause
    assert not spirit.inbox


def test_registered_effects_need_a_grant_too(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[bytes] = []

    def custom(spirit: Any, payload: bytes) -> int:
        calls.append(payload)
        return ResultCode.OK

    with StandardEffectHandler() as handler:
        handler.register(300, custom)
        with caplog.at_level(logging.WARNING, "vudo.effects"):
            assert emit(handler, FakeSpirit(), 300, b"a") == ResultCode.NOT_PERMITTED
        assert warnings_of(caplog)
        granted = FakeSpirit(permissions=Permissions.allow(effects=[300, 301]))
        assert emit(handler, granted, 300, b"b") == OK
        assert emit(handler, granted, 301, b"c") == ResultCode.NOT_FOUND
    assert calls == [b"b"]


def test_registered_handler_overrides_builtin(tmp_path: Path) -> None:
    perms = Permissions.allow(fs_root=tmp_path)
    with StandardEffectHandler(perms) as handler:
        handler.register(EffectId.FS_READ, lambda s, p: ResultCode.TIMEOUT)
        assert emit(handler, FakeSpirit(), EffectId.FS_READ, b"x") == ResultCode.TIMEOUT


def test_per_spirit_permissions_override_handler_default(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_bytes(b"data")
    with StandardEffectHandler(Permissions.allow(fs_root=tmp_path)) as handler:
        default = FakeSpirit("default")
        locked = FakeSpirit("locked", permissions=Permissions.none())
        assert run(handler, default, EffectId.FS_READ, b"f.txt") == (
            OK,
            ("effect:FS_READ", 0, b"data"),
        )
        assert run(handler, locked, EffectId.FS_READ, b"f.txt") == (ResultCode.NOT_PERMITTED, None)


def test_channels_honour_permissions(caplog: pytest.LogCaptureFixture) -> None:
    with StandardEffectHandler() as handler:
        handler.register_channel("news")
        handler.register_channel("secrets")
        anyone = FakeSpirit("anyone")
        picky = FakeSpirit("picky", permissions=Permissions(channels=frozenset({"news"})))
        with caplog.at_level(logging.WARNING, "vudo.effects"):
            assert subscribe(handler, picky, "secrets") == ResultCode.NOT_PERMITTED
        assert any("'picky'" in m and "secrets" in m for m in warnings_of(caplog))
        assert subscribe(handler, picky, "news") == OK
        assert subscribe(handler, anyone, "secrets") == OK
        assert subscribe(handler, anyone, "unknown") == ResultCode.NOT_FOUND
        assert handler.notify("news", b"hi") == 1
    assert picky.inbox == [("channel:news", b"hi")]


# --------------------------------------------------------------------------------------------
# FS


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """``root`` with files and symlinks; ``outside`` beside it holds a secret."""
    return _make_tree(tmp_path)


def _make_tree(base: Path) -> Path:
    root, outside = base / "root", base / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.txt").write_bytes(SECRET)
    (root / "hello.txt").write_bytes(b"hello")
    (root / "sub" / "a.txt").write_bytes(b"a")
    (root / "escape").symlink_to(outside / "secret.txt")
    (root / "dirlink").symlink_to(outside)
    (root / "dangling").symlink_to(outside / "new.txt")
    (root / "inner").symlink_to(root / "hello.txt")
    (root / "loop").symlink_to(root / "loop")
    return root


def test_fs_read_inside_root(tree: Path) -> None:
    with StandardEffectHandler(Permissions.allow(fs_root=tree)) as handler:
        spirit = FakeSpirit()
        for path, data in [
            ("hello.txt", b"hello"),
            ("sub/a.txt", b"a"),
            ("./sub//a.txt", b"a"),
            ("inner", b"hello"),
        ]:
            assert run(handler, spirit, EffectId.FS_READ, path.encode()) == (
                OK,
                ("effect:FS_READ", 0, data),
            )


@pytest.mark.parametrize(
    "path",
    [
        "../outside/secret.txt",
        "sub/../../outside/secret.txt",
        "sub/../hello.txt",
        "..",
        "escape",
        "dirlink/secret.txt",
        "/etc/passwd",
        "\\etc\\passwd",
        "..\\outside\\secret.txt",
    ],
)
def test_fs_escapes_refused_and_logged(
    tree: Path, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    with StandardEffectHandler(Permissions.allow(fs_root=tree)) as handler:
        spirit = FakeSpirit("burglar")
        with caplog.at_level(logging.WARNING, "vudo.effects"):
            rc, result = run(handler, spirit, EffectId.FS_READ, path.encode())
        assert (rc, result) == (ResultCode.NOT_PERMITTED, None)
        [message] = warnings_of(caplog)
        assert "'burglar'" in message and "FS_READ" in message


def test_fs_absolute_path_inside_root_also_refused(tree: Path) -> None:
    with StandardEffectHandler(Permissions.allow(fs_root=tree)) as handler:
        absolute = str(tree / "hello.txt").encode()
        assert emit(handler, FakeSpirit(), EffectId.FS_READ, absolute) == ResultCode.NOT_PERMITTED


@pytest.mark.parametrize("payload", [b"", b"hello.txt\x00", b"\xff\xfe", b"."])
def test_fs_malformed_paths_invalid(tree: Path, payload: bytes) -> None:
    with StandardEffectHandler(Permissions.allow(fs_root=tree)) as handler:
        assert emit(handler, FakeSpirit(), EffectId.FS_READ, payload) == ResultCode.INVALID_ARG


def test_fs_read_failures_delivered(tree: Path) -> None:
    perms = Permissions.allow(fs_root=tree, fs_max_read=3)
    with StandardEffectHandler(perms) as handler:
        spirit = FakeSpirit()
        rc, result = run(handler, spirit, EffectId.FS_READ, b"missing.txt")
        assert rc == OK and result is not None
        assert result[:2] == ("effect:FS_READ", ResultCode.NOT_FOUND)
        assert b"missing.txt" in result[2]
        _, result = run(handler, spirit, EffectId.FS_READ, b"hello.txt")  # 5 bytes > 3
        assert result is not None and result[1] == ResultCode.BUFFER_TOO_SMALL
        _, result = run(handler, spirit, EffectId.FS_READ, b"sub")
        assert result is not None and result[1] == ResultCode.ERROR
        assert str(tree).encode() not in result[2]  # host paths are not revealed
        # A symlink loop fails when resolved (Python 3.11/3.12) or when opened (3.13+).
        rc, result = run(handler, spirit, EffectId.FS_READ, b"loop")
        assert rc == ResultCode.ERROR or (result is not None and result[1] != 0)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fs_read_of_a_fifo_does_not_hang(tree: Path) -> None:
    os.mkfifo(tree / "pipe")
    with StandardEffectHandler(Permissions.allow(fs_root=tree)) as handler:
        _, result = run(handler, FakeSpirit(), EffectId.FS_READ, b"pipe")
        assert result is not None and result[1] == ResultCode.ERROR
        assert b"not a regular file" in result[2]


def test_fs_root_missing_is_an_error(tmp_path: Path) -> None:
    with StandardEffectHandler(Permissions.allow(fs_root=tmp_path / "nope")) as handler:
        assert emit(handler, FakeSpirit(), EffectId.FS_READ, b"a") == ResultCode.ERROR


def test_fs_write_then_read(tree: Path) -> None:
    with StandardEffectHandler(Permissions.allow(fs_root=tree, fs_write=True)) as handler:
        spirit = FakeSpirit()
        payload = encode_fs_write("new/deep/file.bin", b"\x00\x01data")
        assert run(handler, spirit, EffectId.FS_WRITE, payload) == (
            OK,
            ("effect:FS_WRITE", 0, (6).to_bytes(4, "little")),
        )
        assert (tree / "new" / "deep" / "file.bin").read_bytes() == b"\x00\x01data"
        run(handler, spirit, EffectId.FS_WRITE, encode_fs_write("hello.txt", b"hi"))
        assert run(handler, spirit, EffectId.FS_READ, b"hello.txt")[1] == (
            "effect:FS_READ",
            0,
            b"hi",
        )


def test_fs_write_needs_fs_write(tree: Path, caplog: pytest.LogCaptureFixture) -> None:
    perms = Permissions(effects=frozenset({EffectId.FS_WRITE}), fs_root=tree)  # fs_write False
    with StandardEffectHandler(perms) as handler, caplog.at_level(logging.WARNING):
        rc = emit(handler, FakeSpirit(), EffectId.FS_WRITE, encode_fs_write("x", b"1"))
    assert rc == ResultCode.NOT_PERMITTED
    assert any("FS write not granted" in m for m in warnings_of(caplog))
    assert not (tree / "x").exists()


@pytest.mark.parametrize(
    "path", ["dirlink/planted.txt", "dangling", "../outside/planted.txt", "escape"]
)
def test_fs_write_escapes_refused(tree: Path, path: str) -> None:
    outside = tree.parent / "outside"
    before = {p.name: p.read_bytes() for p in outside.iterdir()}
    with StandardEffectHandler(Permissions.allow(fs_root=tree, fs_write=True)) as handler:
        rc, result = run(handler, FakeSpirit(), EffectId.FS_WRITE, encode_fs_write(path, b"x"))
    assert (rc, result) == (ResultCode.NOT_PERMITTED, None)
    assert {p.name: p.read_bytes() for p in outside.iterdir()} == before


@pytest.mark.parametrize("payload", [b"", b"\x01\x00", b"\x09\x00\x00\x00short"])
def test_fs_write_malformed_payload(tree: Path, payload: bytes) -> None:
    with StandardEffectHandler(Permissions.allow(fs_root=tree, fs_write=True)) as handler:
        assert emit(handler, FakeSpirit(), EffectId.FS_WRITE, payload) == ResultCode.INVALID_ARG


_SEGMENTS = st.sampled_from(
    [
        "..",
        ".",
        "",
        "sub",
        "hello.txt",
        "escape",
        "dirlink",
        "dangling",
        "inner",
        "outside",
        "secret.txt",
        "..\\..",
        "~",
        "\x00",
        "%2e%2e",
        "\u2025",
    ]
)


@pytest.fixture(scope="module")
def shared_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_tree(tmp_path_factory.mktemp("fs"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    segments=st.lists(_SEGMENTS, min_size=1, max_size=6),
    absolute=st.booleans(),
    noise=st.text(st.characters(exclude_categories=["Cs"]), max_size=12),
)
def test_fs_random_paths_never_leave_the_root(
    shared_tree: Path, segments: list[str], absolute: bool, noise: str
) -> None:
    outside = shared_tree.parent / "outside"
    paths = [("/" if absolute else "") + "/".join(segments), noise]
    with StandardEffectHandler(Permissions.allow(fs_root=shared_tree, fs_write=True)) as handler:
        spirit = FakeSpirit()
        for path in paths:
            rc = emit(handler, spirit, EffectId.FS_READ, path.encode())
            assert rc in (OK, ResultCode.NOT_PERMITTED, ResultCode.INVALID_ARG, ResultCode.ERROR)
            if path.startswith("/") or ".." in path.replace("\\", "/").split("/"):
                assert rc == ResultCode.NOT_PERMITTED
            emit(handler, spirit, EffectId.FS_WRITE, encode_fs_write(path, b"planted"))
        assert handler.wait_idle(30)
    for _, payload in spirit.inbox:
        assert SECRET not in payload
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (outside / "secret.txt").read_bytes() == SECRET


def test_results_arrive_in_emission_order(tmp_path: Path) -> None:
    with StandardEffectHandler(Permissions.allow(fs_root=tmp_path, fs_write=True)) as handler:
        spirit = FakeSpirit()
        for i in range(30):
            assert emit(handler, spirit, EffectId.FS_WRITE, encode_fs_write("n", b"%d" % i)) == OK
            assert emit(handler, spirit, EffectId.FS_READ, b"n") == OK
        assert handler.wait_idle(30)
    reads = [
        body for sender, _, body in (spirit.take() for _ in range(60)) if sender == "effect:FS_READ"
    ]
    assert reads == [b"%d" % i for i in range(30)]


# --------------------------------------------------------------------------------------------
# HTTP


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    gates: defaultdict[str, threading.Event]
    seen_cookies: list[str | None]
    seen_content_types: list[str | None]

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The size-cap and timeout tests hang up mid-response on purpose; a broken pipe is
        # expected there, and anything else is still reported.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def _reply(
        self, status: int, body: bytes, headers: dict[str, str] | None = None, length: bool = True
    ) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path
        if path == "/hello":
            self._reply(200, b"hello")
        elif path == "/missing":
            self._reply(404, b"nope")
        elif path == "/big":
            self._reply(200, b"x" * 5000)
        elif path == "/big-unsized":
            self.close_connection = True
            self._reply(200, b"y" * 5000, length=False)
        elif path == "/redirect":
            self._reply(302, b"", {"Location": "http://example.invalid/"})
        elif path == "/set-cookie":
            self._reply(200, b"", {"Set-Cookie": "sid=leak; Path=/"})
        elif path == "/echo-cookie":
            self.server.seen_cookies.append(self.headers.get("Cookie"))
            self._reply(200, b"")
        elif path.startswith("/slow/"):
            self.server.gates[path].wait(30)
            self._reply(200, b"late")
        else:
            self._reply(400, b"?")

    def do_POST(self) -> None:
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        self.server.seen_content_types.append(self.headers.get("Content-Type"))
        self._reply(201, b"got:" + body)


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.gates = defaultdict(threading.Event)
    srv.seen_cookies = []
    srv.seen_content_types = []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    for gate in list(srv.gates.values()):
        gate.set()
    srv.shutdown()
    srv.server_close()


def _base(server: _Server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def _http(server: _Server, **limits: Any) -> StandardEffectHandler:
    return StandardEffectHandler(Permissions.allow(http_hosts=["127.0.0.1"], **limits))


def test_http_get_allowed_host(server: _Server) -> None:
    with _http(server) as handler:
        spirit = FakeSpirit()
        rc, result = run(handler, spirit, EffectId.HTTP_GET, f"{_base(server)}/hello".encode())
        assert rc == OK and result is not None
        sender, status, body = result
        assert (sender, status) == ("effect:HTTP_GET", 0)
        assert decode_http_result(body) == (200, b"hello")
        _, result = run(handler, spirit, EffectId.HTTP_GET, f"{_base(server)}/missing".encode())
        assert result is not None and decode_http_result(result[2]) == (404, b"nope")


def test_http_post(server: _Server) -> None:
    with _http(server) as handler:
        payload = encode_http_post(f"{_base(server)}/echo", b"\x00body")
        _, result = run(handler, FakeSpirit(), EffectId.HTTP_POST, payload)
        assert result is not None and result[:2] == ("effect:HTTP_POST", 0)
        assert decode_http_result(result[2]) == (201, b"got:\x00body")
    assert server.seen_content_types[-1] == "application/octet-stream"


@pytest.mark.parametrize(
    "url",
    ["http://example.com/", "https://localhost/", "http://127.0.0.2/", "http://[::1]/"],
)
def test_http_host_not_allowed(server: _Server, url: str, caplog: pytest.LogCaptureFixture) -> None:
    with _http(server) as handler, caplog.at_level(logging.WARNING, "vudo.effects"):
        spirit = FakeSpirit("curious")
        assert run(handler, spirit, EffectId.HTTP_GET, url.encode()) == (
            ResultCode.NOT_PERMITTED,
            None,
        )
        assert emit(handler, spirit, EffectId.HTTP_POST, encode_http_post(url, b"x")) == (
            ResultCode.NOT_PERMITTED
        )
    messages = warnings_of(caplog)
    assert len(messages) == 2
    assert all("'curious'" in m and "allow-list" in m for m in messages)


def test_http_port_specific_rule(server: _Server) -> None:
    port = server.server_address[1]
    other = port + 1 if port < 65535 else port - 1
    perms = Permissions.allow(http_hosts=[f"127.0.0.1:{port}"])
    with StandardEffectHandler(perms) as handler:
        spirit = FakeSpirit()
        ok_url = f"http://127.0.0.1:{port}/hello".encode()
        assert emit(handler, spirit, EffectId.HTTP_GET, ok_url) == OK
        bad_url = f"http://127.0.0.1:{other}/hello".encode()
        assert emit(handler, spirit, EffectId.HTTP_GET, bad_url) == ResultCode.NOT_PERMITTED


@pytest.mark.parametrize(
    "payload", [b"ftp://127.0.0.1/x", b"file:///etc/passwd", b"/relative", b"\xff", b"http://"]
)
def test_http_bad_urls_invalid(server: _Server, payload: bytes) -> None:
    with _http(server) as handler:
        assert emit(handler, FakeSpirit(), EffectId.HTTP_GET, payload) == ResultCode.INVALID_ARG


def test_http_post_malformed_payload(server: _Server) -> None:
    with _http(server) as handler:
        assert emit(handler, FakeSpirit(), EffectId.HTTP_POST, b"\xff\x00\x00\x00u") == (
            ResultCode.INVALID_ARG
        )


@pytest.mark.parametrize("path", ["/big", "/big-unsized"])
def test_http_response_size_cap(server: _Server, path: str) -> None:
    with _http(server, http_max_response=1000) as handler:
        _, result = run(handler, FakeSpirit(), EffectId.HTTP_GET, (_base(server) + path).encode())
        assert result is not None and result[1] == ResultCode.BUFFER_TOO_SMALL
        assert b"1000" in result[2]
    with _http(server, http_max_response=5000) as handler:
        _, result = run(handler, FakeSpirit(), EffectId.HTTP_GET, (_base(server) + path).encode())
        assert result is not None and result[1] == 0
        assert len(decode_http_result(result[2])[1]) == 5000  # exactly at the cap is fine


def test_http_timeout(server: _Server) -> None:
    gate = "/slow/timeout"
    try:
        with _http(server, http_timeout=0.2) as handler:
            _, result = run(
                handler, FakeSpirit(), EffectId.HTTP_GET, (_base(server) + gate).encode()
            )
            assert result is not None and result[:2] == ("effect:HTTP_GET", ResultCode.TIMEOUT)
    finally:
        server.gates[gate].set()


def test_http_emit_returns_before_the_response(server: _Server) -> None:
    gate = "/slow/nonblocking"
    with _http(server) as handler:
        spirit = FakeSpirit()
        try:
            assert emit(handler, spirit, EffectId.HTTP_GET, (_base(server) + gate).encode()) == OK
            assert handler.pending == 1 and not spirit.inbox
        finally:
            server.gates[gate].set()
        assert handler.wait_idle(30)
        assert decode_http_result(spirit.take()[2]) == (200, b"late")


def test_http_redirects_not_followed(server: _Server) -> None:
    with _http(server) as handler:
        _, result = run(
            handler, FakeSpirit(), EffectId.HTTP_GET, (_base(server) + "/redirect").encode()
        )
        assert result is not None and decode_http_result(result[2])[0] == 302


def test_http_cookies_not_kept(server: _Server) -> None:
    with _http(server) as handler:
        run(handler, FakeSpirit("a"), EffectId.HTTP_GET, (_base(server) + "/set-cookie").encode())
        run(handler, FakeSpirit("b"), EffectId.HTTP_GET, (_base(server) + "/echo-cookie").encode())
    assert server.seen_cookies[-1] is None


def test_http_connection_refused_is_an_error(server: _Server) -> None:
    # A port that was just free: nothing listens there.
    probe = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    port = probe.server_address[1]
    probe.server_close()
    with _http(server) as handler:
        _, result = run(
            handler, FakeSpirit(), EffectId.HTTP_GET, f"http://127.0.0.1:{port}/".encode()
        )
        assert result is not None and result[1] == ResultCode.ERROR
        assert result[2].startswith(b"HTTP error")


# --------------------------------------------------------------------------------------------
# DB


@pytest.fixture
def db_file(tmp_path: Path) -> Path:
    path = tmp_path / "data.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, score REAL, photo BLOB);
        INSERT INTO people (name, score, photo) VALUES ('ada', 9.5, x'0001'), ('bob', 7, NULL);
        """
    )
    conn.commit()
    conn.close()
    return path


def _query(
    handler: StandardEffectHandler, spirit: FakeSpirit, sql: str, params: Any = None
) -> tuple[int, int, Any]:
    rc, result = run(handler, spirit, EffectId.DB_QUERY, encode_db_query(sql, params))
    assert rc == OK and result is not None and result[0] == "effect:DB_QUERY"
    status, body = result[1], result[2]
    return rc, status, json.loads(body) if status == 0 else body.decode()


def _count(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM people").fetchone()[0])


def test_db_select(db_file: Path) -> None:
    with StandardEffectHandler(Permissions.allow(database=db_file)) as handler:
        spirit = FakeSpirit()
        _, status, result = _query(handler, spirit, "SELECT id, name, score, photo FROM people")
        assert status == 0
        assert result == {
            "columns": ["id", "name", "score", "photo"],
            "rows": [[1, "ada", 9.5, {"blob": "AAE="}], [2, "bob", 7.0, None]],
            "truncated": False,
            "changes": 0,
            "last_row_id": None,
        }
        _, _, result = _query(handler, spirit, "SELECT name FROM people WHERE id = ?", [2])
        assert result["rows"] == [["bob"]]
        _, _, result = _query(
            handler, spirit, "SELECT :n AS n, :b AS b", {"n": "x", "b": {"blob": "AAE="}}
        )
        assert result["rows"] == [["x", {"blob": "AAE="}]]
        _, _, result = _query(handler, spirit, "PRAGMA table_info(people)")
        assert [r[1] for r in result["rows"]] == ["id", "name", "score", "photo"]


def test_db_write_refused_without_grant(db_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    with (
        StandardEffectHandler(Permissions.allow(database=db_file)) as handler,
        caplog.at_level(logging.WARNING, "vudo.effects"),
    ):
        spirit = FakeSpirit("reader")
        for sql in [
            "INSERT INTO people (name) VALUES ('eve')",
            "DELETE FROM people",
            "DROP TABLE people",
            "CREATE TABLE t (x)",
            "CREATE TEMP TABLE t (x)",
            "PRAGMA user_version = 5",
            "BEGIN",
            "UPDATE people SET name = 'x'",
        ]:
            caplog.clear()
            _, status, message = _query(handler, spirit, sql)
            assert status == ResultCode.NOT_PERMITTED, sql
            assert "not permitted" in message
            assert any("'reader'" in m and "DB_QUERY" in m for m in warnings_of(caplog)), sql
    assert _count(db_file) == 2


def test_db_write_allowed_with_grant(db_file: Path) -> None:
    with StandardEffectHandler(Permissions.allow(database=db_file, db_write=True)) as handler:
        spirit = FakeSpirit()
        _, status, result = _query(
            handler, spirit, "INSERT INTO people (name, score) VALUES (?, ?)", ["eve", 1]
        )
        assert status == 0 and result["changes"] == 1 and result["last_row_id"] == 3
        _, status, result = _query(handler, spirit, "UPDATE people SET score = 0")
        assert status == 0 and result["changes"] == 3
        _, status, _ = _query(handler, spirit, "CREATE TABLE extra (x)")
        assert status == 0
    assert _count(db_file) == 3  # committed: visible to another connection


@pytest.mark.parametrize(
    "sql",
    [
        "ATTACH DATABASE 'other.db' AS o",
        "VACUUM INTO 'copy.db'",
        "BEGIN",
        "SAVEPOINT s",
        "PRAGMA writable_schema = 1",
        "SELECT load_extension('x')",
    ],
)
def test_db_dangerous_statements_refused_even_with_write(
    db_file: Path, sql: str, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        StandardEffectHandler(Permissions.allow(database=db_file, db_write=True)) as handler,
        caplog.at_level(logging.WARNING, "vudo.effects"),
    ):
        _, status, _ = _query(handler, FakeSpirit(), sql)
    assert status == ResultCode.NOT_PERMITTED
    assert warnings_of(caplog)
    assert sorted(p.name for p in db_file.parent.iterdir()) == ["data.sqlite"]


def test_db_errors_delivered(db_file: Path) -> None:
    with StandardEffectHandler(Permissions.allow(database=db_file)) as handler:
        spirit = FakeSpirit()
        _, status, message = _query(handler, spirit, "SELEKT 1")
        assert status == ResultCode.ERROR and message.startswith("SQL error")
        _, status, _ = _query(handler, spirit, "SELECT * FROM nowhere")
        assert status == ResultCode.ERROR
        _, status, _ = _query(handler, spirit, "SELECT 1; SELECT 2")
        assert status == ResultCode.ERROR
        _, status, _ = _query(handler, spirit, "SELECT ?", [1, 2])
        assert status == ResultCode.ERROR


def test_db_row_cap_and_timeout(db_file: Path) -> None:
    perms = Permissions.allow(database=db_file, db_max_rows=10, db_timeout=0.2)
    with StandardEffectHandler(perms) as handler:
        spirit = FakeSpirit()
        many = (
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 50) "
            "SELECT x FROM c"
        )
        _, status, result = _query(handler, spirit, many)
        assert status == 0 and result["truncated"] and len(result["rows"]) == 10
        forever = (
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
        )
        _, status, _ = _query(handler, spirit, forever)
        assert status == ResultCode.TIMEOUT
        _, status, _ = _query(handler, spirit, "SELECT 1")  # the connection is still usable
        assert status == 0


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"   ",
        b"\xff",
        b"SELECT ?\x00not json",
        b"SELECT ?\x00 5",
        b"SELECT ?\x00[[1]]",
        b'SELECT ?\x00[{"blob": "!!"}]',
    ],
)
def test_db_malformed_payload(db_file: Path, payload: bytes) -> None:
    with StandardEffectHandler(Permissions.allow(database=db_file)) as handler:
        assert emit(handler, FakeSpirit(), EffectId.DB_QUERY, payload) == ResultCode.INVALID_ARG


def test_db_memory_database_persists_between_queries() -> None:
    perms = Permissions.allow(database=":memory:", db_write=True)
    with StandardEffectHandler(perms) as handler:
        spirit = FakeSpirit()
        _query(handler, spirit, "CREATE TABLE kv (k TEXT, v TEXT)")
        _query(handler, spirit, "INSERT INTO kv VALUES (?, ?)", ["a", "1"])
        _, _, result = _query(handler, spirit, "SELECT v FROM kv WHERE k = 'a'")
        assert result["rows"] == [["1"]]


def test_db_not_granted_database() -> None:
    perms = Permissions(effects=frozenset({EffectId.DB_QUERY}))
    with StandardEffectHandler(perms) as handler:
        assert emit(handler, FakeSpirit(), EffectId.DB_QUERY, b"SELECT 1") == (
            ResultCode.NOT_PERMITTED
        )


# --------------------------------------------------------------------------------------------
# Lifecycle and delivery


def test_closed_handler_refuses_with_error(tmp_path: Path) -> None:
    handler = StandardEffectHandler(Permissions.allow(fs_root=tmp_path))
    handler.close()
    handler.close()  # idempotent
    assert emit(handler, FakeSpirit(), EffectId.FS_READ, b"x") == ResultCode.ERROR
    assert handler.wait_idle(0)


def test_external_executor_is_not_shut_down(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"1")
    with ThreadPoolExecutor(1) as pool:
        with StandardEffectHandler(Permissions.allow(fs_root=tmp_path), executor=pool) as h:
            assert run(h, FakeSpirit(), EffectId.FS_READ, b"f")[1] == ("effect:FS_READ", 0, b"1")
        assert pool.submit(lambda: 42).result() == 42


def test_full_inbox_and_terminated_spirits_drop_results(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "f").write_bytes(b"1")
    with (
        StandardEffectHandler(Permissions.allow(fs_root=tmp_path)) as handler,
        caplog.at_level(logging.WARNING, "vudo.effects"),
    ):
        full = FakeSpirit("full", capacity=0)
        assert run(handler, full, EffectId.FS_READ, b"f") == (OK, None)
        assert any("'full'" in m and "dropped" in m for m in warnings_of(caplog))
        gone = FakeSpirit("gone")
        gone.terminate("test")
        assert run(handler, gone, EffectId.FS_READ, b"f") == (OK, None)
        assert handler.pending == 0


def test_a_raising_inbox_does_not_stall_the_queue(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "f").write_bytes(b"1")

    class Broken(FakeSpirit):
        calls = 0

        def deliver(self, from_: str, payload: bytes) -> bool:
            Broken.calls += 1
            if Broken.calls == 1:
                raise RuntimeError("inbox exploded")
            return super().deliver(from_, payload)

    spirit = Broken("broken")
    with (
        StandardEffectHandler(Permissions.allow(fs_root=tmp_path)) as handler,
        caplog.at_level(logging.ERROR, "vudo.effects"),
    ):
        assert emit(handler, spirit, EffectId.FS_READ, b"f") == OK
        assert emit(handler, spirit, EffectId.FS_READ, b"f") == OK
        assert handler.wait_idle(30)
    assert spirit.take() == ("effect:FS_READ", 0, b"1")
    assert any("inbox exploded" in (r.exc_text or "") or r.exc_info for r in caplog.records)
