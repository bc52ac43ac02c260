"""``vudo seance`` and ``vudo trace`` as a user runs them (real subprocesses, and a real
terminal where the display matters): manifests as scenarios, grants, ``--json``, the progress
bar, ``--watch``, ``--trace`` (of ``vudo run`` too) and the HTML sequence diagram (in headless
Chromium)."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from cli_helpers import EXAMPLES, vudo, vudo_on_terminal, write

from vudo import Seance
from vudo.errors import LinkError

POINT = EXAMPLES / "point.wat"

SCENARIO = f"""\
[[spirits]]
name = "geo"
source = "{POINT}"

[[steps]]
invoke = "geo.new_Point"
args = [3, 4]
as = "p"

[[steps]]
invoke = "geo.Point.length_squared"
args = ["$p"]
expect = 25
as = "d"

[[steps]]
invoke = "geo.Point.translate"
args = ["$p", 1, 1]

[[steps]]
invoke = "geo.Point.x"
args = ["$p"]
expect = 4
"""

NAPPER_WAT = """\
(module
  (import "vudo" "vudo_sleep" (func $sleep (param i32)))
  (global $n (mut i32) (i32.const 0))
  (func (export "nap") (call $sleep (i32.const 100))
    (global.set $n (i32.add (global.get $n) (i32.const 1))))
  (func (export "done") (result i32) (i32.ge_s (global.get $n) (i32.const 9))))
"""

NAPPER_TOML = """\
[[spirits]]
name = "napper"
source = "napper.wat"

[[steps]]
invoke = "napper.done"
expect = 0

[[steps]]
rounds = ["napper.nap"]
until = "napper.done"

