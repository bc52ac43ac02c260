"""Shared plumbing of the ``vudo`` command: errors and exit codes, logging, Spirit output,
source resolution (files and bundled ``example:`` names), argument conversion."""

from __future__ import annotations

import importlib.resources
import json
import logging
import math
import re
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import click
import wasmtime
from rich.console import Console

from .._providers import LoggerBase, StdLogger
from .._spirit import compile_source, read_wasm
from ..abi import LogLevel
from ..errors import LinkError, LoadError, SpiritTrap, UnknownExportError, VudoError

__all__ = [
    "EXAMPLE_PREFIX",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_SPIRIT",
    "EXIT_USAGE",
    "CliFailure",
    "CliLogger",
    "Interrupted",
    "Output",
    "Settings",
    "SpiritFailure",
    "UsageFailure",
    "cli_logging",
    "common_options",
    "convert_args",
    "dump_json",
    "error_message",
    "examples_dir",
    "exit_code_for",
    "format_signature",
    "format_value",
    "func_signature",
    "jsonable",
    "list_examples",
    "one_line",
    "parse_size",
    "print_rich",
    "read_module",
    "relabel",
    "report_error",
    "resolve_source",
    "size_option",
    "stop_on_interrupt",
]

F = TypeVar("F", bound=Callable[..., Any])

#: Exit codes: success, the Spirit failed (trap, panic, limit, link error), usage error, and
#: interrupted by Ctrl-C (128 + SIGINT, as shells do).
EXIT_OK, EXIT_SPIRIT, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
#: Prefix naming an example bundled with vudo, e.g. ``example:calculator``.
EXAMPLE_PREFIX = "example:"

_INT_RANGES = {"i32": (-(2**31), 2**32 - 1), "i64": (-(2**63), 2**64 - 1)}


