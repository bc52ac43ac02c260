"""The standard host functions, one module per Loa (service), assembled into the core Loa.

Each function is a factory ``fn(ctx) -> callable`` taking the raw wasm arguments; its signature
comes from :data:`vudo.abi.HOST_FUNCTIONS`, the single table of the ABI.
"""

from __future__ import annotations

from types import ModuleType

from ...abi import HOST_FUNCTIONS
from ..loa import HostFunction, Loa
from . import debug, effects, io, memory, messaging, random, time

__all__ = ["CORE_LOA", "CORE_LOA_NAME", "GROUPS"]

#: Name of the Loa holding the 22 standard host functions.
CORE_LOA_NAME = "vudo"

#: The module implementing each group of host-abi.md.
GROUPS: dict[str, ModuleType] = {
    "io": io,
    "memory": memory,
    "time": time,
    "messaging": messaging,
    "random": random,
    "effects": effects,
    "debug": debug,
}


def _build() -> Loa:
    functions: dict[str, HostFunction] = {}
    for spec in HOST_FUNCTIONS:
        factory = getattr(GROUPS[spec.loa], spec.name)
        functions[spec.name] = HostFunction(spec.name, factory, spec.param_types, spec.results)
    return Loa(CORE_LOA_NAME, "1.0.0", functions)


#: The core Loa: every host function of the ABI table, wired to its implementation.
CORE_LOA: Loa = _build()
