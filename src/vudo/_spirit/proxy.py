"""Attribute access to a Spirit's exports: the typed proxy of :meth:`vudo.Spirit.as_`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ..errors import UnknownExportError


class _Exports(Protocol):
    """What a proxy needs of its Spirit."""

    @property
    def name(self) -> str: ...

    @property
    def functions(self) -> list[str]: ...

    def _exports_table(self) -> dict[str, Callable[..., Any]]: ...

__all__ = ["SpiritProxy", "protocol_methods"]


def protocol_methods(protocol: type) -> list[str]:
    names: list[str] = []
    for klass in protocol.__mro__:
        if klass in (object,) or klass.__module__ == "typing":
            continue
        for attr, value in vars(klass).items():
            if not attr.startswith("_") and callable(value) and attr not in names:
                names.append(attr)
    return names


class SpiritProxy:
    """Attribute access to a Spirit's exports; ``proxy.Counter`` groups ``Counter.*`` methods.

    Each attribute is resolved once, then cached on the proxy, so ``proxy.add(1, 2)`` costs no
    more than the call itself.
    """

    def __init__(self, spirit: _Exports, prefix: str) -> None:
        self._spirit = spirit
        self._prefix = prefix

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        full = self._prefix + attr
        callers = self._spirit._exports_table()
        found: Any = callers.get(full)
        if found is None:
            group = full + "."
            if not any(n.startswith(group) for n in callers):
                raise UnknownExportError(self._spirit.name, full, self._spirit.functions)
            found = SpiritProxy(self._spirit, group)
        self.__dict__[attr] = found
        return found

    def __dir__(self) -> list[str]:
        names = {n[len(self._prefix):].split(".")[0] for n in self._spirit._exports_table()
                 if n.startswith(self._prefix)}
        return sorted(names)

    def __repr__(self) -> str:
        return f"<SpiritProxy {self._spirit.name}{'.' + self._prefix[:-1] if self._prefix else ''}>"
