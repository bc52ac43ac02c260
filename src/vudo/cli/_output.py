"""What the ``vudo`` command writes: the Spirits' text to stdout exactly as printed, log
records to stderr, the command's own lines, JSON documents and rich tables."""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import click
from rich.console import Console

from .._providers import LoggerBase, StdLogger
from ..abi import LogLevel
from ._errors import error_document

__all__ = [
    "CliLogger",
    "Output",
    "cli_logging",
    "dump_json",
    "format_value",
    "json_errors",
    "jsonable",
    "print_rich",
]


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time (so captured stderr is honoured).

    When stdout and stderr are the same terminal, a line the Spirit left open on stdout is
    ended first, so a log record never lands in the middle of it.
    """

    def __init__(self, output: Output | None) -> None:
        super().__init__()
        self.output = output

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if self.output is not None and not self.output.at_line_start \
                    and sys.stdout.isatty() and sys.stderr.isatty():
                self.output.ensure_newline()
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


class _Formatter(logging.Formatter):
    """``LEVEL source: message``; a Spirit's records are named after the Spirit."""

    def format(self, record: logging.LogRecord) -> str:
        name = record.name
        if name.startswith("vudo.spirit."):
            source = name[len("vudo.spirit."):]
        elif name == "vudo.trace":
            source = "trace"
        else:
            source = name
        text = f"{record.levelname} {source}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


@contextmanager
def cli_logging(level: int, output: Output | None = None) -> Iterator[None]:
    """Send vudo's log records (the Spirits' logs, traces) to stderr at ``level`` while the
    block runs, then restore the ``vudo`` logger as it was."""
    logger = logging.getLogger("vudo")
    handler = _StderrHandler(output)
    handler.setFormatter(_Formatter())
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)



@dataclass(slots=True)
class Output:
    """The text Spirits print: written to stdout, or captured (``--json``).

    Remembers whether the last text ended a line, so the command's own lines (a result, a
    step) always start on a fresh line.
    """

    capture: bool = False
    parts: list[str] = field(default_factory=list)
    logs: list[dict[str, str]] = field(default_factory=list)
    at_line_start: bool = True

    def write(self, text: str) -> None:
        """Write (or capture) text exactly as the Spirit gave it."""
        if not text:
            return
        if self.capture:
            self.parts.append(text)
        else:
            sys.stdout.write(text)
            sys.stdout.flush()
        self.at_line_start = text.endswith("\n")

    def echo(self, line: str) -> None:
        """Write one line of the command's own output, starting on a fresh line.

        Through ``sys.stdout`` as it is now (not click's cached stream): while a live display
        runs, that is rich's proxy, which prints the line above the display.
        """
        self.ensure_newline()
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def ensure_newline(self) -> None:
        """End the Spirit's last line if it left one open."""
        if not self.at_line_start and not self.capture:
            sys.stdout.write("\n")
            sys.stdout.flush()
        self.at_line_start = True

    def end_line_on_terminal(self) -> None:
        """End an open line only when stdout and stderr share a terminal, so a message on
        stderr does not land after the Spirit's text; piped stdout stays byte for byte."""
        if not self.at_line_start and not self.capture and sys.stdout.isatty() \
                and sys.stderr.isatty():
            self.ensure_newline()

    @property
    def text(self) -> str:
        """Everything captured so far."""
        return "".join(self.parts)


class CliLogger(LoggerBase):
    """The :class:`vudo.Logger` the command gives Spirits: text to :class:`Output`, records
    through :mod:`logging` (to stderr), and copies of the records when capturing."""

    def __init__(self, name: str, output: Output) -> None:
        self._std = StdLogger(name)
        self._output = output

    def log(self, level: LogLevel, message: str) -> None:
        """Record ``message`` at ``level``."""
        if self._output.capture:
            self._output.logs.append({"level": LogLevel(level).name, "message": message})
        self._std.log(level, message)

    def print(self, message: str) -> None:
        """Write text without a newline."""
        self._output.write(message)


def format_value(value: Any) -> str:
    """How a result is printed: ints and floats plainly, several values space-separated."""
    if isinstance(value, tuple):
        return " ".join(format_value(v) for v in value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def jsonable(value: Any) -> Any:
    """``value`` for JSON: tuples as lists; NaN and infinities as strings."""
    if isinstance(value, tuple | list):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return value


def dump_json(document: Any) -> str:
    """Pretty, valid JSON (no NaN literals)."""
    return json.dumps(document, indent=2, allow_nan=False, ensure_ascii=False)


def print_rich(render: Callable[[Console], None]) -> None:
    """Print rich output to stdout: styled on a terminal, plain text without trailing
    spaces otherwise (so it diffs and greps well)."""
    if sys.stdout.isatty():
        render(Console(highlight=False))
        return
    console = Console(file=sys.stdout, highlight=False, width=120, no_color=True)
    with console.capture() as captured:
        render(console)
    sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


@contextmanager
def json_errors(enabled: bool, command: str) -> Iterator[None]:
    """With ``--json``, a command that fails before it has a document of its own still prints
    one: ``{"command": ..., "ok": false, "error": {...}}`` (the error line goes to stderr)."""
    try:
        yield
    except Exception as exc:
        if enabled:
            click.echo(dump_json({"command": command, "ok": False, "error": error_document(exc)}))
        raise

