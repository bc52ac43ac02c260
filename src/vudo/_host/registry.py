"""The Loa registry a Spirit or session links against (the core Loa always included)."""

from __future__ import annotations

import threading
import typing
from collections.abc import Iterable

from ..errors import ConfigError, NameTaken
from .loa import Loa
from .loas import CORE_LOA

__all__ = ["LoaRegistry"]


class LoaRegistry:
    """The Loas a Spirit or session links against. The core Loa is always present."""

    def __init__(self, loas: Iterable[Loa] = ()) -> None:
        self._core = CORE_LOA
        self._loas: dict[str, Loa] = {CORE_LOA.name: CORE_LOA}
        self._lock = threading.Lock()
        #: Bumped by every change, so link plans made against an older set are not reused.
        self.version = 0
        for loa in loas:
            self.register(loa)

    def register(self, loa: Loa) -> None:
        """Add ``loa``; a name already registered is refused with :class:`~vudo.NameTaken`."""
        with self._lock:
            if loa.name in self._loas:
                raise NameTaken(f"a Loa named {loa.name!r} is already registered")
            self._loas[loa.name] = loa
            self.version += 1

    def unregister(self, name: str) -> None:
        """Remove a Loa; the core Loa cannot be removed."""
        if name == self._core.name:
            raise ConfigError(f"the core Loa {name!r} cannot be unregistered")
        with self._lock:
            if self._loas.pop(name, None) is None:
                raise KeyError(f"no Loa named {name!r}")
            self.version += 1

    def get(self, name: str) -> Loa | None:
        """The Loa called ``name``, or ``None``."""
        return self._loas.get(name)

    def has(self, name: str) -> bool:
        """Whether a Loa called ``name`` is registered."""
        return name in self._loas

    def all(self) -> list[Loa]:
        """Every registered Loa, the core first, then in registration order."""
        with self._lock:
            return list(self._loas.values())

    def copy(self) -> LoaRegistry:
        """An independent registry with the same Loas."""
        reg = LoaRegistry()
        for loa in self.all()[1:]:
            reg.register(loa)
        return reg

    def __iter__(self) -> typing.Iterator[Loa]:
        return iter(self.all())

    def __len__(self) -> int:
        return len(self._loas)