# ------------------------------------------------------------------------------------------
# Errors and exit codes
# ------------------------------------------------------------------------------------------
class CliFailure(Exception):
    """An error the command reports as one line, exiting with ``exit_code``."""

    exit_code = EXIT_SPIRIT

    def __init__(self, message: str, *, details: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        #: Extra lines shown with ``-v``.
        self.details = list(details)


class UsageFailure(CliFailure):
    """The user asked for something impossible: missing file, unknown function, bad args."""

    exit_code = EXIT_USAGE


class SpiritFailure(CliFailure):
    """The Spirit (or the session) failed while running."""

    exit_code = EXIT_SPIRIT


class Interrupted(CliFailure):
    """The user pressed Ctrl-C; the running Spirits were stopped."""

    exit_code = EXIT_INTERRUPTED


@contextmanager
def stop_on_interrupt(stop: Callable[[], None]) -> Iterator[None]:
    """On the first Ctrl-C (SIGINT) while the block runs, call ``stop`` (which interrupts the
    running Spirits: WebAssembly never returns to Python on its own) and raise
    :class:`Interrupted` when the block ends. A second Ctrl-C interrupts as usual."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    hit = threading.Event()
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(_signum: int, _frame: object) -> None:
        hit.set()
        signal.signal(signal.SIGINT, previous)
        # Not here: the handler may run while this thread holds a lock ``stop`` needs.
        threading.Thread(target=stop, name="vudo-interrupt", daemon=True).start()

    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    except Exception as exc:
        if hit.is_set():
            raise Interrupted("interrupted") from exc
        raise
    finally:
        if signal.getsignal(signal.SIGINT) is on_sigint:
            signal.signal(signal.SIGINT, previous)
    if hit.is_set():
        raise Interrupted("interrupted")


#: LoadError causes that mean "this file cannot be used" (usage errors, not Spirit failures).
_FILE_PROBLEMS = ("no such file", "is a directory", "not a WebAssembly", "invalid WAT",
                  "invalid WebAssembly")


def exit_code_for(exc: BaseException) -> int:
    """The documented exit code for an exception raised while running a command."""
    if isinstance(exc, CliFailure):
        return exc.exit_code
    if isinstance(exc, UnknownExportError):
        return EXIT_USAGE
    if isinstance(exc, LinkError):
        return EXIT_SPIRIT
    if isinstance(exc, LoadError) and exc.cause.startswith(_FILE_PROBLEMS):
        return EXIT_USAGE
    return EXIT_SPIRIT


def one_line(text: str) -> str:
    """Collapse a multi-line message into one line (``a:\\n  b\\n  c`` -> ``a: b; c``)."""
    parts = [p.strip() for p in text.strip().splitlines() if p.strip()]
    if not parts:
        return ""
    out = parts[0]
    for part in parts[1:]:
        out += (" " if out.endswith(":") else "; ") + part
    return out


def _details(exc: BaseException) -> list[str]:
    lines: list[str] = []
    if isinstance(exc, CliFailure):
        lines += exc.details
    if isinstance(exc, LinkError):
        lines += [f"unresolved: {u}" for u in exc.unresolved]
    code = getattr(exc, "trap_code", None)
    if code:
        lines.append(f"trap code: {code}")
    frames = getattr(exc, "backtrace", None)
    if frames:
        lines.append("wasm backtrace:")
        lines += [f"  {frame}" for frame in frames]
    lines += [str(n) for n in getattr(exc, "__notes__", [])]
    cause = exc.__cause__
    while cause is not None:
        lines.append(f"caused by {type(cause).__name__}: {one_line(str(cause))}")
        cause = cause.__cause__
    return lines


def error_message(exc: BaseException) -> str:
    """The one-line description of ``exc`` printed after ``error:``."""
    if isinstance(exc, CliFailure):
        return one_line(exc.message)
    if type(exc) is SpiritTrap:
        # SpiritTrap.message is already wasmtime's one-line cause (vudo.spirit._trap_cause).
        reason = exc.message.removeprefix("wasm trap: ")
        return f"Spirit {exc.spirit!r} trapped in {exc.function}: {reason}"
    if isinstance(exc, VudoError):
        return one_line(str(exc))
    return f"internal error: {type(exc).__name__}: {one_line(str(exc))} (--traceback shows where)"


def report_error(exc: BaseException, settings: Settings) -> int:
    """Print ``exc`` to stderr (one line; details with ``-v``, traceback with ``--traceback``)
    and return the exit code."""
    if settings.traceback:
        traceback.print_exception(exc, file=sys.stderr)
    click.echo(f"error: {error_message(exc)}", err=True)
    if settings.verbose or settings.traceback:
        for line in _details(exc):
            click.echo(f"  {line}", err=True)
    return exit_code_for(exc)


# ------------------------------------------------------------------------------------------
# Options shared by every command
# ------------------------------------------------------------------------------------------
@dataclass(slots=True)
class Settings:
    """Flags that apply to every command (``--traceback``, ``-v``), wherever they are given."""

    traceback: bool = False
    verbose: int = 0


def _set_traceback(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.ensure_object(Settings).traceback = True


def _add_verbose(ctx: click.Context, _param: click.Parameter, value: int) -> None:
    ctx.ensure_object(Settings).verbose += value


def common_options(f: F) -> F:
    """Add ``--traceback`` and ``-v/--verbose`` to a command (or the group)."""
    f = click.option(
        "--traceback", is_flag=True, expose_value=False, is_eager=True, callback=_set_traceback,
        help="On error, print the Python traceback too.",
    )(f)
    f = click.option(
        "-v", "--verbose", count=True, expose_value=False, is_eager=True, callback=_add_verbose,
        help="Show DEBUG logs, and the details of an error.",
    )(f)
    return f


# ------------------------------------------------------------------------------------------
# Logging to stderr
# ------------------------------------------------------------------------------------------
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


# ------------------------------------------------------------------------------------------
# What Spirits print
# ------------------------------------------------------------------------------------------
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
        """Write one line of the command's own output, starting on a fresh line."""
        self.ensure_newline()
        click.echo(line)

    def ensure_newline(self) -> None:
        """End the Spirit's last line if it left one open."""
        if not self.at_line_start and not self.capture:
            sys.stdout.write("\n")
            sys.stdout.flush()
        self.at_line_start = True

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



# ------------------------------------------------------------------------------------------
# Sources
# ------------------------------------------------------------------------------------------
def examples_dir() -> Path:
    """The directory of the examples bundled with the package (``vudo/examples``)."""
    return Path(str(importlib.resources.files("vudo") / "examples"))


def list_examples(suffixes: Sequence[str]) -> list[str]:
    """Names of the bundled examples with one of ``suffixes``."""
    root = examples_dir()
    if not root.is_dir():
        return []
    return sorted({p.stem for p in root.iterdir() if p.suffix in suffixes})


def resolve_source(text: str, suffixes: Sequence[str] = (".wasm", ".wat")) -> Path:
    """The file named by ``text``: a path, or ``example:NAME`` for a bundled example."""
    if text.startswith(EXAMPLE_PREFIX):
        name = text[len(EXAMPLE_PREFIX):]
        root = examples_dir()
        candidates = [root / name] if Path(name).suffix in suffixes else []
        candidates += [root / f"{name}{suffix}" for suffix in suffixes]
        for candidate in candidates:
            if name and "/" not in name and "\\" not in name and candidate.is_file():
                return candidate
        known = ", ".join(EXAMPLE_PREFIX + n for n in list_examples(suffixes)) or "(none)"
        raise UsageFailure(f"no bundled example {name!r}; examples: {known}")
    path = Path(text)
    if not path.exists():
        raise UsageFailure(f"{text}: no such file")
    if path.is_dir():
        raise UsageFailure(f"{text}: is a directory, not a file")
    return path


def read_module(path: Path) -> tuple[bytes, wasmtime.Module]:
    """Read a ``.wasm`` file or WAT text and compile it (through the compile cache).

    Never instantiates. Raises :class:`UsageFailure` for a file that is not a usable module.
    """
    try:
        wasm = read_wasm(path)[0]
        return wasm, compile_source(wasm)[0]
    except LoadError as exc:
        raise UsageFailure(f"{path}: {exc.cause}") from None


def relabel(exc: LoadError, label: str) -> LoadError:
    """The same load error, naming ``label`` (the file) instead of the compiled module."""
    new: LoadError = (
        LinkError(label, exc.unresolved)
        if isinstance(exc, LinkError)
        else LoadError(label, exc.cause)
    )
    new.__cause__ = exc.__cause__
    return new


# ------------------------------------------------------------------------------------------
# Signatures, arguments and values
# ------------------------------------------------------------------------------------------
def func_signature(ty: wasmtime.FuncType) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The ``(params, results)`` wasm type names of a function type."""
    return tuple(str(t) for t in ty.params), tuple(str(t) for t in ty.results)


def format_signature(params: Sequence[str], results: Sequence[str]) -> str:
    """``(i64, i64) -> i64``; ``() -> ()``; several results as ``(i32, i64)``."""
    res = results[0] if len(results) == 1 else f"({', '.join(results)})"
    return f"({', '.join(params)}) -> {res}"


def _int_from_text(text: str) -> int | None:
    t = text.strip().lower()
    if t in ("true", "false"):
        return int(t == "true")
    for base in (10, 0):
        try:
            return int(t, base)
        except ValueError:
            continue
    return None


def convert_args(function: str, params: Sequence[str], values: Sequence[Any]) -> list[Any]:
    """Convert command-line text (or JSON/TOML values) to the wasm parameter types.

    Integers accept decimal, ``0x``/``0o``/``0b`` and ``true``/``false``; floats accept
    anything :class:`float` does (``1e3``, ``inf``, ``nan``). Raises :class:`UsageFailure`.
    """
    if len(values) != len(params):
        wanted = f"({', '.join(params)})"
        raise UsageFailure(
            f"{function}{wanted} takes {len(params)} argument(s), got {len(values)}"
        )
    out: list[Any] = []
    for i, (t, value) in enumerate(zip(params, values, strict=True), 1):
        where = f"argument {i} of {function} ({t})"
        if t in _INT_RANGES:
            number: int | None
            if isinstance(value, bool):
                number = int(value)
            elif isinstance(value, int):
                number = value
            elif isinstance(value, str):
                number = _int_from_text(value)
            else:
                number = None
            if number is None:
                raise UsageFailure(f"{where}: {value!r} is not an integer")
            lo, hi = _INT_RANGES[t]
            if not lo <= number <= hi:
                raise UsageFailure(f"{where}: {number} is out of range [{lo}, {hi}]")
            out.append(number)
        elif t in ("f32", "f64"):
            if isinstance(value, bool):
                out.append(float(value))
                continue
            try:
                if not isinstance(value, int | float | str):
                    raise TypeError
                out.append(float(value))
            except (TypeError, ValueError, OverflowError):
                raise UsageFailure(f"{where}: {value!r} is not a number") from None
        else:
            raise UsageFailure(f"{where}: parameters of type {t} cannot be given from here")
    return out


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


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1024, "kb": 1024, "kib": 1024,
    "m": 1024**2, "mb": 1024**2, "mib": 1024**2,
    "g": 1024**3, "gb": 1024**3, "gib": 1024**3,
    "p": 65536, "page": 65536, "pages": 65536,
}


def parse_size(text: str | int) -> int:
    """Bytes from ``65536``, ``64KiB``, ``16M``, ``1G`` or ``10pages`` (units are binary).

    Raises ``ValueError``.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        size = text
    else:
        m = _SIZE_RE.match(str(text))
        unit = m.group(2).lower() if m else ""
        if not m or unit not in _SIZE_UNITS:
            raise ValueError(
                f"{text!r} is not a size (examples: 65536, 64KiB, 16M, 1G, 10pages)"
            )
        size = int(float(m.group(1)) * _SIZE_UNITS[unit])
    if size <= 0:
        raise ValueError(f"a size must be positive, got {text!r}")
    return size


def size_option(
    _ctx: click.Context, param: click.Parameter, value: str | None
) -> int | None:
    """Click callback turning a ``SIZE`` option into bytes (see :func:`parse_size`)."""
    if value is None:
        return None
    try:
        return parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param=param) from None


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
