"""``vudo seance``: run a session of Spirits described by a TOML manifest.

The manifest format (see :mod:`.manifest`) is documented in the command's help (below) and in
``examples/README.md``. Everything is validated before the first step runs: a manifest error
is a usage error (exit 2); a failing step is a Spirit failure (exit 1) and stops the session.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .._config import Limits
from .._session import Seance
from .._session.seance import SeanceOptions
from ..abi import ResultCode
from ..errors import LoadError
from ._args import convert_args
from ._broker import CountingBroker, make_broker
from ._errors import SpiritFailure, UsageFailure, error_document, error_message, stop_on_interrupt
from ._grants import Grants, grant_options
from ._live import Bar, Watch
from ._options import Settings, common_options
from ._output import (
    CliLogger,
    Output,
    cli_logging,
    dump_json,
    format_value,
    json_errors,
    jsonable,
    print_rich,
)
from ._sources import read_module, relabel, resolve_source
from .manifest import Call, Manifest, Ref, Step, load_manifest

__all__ = ["CountingBroker", "seance_command"]

#: With a distributed broker, how long "idle" waits for messages still in flight.
_SETTLE_SECONDS = 0.25


# ------------------------------------------------------------------------------------------
# Running
# ------------------------------------------------------------------------------------------
class _Runner:
    """Runs the steps of a manifest on a summoned session.

    ``settle`` (seconds) matters with a distributed broker, where a sent message reaches its
    inbox a little later: "idle" then also means every sent message was confirmed (``flush``)
    and no message arrived during ``settle`` seconds.
    """

    def __init__(self, manifest: Manifest, seance: Seance, broker: CountingBroker,
                 output: Output, quiet: bool, settle: float = 0.0) -> None:
        self.m = manifest
        self.seance = seance
        self.broker = broker
        self.output = output
        self.quiet = quiet
        self.settle = settle
        self.bar: Bar = Bar(False, 0)
        #: Results kept by ``as = "name"`` for later steps.
        self.results: dict[str, Any] = {}
        #: One record per step run, for ``--json``.
        self.records: list[dict[str, Any]] = []
        self._arrived = threading.Event()
        if settle > 0:
            for name in seance.spirits():
                broker.on_message(name, lambda _message: self._arrived.set())

    def say(self, step: Step, text: str) -> None:
        if not self.quiet:
            self.output.echo(f"[{step.number}] {text}")

    def fail(self, step: Step, text: str) -> SpiritFailure:
        return SpiritFailure(f"{self.m.path}: step {step.number} ({step.title}): {text}")

    def prepare(self) -> None:
        """Convert every call's arguments now, so bad ones stop the session before it runs."""
        for step in self.m.steps:
            calls = [step.call] if step.call else []
            calls += step.rounds + ([step.until] if isinstance(step.until, Call) else [])
            for call in calls:
                spirit = self.seance.get_spirit(call.spirit)
                where = f"{self.m.path}: steps[{step.number}]"
                if not spirit.has_function(call.function):
                    raise UsageFailure(
                        f"{where}: Spirit {call.spirit!r} has no exported function "
                        f"{call.function!r}; its functions: {', '.join(spirit.functions)}"
                    )
                params, _ = spirit.signature(call.function)
                if any(isinstance(a, Ref) for a in call.args):  # converted when it runs
                    if len(call.args) != len(params):
                        convert_args(call.function, params, call.args)  # the arity message
                    continue
                try:
                    call.args = convert_args(call.function, params, call.args)
                except UsageFailure as exc:
                    raise UsageFailure(f"{where}: {exc.message}") from None

    def resolve(self, step: Step, value: Any) -> Any:
        """``value`` with every ``$name`` replaced by the result kept under that name."""
        if isinstance(value, list):
            return [self.resolve(step, v) for v in value]
        if not isinstance(value, Ref):
            return value
        result = self.results[value.name]
        if value.index is None:
            return result
        if not isinstance(result, tuple) or value.index >= len(result):
            raise self.fail(step, f"{value}: the result {format_value(result)} has no value "
                                  f"number {value.index}")
        return result[value.index]

    def invoke(self, call: Call, step: Step | None = None) -> Any:
        args = call.args
        if step is not None and any(isinstance(a, Ref) for a in args):
            params, _ = self.seance.get_spirit(call.spirit).signature(call.function)
            try:
                args = convert_args(call.function, params, self.resolve(step, args))
            except UsageFailure as exc:
                raise self.fail(step, exc.message) from None
        if isinstance(self.bar, Watch):
            self.bar.sample(running=call.spirit)
        return self.seance.invoke(call.spirit, call.function, *args)

    def record(self, step: Step, ok: bool, message: str, result: Any = None) -> None:
        self.records.append({"number": step.number, "kind": step.kind, "title": step.title,
                             "ok": ok, "result": jsonable(result), "message": message})

    def run(self, step: Step) -> None:
        getattr(self, f"_{step.kind}")(step)

    def _invoke(self, step: Step) -> None:
        assert step.call is not None
        result: Any = None
        for i in range(step.repeat):
            if step.repeat > 1:
                self.bar.describe(f"{step.title} ({i + 1}/{step.repeat})")
            try:
                result = self.invoke(step.call, step)
            except SpiritFailure:
                raise
            except Exception as exc:
                if not step.expect_error:
                    raise self.fail(step, error_message(exc)) from exc
                message = error_message(exc)
                if isinstance(step.expect_error, str) and step.expect_error not in message:
                    raise self.fail(step, f"failed with {message!r}, expected an error "
                                          f"containing {step.expect_error!r}") from exc
                self.say(step, f"{step.title} failed as expected: {message}")
                self.record(step, True, f"failed as expected: {message}")
                continue
            if step.expect_error:
                raise self.fail(step, f"returned {format_value(result)}, expected an error")
            expected = _expected(self.resolve(step, step.expect))
            if step.has_expect and result != expected:
                raise self.fail(step, f"returned {format_value(result)}, "
                                      f"expected {format_value(expected)}")
        if step.expect_error:
            return
        if step.result_name is not None:
            self.results[step.result_name] = result
        times = f" (x{step.repeat})" if step.repeat > 1 else ""
        shown = "" if result is None else f" -> {format_value(result)}"
        kept = f" (as ${step.result_name})" if step.result_name else ""
        line = f"{step.title}{times}{shown}{kept}{' ok' if step.has_expect else ''}"
        self.say(step, line)
        self.record(step, True, line, result)

    def _send(self, step: Step) -> None:
        assert isinstance(step.channel, int)
        code = self.seance.send(step.sender, step.to, step.payload, channel=step.channel)
        if code != ResultCode.OK:
            raise self.fail(step, f"the message was refused: {ResultCode(code).name}")
        self.say(step, f"{step.title}: {len(step.payload)} bytes")
        self.record(step, True, f"{step.title}: {len(step.payload)} bytes")

    def _publish(self, step: Step) -> None:
        assert isinstance(step.channel, str)
        n = self.seance.publish(step.channel, step.payload)
        line = f"{step.title}: {len(step.payload)} bytes to {n} subscriber(s)"
        self.say(step, line)
        self.record(step, True, line, n)

    def _nothing_pending(self) -> bool:
        return all(self.seance.pending(name) == 0 for name in self.seance.spirits())

    def _idle(self) -> bool:
        if self.settle <= 0:
            return self._nothing_pending()
        self._arrived.clear()
        if not self._nothing_pending():
            return False
        self.broker.flush(self.settle * 20)  # every broker declares flush (a no-op in-process)
        return not self._arrived.wait(self.settle) and self._nothing_pending()

    def _rounds(self, step: Step) -> None:
        until = step.until

        def done() -> bool:
            if isinstance(until, Call):
                return bool(self.invoke(until))
            return self._idle()

        rounds = 0
        while not done():
            if rounds >= step.max_rounds:
                what = "idle" if until == "idle" else f"{until} true"
                raise self.fail(step, f"not {what} after {step.max_rounds} rounds (max_rounds)")
            rounds += 1
            self.bar.describe(f"{step.title} (round {rounds})")
            for call in step.rounds:
                try:
                    self.invoke(call)
                except Exception as exc:
                    raise self.fail(step, f"round {rounds}: {error_message(exc)}") from exc
        condition = "idle" if until == "idle" else f"{until} is true"
        self.say(step, f"{step.title}: {condition} after {rounds} round(s)")
        self.record(step, True, f"{step.title}: {condition} after {rounds} round(s)", rounds)


