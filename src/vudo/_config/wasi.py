"""``WasiOptions``: what a WASI Spirit sees besides files (arguments, environment)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

__all__ = ["DEFAULT_GUEST_DIR", "WasiOptions"]

#: Where ``Permissions.fs_root`` appears inside a WASI Spirit, unless ``WasiOptions.guest_dir``.
DEFAULT_GUEST_DIR = "/data"


@dataclass(frozen=True)
class WasiOptions:
    """What a WASI Spirit sees besides files: none of it unless given.

    ``args`` follow ``argv[0]`` (the Spirit's name); ``env`` are environment variables, added
    to (and overriding) ``Permissions.wasi_env``; ``guest_dir`` is the path at which
    ``Permissions.fs_root`` appears, and ``host_dir`` (inside ``fs_root``) narrows that
    preopened directory to a sub-directory. Directories in ``Permissions.wasi_dirs`` are
    preopened too.
    """

    args: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    guest_dir: str = DEFAULT_GUEST_DIR
    host_dir: str | Path | None = None

    def __post_init__(self) -> None:
        # A copy, read-only: the options are frozen even when a list or dict was passed.
        object.__setattr__(self, "args", tuple(str(a) for a in self.args))
        object.__setattr__(
            self, "env", MappingProxyType({str(k): str(v) for k, v in self.env.items()})
        )
