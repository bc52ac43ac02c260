"""The hostile-corpus harness: each case is a WAT module and a Python driver, run in a fresh
interpreter under a wall-clock bound.

The driver ends by printing one ``@@{json}`` line through ``report``/``attempt`` (defined in
the prelude below). The test then asserts what a user relies on: the process neither died of
a signal nor hung, and the outcome is the documented one (a result, or a typed exception
named by class, with key text in its message).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Wall-clock bound of one case (the machine is shared and loaded: generous, still finite).
DEFAULT_BOUND = 60.0

PRELUDE = '''
import json, os, signal, subprocess, sys, threading, time
import vudo
if hasattr(vudo, "configure_cache"):  # absent on old versions (for before/after runs)
    vudo.configure_cache(disk=False)
WAT = {wat!r}
WASM = bytes(__import__("wasmtime").wat2wasm(WAT)) if WAT else b""

def report(**outcome):
    sys.stdout.write("@@" + json.dumps(outcome, default=repr) + "\\n")
    sys.stdout.flush()

def outcome_of(fn, *args):
    """Run fn; its result or exception as a JSON-ready dict."""
    try:
        value = fn(*args)
    except BaseException as exc:
        try:
            text = str(exc)
        except BaseException as inner:
            text = f"<str() raised {{type(inner).__name__}}>"
        return {{"raised": [k.__name__ for k in type(exc).__mro__], "message": text}}
    return {{"result": value}}

def attempt(fn, *args, **extra):
    report(**outcome_of(fn, *args), **extra)

def cli(command, *after, timeout=30):
    """Run ``vudo COMMAND case.wasm AFTER...``; its exit status and output."""
    import tempfile
    path = os.path.join(tempfile.mkdtemp(), "case.wasm")
    with open(path, "wb") as fh:
        fh.write(WASM)
    env = {{**os.environ, "VUDO_CACHE_DIR": ""}}
    done = subprocess.run([sys.executable, "-m", "vudo", command, path, *after],
                          capture_output=True, text=True, timeout=timeout, env=env)
    return {{"returncode": done.returncode, "output": done.stdout + done.stderr}}
'''


@dataclass(frozen=True)
class Case:
    """One hostile input: a module, a driver, and the outcome a user may rely on."""

    name: str
    wat: str
    driver: str
    #: The exception class name the driver must report (in the exception's MRO)...
    raises: str | None = None
    #: ... and text its message must contain.
    text: str | None = None
    #: Or a check of the reported outcome dict (for results, CLI runs...).
    check: Callable[[dict[str, Any]], bool] | None = None
    #: Why this still fails, naming who owns the fix (the test is then xfail(strict=True)).
    xfail: str | None = None
    bound: float = DEFAULT_BOUND
    #: Soft/hard RLIMIT_STACK for the process, in bytes (``ulimit -s``).
    stack_limit: int | None = None
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Run:
    """How a case's process ended."""

    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool

    @property
    def outcome(self) -> dict[str, Any] | None:
        lines = [ln for ln in self.stdout.splitlines() if ln.startswith("@@")]
        return json.loads(lines[-1][2:]) if lines else None

    def describe(self) -> str:
        how = "timed out" if self.timed_out else f"exit status {self.returncode}"
        tail = "\n".join(self.stderr.strip().splitlines()[-15:])
        return f"{how}\n--- stdout\n{self.stdout[-2000:]}\n--- stderr (tail)\n{tail}"


def run_case(case: Case) -> Run:
    """Run ``case`` in a fresh interpreter; kill it at its bound."""
    source = PRELUDE.format(wat=case.wat) + "\n" + textwrap.dedent(case.driver)
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo / "src"), "PYTHONFAULTHANDLER": "1",
           "VUDO_CACHE_DIR": "",
           **case.env}
    preexec = None
    if case.stack_limit is not None:
        limit = case.stack_limit

        def preexec() -> None:
            resource.setrlimit(resource.RLIMIT_STACK, (limit, limit))

    with tempfile.NamedTemporaryFile("w", suffix=".py", prefix=f"hostile-{case.name}-",
                                     delete=False) as fh:
        fh.write(source)
    try:
        done = subprocess.run(
            [sys.executable, fh.name], capture_output=True, text=True, env=env,
            timeout=case.bound, preexec_fn=preexec,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
        return Run(None, out, err, True)
    finally:
        os.unlink(fh.name)
    return Run(done.returncode, done.stdout, done.stderr, False)


def verdict(case: Case, run: Run) -> str | None:
    """``None`` when the run is what the case documents, else why not."""
    if run.timed_out:
        return f"hung past {case.bound}s"
    if run.returncode is not None and run.returncode < 0:
        return f"killed by signal {-run.returncode}"
    outcome = run.outcome
    if outcome is None:
        return f"no outcome reported (exit status {run.returncode})"
    if run.returncode != 0:
        return f"exit status {run.returncode}"
    if case.raises is not None:
        raised = outcome.get("raised")
        if not raised or case.raises not in raised:
            return f"expected {case.raises}, got {outcome}"
        if case.text is not None and case.text not in outcome.get("message", ""):
            return f"expected {case.text!r} in the message, got {outcome['message']!r}"
    if case.check is not None and not case.check(outcome):
        return f"unexpected outcome {outcome}"
    return None
