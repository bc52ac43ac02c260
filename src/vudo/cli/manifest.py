"""The session manifest of ``vudo seance``: a TOML file describing Spirits and steps.

:func:`load_manifest` reads and checks a manifest; every problem is a :class:`UsageFailure`
that says where it is (``pingpong.toml: steps[2]: ...``). The format is documented in the help
of ``vudo seance`` and in ``examples/README.md``.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._config import Limits
from ._args import parse_size
from ._errors import UsageFailure
from ._grants import Grants, parse_dir
from ._output import format_value
from ._sources import resolve_source

__all__ = ["Call", "Manifest", "Ref", "SpiritSpec", "Step", "load_manifest"]

_LIMIT_KEYS = ("timeout", "fuel", "max_memory", "max_inbox")
_PERMISSION_KEYS = ("fs", "fs_write", "hosts", "db", "db_write", "dirs")
#: ``"$name"`` (or ``"$name[i]"`` for one of several results) names an earlier step's result.
_REF = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)(?:\[(\d+)\])?$")


# ------------------------------------------------------------------------------------------
# The manifest
# ------------------------------------------------------------------------------------------
@dataclass(slots=True)
class SpiritSpec:
    """One ``[[spirits]]`` entry."""

    name: str
    source: Path
    debug: bool = False
    limits: Limits | None = None
    #: The Spirit's own ``permissions``, ``env`` and ``loas`` (layered over the session's).
    grants: Grants = field(default_factory=Grants)


@dataclass(frozen=True, slots=True)
class Ref:
    """A reference to the result of an earlier step (``"$p"``, ``"$pair[1]"``)."""

    name: str
    index: int | None = None

    def __str__(self) -> str:
        return f"${self.name}" + ("" if self.index is None else f"[{self.index}]")


@dataclass(slots=True)
class Call:
    """A call of ``spirit.function(*args)``."""

    spirit: str
    function: str
    args: list[Any] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.spirit}.{self.function}({', '.join(map(format_value, self.args))})"


@dataclass(slots=True)
class Step:
    """One ``[[steps]]`` entry; ``kind`` is invoke, send, publish or rounds."""

    number: int
    kind: str
    call: Call | None = None
    repeat: int = 1
    expect: Any = None
    has_expect: bool = False
    expect_error: bool | str = False
    sender: str = "host"
    to: str = ""
    channel: str | int = 0
    payload: bytes = b""
    rounds: list[Call] = field(default_factory=list)
    until: str | Call = "idle"
    max_rounds: int = 1000
    #: Name under which the result is kept for later steps (``as = "p"``).
    result_name: str | None = None

    @property
    def title(self) -> str:
        """A short description for progress and errors."""
        if self.kind == "invoke":
            return str(self.call)
        if self.kind == "send":
            return f"send {self.sender} -> {self.to}"
        if self.kind == "publish":
            return f"publish {self.channel}"
        return "rounds " + ", ".join(f"{c.spirit}.{c.function}" for c in self.rounds)


@dataclass(slots=True)
class Manifest:
    """A parsed, validated session manifest."""

    path: Path
    name: str
    spirits: list[SpiritSpec]
    steps: list[Step]
    channels: list[str] = field(default_factory=list)
    debug: bool = False
    limits: Limits | None = None
    #: The ``[session]``'s ``permissions``, ``env`` and ``loas`` (defaults for every Spirit).
    grants: Grants = field(default_factory=Grants)


class _Where:
    """Builds error messages that say where in the manifest the problem is."""

    def __init__(self, path: Path, where: str = "") -> None:
        self.path = path
        self.where = where

    def at(self, where: str) -> _Where:
        return _Where(self.path, where)

    def fail(self, message: str) -> UsageFailure:
        place = f"{self.path}: {self.where}: " if self.where else f"{self.path}: "
        return UsageFailure(place + message)

    def table(self, value: Any, what: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(f"{what} must be a table, not {_toml_type(value)}")
        return value

    def keys(self, table: dict[str, Any], allowed: tuple[str, ...]) -> None:
        unknown = [k for k in table if k not in allowed]
        if unknown:
            raise self.fail(
                f"unknown key {unknown[0]!r} (expected one of: {', '.join(allowed)})"
            )

    def string(self, table: dict[str, Any], key: str, default: str | None = None) -> str:
        value = table.get(key, default)
        if not isinstance(value, str) or not value:
            if value is None:
                raise self.fail(f"missing {key!r}")
            raise self.fail(f"{key!r} must be a non-empty string")
        return value

    def boolean(self, table: dict[str, Any], key: str) -> bool:
        value = table.get(key, False)
        if not isinstance(value, bool):
            raise self.fail(f"{key!r} must be true or false")
        return value

    def positive_int(self, table: dict[str, Any], key: str, default: int) -> int:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.fail(f"{key!r} must be a positive integer")
        return value


def _toml_type(value: Any) -> str:
    return {dict: "a table", list: "an array", str: "a string", bool: "a boolean",
            int: "an integer", float: "a float"}.get(type(value), type(value).__name__)


def _limits(w: _Where, value: Any) -> dict[str, Any]:
    """The options of a ``limits`` table, checked."""
    table = w.table(value, "limits")
    w.keys(table, _LIMIT_KEYS)
    options: dict[str, Any] = {}
    for key, raw in table.items():
        if key == "max_memory":
            try:
                options[key] = parse_size(raw)
            except ValueError as exc:
                raise w.fail(f"limits.max_memory: {exc}") from None
            continue
        number_ok = isinstance(raw, int | float) and not isinstance(raw, bool)
        if key != "timeout" and not isinstance(raw, int):
            number_ok = False
        if not number_ok or raw <= 0:
            kind = "a positive number of seconds" if key == "timeout" else "a positive integer"
            raise w.fail(f"limits.{key} must be {kind}, not {raw!r}")
        options[key] = raw
    return options


def _grants(w: _Where, table: dict[str, Any], base: Path) -> Grants:
    """The ``permissions``, ``env`` and ``loas`` keys of a ``[session]`` or Spirit table.

    Paths are relative to the manifest's folder; so is the folder Loa modules import from.
    """
    raw = w.table(table.get("permissions", {}), "'permissions'")
    w.keys(raw, _PERMISSION_KEYS)

    def path(key: str, *, folder: bool) -> Path | None:
        value = raw.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise w.fail(f"permissions.{key} must be a path")
        p = Path(value) if Path(value).is_absolute() else base / value
        if folder and not p.is_dir():
            raise w.fail(f"permissions.{key}: {p} is not a directory")
        return p

    def flag(key: str) -> bool | None:
        value = raw.get(key)
        if value is not None and not isinstance(value, bool):
            raise w.fail(f"permissions.{key} must be true or false")
        return value

    def strings(value: Any, what: str) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise w.fail(f"{what} must be an array of strings")
        return tuple(value)

    env = w.table(table.get("env", {}), "'env'")
    if not all(isinstance(v, str) for v in env.values()):
        raise w.fail("'env' values must be strings")
    try:
        dirs = None if "dirs" not in raw else tuple(
            parse_dir(d, base) for d in strings(raw["dirs"], "permissions.dirs")
        )
    except UsageFailure as exc:
        raise w.fail(exc.message.replace("--dir", "permissions.dirs:", 1)) from None
    return Grants(
        fs_root=path("fs", folder=True), fs_write=flag("fs_write"),
        hosts=None if "hosts" not in raw else strings(raw["hosts"], "permissions.hosts"),
        database=path("db", folder=False), db_write=flag("db_write"), env=dict(env), dirs=dirs,
        loas=tuple((ref, base) for ref in strings(table.get("loas", []), "'loas'")),
    )


def _value(w: _Where, value: Any, names: set[str], what: str) -> Any:
    """A literal, or a :class:`Ref` to the result of an earlier step named in ``names``."""
    if isinstance(value, list):
        return [_value(w, v, names, what) for v in value]
    if isinstance(value, str) and value.startswith("$"):
        m = _REF.match(value)
        if m is None:
            raise w.fail(f"{what}: {value!r} is not a reference (write \"$name\" or "
                         "\"$name[0]\")")
        if m.group(1) not in names:
            known = ", ".join(sorted(names)) or "none yet"
            raise w.fail(f"{what}: {value!r} names no earlier step's result "
                         f"(give that step as = \"{m.group(1)}\"; named so far: {known})")
        return Ref(m.group(1), None if m.group(2) is None else int(m.group(2)))
    return value


def _target(w: _Where, text: Any, spirit: Any = None) -> tuple[str, str]:
    if not isinstance(text, str) or not text:
        raise w.fail("a function must be given as a non-empty string")
    if spirit is not None:
        if not isinstance(spirit, str) or not spirit:
            raise w.fail("'spirit' must be a non-empty string")
        return spirit, text
    name, dot, function = text.partition(".")
    if not dot or not name or not function:
        raise w.fail(f"{text!r} must be written SPIRIT.FUNCTION (e.g. \"ping.start\")")
    return name, function


def _payload(w: _Where, value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, list) and all(
        isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 255 for b in value
    ):
        return bytes(value)
    raise w.fail("'payload' must be a string or an array of byte values (0..255)")


_STEP_KINDS = ("invoke", "send", "publish", "rounds")


def _step(w: _Where, number: int, raw: Any, names: set[str]) -> Step:
    table = w.table(raw, "a step")
    kinds = [k for k in _STEP_KINDS if k in table]
    if len(kinds) != 1:
        raise w.fail(f"a step needs exactly one of {', '.join(_STEP_KINDS)}"
                     + (f" (found {', '.join(kinds)})" if kinds else ""))
    kind = kinds[0]
    step = Step(number, kind)
    if kind == "invoke":
        w.keys(table, ("invoke", "spirit", "args", "expect", "expect_error", "repeat", "as"))
        spirit, function = _target(w, table["invoke"], table.get("spirit"))
        args = table.get("args", [])
        if not isinstance(args, list):
            raise w.fail("'args' must be an array")
        step.call = Call(spirit, function, _value(w, args, names, "'args'"))
        step.repeat = w.positive_int(table, "repeat", 1)
        if "expect" in table:
            step.has_expect = True
            step.expect = _value(w, table["expect"], names, "'expect'")
        if "as" in table:
            step.result_name = w.string(table, "as")
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", step.result_name):
                raise w.fail(f"'as' must be a name (letters, digits, _), not {step.result_name!r}")
        error = table.get("expect_error", False)
        if not isinstance(error, bool | str):
            raise w.fail("'expect_error' must be true or a piece of the expected message")
        step.expect_error = error
        if step.has_expect and error:
            raise w.fail("give 'expect' or 'expect_error', not both")
    elif kind == "send":
        w.keys(table, ("send",))
        message = w.table(table["send"], "'send'")
        w.keys(message, ("to", "from", "payload", "channel"))
        step.to = w.string(message, "to")
        step.sender = w.string(message, "from", "host")
        step.payload = _payload(w, message.get("payload", ""))
        channel = message.get("channel", 0)
        if isinstance(channel, bool) or not isinstance(channel, int) or channel < 0:
            raise w.fail("'channel' must be a non-negative integer")
        step.channel = channel
    elif kind == "publish":
        w.keys(table, ("publish",))
        message = w.table(table["publish"], "'publish'")
        w.keys(message, ("channel", "payload"))
        step.channel = w.string(message, "channel")
        step.payload = _payload(w, message.get("payload", ""))
    else:
        w.keys(table, ("rounds", "until", "max_rounds"))
        calls = table["rounds"]
        if not isinstance(calls, list) or not calls:
            raise w.fail("'rounds' must be a non-empty array of \"SPIRIT.FUNCTION\"")
        step.rounds = [Call(*_target(w, c)) for c in calls]
        until = table.get("until", "idle")
        step.until = until if until == "idle" else Call(*_target(w, until))
        step.max_rounds = w.positive_int(table, "max_rounds", 1000)
    return step


def load_manifest(path: Path) -> Manifest:
    """Read and check a manifest (sources must exist; Spirits are not loaded yet)."""
    w = _Where(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise w.fail(f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise w.fail("not a TOML file (not UTF-8 text)") from None
    except tomllib.TOMLDecodeError as exc:
        raise w.fail(f"invalid TOML: {exc}") from None
    w.keys(data, ("session", "spirits", "steps"))
    session = w.at("[session]").table(data.get("session", {}), "[session]")
    ws = w.at("[session]")
    ws.keys(session, ("name", "channels", "debug", "limits", "permissions", "env", "loas"))
    name = ws.string(session, "name", path.stem)
    channels = session.get("channels", [])
    if not isinstance(channels, list) or not all(isinstance(c, str) and c for c in channels):
        raise ws.fail("'channels' must be an array of channel names")
    manifest = Manifest(path, name, [], [], list(channels), ws.boolean(session, "debug"))
    manifest.grants = _grants(ws, session, path.parent)
    session_limits = _limits(ws, session["limits"]) if "limits" in session else {}
    if session_limits:
        manifest.limits = Limits(**session_limits)

    spirits = data.get("spirits")
    if not isinstance(spirits, list) or not spirits:
        raise w.fail("the manifest needs at least one [[spirits]] entry")
    for i, raw in enumerate(spirits, 1):
        wi = w.at(f"spirits[{i}]")
        table = wi.table(raw, "a [[spirits]] entry")
        wi.keys(table, ("name", "source", "debug", "limits", "permissions", "env", "loas"))
        source = wi.string(table, "source")
        try:
            file = resolve_source(source) if source.startswith("example:") else \
                resolve_source(str(path.parent / source))
        except UsageFailure as exc:
            raise wi.fail(exc.message) from None
        spirit_name = wi.string(table, "name", file.stem)
        if any(s.name == spirit_name for s in manifest.spirits):
            raise wi.fail(f"two Spirits are named {spirit_name!r}")
        spec = SpiritSpec(spirit_name, file, wi.boolean(table, "debug"))
        spec.grants = _grants(wi, table, path.parent)
        if "limits" in table:  # the Spirit's own limits override the session's, key by key
            spec.limits = Limits(**{**session_limits, **_limits(wi, table["limits"])})
        manifest.spirits.append(spec)

    steps = data.get("steps", [])
    if not isinstance(steps, list):
        raise w.fail("'steps' must be an array of tables ([[steps]])")
    known = {s.name for s in manifest.spirits}
    names: set[str] = set()
    for i, raw in enumerate(steps, 1):
        wi = w.at(f"steps[{i}]")
        step = _step(wi, i, raw, names)
        if step.result_name is not None:
            names.add(step.result_name)
        calls = [step.call] if step.call else []
        calls += step.rounds + ([step.until] if isinstance(step.until, Call) else [])
        for call in calls:
            if call.spirit not in known:
                raise wi.fail(f"no Spirit named {call.spirit!r} (Spirits: {', '.join(known)})")
        if step.kind == "publish" and isinstance(step.channel, str) \
                and step.channel not in manifest.channels:
            manifest.channels.append(step.channel)
        manifest.steps.append(step)
    return manifest
