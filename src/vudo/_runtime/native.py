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
from types import ModuleType

__all__ = ["available", "core_status", "core_summary", "native_module"]

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


def core_status() -> dict[str, object]:
    """Which core serves Spirits loaded now (for ``vudo --version`` and ``vudo inspect``):
    the native call path (``vudo._cnative``), the C bus and heap (``vudo._nbus``), and the
    messaging/heap host functions in C (both, with the C bus's API reachable). ``reason``
    says why the native call path is off (``None`` when it is on)."""
    from . import cnative

    return {
        "native_call_path": cnative.active(),
        "native_bus": available(),
        "native_messaging": cnative.native_bus_available(),
        "reason": cnative.reason(),
    }


def core_summary() -> str:
    """:func:`core_status` in one line of text."""
    status = core_status()

    def yes(key: str) -> str:
        return "yes" if status[key] else "no"

    text = (f"core: native call path {yes('native_call_path')}, native bus "
            f"{yes('native_bus')}, native messaging host functions {yes('native_messaging')}")
    return text if status["reason"] is None else f"{text} ({status['reason']})"