def _interrupt_all(seance: Seance) -> None:
    for name in seance.spirits():
        seance.get_spirit(name).interrupt()


def _expected(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _summary(manifest: Manifest, seance: Seance, broker: CountingBroker, seconds: float,
             failed_step: int | None) -> None:
    table = Table(title=f"session {manifest.name}", title_justify="left", show_edge=False)
    for column in ("Spirit", "calls", "failures", "sent", "received", "pending", "time"):
        table.add_column(column, justify="left" if column == "Spirit" else "right")
    for name in seance.spirits():
        stats = seance.stats(name)
        table.add_row(
            Text(name), str(stats.calls), str(stats.failures),
            str(broker.sent.get(name, 0)), str(broker.received.get(name, 0)),
            str(seance.pending(name)), f"{stats.seconds * 1000:.1f} ms",
        )
    total = len(manifest.steps)
    line = Text(
        f"{total} step(s) completed in {seconds:.3f} s" if failed_step is None
        else f"step {failed_step} of {total} failed after {seconds:.3f} s"
    )

    def render(console: Console) -> None:
        console.print(table)
        console.print(line)

    print_rich(render)


_HELP = """Run the session described by MANIFEST (a TOML file, or example:NAME).

The Spirits are loaded, then the steps run in order; each step's result is printed, then a
per-Spirit summary (calls, failures, messages sent and received, messages still pending, time
spent in calls). A failing step stops the session.

\b
Manifest format (sources are relative to the manifest):
  [session]
  name = "pingpong"            # default: the file name
  channels = ["news"]          # host channels Spirits may vudo_subscribe to
  debug = false
  limits = { timeout = 5 }     # defaults for every Spirit (theirs override, key by key)
  permissions = { fs = "data", hosts = ["api.example.org"], db = "app.db" }
  env = { GREETING = "hi" }    # WASI; permissions.dirs = ["data::/data"] pre-opens folders
  loas = ["myloa:LOA"]         # Python Loas (module:attribute, imported from here)
\b
  [[spirits]]
  name = "ping"                # default: the source's file name
  source = "ping.wat"          # .wasm, .wat, or example:NAME
  debug = false
  limits = { timeout = 5, fuel = 1_000_000, max_memory = "16MiB", max_inbox = 100 }
  permissions = { fs = "out", fs_write = true }   # over the session's, key by key
\b
  [[steps]]                    # call a function
  invoke = "ping.start"        # SPIRIT.FUNCTION (the function may be Gene.method)
  args = [10]
  expect = 0                   # optional: fail unless the result is this
  as = "p"                     # optional: keep the result; later steps write "$p" ("$p[0]")
  # expect_error = "panicked"  # optional: fail unless the call fails (message contains)
  # repeat = 3                 # optional: call it this many times
\b
  [[steps]]                    # a message from the host (or on behalf of a Spirit)
  send = { to = "pong", payload = "hello", from = "host", channel = 0 }
\b
  [[steps]]                    # notify the subscribers of a channel
  publish = { channel = "news", payload = "extra!" }
\b
  [[steps]]                    # call these in turn, round after round...
  rounds = ["pong.run", "ping.step"]
  until = "idle"               # ...until no message is pending (or "SPIRIT.FUNCTION"
  max_rounds = 1000            #    returning non-zero); fail after max_rounds

A payload is a string (UTF-8) or an array of byte values. With --broker the Spirits' inboxes
live on a NATS server (session name: the manifest's), so Spirits in other processes can join;
"idle" then also waits until no message arrived for 0.25 s.

\b
Examples:
  vudo seance example:pingpong
  vudo seance session.toml --quiet
  vudo seance session.toml --broker nats://127.0.0.1:4222
  vudo seance session.toml --json
  vudo seance session.toml --watch --trace session.json

The grant options (--allow-fs, --allow-host, --db, --env, --dir, --loa) apply to every Spirit,
over the manifest's [session] and under each Spirit's own keys. --trace FILE records calls, host
calls and messages as Chrome trace-event JSON (open it in Perfetto, or render it with
vudo trace FILE --html OUT).

Exit codes: 0 every step succeeded; 1 a step failed (trap, panic, limit, wrong result, link
error); 2 usage error (bad manifest, missing source, unknown Spirit or function, bad args).
"""


@click.command("seance", help=_HELP, short_help="Run a session of Spirits from a TOML manifest.")
@click.argument("manifest_source", metavar="MANIFEST")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no per-step lines.")
@click.option("--broker", metavar="URL",
              help="Use a NATS server for messaging, e.g. nats://127.0.0.1:4222.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON document: steps, Spirits, output and logs.")
@click.option("--watch", is_flag=True, help="Show a live table of the Spirits while it runs.")
@click.option("--trace", "trace_file", type=click.Path(dir_okay=False, path_type=Path),
              metavar="FILE", help="Record the session as Chrome trace-event JSON in FILE.")
@grant_options
@common_options
@click.pass_context
def seance_command(ctx: click.Context, manifest_source: str, quiet: bool, broker: str | None,
                   as_json: bool, watch: bool, trace_file: Path | None, grants: Grants) -> None:
    """Run a session described by a TOML manifest (see the help text above)."""
    settings = ctx.ensure_object(Settings)
    with json_errors(as_json, "seance"):
        manifest = load_manifest(resolve_source(manifest_source, (".toml",)))
        modules = {spec.name: read_module(spec.source)[1] for spec in manifest.spirits}
        session_grants = grants.over(manifest.grants)
        spirit_options = {spec.name: _options(spec.grants.over(session_grants))
                          for spec in manifest.spirits}
    output = Output(capture=as_json)
    debug = manifest.debug or any(s.debug for s in manifest.spirits)
    level = logging.DEBUG if settings.verbose or debug else logging.INFO
    quiet = quiet or as_json
    with cli_logging(level, output):
        with json_errors(as_json, "seance"):
            counting = CountingBroker(make_broker(broker, manifest.name))
        session_options: SeanceOptions = {
            "broker": counting, "limits": manifest.limits or Limits(), "debug": manifest.debug,
            "channels": manifest.channels,
        }
        if trace_file is not None:
            session_options["trace"] = trace_file
        with contextlib.closing(counting), Seance(**session_options) as seance:
            with json_errors(as_json, "seance"):
                for spec in manifest.spirits:
                    options: dict[str, Any] = {"logger": CliLogger(spec.name, output),
                                               **spirit_options[spec.name]}
                    if spec.debug:
                        options["debug"] = True
                    if spec.limits is not None:
                        options["limits"] = spec.limits
                    try:
                        seance.summon(spec.name, modules[spec.name], **options)
                    except LoadError as exc:
                        raise relabel(exc, str(spec.source)) from exc.__cause__
                runner = _Runner(manifest, seance, counting, output, quiet,
                                 settle=0.0 if broker is None else _SETTLE_SECONDS)
                runner.prepare()
            started = time.perf_counter()
            failure: BaseException | None = None
            done = 0
            display = Watch(seance, counting, len(manifest.steps)) if watch and not as_json \
                else Bar(not quiet, len(manifest.steps))
            with display as runner.bar:
                try:
                    with stop_on_interrupt(lambda: _interrupt_all(seance)):
                        for step in manifest.steps:
                            runner.bar.describe(step.title)
                            runner.run(step)
                            runner.bar.advance()
                            done += 1
                except Exception as exc:
                    failure = exc
            seconds = time.perf_counter() - started
            if as_json:
                click.echo(dump_json(_document(manifest, seance, counting, runner, output,
                                               seconds, failure, trace_file)))
            else:
                output.ensure_newline()
                _summary(manifest, seance, counting, seconds,
                         None if failure is None else done + 1)
            if failure is not None:
                raise failure


def _options(grants: Grants) -> dict[str, Any]:
    """The summon options of one Spirit's grants (nothing when nothing is granted)."""
    options: dict[str, Any] = {}
    permissions = grants.permissions()
    if permissions is not None:
        options["permissions"] = permissions
    registry = grants.registry()
    if registry is not None:
        options["loas"] = registry
    return options


def _document(manifest: Manifest, seance: Seance, broker: CountingBroker, runner: _Runner,
              output: Output, seconds: float, failure: BaseException | None,
              trace_file: Path | None) -> dict[str, Any]:
    """The ``vudo seance --json`` document (keys documented in docs/guide/cli.md)."""
    spirits = []
    for name in seance.spirits():
        stats = seance.stats(name)
        spirits.append({"name": name, "calls": stats.calls, "failures": stats.failures,
                        "sent": broker.sent.get(name, 0),
                        "received": broker.received.get(name, 0),
                        "pending": seance.pending(name),
                        "seconds": round(stats.seconds, 6)})
    return {
        "command": "seance",
        "ok": failure is None,
        "session": manifest.name,
        "manifest": str(manifest.path),
        "steps": runner.records,
        "results": {k: jsonable(v) for k, v in runner.results.items()},
        "spirits": spirits,
        "output": output.text,
        "logs": output.logs,
        "trace": None if trace_file is None else str(trace_file),
        "seconds": round(seconds, 6),
        "error": None if failure is None else error_document(failure),
    }
