"""``SpiritConfig``: everything about how one Spirit is loaded, as one frozen object."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from ..errors import ConfigError
from .limits import Limits, MemoryOptions
from .permissions import Permissions
from .wasi import WasiOptions

__all__ = ["AllocatorName", "SpiritConfig"]

#: The host-heap allocators of the grown-pages strategy.
AllocatorName = Literal["freelist", "bump"]
_ALLOCATORS = ("freelist", "bump")


@dataclass(frozen=True, slots=True)
class SpiritConfig:
    """How a Spirit is loaded and what it may do (see :func:`vudo.load_spirit`).

    - ``limits``: resource limits (:class:`Limits`).
    - ``permissions``: effect capabilities (``None``: the effect handler's defaults).
    - ``allocator``: the grown-pages host heap, ``"freelist"`` or ``"bump"``.
    - ``memory``: initial/maximum pages of an imported memory.
    - ``debug``: keep call stacks and let ``vudo_breakpoint`` reach the debug handler.
    - ``trace``: log every host call on ``vudo.trace``.
    - ``cache``: use the compile cache.
    - ``wasi``: arguments and environment of a WASI Spirit (:class:`WasiOptions`; files
      and more variables come from ``permissions``).

    :meth:`merged` combines a session's defaults with one Spirit's overrides field by field,
    limits included.
    """

    limits: Limits = field(default_factory=Limits)
    permissions: Permissions | None = None
    allocator: AllocatorName = "freelist"
    memory: MemoryOptions | Mapping[str, int] | None = None
    debug: bool = False
    trace: bool = False
    cache: bool = True
    wasi: WasiOptions | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.limits, Limits):
            raise ConfigError(f"SpiritConfig.limits must be a Limits, not {self.limits!r}")
        if self.allocator not in _ALLOCATORS:
            raise ConfigError(
                f"unknown allocator {self.allocator!r}; expected 'freelist' or 'bump'"
            )
        if isinstance(self.memory, Mapping):
            try:
                object.__setattr__(self, "memory", MemoryOptions(**self.memory))
            except TypeError as exc:
                raise ConfigError(f"SpiritConfig.memory: {exc}") from None
        if self.memory is not None and not isinstance(self.memory, MemoryOptions):
            raise ConfigError(f"SpiritConfig.memory must be a MemoryOptions, not {self.memory!r}")
        if self.wasi is not None and not isinstance(self.wasi, WasiOptions):
            raise ConfigError(f"SpiritConfig.wasi must be a WasiOptions, not {self.wasi!r}")

    @property
    def memory_options(self) -> MemoryOptions | None:
        """``memory`` as a :class:`MemoryOptions` (a mapping given is converted at load)."""
        return self.memory if isinstance(self.memory, MemoryOptions) else None

    def merged(self, override: SpiritConfig | None) -> SpiritConfig:
        """This config with every field ``override`` sets to a non-default value replaced.

        Limits merge the same way, field by field: a Spirit's ``Limits(timeout=1)`` keeps the
        session's ``fuel``.
        """
        if override is None:
            return self
        changes: dict[str, object] = {}
        for f in dataclasses.fields(self):
            value = getattr(override, f.name)
            if f.name == "limits":
                changes["limits"] = self.limits.merged(value)
            elif value != _DEFAULTS[f.name]:
                changes[f.name] = value
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


_DEFAULTS: dict[str, object] = {
    "limits": Limits(),
    "permissions": None,
    "allocator": "freelist",
    "memory": None,
    "debug": False,
    "trace": False,
    "cache": True,
    "wasi": None,
}
