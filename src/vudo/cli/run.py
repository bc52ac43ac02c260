"""``vudo run``: load one Spirit, call one function, print the result."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import wasmtime

from .._wasi import imports_wasi
from ..errors import LoadError
from ..limits import Limits
from ..spirit import load_spirit
from ._common import (
    CliLogger,
    Output,
    Settings,
    UsageFailure,
    cli_logging,
    common_options,
    convert_args,
    dump_json,
    error_message,
    exit_code_for,
    format_signature,
    format_value,
    func_signature,
    jsonable,
    read_module,
    relabel,
    resolve_source,
    size_option,
    stop_on_interrupt,
)
from .wasi_run import run_wasi_program

__all__ = ["run_command"]

# Negative numbers given as arguments (``add -3 4``) must not be taken for options: they are
# hidden behind this prefix while click parses, and restored afterwards.
_NEG_GUARD = "\x00"
_NEGATIVE = re.compile(r"^-(\d|\.\d|inf|nan|infinity)", re.IGNORECASE)
_TAKES_VALUE = {"-f", "--function", "-a", "--args", "--fuel", "--timeout", "--max-memory"}
_DEFAULT_FUNCTIONS = ("main", "_start")


def _unguard(text: str) -> str:
    return text[len(_NEG_GUARD):] if text.startswith(_NEG_GUARD) else text


class _RunCommand(click.Command):
    """``vudo run``: lets negative numbers through as arguments."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Guard negative numbers that are not the value of an option, then parse."""
        guarded: list[str] = []
        previous = ""
        for arg in args:
            if _NEGATIVE.match(arg) and previous not in _TAKES_VALUE:
                guarded.append(_NEG_GUARD + arg)
            else:
                guarded.append(arg)
            previous = arg
        return super().parse_args(ctx, guarded)


Signature = tuple[tuple[str, ...], tuple[str, ...]]


def _exported_functions(module: wasmtime.Module) -> dict[str, Signature]:
    return {
        e.name: func_signature(e.type)
        for e in module.exports
        if isinstance(e.type, wasmtime.FuncType)
    }


def _listing(functions: dict[str, Signature]) -> str:
    if not functions:
        return "(none)"
    return ", ".join(f"{n}{format_signature(*sig)}" for n, sig in functions.items())


def _choose(
    label: str,
    functions: dict[str, Signature],
    function: str | None,
) -> str:
    if function is None:
        for candidate in _DEFAULT_FUNCTIONS:
            if candidate in functions:
                return candidate
        raise UsageFailure(
            f"no FUNCTION given and {label} exports neither main nor _start; "
            f"its functions: {_listing(functions)}"
        )
    if function not in functions:
        raise UsageFailure(
            f"{label} has no exported function {function!r}; its functions: {_listing(functions)}"
        )
    return function


