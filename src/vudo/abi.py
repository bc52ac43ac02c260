"""The host ABI: the one table every other part of vudo is generated from.

``HOST_FUNCTIONS`` lists the 22 host functions of ``host-abi.md`` with their Loa (group), wasm
signature and meaning. Linking, ``vudo inspect``, the generated ``docs/host-functions.md`` and
the tests read this table; nothing else restates a signature.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Literal

__all__ = [
    "HOST_FUNCTIONS",
    "HOST_FUNCTIONS_BY_NAME",
    "NAMESPACES",
    "EffectId",
    "HostFunctionSpec",
    "LogLevel",
    "ResultCode",
    "ValType",
    "render_host_functions_markdown",
]

ValType = Literal["i32", "i64", "f32", "f64"]

#: Import modules the host functions are linked under: the canonical one first.
NAMESPACES: tuple[str, ...] = ("vudo", "loa", "env")


class ResultCode(IntEnum):
    """``i32`` result codes returned by host functions to the Spirit."""

    OK = 0
    ERROR = -1
    INVALID_ARG = -2
    OUT_OF_MEMORY = -3
    NOT_FOUND = -4
    NOT_PERMITTED = -5
    TIMEOUT = -6
    BUFFER_TOO_SMALL = -7


class LogLevel(IntEnum):
    """Log levels of ``vudo_log``; any other value is treated as ERROR."""

    DEBUG = 0
    INFO = 1
    WARN = 2
    ERROR = 3

    @classmethod
    def coerce(cls, value: int) -> LogLevel:
        """Map a level from a Spirit to a ``LogLevel``; unknown values become ERROR."""
        return _LEVELS.get(value, cls.ERROR)


_LEVELS = {level.value: level for level in LogLevel}


class EffectId(IntEnum):
    """Standard effect ids of ``vudo_emit_effect``; ids above 255 are custom."""

    NOOP = 0
    TERMINATE = 1
    SPAWN = 2
    FS_READ = 10
    FS_WRITE = 11
    HTTP_GET = 20
    HTTP_POST = 21
    DB_QUERY = 30


@dataclass(frozen=True, slots=True)
class HostFunctionSpec:
    """One host function of the ABI: its import name, Loa, wasm signature and meaning."""

    name: str
    loa: str
    params: tuple[tuple[str, ValType], ...]
    results: tuple[ValType, ...]
    doc: str
    codes: tuple[ResultCode, ...] = ()

    @property
    def param_types(self) -> tuple[ValType, ...]:
        """The wasm types of the parameters, in order."""
        return tuple(t for _, t in self.params)

    @property
    def signature(self) -> str:
        """The signature as written in host-abi.md, e.g. ``(ptr i32, len i32) -> ()``."""
        params = ", ".join(f"{n} {t}" for n, t in self.params)
        results = ", ".join(self.results) if self.results else "()"
        return f"({params}) -> {results}"


_PL: tuple[tuple[str, ValType], ...] = (("ptr", "i32"), ("len", "i32"))
_OK_ERR = (ResultCode.OK, ResultCode.ERROR)

#: The 22 host functions of host-abi.md, in the order of its table: the single source of truth.
HOST_FUNCTIONS: tuple[HostFunctionSpec, ...] = (
    # io
    HostFunctionSpec("vudo_print", "io", _PL, (), "write text, no newline"),
    HostFunctionSpec("vudo_println", "io", _PL, (), "write text and a newline"),
    HostFunctionSpec(
        "vudo_log", "io", (("level", "i32"), *_PL), (), "structured log at a level"
    ),
    HostFunctionSpec("vudo_error", "io", _PL, (), "log at ERROR; execution continues"),
    # memory
    HostFunctionSpec(
        "vudo_alloc", "memory", (("size", "i32"),), ("i32",),
        "zeroed, 8-byte aligned block; 0 on failure",
    ),
    HostFunctionSpec(
        "vudo_free", "memory", (("ptr", "i32"), ("size", "i32")), (),
        "release a block from vudo_alloc/vudo_realloc",
    ),
    HostFunctionSpec(
        "vudo_realloc", "memory", (("ptr", "i32"), ("old", "i32"), ("new", "i32")), ("i32",),
        "resize; keeps min(old,new) bytes, new bytes zeroed; 0 on failure and the old block"
        " stays valid",
    ),
    # time
    HostFunctionSpec(
        "vudo_now", "time", (), ("i64",), "wall clock, milliseconds since the Unix epoch"
    ),
    HostFunctionSpec(
        "vudo_sleep", "time", (("ms", "i32"),), (), "pause this Spirit only; negative means 0"
    ),
    HostFunctionSpec(
        "vudo_monotonic_now", "time", (), ("i64",), "monotonic nanoseconds, never decreases"
    ),
    # messaging
    HostFunctionSpec(
        "vudo_send", "messaging",
        (("to_ptr", "i32"), ("to_len", "i32"), ("payload_ptr", "i32"), ("payload_len", "i32")),
        ("i32",),
        "copy payload into the named Spirit's inbox; Ok, NotFound, or Error when the inbox is"
        " full",
        (ResultCode.OK, ResultCode.NOT_FOUND, ResultCode.ERROR),
    ),
    HostFunctionSpec(
        "vudo_recv", "messaging", (), ("i32",),
        "pointer to the oldest message, or 0 when the inbox is empty",
    ),
    HostFunctionSpec("vudo_pending", "messaging", (), ("i32",), "number of messages waiting"),
    HostFunctionSpec(
        "vudo_broadcast", "messaging", _PL, ("i32",),
        "send to every Spirit in the session, the sender included", _OK_ERR,
    ),
    HostFunctionSpec(
        "vudo_free_message", "messaging", (("ptr", "i32"),), (),
        "release a message returned by vudo_recv",
    ),
    # random
    HostFunctionSpec("vudo_random", "random", (), ("f64",), "uniform in [0, 1)"),
    HostFunctionSpec(
        "vudo_random_bytes", "random", _PL, (), "fill with cryptographically secure bytes"
    ),
    # effects
    HostFunctionSpec(
        "vudo_emit_effect", "effects", (("id", "i32"), *_PL), ("i32",),
        "ask the host to perform a side effect",
        (ResultCode.OK, ResultCode.NOT_PERMITTED, ResultCode.NOT_FOUND, ResultCode.ERROR),
    ),
    HostFunctionSpec(
        "vudo_subscribe", "effects", (("chan_ptr", "i32"), ("chan_len", "i32")), ("i32",),
        "receive a host channel's notifications in the inbox",
        (ResultCode.OK, ResultCode.NOT_FOUND, ResultCode.NOT_PERMITTED),
    ),
    # debug
    HostFunctionSpec(
        "vudo_breakpoint", "debug", (), (), "signal an attached debugger; otherwise no effect"
    ),
    HostFunctionSpec(
        "vudo_assert", "debug", (("cond", "i32"), *_PL), (),
        "cond 0: the current call fails with the message",
    ),
    HostFunctionSpec(
        "vudo_panic", "debug", _PL, (), "the Spirit terminates with the message; never returns"
    ),
)

#: :data:`HOST_FUNCTIONS` by import name.
HOST_FUNCTIONS_BY_NAME: dict[str, HostFunctionSpec] = {f.name: f for f in HOST_FUNCTIONS}

assert len(HOST_FUNCTIONS) == 22, "host-abi.md defines exactly 22 host functions"


def render_host_functions_markdown() -> str:
    """Render ``docs/host-functions.md`` from the table (a test keeps the file in sync)."""
    lines = [
        "# Host functions",
        "",
        "Generated from `vudo.abi.HOST_FUNCTIONS` (run `python -m vudo.abi > "
        "docs/host-functions.md`); a test fails when this file and the table disagree.",
        "",
        f"Linked under the import modules {', '.join(f'`{n}`' for n in NAMESPACES)}.",
        "",
        "| Loa | name | params -> results | result codes | meaning |",
        "|---|---|---|---|---|",
    ]
    for f in HOST_FUNCTIONS:
        codes = ", ".join(f"{c.name} ({c.value})" for c in f.codes)
        lines.append(f"| {f.loa} | `{f.name}` | `{f.signature}` | {codes} | {f.doc} |")
    lines += [
        "",
        "## Result codes",
        "",
        "| name | value |",
        "|---|---|",
        *(f"| {c.name} | {c.value} |" for c in ResultCode),
        "",
        "## Log levels",
        "",
        "| name | value |",
        "|---|---|",
        *(f"| {lv.name} | {lv.value} |" for lv in LogLevel),
        "",
        "Any other level is logged at ERROR.",
        "",
        "## Effect ids",
        "",
        "| name | value |",
        "|---|---|",
        *(f"| {e.name} | {e.value} |" for e in EffectId),
        "",
        "Ids above 255 are custom.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - documentation generator
    print(render_host_functions_markdown(), end="")
