"""Which message bus and host heap vudo uses: the C ones from ``vudo._nbus`` or Python's.

The C extension is optional (built at install with ``optional=True``). It is used when it
imports and ``VUDO_NATIVE`` is not ``0``; otherwise vudo falls back to
:class:`vudo.broker.MessageBus` and :class:`vudo.allocator.FreeListAllocator`, which have the
same API and behaviour.
"""

from __future__ import annotations

import importlib
import logging
import os
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from .allocator import GrowFn, MoveFn, ZeroFn

__all__ = [
    "available",
    "freelist_allocator_class",
    "make_freelist",
    "message_bus_class",
    "native_module",
]

_log = logging.getLogger("vudo.native")
_ABI_VERSION = 1  # VUDO_NBUS_ABI_VERSION in _nbus/vudo_nbus.h
_module: ModuleType | None = None
_loaded = False


def native_module() -> ModuleType | None:
    """The ``vudo._nbus`` extension, or ``None`` (not built, or ``VUDO_NATIVE=0``)."""
    global _module, _loaded
    if not _loaded:
        _loaded = True
        if os.environ.get("VUDO_NATIVE", "1").strip() == "0":
            _log.debug("VUDO_NATIVE=0: using the Python message bus and host heap")
        else:
            try:  # by name: the module may not be built, and has no type stubs
                mod = importlib.import_module("vudo._nbus")
            except ImportError as exc:
                _log.debug("vudo._nbus is not available (%s): using the Python paths", exc)
            else:
                # Without a compiler, vudo/_nbus/ (the C sources) imports as an empty
                # namespace package; an extension built for another ABI is no better.
                version = getattr(mod, "ABI_VERSION", None)
                if version == _ABI_VERSION:
                    _module = mod
                else:
                    _log.debug("vudo._nbus has ABI version %r, not %d (not built?): using "
                               "the Python paths", version, _ABI_VERSION)
    return _module


def available() -> bool:
    """Whether the C message bus and host heap are in use."""
    return native_module() is not None


def message_bus_class() -> type[Any]:
    """The class to instantiate for an in-process bus (same constructor as ``MessageBus``)."""
    mod = native_module()
    if mod is not None:
        return cast(type, mod.MessageBus)
    from .broker import MessageBus

    return MessageBus


def freelist_allocator_class() -> type[Any]:
    """The class of the default host heap (constructed as ``cls(grow, zero, move)``)."""
    mod = native_module()
    if mod is not None:
        return cast(type, mod.FreeListAllocator)
    from .allocator import FreeListAllocator

    return FreeListAllocator


def make_freelist(grow: GrowFn, zero: ZeroFn, move: MoveFn) -> Any:
    """A default host heap over these memory callbacks (C when available)."""
    return freelist_allocator_class()(grow, zero, move)
