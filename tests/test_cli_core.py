"""``vudo --version``, ``vudo version --json`` and ``vudo inspect`` say which core is active,
checked in real ``python -m vudo`` subprocesses with and without ``VUDO_NATIVE=0``."""

from __future__ import annotations

import json

import pytest
from cli_helpers import vudo as run_vudo

import vudo
from vudo._runtime import cnative, native

ON = {"native_call_path": cnative.available(), "native_bus": native.available(),
      "native_messaging": cnative.native_bus_available()}
OFF = {"native_call_path": False, "native_bus": False, "native_messaging": False}


@pytest.mark.parametrize(("env", "expected"), [({}, ON), ({"VUDO_NATIVE": "0"}, OFF)])
def test_version_says_which_core_is_active(env: dict[str, str], expected: dict[str, bool]) -> None:
    text = run_vudo("--version", env=env)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0] == f"vudo, version {vudo.__version__}"
    words = {True: "yes", False: "no"}
    assert lines[1].startswith(
        f"core: native call path {words[expected['native_call_path']]}, native bus "
        f"{words[expected['native_bus']]}, native messaging host functions "
        f"{words[expected['native_messaging']]}")
    if env:
        assert lines[1].endswith("(disabled by VUDO_NATIVE=0)")
    as_json = run_vudo("version", "--json", env=env)
    assert as_json.returncode == 0, as_json.stderr
    doc = json.loads(as_json.stdout)
    assert doc["version"] == vudo.__version__ and doc["ok"] is True
    assert {k: doc["core"][k] for k in expected} == expected
    assert (doc["core"]["reason"] is None) == expected["native_call_path"]


@pytest.mark.parametrize(("env", "expected"), [({}, ON), ({"VUDO_NATIVE": "0"}, OFF)])
def test_inspect_reports_the_core(env: dict[str, str], expected: dict[str, bool]) -> None:
    doc = json.loads(run_vudo("inspect", "--json", "example:calculator", env=env).stdout)
    assert {k: doc["core"][k] for k in expected} == expected
    text = run_vudo("inspect", "example:calculator", env=env).stdout
    assert f"native call path {'yes' if expected['native_call_path'] else 'no'}" in text