[[steps]]
invoke = "napper.done"
expect = 1
"""


# ------------------------------------------------------------------------------------------
# manifests as scenarios
# ------------------------------------------------------------------------------------------
def test_steps_pass_results_to_later_steps(tmp_path: Path) -> None:
    manifest = write(tmp_path, "geo.toml", SCENARIO)
    r = vudo("seance", manifest)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert re.fullmatch(r"\[1\] geo\.new_Point\(3, 4\) -> \d+ \(as \$p\)", lines[0])
    assert lines[1] == "[2] geo.Point.length_squared($p) -> 25 (as $d) ok"
    assert lines[3] == "[4] geo.Point.x($p) -> 4 ok"


def test_a_wrong_expectation_fails_the_scenario(tmp_path: Path) -> None:
    manifest = write(tmp_path, "geo.toml", SCENARIO.replace("expect = 4", "expect = 5"))
    r = vudo("seance", manifest)
    assert r.returncode == 1
    assert f"error: {manifest}: step 4 (geo.Point.x($p)): returned 4, expected 5" in r.stderr


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ('args = ["$q"]', "'args': '$q' names no earlier step's result"),
        ('args = ["$p x"]', "'args': '$p x' is not a reference"),
        ('as = "two words"', "'as' must be a name"),
    ],
)
def test_bad_references_are_usage_errors(tmp_path: Path, bad: str, message: str) -> None:
    text = SCENARIO.replace('args = ["$p"]\nexpect = 25', f"{bad}\nexpect = 25", 1)
    if bad.startswith("as"):
        text = SCENARIO.replace('as = "d"', bad)
    manifest = write(tmp_path, "geo.toml", text)
    r = vudo("seance", manifest)
    assert r.returncode == 2 and message in r.stderr, r.stderr


def test_seance_json_document(tmp_path: Path) -> None:
    manifest = write(tmp_path, "geo.toml", SCENARIO)
    r = vudo("seance", manifest, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert list(doc) == ["command", "ok", "session", "manifest", "steps", "results", "spirits",
                         "output", "logs", "trace", "seconds", "error"]
    assert doc["ok"] is True and doc["results"]["d"] == 25
    assert [s["number"] for s in doc["steps"]] == [1, 2, 3, 4]
    assert doc["spirits"][0]["name"] == "geo" and doc["spirits"][0]["calls"] == 4
    bad = write(tmp_path, "bad.toml", "[[spirits]]\n")
    r = vudo("seance", bad, "--json")
    assert r.returncode == 2
    assert json.loads(r.stdout)["error"]["message"].startswith(f"{bad}: spirits[1]: missing")


GRANTED_WAT = """\
(module
  (import "vudo" "vudo_emit_effect" (func $emit (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 1024) "hello.txt")
  (func (export "read") (result i32) (call $emit (i32.const 10) (i32.const 1024) (i32.const 9))))
"""


def test_manifest_grants_merge_with_the_session(tmp_path: Path) -> None:
    write(tmp_path, "reader.wat", GRANTED_WAT)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "hello.txt").write_text("hi")
    write(tmp_path, "myloa.py", "import vudo\nLOA = vudo.create_loa('extra', '1.0.0', {})\n")
    manifest = write(tmp_path, "s.toml", """\
        [session]
        permissions = { fs = "data" }
        loas = ["myloa:LOA"]

        [[spirits]]
        name = "allowed"
        source = "reader.wat"

        [[spirits]]
        name = "denied"
        source = "reader.wat"
        permissions = { fs_write = true, hosts = [] }

        [[steps]]
        invoke = "allowed.read"
        expect = 0

        [[steps]]
        invoke = "denied.read"
        expect = 0
        """)
    r = vudo("seance", manifest, "--json")
    assert r.returncode == 0, r.stderr  # "denied" inherits fs = "data" key by key
    denied = write(tmp_path, "d.toml", manifest.read_text().replace(
        'permissions = { fs = "data" }\n', ""))
    r = vudo("seance", denied)
    assert r.returncode == 2 and "--allow-fs-write needs --allow-fs DIR" in r.stderr
    r = vudo("seance", denied, "--allow-fs", tmp_path / "data")
    assert r.returncode == 0, r.stderr  # the command line grants it for the session
    r = vudo("seance", write(tmp_path, "e.toml", manifest.read_text().replace(
        'fs = "data"', 'fs = "nowhere"')))
    assert r.returncode == 2 and "permissions.fs:" in r.stderr and "is not a directory" in r.stderr


TRIPLER_WAT = """\
(module
  (import "triple" "triple" (func $triple (param i32) (result i32)))
  (func (export "go") (param i32) (result i32) (call $triple (local.get 0))))
"""

ENV_WAT = """\
(module
  (import "wasi_snapshot_preview1" "environ_sizes_get"
    (func $sizes (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "env_count") (result i32)
    (drop (call $sizes (i32.const 0) (i32.const 4))) (i32.load (i32.const 0))))
"""


def test_manifest_loas_and_env_per_spirit_over_the_session(tmp_path: Path) -> None:
    env_wat = write(tmp_path, "env.wat", ENV_WAT)
    try:
        with Seance() as probe:
            probe.summon("probe", env_wat)
    except LinkError as exc:
        pytest.skip(f"this build does not load WASI Spirits yet ({exc})")
    write(tmp_path, "tripler.wat", TRIPLER_WAT)
    write(tmp_path, "triple_loa.py", "import vudo\n\n"
          "def _triple(ctx):\n    return lambda x: 3 * x\n\n"
          "LOA = vudo.create_loa('triple', '1.0.0', {'triple': vudo.HostFunction("
          "'triple', _triple, params=('i32',), results=('i32',))})\n")
    manifest = write(tmp_path, "s.toml", """\
        [session]
        env = { A = "1", B = "2" }

        [[spirits]]
        name = "plain"
        source = "env.wat"

        [[spirits]]
        name = "own"
        source = "env.wat"
        env = { B = "3", C = "4" }

        [[spirits]]
        name = "tripler"
        source = "tripler.wat"
        loas = ["triple_loa:LOA"]

        [[steps]]
        invoke = "plain.env_count"
        expect = 2

        [[steps]]
        invoke = "own.env_count"
        expect = 3

        [[steps]]
        invoke = "tripler.go"
        args = [5]
        expect = 15
        """)
    r = vudo("seance", manifest, "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr + r.stdout
    assert [s["ok"] for s in json.loads(r.stdout)["steps"]] == [True, True, True]
    # the Loa is the Spirit's own: a Spirit without it does not link
    lonely = write(tmp_path, "t.toml", manifest.read_text().replace(
        'loas = ["triple_loa:LOA"]', ""))
    r = vudo("seance", lonely, cwd=tmp_path)
    assert r.returncode != 0 and "triple.triple" in r.stderr


# ------------------------------------------------------------------------------------------
# on a terminal
# ------------------------------------------------------------------------------------------
def test_quick_sessions_show_no_progress_bar() -> None:
    code, screen = vudo_on_terminal("seance", "example:pingpong")
    assert code == 0, screen
    assert "(round" not in screen and "\r" not in screen.replace("\r\n", "\n")
    assert "[4] pong.echoed() -> 10 ok" in screen.splitlines()


def test_long_sessions_show_a_bar_that_never_mixes_with_lines(tmp_path: Path) -> None:
    write(tmp_path, "napper.wat", NAPPER_WAT)
    manifest = write(tmp_path, "nap.toml", NAPPER_TOML)
    code, screen = vudo_on_terminal("seance", manifest)
    assert code == 0, screen
    assert "rounds napper.nap (round" in screen  # the bar appeared, naming what runs
    # every step line starts a line of its own and carries nothing of the bar
    for n in (1, 2, 3):
        [line] = [x for x in re.split(r"\r\n|\r|\n", screen) if f"[{n}] " in x]
        assert line.startswith(f"[{n}] ") and "━" not in line and "round " not in line, \
            repr(line)


def test_watch_shows_the_spirits_live(tmp_path: Path) -> None:
    write(tmp_path, "napper.wat", NAPPER_WAT)
    manifest = write(tmp_path, "nap.toml", NAPPER_TOML)
    code, screen = vudo_on_terminal("seance", manifest, "--watch")
    assert code == 0, screen
    for column in ("Spirit", "state", "calls", "inbox", "msg/s", "memory"):
        assert column in screen
    assert re.search(r"napper\s*│\s*running", screen), screen  # drawn while a nap ran
    # off a terminal, the last table is printed once on stderr
    r = vudo("seance", "example:pingpong", "--watch")
    assert r.returncode == 0
    assert re.search(r"ping\s*│\s*idle\s*│\s*12\s*│\s*0\s*│\s*0\s*│", r.stderr), r.stderr


# ------------------------------------------------------------------------------------------
# traces
# ------------------------------------------------------------------------------------------
def test_seance_trace_api_records_calls_host_calls_and_messages(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    with Seance(trace=path) as seance:
        seance.summon("ping", EXAMPLES / "ping.wat")
        seance.summon("pong", EXAMPLES / "pong.wat")
        assert seance.invoke("ping", "start", 2) == 0
        for _ in range(4):
            seance.invoke("pong", "run")
            seance.invoke("ping", "step")
    events = json.loads(path.read_text())["traceEvents"]
    lanes = {e["args"]["name"] for e in events if e["ph"] == "M"}
    assert lanes == {"ping", "pong"}
    calls = [e for e in events if e.get("cat") == "call"]
    assert calls[0]["name"] == "start" and calls[0]["dur"] >= 0 and len(calls) == 9
    assert any(e.get("cat") == "host" and e["name"] == "vudo_send" for e in events)
    sends = [e for e in events if e["ph"] == "s"]
    ends = [e for e in events if e["ph"] == "f"]
    assert len(sends) == len(ends) == 4  # two pings, two pongs, all received
    assert {e["id"] for e in sends} == {e["id"] for e in ends}
    first = next(e for e in events if e.get("name") == "send -> pong")
    assert first["args"]["bytes"] > 0 and first["args"]["from"] == "ping"


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    try:
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True,
                       capture_output=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"headless Chromium is not installed and could not be ({exc})")
    found = shutil.which("chromium")
    if not found:
        pytest.skip("apt-get installed chromium but no chromium binary is on PATH")
    return found


def _headless(browser: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", *args],
        capture_output=True, text=True, timeout=120,
    )


def test_trace_html_draws_lanes_and_arrows_in_chromium(tmp_path: Path) -> None:
    trace = tmp_path / "session.json"
    r = vudo("seance", "example:pingpong", "--quiet", "--trace", trace)
    assert r.returncode == 0, r.stderr
    page = tmp_path / "out" / "session.html"
    r = vudo("trace", trace, "--html", page, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["messages"] == 20
    text = page.read_text()
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")  # self-contained
    browser = _chromium()
    dom = _headless(browser, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr
    assert len(re.findall(r'<g class="lane"', dom.stdout)) == 2
    assert len(re.findall(r'<g class="arrow"', dom.stdout)) == 20  # drawn by the page's script
    assert dom.stdout.count(">8 B<") == 20  # every arrow says its payload size
    assert "2 lanes, 20 messages, 23 calls" in dom.stdout
    shot = tmp_path / "session.png"  # kept under pytest's tmp dir as the test's artifact
    r2 = _headless(browser, f"--screenshot={shot}", "--window-size=800,1200", page.as_uri())
    assert r2.returncode == 0 and shot.stat().st_size > 5000, r2.stderr
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_trace_command_errors(tmp_path: Path) -> None:
    r = vudo("trace", tmp_path / "none.json", "--html", tmp_path / "o.html")
    assert r.returncode == 2 and r.stderr == f"error: {tmp_path / 'none.json'}: no such file\n"
    bad = write(tmp_path, "bad.json", "{")
    r = vudo("trace", bad, "--html", tmp_path / "o.html")
    assert r.returncode == 2 and "not a trace (invalid JSON" in r.stderr


def test_a_recorder_keeps_only_its_own_sessions_host_calls() -> None:
    from vudo._trace import TraceRecorder

    recorder = TraceRecorder()  # no path: nothing is written, the events stay readable
    with Seance(trace=recorder) as traced, Seance() as other:
        traced.summon("ping", EXAMPLES / "ping.wat")
        other.summon("stranger", EXAMPLES / "ping.wat", trace=True)
        traced.invoke("ping", "start", 1)
        other.invoke("stranger", "start", 1)
    host = [e for e in recorder.events() if e.get("cat") == "host"]
    assert host and {e["tid"] for e in host} == {1}
    lanes = [e["args"]["name"] for e in recorder.document()["traceEvents"] if e["ph"] == "M"]
    assert "stranger" not in lanes


# A Spirit that messages itself: one vudo_send and one vudo_recv, then frees the message.
ECHO = """\
(module
  (import "vudo" "vudo_send" (func $send (param i32 i32 i32 i32) (result i32)))
  (import "vudo" "vudo_recv" (func $recv (result i32)))
  (import "vudo" "vudo_free_message" (func $free (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 1024) "echo")
  (data (i32.const 1040) "hello")
  (func (export "main") (result i32) (local $m i32)
    (drop (call $send (i32.const 1024) (i32.const 4) (i32.const 1040) (i32.const 5)))
    (local.set $m (call $recv))
    (call $free (local.get $m))
    (i32.ne (local.get $m) (i32.const 0))))
"""


def test_run_trace_records_the_spirits_calls_host_calls_and_messages(tmp_path: Path) -> None:
    spirit = write(tmp_path, "echo.wat", ECHO)
    trace = tmp_path / "traces" / "run.json"
    r = vudo("run", spirit, "--trace", trace, cwd=tmp_path)
    assert (r.returncode, r.stdout, r.stderr) == (0, "1\n", "")  # host calls stay off stderr
    events = json.loads(trace.read_text())["traceEvents"]
    lane = [e for e in events if e["ph"] == "M"]
    assert [(e["name"], e["args"]["name"]) for e in lane] == [("thread_name", "echo")]
    tid = lane[0]["tid"]
    assert {e["tid"] for e in events} == {tid}  # everything on the Spirit's lane
    [call] = [e for e in events if e.get("cat") == "call"]
    assert (call["name"], call["ph"], call["args"]) == ("main", "X", {"spirit": "echo", "ok": True})
    host = [(e["name"], e["ph"]) for e in events if e.get("cat") == "host"]
    assert host == [("vudo_send", "i"), ("vudo_recv", "i"), ("vudo_free_message", "i")]
    message = [(e["name"], e["ph"]) for e in events if e.get("cat") == "message"]
    assert message == [("send -> echo", "i"), ("message", "s"), ("recv <- echo", "i"),
                       ("message", "f")]
    sent = next(e for e in events if e["name"] == "send -> echo")
    assert sent["args"] == {"from": "echo", "to": "echo", "channel": 0, "bytes": 5, "id": 1}
    flow = [e["id"] for e in events if e["ph"] in ("s", "f")]
    assert flow == [1, 1]
    slice_end = call["ts"] + call["dur"]
    assert all(call["ts"] <= e["ts"] <= slice_end for e in events if "ts" in e)

    page = tmp_path / "run.html"
    r = vudo("trace", trace, "--html", page, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert (doc["lanes"], doc["messages"], doc["calls"]) == (1, 1, 1)
    dom = _headless(_chromium(), "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr
    assert re.findall(r'<g class="lane" data-name="([^"]+)"', dom.stdout) == ["echo"]
    assert len(re.findall(r'<g class="arrow" data-bytes="5"', dom.stdout)) == 1
    assert "1 lanes, 1 messages, 1 calls" in dom.stdout


def test_run_trace_of_a_failed_call_and_with_host_call_logging(tmp_path: Path) -> None:
    trace = tmp_path / "fail.json"
    r = vudo("run", "example:calculator", "divide", "1", "0", "--trace", trace, "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["trace"] == str(trace)
    [call] = [e for e in json.loads(trace.read_text())["traceEvents"] if e.get("cat") == "call"]
    assert (call["name"], call["args"]["ok"]) == ("divide", False)  # written though it failed

    r = vudo("run", "example:greeter", "--log-host-calls", "--trace", tmp_path / "g.json")
    assert r.returncode == 0 and r.stdout == "Hello from a Spirit!\n"
    logged = [line for line in r.stderr.splitlines() if line.startswith("INFO trace:")]
    recorded = [e for e in json.loads((tmp_path / "g.json").read_text())["traceEvents"]
                if e.get("cat") == "host"]
    assert len(logged) == len(recorded) == 3  # both: the log lines and the trace


def test_run_trace_without_a_file_says_what_the_flag_became() -> None:
    r = vudo("run", "example:greeter", "--trace")
    assert r.returncode == 2 and r.stdout == ""
    assert "--trace takes a FILE" in r.stderr and "--log-host-calls" in r.stderr


def test_an_unreachable_nats_server_is_one_clear_error_line() -> None:
    pytest.importorskip("nats")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"nats://127.0.0.1:{port}"
    r = vudo("seance", "example:pingpong", "--broker", url, timeout=60)
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == f"error: message broker at {url} is unavailable: no NATS server " \
                       "answered within 5.0s\n"  # as docs/guide/troubleshooting.md shows
