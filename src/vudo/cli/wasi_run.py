"""``vudo run`` of a WASI command: the module's ``_start`` as a whole program."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import wasmtime

from .._wasi import WasiOptions, run_command
from ..effects import Permissions
from ..errors import LoadError
from ..limits import Limits
from ..spirit import load_spirit
from ._common import CliLogger, Output, UsageFailure, cli_logging, relabel, stop_on_interrupt

__all__ = ["run_wasi_program"]


def _env(items: Sequence[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageFailure(f"--env {item!r}: expected NAME=VALUE")
        env[key] = value
    return env


def run_wasi_program(
    path: Path, module: wasmtime.Module, args: Sequence[str], limits: Limits,
    directory: Path | None, writable: bool, env: Sequence[str], *, debug: bool,
) -> int:
    """Run ``_start`` with ``args``; stdout/stderr through the CLI logger; return the status."""
    if writable and directory is None:
        raise UsageFailure("--dir-write needs --dir")
    permissions = Permissions(fs_root=directory, fs_write=writable) if directory else None
    options = WasiOptions(args=[str(a) for a in args], env=_env(env))
    output = Output(capture=False)
    with cli_logging(logging.DEBUG if debug else logging.INFO, output):
        try:
            spirit = load_spirit(
                module, name=path.stem, logger=CliLogger(path.stem, output), limits=limits,
                permissions=permissions, wasi=options,
            )
        except LoadError as exc:
            raise relabel(exc, str(path)) from exc.__cause__
        try:
            with stop_on_interrupt(spirit.interrupt):
                code = run_command(spirit, check=False)
        finally:
            spirit.close()
            output.ensure_newline()
    return code
