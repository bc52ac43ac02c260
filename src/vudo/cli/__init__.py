"""The ``vudo`` command: run, inspect and generate stubs for Spirits, and run sessions.

``vudo run SPIRIT [FUNCTION] [ARGS...]``, ``vudo inspect SPIRIT``, ``vudo stubs SPIRIT``,
``vudo seance MANIFEST.toml`` and ``vudo trace FILE --html OUT``; ``python -m vudo`` is the same
command. Errors are one line on stderr (``-v`` adds details, ``--traceback`` the Python
traceback) and the exit code says what happened: 0 success, 1 the Spirit failed, 2 usage error.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Sequence
from typing import Any

import click

from .. import __version__
from ._errors import EXIT_USAGE, report_error
from ._options import Settings, common_options
from .inspection import inspect_command
from .run import run_command
from .session import seance_command
from .stubs import stubs_command
from .trace import trace_command

__all__ = ["VudoGroup", "cli", "main"]


class VudoGroup(click.Group):
    """The ``vudo`` group: every error becomes one line on stderr and a documented exit code."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        """Run the command; exit with its code (or return it when not ``standalone_mode``)."""
        settings = extra.get("obj")
        if not isinstance(settings, Settings):
            settings = extra["obj"] = Settings()
        try:
            rv = super().main(
                args, prog_name, complete_var, standalone_mode=False,
                windows_expand_args=windows_expand_args, **extra,
            )
            code = rv if isinstance(rv, int) and not isinstance(rv, bool) else 0
        except click.UsageError as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # click >= 8.2: `vudo` alone
                exc.show()
            else:
                hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
                click.echo(f"error: {exc.format_message()}{hint}", err=True)
            code = EXIT_USAGE
        except click.ClickException as exc:
            exc.show()
            code = exc.exit_code
        except click.Abort as exc:
            interrupted = isinstance(exc.__context__ or exc.__cause__, KeyboardInterrupt)
            click.echo("error: interrupted" if interrupted else "error: aborted", err=True)
            code = 130 if interrupted else 1
        except OSError as exc:
            if exc.errno != errno.EPIPE:
                code = report_error(exc, settings)
            else:  # the reader went away (vudo ... | head): stop quietly
                _silence_stdout()
                code = 0
        except Exception as exc:
            code = report_error(exc, settings)
        if standalone_mode:
            sys.exit(code)
        return code


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # pragma: no cover - stdout is not a real file
        pass


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from .._runtime.core import core_summary

    click.echo(f"vudo, version {__version__}\n{core_summary()}")
    ctx.exit()


@click.command("version", short_help="Show the version and which core is active.")
@click.option("--json", "as_json", is_flag=True, help="Print it as JSON.")
def version_command(as_json: bool) -> None:
    """Show vudo's version and which core serves Spirits: the native call path, the C message
    bus and heap, the messaging host functions in C (VUDO_NATIVE=0 turns all of them off)."""
    from .._runtime.core import core_status, core_summary
    from ._output import dump_json

    if as_json:
        click.echo(dump_json({"command": "version", "ok": True, "version": __version__,
                              "core": core_status(), "error": None}))
    else:
        click.echo(f"vudo, version {__version__}\n{core_summary()}")


@click.group(
    "vudo", cls=VudoGroup, context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option("-V", "--version", is_flag=True, expose_value=False, is_eager=True,
              callback=_print_version, help="Show the version and which core is active.")
@common_options
def cli() -> None:
    """vudo: run WebAssembly Spirits from the command line.

    \b
      vudo run example:calculator add 2 3     call a function, print the result
      vudo inspect spirit.wasm                imports, exports, will it link?
      vudo stubs spirit.wasm -o api.py        a typed Protocol for mypy
      vudo seance example:pingpong            run a session from a TOML manifest
      vudo trace session.json --html out.html a sequence diagram of a --trace file

    Exit codes: 0 success; 1 the Spirit failed (trap, panic, limit, link error);
    2 usage error. Errors are one line; -v adds details, --traceback the traceback.
    """


cli.add_command(run_command)
cli.add_command(inspect_command)
cli.add_command(stubs_command)
cli.add_command(seance_command)
cli.add_command(trace_command)
cli.add_command(version_command)


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of the ``vudo`` console script and of ``python -m vudo``."""
    cli.main(args=args)
