"""``vudo seance``: run a session of Spirits described by a TOML manifest.

The manifest format (see :mod:`.manifest`) is documented in the command's help (below) and in
``examples/README.md``. Everything is validated before the first step runs: a manifest error
is a usage error (exit 2); a failing step is a Spirit failure (exit 1) and stops the session.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from .._config import Limits
from .._host import Message, MessageBroker, MessageCallback
from .._providers import MessageBus
from .._session import Seance
from ..abi import ResultCode
from ..errors import LoadError
from ._common import (
    CliLogger,
    Output,
    Settings,
    SpiritFailure,
    UsageFailure,
    cli_logging,
    common_options,
    convert_args,
    error_message,
    format_value,
    print_rich,
    read_module,
    relabel,
    resolve_source,
    stop_on_interrupt,
)
from .manifest import Call, Manifest, Step, load_manifest

__all__ = ["CountingBroker", "seance_command"]

_SESSION_RE = re.compile(r"[^A-Za-z0-9_-]+")
#: With a distributed broker, how long "idle" waits for messages still in flight.
_SETTLE_SECONDS = 0.25


# ------------------------------------------------------------------------------------------
# Counting messages
# ------------------------------------------------------------------------------------------
class CountingBroker:
    """A :class:`~vudo.broker.MessageBroker` that forwards to another and counts, per Spirit,
    the messages it sent and received."""

    def __init__(self, inner: MessageBroker) -> None:
        self.inner = inner
        self.sent: dict[str, int] = {}
        self.received: dict[str, int] = {}

    def register(self, name: str, *, capacity: int | None = None) -> None:
        """Create the inbox of ``name``."""
        self.inner.register(name, capacity=capacity)

    def unregister(self, name: str) -> None:
        """Drop the inbox of ``name``."""
        self.inner.unregister(name)

    def is_registered(self, name: str) -> bool:
        """Whether ``name`` has an open inbox."""
        return self.inner.is_registered(name)

    def post(self, from_: str, to: str, payload: bytes, channel: int = 0) -> ResultCode:
        """Queue a message, counting it for the sender when it was accepted."""
        code = self.inner.post(from_, to, payload, channel)
        if code == ResultCode.OK:
            self.sent[from_] = self.sent.get(from_, 0) + 1
        return code

    @property
    def supports_requeue(self) -> bool:
        """Whether the inner broker can put a message back."""
        return self.inner.supports_requeue

    def requeue(self, message: Message) -> None:
        """Put a message back (the inner broker's requeue)."""
        self.inner.requeue(message)
        self.received[message.to] = self.received.get(message.to, 0) - 1

    def flush(self, timeout: float | None = None) -> bool:
        """The inner broker's flush."""
        return self.inner.flush(timeout)

    def broadcast(self, from_: str, payload: bytes, channel: int = 0) -> int:
        """Send to every Spirit, counting each delivery for the sender."""
        n = self.inner.broadcast(from_, payload, channel)
        self.sent[from_] = self.sent.get(from_, 0) + n
        return n

    def recv(self, name: str, channel: int = 0) -> Message | None:
        """Take the oldest message, counting it for the receiver."""
        message = self.inner.recv(name, channel)
        if message is not None:
            self.received[name] = self.received.get(name, 0) + 1
        return message

    def peek(self, name: str, channel: int = 0) -> Message | None:
        """Look at the oldest message."""
        return self.inner.peek(name, channel)

    def pending(self, name: str, channel: int = 0) -> int:
        """How many messages wait for ``name``."""
        return self.inner.pending(name, channel)

    def spirits(self) -> list[str]:
        """Names of the registered inboxes."""
        return self.inner.spirits()

    def on_message(self, name: str, callback: MessageCallback) -> Callable[[], None]:
        """Call ``callback`` after each delivery to ``name``."""
        return self.inner.on_message(name, callback)

    def clear(self) -> None:
        """Drop every queued message."""
        self.inner.clear()

    def close(self) -> None:
        """Release the inner broker."""
        self.inner.close()


def _make_broker(url: str | None, session: str) -> MessageBroker:
    if url is None:
        return MessageBus()
    try:
        from .. import nats
    except ImportError as exc:
        raise UsageFailure(
            f"--broker needs NATS support, which is not available ({exc}); "
            "install it with: pip install 'vudo[nats]'"
        ) from None
    name = _SESSION_RE.sub("-", session)[:64] or "default"
    try:
        return nats.NatsBroker(url, session=name)
    except ImportError as exc:
        hint = "" if "pip install" in str(exc) else ": install it with pip install 'vudo[nats]'"
        raise UsageFailure(f"--broker needs nats-py ({exc}){hint}") from None
    except ValueError as exc:
        raise UsageFailure(f"--broker {url}: {exc}") from None


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
        self.bar = _Bar(False, 0)
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
                try:
                    call.args = convert_args(call.function, params, call.args)
                except UsageFailure as exc:
                    raise UsageFailure(f"{where}: {exc.message}") from None

    def invoke(self, call: Call) -> Any:
        return self.seance.invoke(call.spirit, call.function, *call.args)

    def run(self, step: Step) -> None:
        getattr(self, f"_{step.kind}")(step)

    def _invoke(self, step: Step) -> None:
        assert step.call is not None
        result: Any = None
        for i in range(step.repeat):
            if step.repeat > 1:
                self.bar.describe(f"{step.title} ({i + 1}/{step.repeat})")
            try:
                result = self.invoke(step.call)
            except Exception as exc:
                if not step.expect_error:
                    raise self.fail(step, error_message(exc)) from exc
                message = error_message(exc)
                if isinstance(step.expect_error, str) and step.expect_error not in message:
                    raise self.fail(step, f"failed with {message!r}, expected an error "
                                          f"containing {step.expect_error!r}") from exc
                self.say(step, f"{step.title} failed as expected: {message}")
                continue
            if step.expect_error:
                raise self.fail(step, f"returned {format_value(result)}, expected an error")
            if step.has_expect and result != _expected(step.expect):
                raise self.fail(step, f"returned {format_value(result)}, "
                                      f"expected {format_value(_expected(step.expect))}")
        if step.expect_error:
            return
        times = f" (x{step.repeat})" if step.repeat > 1 else ""
        shown = "" if result is None else f" -> {format_value(result)}"
        self.say(step, f"{step.title}{times}{shown}{' ok' if step.has_expect else ''}")

    def _send(self, step: Step) -> None:
        assert isinstance(step.channel, int)
        code = self.seance.send(step.sender, step.to, step.payload, channel=step.channel)
        if code != ResultCode.OK:
            raise self.fail(step, f"the message was refused: {ResultCode(code).name}")
        self.say(step, f"{step.title}: {len(step.payload)} bytes")

    def _publish(self, step: Step) -> None:
        assert isinstance(step.channel, str)
        n = self.seance.publish(step.channel, step.payload)
        self.say(step, f"{step.title}: {len(step.payload)} bytes to {n} subscriber(s)")

    def _nothing_pending(self) -> bool:
        return all(self.seance.pending(name) == 0 for name in self.seance.spirits())

    def _idle(self) -> bool:
        if self.settle <= 0:
            return self._nothing_pending()
        self._arrived.clear()
        if not self._nothing_pending():
            return False
        flush = getattr(self.broker.inner, "flush", None)
        if callable(flush):
            flush(self.settle * 20)
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


def _interrupt_all(seance: Seance) -> None:
    for name in seance.spirits():
        seance.get_spirit(name).interrupt()


def _expected(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


class _Bar:
    """A progress bar on stderr, shown only on a terminal and without ``--quiet``."""

    def __init__(self, enabled: bool, total: int) -> None:
        console = Console(file=sys.stderr)
        self.progress: Progress | None = None
        if enabled and console.is_terminal:
            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), console=console, transient=True, auto_refresh=False,
            )
            self.task = self.progress.add_task("starting", total=total)

    def describe(self, text: str) -> None:
        """Show what runs now."""
        if self.progress is not None:
            self.progress.update(self.task, description=text, refresh=True)

    def advance(self) -> None:
        """One more step done."""
        if self.progress is not None:
            self.progress.update(self.task, advance=1, refresh=True)

    def __enter__(self) -> _Bar:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()


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
\b
  [[spirits]]
  name = "ping"                # default: the source's file name
  source = "ping.wat"          # .wasm, .wat, or example:NAME
  debug = false
  limits = { timeout = 5, fuel = 1_000_000, max_memory = "16MiB", max_inbox = 100 }
