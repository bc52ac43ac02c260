"""Old import paths that keep working, with a :class:`DeprecationWarning`."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["deprecated_names"]


def deprecated_names(old: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` serving ``names`` (``{name: "new.module"}``) from their new
    homes, each access warning that ``old.name`` moved."""

    def __getattr__(attr: str) -> Any:
        target = names.get(attr)
        if target is None:
            raise AttributeError(f"module {old!r} has no attribute {attr!r}")
        where = ("it is no longer public" if target.startswith("vudo._")
                 else f"import it from {target}")
        warnings.warn(
            f"{old}.{attr} is deprecated; {where}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(target), attr)

    return __getattr__
