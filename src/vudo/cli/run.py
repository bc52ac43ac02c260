"""``vudo run``: load one Spirit, call one function, print the result."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import click
import wasmtime

from .._config import Limits, WasiOptions
from .._effects import StandardEffectHandler
from .._host.wasi_context import imports_wasi
from .._providers import MessageBus
from .._spirit import load_spirit
from .._spirit.toolchains import run_command as run_wasi_command
from .._trace import TraceRecorder, TracingBroker
from ..errors import LoadError
from ._args import convert_args, format_signature, func_signature, size_option
from ._errors import UsageFailure, error_document, stop_on_interrupt
from ._grants import Grants, grant_options
from ._options import Settings, common_options
from ._output import CliLogger, Output, cli_logging, dump_json, format_value, json_errors, jsonable
from ._sources import DEFAULT_MAX_DOWNLOAD, SpiritSource, open_source, read_module, relabel

__all__ = ["run_command"]

# Negative numbers given as arguments (``add -3 4``) must not be taken for options: they are
# hidden behind this prefix while click parses, and restored afterwards.
_NEG_GUARD = "\x00"
_NEGATIVE = re.compile(r"^-(\d|\.\d|inf|nan|infinity)", re.IGNORECASE)
_TAKES_VALUE = {"-f", "--function", "-a", "--args", "--fuel", "--timeout", "--max-memory",
                "--allow-fs", "--allow-host", "--db", "--env", "--dir", "--loa", "--sha256",
                "--max-download", "--trace"}
_DEFAULT_FUNCTIONS = ("main", "_start")


def _unguard(text: str) -> str:
    return text[len(_NEG_GUARD):] if text.startswith(_NEG_GUARD) else text


class _RunCommand(click.Command):
    """``vudo run``: lets negative numbers through as arguments."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Guard negative numbers that are not the value of an option, then parse."""
        for i, arg in enumerate(args):  # the old flag form: say what it became
            if arg == "--trace" and (i + 1 == len(args) or args[i + 1].startswith("-")):
                raise click.UsageError(
                    "--trace takes a FILE (it records the run as Chrome trace-event JSON); "
                    "to log every host function call to stderr, use --log-host-calls", ctx)
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
@click.option("--trace", "trace_file", type=click.Path(dir_okay=False, path_type=Path),
              metavar="FILE", help="Record calls, host calls and messages as Chrome trace-event "
              "JSON in FILE (render it with vudo trace FILE --html OUT).")
@click.option("--log-host-calls", is_flag=True, help="Log every host function call to stderr.")
@click.option("--sha256", metavar="HEX", help="Refuse the module unless its SHA-256 is HEX.")
@click.option("--max-download", callback=size_option, metavar="SIZE",
              help="Largest module read from stdin or a URL (default 64MiB).")
@grant_options
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
    trace_file: Path | None,
    log_host_calls: bool,
    sha256: str | None,
    max_download: int | None,
    grants: Grants,
) -> int | None:
    """Load SPIRIT and call FUNCTION with ARGS; print the result.

    SPIRIT is a .wasm module, a .wat text file (compiled on the fly), example:NAME for an
    example bundled with vudo (example:calculator, example:greeter, ...), - for a module on
    stdin, or an http(s):// URL (pin it with --sha256). FUNCTION defaults
    to main, else _start. ARGS are converted by the function's wasm signature: integers
    (42, -7, 0xff) for i32/i64, numbers (2.5, 1e3, inf) for f32/f64.

    What the Spirit prints goes to stdout exactly as printed, then the result on a line of its
    own; logs and errors go to stderr. The Spirit may do nothing outside its memory unless
    granted: --allow-fs, --allow-host, --db (effects), --env and --dir (WASI), --loa (host
    functions written in Python).

    \b
    Examples:
      vudo run example:calculator add 2 3
      vudo run counter.wasm add_numbers 3 4
      vudo run counter.wasm -f add_numbers -a '[3, 4]'
      vudo run example:greeter --log-host-calls
      vudo run example:greeter --trace run.json && vudo trace run.json --html run.html
      vudo run spin.wasm --fuel 1000000 --timeout 2
      vudo run reader.wasm --allow-fs ./data --loa myloa:LOA
      cat calc.wasm | vudo run - add 2 3
      vudo run https://example.org/calc.wasm --sha256 9f86d0... add 2 3

    A WASI command (it exports _start and imports wasi_snapshot_preview1) runs as a program:
    ARGS are its arguments, it sees only what --env, --dir and --allow-fs grant (--allow-fs DIR
    appears as /data, writable with --allow-fs-write), and vudo exits with its status.

    Exit codes: 0 success; 1 the Spirit failed (trap, panic, limit, link error);
    2 usage error (missing file, not a module, unknown function, bad arguments);
    a WASI command's own exit status.
    """
    settings = ctx.ensure_object(Settings)
    with json_errors(as_json, "run"):
        source, module, name, values, prepared = _prepare(
            spirit, function, args, function_option, args_json, sha256,
            max_download or DEFAULT_MAX_DOWNLOAD, grants,
        )
    output = Output(capture=as_json)
    level = logging.DEBUG if debug or settings.verbose else logging.INFO
    limits = Limits(timeout=timeout, fuel=fuel, max_memory=max_memory)
    with cli_logging(level, output):
        started = time.perf_counter()
        try:
            result = _call(source, module, output, name, values, debug=debug, limits=limits,
                           log_host_calls=log_host_calls, trace_file=trace_file,
                           options=prepared)
        except Exception as exc:
            output.end_line_on_terminal()
            if as_json:
                click.echo(dump_json(_document(source, name, values, output, started, grants,
                                               trace_file, error=exc)))
            raise
    program = "wasi" in prepared
    if as_json:
        click.echo(dump_json(_document(source, name, values, output, started, grants,
                                       trace_file, result=result)))
        return int(result) if program else None
    if program:  # a WASI command exits with its status; it printed what it had to say
        output.end_line_on_terminal()
        return int(result)
    if result is not None:  # the result on a line of its own; the Spirit's text stays as is
        output.echo(format_value(result))
    return None


