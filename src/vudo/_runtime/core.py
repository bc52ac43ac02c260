"""Which core serves Spirits loaded now, for ``vudo --version`` and ``vudo inspect``."""

from __future__ import annotations

from . import cnative, native

__all__ = ["core_status", "core_summary"]


def core_status() -> dict[str, object]:
    """Which core serves Spirits loaded now (for ``vudo --version`` and ``vudo inspect``):
    the native call path (``vudo._cnative``), the C bus and heap (``vudo._nbus``), and the
    messaging/heap host functions in C (both, with the C bus's API reachable). ``reason``
    says why the native call path is off (``None`` when it is on)."""
    return {
        "native_call_path": cnative.active(),
        "native_bus": native.available(),
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
