"""Whether the native message bus and host heap (the optional C extension ``vudo._nbus``)
are used.

The extension is built at install with ``optional=True``. It is used when it imports, has the
ABI version this package expects, and ``VUDO_NATIVE`` is not ``0``; otherwise vudo runs the
pure-Python :class:`MessageBus` and ``FreeListAllocator``, which have the same API and behaviour.
Each layer picks its class from :func:`native_module`.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

__all__ = ["NativeBus", "available", "native_module"]

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


@dataclass(slots=True)
class NativeBus:
    """What a backend needs to serve a Spirit's messaging and host-heap functions itself:
    the Spirit's C ``MessageBus`` and C heap (``vudo._nbus``), the heap's ``grow``, its caps
    (``None``: none), and ``exhausted(name)``, a callable logging the first refusal of a spell
    of heap exhaustion as the Python Loa does. ``handle`` is the backend's, made on first use.
    """

    bus: Any
    heap: Any
    grow: Callable[[int], Any]
    spirit: str
    max_message_size: int | None
    max_alloc: int | None
    exhausted: Callable[[str], Callable[[], None]]
    handle: Any = None
