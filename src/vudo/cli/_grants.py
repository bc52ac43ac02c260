"""What a Spirit run from the command line may do: files, HTTP hosts, a database, WASI
environment and directories, and extra Python Loas.

Grants come from options (``--allow-fs DIR``, ``--allow-host HOST``, ``--db FILE``, ``--env K=V``,
``--dir HOST[::GUEST]``, ``--loa module:attr``) and from manifests (``permissions``, ``env`` and
``loas`` of ``[session]`` and of each ``[[spirits]]`` entry). :meth:`Grants.over` layers one set
over another key by key: a key given replaces the one below, ``env`` merges variable by
variable, ``loas`` add up. :meth:`Grants.permissions` builds the :class:`vudo.Permissions`.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import click

from .._config import Permissions
from .._host import Loa, LoaRegistry
from ._errors import UsageFailure
from ._output import json_errors

__all__ = ["Grants", "grant_options", "load_loa", "parse_dir", "parse_env"]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Grants:
    """Resources granted to a Spirit; ``None`` (or empty) means "not given here"."""

    fs_root: Path | None = None
    fs_write: bool | None = None
    hosts: tuple[str, ...] | None = None
    database: Path | None = None
    db_write: bool | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    dirs: tuple[tuple[str, str], ...] | None = None
    #: ``module:attr`` references, and the folder to import them from.
    loas: tuple[tuple[str, Path], ...] = ()

    def over(self, base: Grants) -> Grants:
        """These grants layered over ``base``, key by key."""
        def pick(mine: Any, theirs: Any) -> Any:
            return theirs if mine is None else mine

        return Grants(
            fs_root=pick(self.fs_root, base.fs_root),
            fs_write=pick(self.fs_write, base.fs_write),
            hosts=pick(self.hosts, base.hosts),
            database=pick(self.database, base.database),
            db_write=pick(self.db_write, base.db_write),
            env={**base.env, **self.env},
            dirs=pick(self.dirs, base.dirs),
            loas=base.loas + tuple(ref for ref in self.loas if ref not in base.loas),
        )

    @property
    def empty(self) -> bool:
        """Whether nothing at all is granted."""
        return self == Grants()

    def permissions(self) -> Permissions | None:
        """The :class:`vudo.Permissions` these grants make, or ``None`` when nothing is
        granted (the Spirit keeps the default: no effects but NOOP and TERMINATE)."""
        if replace(self, loas=()) == Grants():
            return None
        if self.fs_write and self.fs_root is None:
            raise UsageFailure("--allow-fs-write needs --allow-fs DIR (the folder to write in)")
        if self.db_write and self.database is None:
            raise UsageFailure("--db-write needs --db FILE (the database to write to)")
        base = Permissions.allow(
            fs_root=self.fs_root, fs_write=bool(self.fs_write), http_hosts=self.hosts or (),
            database=self.database, db_write=bool(self.db_write),
        )
        return replace(base, wasi_env=tuple(self.env.items()), wasi_dirs=self.dirs or ())

    def registry(self) -> LoaRegistry | None:
        """A registry with the core Loa and every ``--loa``, or ``None`` when there are none."""
        if not self.loas:
            return None
        registry = LoaRegistry()
        for ref, folder in self.loas:
            loa = load_loa(ref, folder)
            try:
                registry.register(loa)
            except ValueError as exc:
                raise UsageFailure(f"--loa {ref}: {exc}") from None
        return registry

    def describe(self) -> dict[str, Any]:
        """The grants as JSON-ready values (for ``--json`` documents)."""
        return {
            "fs_root": None if self.fs_root is None else str(self.fs_root),
            "fs_write": bool(self.fs_write),
            "hosts": list(self.hosts or ()),
            "database": None if self.database is None else str(self.database),
            "db_write": bool(self.db_write),
            "env": dict(self.env),
            "dirs": [list(d) for d in self.dirs or ()],
            "loas": [ref for ref, _ in self.loas],
        }


def parse_env(items: Iterable[str], what: str = "--env") -> dict[str, str]:
    """``{"K": "V"}`` from ``K=V`` strings."""
    env: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise UsageFailure(f"{what} {item!r} must be written NAME=VALUE")
        env[key] = value
    return env


def parse_dir(text: str, base: Path | None = None) -> tuple[str, str]:
    """``(host dir, guest path)`` from ``HOST[::GUEST]`` (the guest path defaults to HOST)."""
    host, sep, guest = text.partition("::")
    if not host or (sep and not guest):
        raise UsageFailure(f"--dir {text!r} must be written HOST_DIR or HOST_DIR::GUEST_PATH")
    path = Path(host) if base is None or Path(host).is_absolute() else base / host
    if not path.is_dir():
        raise UsageFailure(f"--dir {text!r}: {path} is not a directory")
    return str(path), guest or host


def load_loa(ref: str, folder: Path | None = None) -> Loa:
    """Import ``module:attr`` (from ``folder`` first, else the current directory) and return
    the :class:`vudo.Loa` it names, calling it first when it is a factory taking nothing."""
    module_name, colon, attr = ref.partition(":")
    if not colon or not module_name or not attr:
        raise UsageFailure(f"--loa {ref!r} must be written MODULE:ATTRIBUTE (e.g. myloa:LOA)")
    where = str(folder if folder is not None else Path.cwd())
    sys.path.insert(0, where)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageFailure(f"--loa {ref}: cannot import {module_name!r}: {exc}") from None
    except Exception as exc:
        raise UsageFailure(
            f"--loa {ref}: importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        if sys.path and sys.path[0] == where:
            del sys.path[0]
    value: Any = module
    for part in attr.split("."):
        if not hasattr(value, part):
            raise UsageFailure(f"--loa {ref}: {module_name!r} has no attribute {attr!r}")
        value = getattr(value, part)
    if not isinstance(value, Loa) and callable(value):
        try:
            value = value()
        except Exception as exc:
            raise UsageFailure(f"--loa {ref}: calling it failed: {type(exc).__name__}: {exc}") \
                from exc
    if not isinstance(value, Loa):
        raise UsageFailure(
            f"--loa {ref}: is a {type(value).__name__}, not a vudo.Loa (build one with "
            "vudo.create_loa)"
        )
    return value


def _grants_from_options(
    allow_fs: Path | None, allow_fs_write: bool, allow_host: Sequence[str], db: Path | None,
    db_write: bool, env: Sequence[str], dirs: Sequence[str], loas: Sequence[str],
) -> Grants:
    cwd = Path.cwd()
    return Grants(
        fs_root=allow_fs,
        fs_write=True if allow_fs_write else None,
        hosts=tuple(allow_host) if allow_host else None,
        database=db,
        db_write=True if db_write else None,
        env=parse_env(env),
        dirs=tuple(parse_dir(d) for d in dirs) if dirs else None,
        loas=tuple((ref, cwd) for ref in loas),
    )


def grant_options(f: F) -> F:
    """Add the grant options to a command; it receives ``grants: Grants``."""
    options = [
        click.option("--allow-fs", type=click.Path(exists=True, file_okay=False, path_type=Path),
                     metavar="DIR", help="Let the Spirit read files under DIR (FS_READ)."),
        click.option("--allow-fs-write", is_flag=True,
                     help="Let it also write files under the --allow-fs DIR (FS_WRITE)."),
        click.option("--allow-host", multiple=True, metavar="HOST[:PORT]",
                     help="Let the Spirit make HTTP requests to HOST (repeatable)."),
        click.option("--db", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
                     help="Let the Spirit query this SQLite database (read-only)."),
        click.option("--db-write", is_flag=True, help="Let DB queries change the --db database."),
        click.option("--env", "env_items", multiple=True, metavar="NAME=VALUE",
                     help="An environment variable for a WASI Spirit (repeatable)."),
        click.option("--dir", "dir_items", multiple=True, metavar="HOST[::GUEST]",
                     help="Pre-open a directory for a WASI Spirit (repeatable)."),
        click.option("--loa", "loa_refs", multiple=True, metavar="MODULE:ATTR",
                     help="Add a Python Loa (a vudo.Loa, or a function returning one)."),
    ]

    command = f.__name__.removesuffix("_command")

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with json_errors(bool(kwargs.get("as_json")), command):
            kwargs["grants"] = _grants_from_options(
                kwargs.pop("allow_fs"), kwargs.pop("allow_fs_write"), kwargs.pop("allow_host"),
                kwargs.pop("db"), kwargs.pop("db_write"), kwargs.pop("env_items"),
                kwargs.pop("dir_items"), kwargs.pop("loa_refs"),
            )
        return f(*args, **kwargs)

    wrapped: Any = functools.update_wrapper(wrapper, f)
    for option in reversed(options):
        wrapped = option(wrapped)
    return wrapped  # type: ignore[no-any-return]
