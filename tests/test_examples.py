"""The bundled examples: each one links, does what its comments say, and is reachable both
from a checkout (``src/vudo/examples/``) and as ``example:NAME`` after an install."""

from __future__ import annotations

import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import vudo
from vudo.abi import LogLevel
from vudo.cli._sources import examples_dir, resolve_source
from vudo.cli.inspection import inspect_module
from vudo.cli.manifest import load_manifest
from vudo.testing import MockLogger

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = REPO_ROOT / "src" / "vudo" / "examples"
SPIRIT_EXAMPLES = ["calculator", "greeter", "point", "ping", "pong"]
POINT = vudo.gene_layout("Point", [("x", "i64"), ("y", "i64")])


def test_examples_ship_inside_the_package() -> None:
    assert examples_dir().resolve() == EXAMPLES.resolve()
    names = {p.name for p in EXAMPLES.iterdir()}
    assert {f"{n}.wat" for n in SPIRIT_EXAMPLES} | {"pingpong.toml"} <= names
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    assert re.search(r'vudo = \[[^\]]*"examples/\*"', pyproject)
    for name in SPIRIT_EXAMPLES:
        assert resolve_source(f"example:{name}") == examples_dir() / f"{name}.wat"
    assert resolve_source("example:pingpong", (".toml",)).name == "pingpong.toml"


@pytest.mark.parametrize("name", SPIRIT_EXAMPLES)
def test_every_example_links_and_loads(name: str) -> None:
    report = inspect_module(EXAMPLES / f"{name}.wat")
    assert report["links"] is True and report["warnings"] == []
    with vudo.load_spirit(EXAMPLES / f"{name}.wat", logger=MockLogger()) as spirit:
        assert spirit.functions


def test_calculator() -> None:
    calc = vudo.load_spirit(EXAMPLES / "calculator.wat")
    assert calc.module.imports == []
    assert calc.call("add", 2, 3) == 5
    assert calc.call("multiply", 6, 7) == 42
    assert calc.call("divide", -7, 2) == -3
    assert calc.call("add", 2**63 - 1, 1) == -(2**63)  # i64 wraps
    with pytest.raises(vudo.errors.SpiritTrap, match="divide by zero"):
        calc.call("divide", 1, 0)


def test_greeter_prints_and_logs() -> None:
    logger = MockLogger()
    greeter = vudo.load_spirit(EXAMPLES / "greeter.wat", logger=logger)
    assert greeter.call("main") is None
    assert logger.output == "Hello from a Spirit!\n"
    assert logger.records == [(LogLevel.INFO, "greeter is starting"),
                              (LogLevel.DEBUG, "greeter is done")]
    assert greeter.call("greet_times", 3) == 3
    assert logger.output.count("Hello from a Spirit!\n") == 4
    assert {i.name for i in greeter.module.imports} == {"vudo_println", "vudo_log"}


def test_point_gene_built_in_wasm_read_from_python() -> None:
    spirit = vudo.load_spirit(EXAMPLES / "point.wat")
    p = spirit.call("new_Point", 3, -4)
    q = spirit.call("new_Point", 10, 20)
    assert p >= 1024 and q == p + POINT.size  # its own bump heap, 16 bytes per Point
    assert spirit.memory.read_gene(p, POINT) == {"x": 3, "y": -4}
    assert spirit.memory.read_bytes(p, 16) == struct.pack("<qq", 3, -4)
    proxy = spirit.as_()
    assert (proxy.Point.x(p), proxy.Point.y(p)) == (3, -4)
    assert proxy.Point.length_squared(p) == 25
    proxy.Point.translate(p, 1, 1)
    assert spirit.memory.read_gene(p, POINT) == {"x": 4, "y": -3}
    assert spirit.memory.read_gene(q, POINT) == {"x": 10, "y": 20}  # untouched
    # and Python-written genes are read by the Spirit's methods
    spirit.memory.write_gene(q, {"x": 6, "y": 8}, POINT)
    assert proxy.Point.length_squared(q) == 100


def _play(seance: vudo.Seance, player: str, n: int) -> int:
    assert seance.invoke(player, "start", n) == 0
    rounds = 0
    while any(seance.pending(name) for name in seance.spirits()):
        seance.invoke("pong", "run")
        seance.invoke(player, "step")
        rounds += 1
        assert rounds <= n + 1
    return rounds


