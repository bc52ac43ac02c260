"""Options every ``vudo`` command accepts (``--traceback``, ``-v``), wherever they are given."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click

__all__ = ["Settings", "common_options"]

F = TypeVar("F", bound=Callable[..., Any])


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