def _prepare(
    spirit: str, function: str | None, args: tuple[str, ...], function_option: str | None,
    args_json: str | None, sha256: str | None, max_download: int, grants: Grants,
) -> tuple[SpiritSource, wasmtime.Module, str, list[Any], dict[str, Any]]:
    """Everything checked before the Spirit loads: the source, the function, its arguments and
    the grants (a usage error for any of them runs nothing)."""
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
    source = open_source(spirit, sha256=sha256, max_bytes=max_download)
    _wasm, module = read_module(source)
    functions = _exported_functions(module)
    function, program_args = _wasi_program(module, functions, function, raw_args)
    name = _choose(source.label, functions, function)
    params, _results = functions[name]
    values = convert_args(name, params, raw_args) if program_args is None else program_args
    options: dict[str, Any] = {}
    if program_args is not None:
        options["wasi"] = WasiOptions(args=program_args)
    permissions = grants.permissions()
    if permissions is not None:
        options["permissions"] = permissions
    registry = grants.registry()
    if registry is not None:
        options["loas"] = registry
    return source, module, name, values, options


def _wasi_program(
    module: wasmtime.Module, functions: dict[str, Signature], function: str | None,
    raw_args: list[Any],
) -> tuple[str | None, list[str] | None]:
    """``("_start", its arguments)`` when the call runs a WASI command as a program (a
    FUNCTION that is not an export is then its first argument); else ``(function, None)``."""
    if "_start" not in functions or not imports_wasi(module):
        return function, None
    if function is not None and function != "_start":
        if function in functions:
            return function, None
        raw_args = [function, *raw_args]
    elif function is None and "main" in functions:
        return function, None
    return "_start", [str(a) for a in raw_args]


@contextmanager
def _recording(trace_file: Path | None, log_host_calls: bool) -> Iterator[TraceRecorder | None]:
    """A recorder writing ``trace_file`` when the block ends (failed or not), or None."""
    if trace_file is None:
        yield None
        return
    recorder = TraceRecorder(trace_file)
    recorder.capture_host_calls(propagate=log_host_calls)
    try:
        yield recorder
    finally:
        try:
            recorder.close()
        except OSError as exc:
            raise UsageFailure(f"cannot write {trace_file}: {exc.strerror or exc}") from None


def _call(
    source: SpiritSource, module: wasmtime.Module, output: Output, function: str,
    values: Sequence[Any], *, debug: bool, limits: Limits, log_host_calls: bool,
    trace_file: Path | None, options: dict[str, Any],
) -> Any:
    with _recording(trace_file, log_host_calls) as recorder:
        if recorder is not None:  # the Spirit's messages go through a recording broker
            options = {**options, "broker": TracingBroker(MessageBus(), recorder)}
            recorder.lane(source.name)  # host calls are recorded only for known lanes
        try:
            spirit = load_spirit(
                module, name=source.name, logger=CliLogger(source.name, output), debug=debug,
                limits=limits, trace=log_host_calls or recorder is not None, **options,
            )
        except LoadError as exc:
            raise relabel(exc, source.label) from exc.__cause__
        try:
            span = nullcontext() if recorder is None else recorder.call(spirit.name, function)
            with stop_on_interrupt(spirit.interrupt), span:
                if "wasi" in options:  # a WASI command: its exit status is the result
                    result = run_wasi_command(spirit, check=False)
                else:
                    result = spirit.call(function, *values)
                # Effects run in the background, and closing the Spirit drops queued ones: let
                # those the call started finish (each is bounded by its own timeout).
                if isinstance(spirit.effect_handler, StandardEffectHandler):
                    spirit.effect_handler.wait_idle()
            return result
        finally:
            spirit.close()
            if "broker" in options:  # given to the Spirit, so not closed by it
                options["broker"].close()


def _document(
    source: SpiritSource, function: str, values: Sequence[Any], output: Output, started: float,
    grants: Grants, trace_file: Path | None, *, result: Any = None,
    error: BaseException | None = None,
) -> dict[str, Any]:
    """The ``vudo run --json`` document (keys documented in docs/guide/cli.md)."""
    return {
        "command": "run",
        "ok": error is None,
        "spirit": source.name,
        "source": source.label if source.path is None else str(source.path),
        "function": function,
        "args": jsonable(list(values)),
        "result": jsonable(result),
        "output": output.text,
        "logs": output.logs,
        "grants": grants.describe(),
        "trace": None if trace_file is None else str(trace_file),
        "seconds": round(time.perf_counter() - started, 6),
        "error": None if error is None else error_document(error),
    }