def test_ping_pong_in_a_seance() -> None:
    logger = MockLogger()
    with vudo.Seance(logger=logger) as seance:
        seance.summon("ping", EXAMPLES / "ping.wat")
        seance.summon("pong", EXAMPLES / "pong.wat")
        assert _play(seance, "ping", 7) == 7
        assert seance.invoke("ping", "received") == 7
        assert seance.invoke("ping", "done") == 1
        assert seance.invoke("pong", "echoed") == 7
        # every reply carried the right sequence number: no "unexpected reply" warning
        assert logger.records == [(LogLevel.INFO, "all pongs received")]


def test_pong_replies_to_whoever_sent_the_message() -> None:
    logger = MockLogger()
    with vudo.Seance(logger=logger) as seance:
        # a second player, running ping.wat under another name: pong reads the sender from
        # the received block instead of assuming "ping"
        seance.summon("alice", EXAMPLES / "ping.wat")
        seance.summon("pong", EXAMPLES / "pong.wat")
        assert _play(seance, "alice", 3) == 3
        assert seance.invoke("alice", "received") == 3
        # a message sent by the host is echoed back to the host (given an inbox here)
        seance.messages.register("host")
        assert seance.send("host", "pong", b"hello") == vudo.abi.ResultCode.OK
        assert seance.invoke("pong", "run") == 1
        echoed = seance.messages.recv("host")
        assert echoed is not None
        assert (echoed.from_, echoed.payload) == ("pong", b"hello")


def test_ping_notices_a_wrong_reply() -> None:
    logger = MockLogger()
    with vudo.Seance(logger=logger) as seance:
        seance.summon("ping", EXAMPLES / "ping.wat")
        seance.summon("pong", EXAMPLES / "pong.wat")
        seance.invoke("ping", "start", 2)
        seance.messages.recv("pong")  # drop the real ping...
        seance.send("pong", "ping", b"pong")  # ...and answer with garbage
        assert seance.invoke("ping", "step") == 1
        assert (LogLevel.WARN, "unexpected reply") in logger.records


def test_pingpong_manifest() -> None:
    manifest = load_manifest(EXAMPLES / "pingpong.toml")
    assert manifest.name == "pingpong"
    assert [s.name for s in manifest.spirits] == ["ping", "pong"]
    assert [s.kind for s in manifest.steps] == ["invoke", "rounds", "invoke", "invoke"]
    pong = manifest.spirits[1]
    assert pong.limits is not None and pong.limits.fuel == 10_000_000


def test_readme_first_command_works_from_a_checkout() -> None:
    readme = (REPO_ROOT / "examples" / "README.md").read_text()
    commands = re.findall(r"^\$ (.+)$", readme, flags=re.MULTILINE)
    assert commands[0] == "pip install -e ."
    assert commands[1] == "vudo run src/vudo/examples/calculator.wat add 2 3"
    argv = commands[1].split()[1:]
    ran = subprocess.run([sys.executable, "-m", "vudo", *argv], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=60)
    assert (ran.returncode, ran.stdout) == (0, "5\n"), ran.stderr
    # every source the README links to exists
    for link in re.findall(r"\]\((\.\./src/vudo/examples/[^)]+)\)", readme):
        assert (REPO_ROOT / "examples" / link).resolve().exists(), link


def test_manifest_limits_merge_session_defaults(tmp_path: Path) -> None:
    (tmp_path / "s.toml").write_text(
        '[session]\nlimits = { timeout = 5, fuel = 1000 }\n'
        '[[spirits]]\nsource = "example:calculator"\nlimits = { fuel = 99 }\n'
        '[[spirits]]\nname = "other"\nsource = "example:calculator"\n'
    )
    manifest = load_manifest(tmp_path / "s.toml")
    assert manifest.name == "s"
    assert manifest.limits == vudo.Limits(timeout=5, fuel=1000)
    first, second = manifest.spirits
    assert first.name == "calculator" and first.limits == vudo.Limits(timeout=5, fuel=99)
    assert second.limits is None  # the session default applies