def _json_args(text: str) -> list[Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageFailure(f"-a/--args is not valid JSON ({exc.msg}): {text!r}") from None
    return value if isinstance(value, list) else [value]


@click.command("run", cls=_RunCommand,
               short_help="Call a function of a Spirit and print the result.")
@click.argument("spirit", metavar="SPIRIT")
@click.argument("function", required=False)
@click.argument("args", nargs=-1)
@click.option("-f", "--function", "function_option", metavar="NAME",
              help="The function to call (instead of the FUNCTION argument).")
@click.option("-a", "--args", "args_json", metavar="JSON",
              help="The arguments as JSON, e.g. '[3, 4]' (instead of ARGS).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the result, the Spirit's output and logs as JSON.")
@click.option("--debug", is_flag=True,
              help="Load the Spirit in debug mode (breakpoints logged, DEBUG logs shown).")
@click.option("--fuel", type=click.IntRange(min=1), metavar="N",
              help="Stop the call after N units of fuel (about N instructions).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Stop the call after this many seconds.")
@click.option("--max-memory", callback=size_option, metavar="SIZE",
              help="Cap the Spirit's memory: bytes, or 64KiB, 16M, 1G, 10pages.")
@click.option("--trace", is_flag=True, help="Log every host function call to stderr.")
@click.option("--dir", "wasi_dir", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="WASI: grant DIR, read-only, seen by the Spirit as /data.")
@click.option("--dir-write", is_flag=True, help="WASI: the granted --dir is writable too.")
@click.option("--env", "wasi_env", multiple=True, metavar="NAME=VALUE",
              help="WASI: an environment variable (repeatable); none by default.")
@common_options
@click.pass_context
def run_command(
    ctx: click.Context,
    spirit: str,
    function: str | None,
    args: tuple[str, ...],
    function_option: str | None,
    args_json: str | None,
    as_json: bool,
    debug: bool,
    fuel: int | None,
    timeout: float | None,
    max_memory: int | None,
    trace: bool,
    wasi_dir: Path | None = None,
    dir_write: bool = False,
    wasi_env: tuple[str, ...] = (),
) -> int | None:
    """Load SPIRIT and call FUNCTION with ARGS; print the result.

    SPIRIT is a .wasm module, a .wat text file (compiled on the fly), or example:NAME for an
    example bundled with vudo (example:calculator, example:greeter, ...). FUNCTION defaults
    to main, else _start. ARGS are converted by the function's wasm signature: integers
    (42, -7, 0xff) for i32/i64, numbers (2.5, 1e3, inf) for f32/f64.

    What the Spirit prints goes to stdout, its logs to stderr.

    \b
    Examples:
      vudo run example:calculator add 2 3
      vudo run counter.wasm add_numbers 3 4
      vudo run counter.wasm -f add_numbers -a '[3, 4]'
      vudo run example:greeter --trace
      vudo run spin.wasm --fuel 1000000 --timeout 2

    A WASI command (it exports _start and imports wasi_snapshot_preview1) runs as a
    program: ARGS are its arguments, nothing is granted but --dir/--env, and vudo exits with
    the program's status.

    Exit codes: 0 success; 1 the Spirit failed (trap, panic, limit, link error);
    2 usage error (missing file, not a module, unknown function, bad arguments);
    a WASI command's own exit status.
    """
    settings = ctx.ensure_object(Settings)
    function = _unguard(function) if function is not None else None
    raw_args: list[Any] = [_unguard(a) for a in args]
    if function_option is not None:
        if function is not None:
            raw_args.insert(0, function)
        function = function_option
    if args_json is not None:
        if raw_args:
            raise UsageFailure(
                "give the arguments either after FUNCTION or with -a/--args, not both"
            )
        raw_args = _json_args(args_json)

    path = resolve_source(spirit)
    _wasm, module = read_module(path)
    functions = _exported_functions(module)
    if (function is not None and function_option is None and function not in functions
            and "_start" in functions and imports_wasi(module)):
        raw_args.insert(0, function)  # [toolchains hook] a WASI program's first argument
        function = None
    name = _choose(spirit, functions, function)
    params, _results = functions[name]
    limits = Limits(timeout=timeout, fuel=fuel, max_memory=max_memory)
    if name == "_start" and imports_wasi(module):  # [toolchains hook] a WASI program
        return run_wasi_program(path, module, raw_args, limits, wasi_dir, dir_write, wasi_env,
                                debug=bool(debug or settings.verbose))
    values = convert_args(name, params, raw_args)

    output = Output(capture=as_json)
    level = logging.DEBUG if debug or settings.verbose else logging.INFO
    with cli_logging(level, output):
        started = time.perf_counter()
        try:
            result = _call(path, spirit, module, output, name, values, debug=debug,
                           limits=limits, trace=trace)
        except Exception as exc:
            output.ensure_newline()
            if as_json:
                click.echo(dump_json(_document(path, name, values, output, started, error=exc)))
            raise
    if as_json:
        click.echo(dump_json(_document(path, name, values, output, started, result=result)))
        return None
    output.ensure_newline()
    if result is not None:
        click.echo(format_value(result))
    return None


def _call(
    path: Path, label: str, module: wasmtime.Module, output: Output, function: str,
    values: Sequence[Any],
    *, debug: bool, limits: Limits, trace: bool,
) -> Any:
    try:
        spirit = load_spirit(
            module, name=path.stem, logger=CliLogger(path.stem, output), debug=debug,
            limits=limits, trace=trace,
        )
    except LoadError as exc:
        raise relabel(exc, label) from exc.__cause__
    try:
        with stop_on_interrupt(spirit.interrupt):
            return spirit.call(function, *values)
    finally:
        spirit.close()


def _document(
    path: Path, function: str, values: Sequence[Any], output: Output, started: float,
    *, result: Any = None, error: BaseException | None = None,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "spirit": path.stem,
        "source": str(path),
        "function": function,
        "args": jsonable(list(values)),
        "ok": error is None,
        "result": jsonable(result),
        "output": output.text,
        "logs": output.logs,
        "seconds": round(time.perf_counter() - started, 6),
    }
    if error is not None:
        doc["error"] = {
            "type": type(error).__name__,
            "message": error_message(error),
            "exit_code": exit_code_for(error),
        }
    return doc