\b
  [[steps]]                    # call a function
  invoke = "ping.start"        # SPIRIT.FUNCTION (the function may be Gene.method)
  args = [10]
  expect = 0                   # optional: fail unless the result is this
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

Exit codes: 0 every step succeeded; 1 a step failed (trap, panic, limit, wrong result, link
error); 2 usage error (bad manifest, missing source, unknown Spirit or function, bad args).
"""


@click.command("seance", help=_HELP, short_help="Run a session of Spirits from a TOML manifest.")
@click.argument("manifest_source", metavar="MANIFEST")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no per-step lines.")
@click.option("--broker", metavar="URL",
              help="Use a NATS server for messaging, e.g. nats://127.0.0.1:4222.")
@common_options
@click.pass_context
def seance_command(ctx: click.Context, manifest_source: str, quiet: bool,
                   broker: str | None) -> None:
    """Run a session described by a TOML manifest (see the help text above)."""
    settings = ctx.ensure_object(Settings)
    manifest = load_manifest(resolve_source(manifest_source, (".toml",)))
    modules = {spec.name: read_module(spec.source)[1] for spec in manifest.spirits}
    output = Output()
    debug = manifest.debug or any(s.debug for s in manifest.spirits)
    level = logging.DEBUG if settings.verbose or debug else logging.INFO
    with cli_logging(level, output):
        counting = CountingBroker(_make_broker(broker, manifest.name))
        with contextlib.closing(counting), Seance(
            broker=counting, limits=manifest.limits or Limits(), debug=manifest.debug,
            channels=manifest.channels,
        ) as seance:
            for spec in manifest.spirits:
                options: dict[str, Any] = {"logger": CliLogger(spec.name, output)}
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
            with _Bar(not quiet, len(manifest.steps)) as runner.bar:
                try:
                    with stop_on_interrupt(lambda: _interrupt_all(seance)):
                        for step in manifest.steps:
                            runner.bar.describe(step.title)
                            runner.run(step)
                            runner.bar.advance()
                            done += 1
                except Exception as exc:
                    failure = exc
            output.ensure_newline()
            _summary(manifest, seance, counting, time.perf_counter() - started,
                     None if failure is None else done + 1)
            if failure is not None:
                raise failure
