"""Errors and exit codes of the ``vudo`` command.

The exit code comes from the exception's type (and, for vudo errors that carry one, a ``kind``
field), never from the text of its message.
"""

from __future__ import annotations

import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import click

from ..errors import LinkError, SpiritTrap, UnknownExportError, VudoError
from ._options import Settings

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_SPIRIT",
    "EXIT_USAGE",
    "CliFailure",
    "Interrupted",
    "SpiritFailure",
    "UsageFailure",
    "error_document",
    "error_message",
    "exit_code_for",
    "one_line",
    "report_error",
    "stop_on_interrupt",
]

#: Exit codes: success, the Spirit failed (trap, panic, limit, link error), usage error, and
#: interrupted by Ctrl-C (128 + SIGINT, as shells do).
EXIT_OK, EXIT_SPIRIT, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

#: Values of a vudo error's ``kind`` field that mean the user's input was unusable.
_USAGE_KINDS = frozenset({"usage", "file", "format"})


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


def exit_code_for(exc: BaseException) -> int:
    """The documented exit code for an exception raised while running a command.

    Unusable input is reported by the CLI as :class:`UsageFailure` where it is read
    (:func:`vudo.cli._sources.read_module`), so every other load error is the Spirit's.
    """
    if isinstance(exc, CliFailure):
        return exc.exit_code
    if isinstance(exc, UnknownExportError):
        return EXIT_USAGE
    if isinstance(exc, LinkError):
        return EXIT_SPIRIT
    if isinstance(exc, VudoError) and getattr(exc, "kind", None) in _USAGE_KINDS:
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


def error_document(exc: BaseException) -> dict[str, object]:
    """The ``error`` member of a ``--json`` document: ``type``, ``message``, ``exit_code``."""
    return {"type": type(exc).__name__, "message": error_message(exc),
            "exit_code": exit_code_for(exc)}


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

