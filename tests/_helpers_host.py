"""Helpers for the host-function tests: WAT Spirits that import the 22 host functions.

``host_module(body)`` builds a module importing every host function of the ABI table (as
``$vudo_print`` etc.), exporting a 1-page ``memory`` and, for each host function, a forwarder
export named without the ``vudo_`` prefix (``print``, ``recv``, ``emit_effect``...) with the
same signature, so a test can call any host function with any arguments through
``spirit.call``. ``load`` loads such a module with fresh mocks for every provider.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import wasmtime

from vudo import Spirit, load_spirit
from vudo.abi import HOST_FUNCTIONS, HostFunctionSpec
from vudo.testing import (
    MockDebugHandler,
    MockEffectHandler,
    MockLogger,
    MockRandomProvider,
    MockTimeProvider,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Real DOL-compiled Spirits beside the repository; tests using them skip when it is absent.
SHARED_SPIRITS = REPO_ROOT.parent / "shared" / "spirits"

#: Where tests put scratch data inside the Spirit's own (first) page.
SCRATCH = 1024
PAGE = 65536
MEMORY_1 = '(memory (export "memory") 1)'


def wat(text: str) -> bytes:
    """Compile WAT text to wasm bytes."""
    return bytes(wasmtime.wat2wasm(text))


def short(spec: HostFunctionSpec) -> str:
    """The forwarder export name of a host function: ``vudo_print`` -> ``print``."""
    return spec.name.removeprefix("vudo_")


def func_type(spec: HostFunctionSpec) -> str:
    """``(param i32 i32) (result i32)`` for a host function."""
    params = f"(param {' '.join(spec.param_types)})" if spec.params else ""
    results = f"(result {' '.join(spec.results)})" if spec.results else ""
    return f"{params} {results}".strip()


def import_decls(ns: str = "vudo", specs: tuple[HostFunctionSpec, ...] = HOST_FUNCTIONS) -> str:
    """Import declarations of host functions under ``ns``, named ``$vudo_print`` etc."""
    return "\n".join(
        f'(import "{ns}" "{s.name}" (func ${s.name} {func_type(s)}))' for s in specs
    )


def forwarders(specs: tuple[HostFunctionSpec, ...] = HOST_FUNCTIONS) -> str:
    """One export per host function, forwarding its parameters and returning its results."""
    out = []
    for s in specs:
        gets = " ".join(f"(local.get {i})" for i in range(len(s.params)))
        out.append(
            f'(func (export "{short(s)}") {func_type(s)} (call ${s.name} {gets}))'
        )
    return "\n".join(out)


#: Utility exports every host module has: byte access from the Spirit's side.
UTILS = """
(func (export "fill") (param i32 i32 i32) (memory.fill (local.get 0) (local.get 1) (local.get 2)))
(func (export "load8") (param i32) (result i32) (i32.load8_u (local.get 0)))
(func (export "mem_pages") (result i32) (memory.size))
"""


def host_module(body: str = "", *, ns: str = "vudo", memory: str = MEMORY_1) -> str:
    """A module importing all 22 host functions under ``ns``, with forwarders and ``body``."""
    return f"(module\n{import_decls(ns)}\n{memory}\n{forwarders()}\n{UTILS}\n{body}\n)"


@dataclass
class Mocks:
    """One mock per provider, passed to a Spirit at load time."""

    logger: MockLogger = field(default_factory=MockLogger)
    time: MockTimeProvider = field(default_factory=MockTimeProvider)
    random: MockRandomProvider = field(default_factory=MockRandomProvider)
    effects: MockEffectHandler = field(default_factory=MockEffectHandler)
    debug: MockDebugHandler = field(default_factory=MockDebugHandler)

    def options(self) -> dict[str, Any]:
        """The ``load_spirit`` keyword arguments installing these mocks."""
        return {
            "logger": self.logger,
            "time_provider": self.time,
            "random_provider": self.random,
            "effect_handler": self.effects,
            "debug_handler": self.debug,
        }

    def quiet(self) -> bool:
        """True when no provider has observed anything."""
        return not (
            self.logger.records or self.logger.outputs or self.time.sleeps
            or self.random.random_calls or self.random.byte_requests
            or self.effects.effects or self.effects.subscriptions
            or self.debug.breakpoints or self.debug.assertion_failures or self.debug.panics
        )


def load(
    body: str = "", *, name: str = "solo", ns: str = "vudo", memory: str = MEMORY_1,
    mocks: Mocks | None = None, **options: Any,
) -> tuple[Spirit, Mocks]:
    """Load ``host_module(body)`` with fresh mocks; returns the Spirit and its mocks."""
    mocks = mocks or Mocks()
    spirit = load_spirit(
        wat(host_module(body, ns=ns, memory=memory)), name=name, **mocks.options(), **options
    )
    return spirit, mocks


def put(spirit: Spirit, data: bytes | str, at: int = SCRATCH) -> tuple[int, int]:
    """Write ``data`` into the Spirit's memory at ``at``; return ``(ptr, len)``."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    spirit.memory.write_bytes(at, raw)
    return at, len(raw)


def message_block(sender: str, payload: bytes) -> bytes:
    """The bytes of a received message: ``[sender_len u32][sender][payload_len u32][payload]``."""
    s = sender.encode("utf-8")
    return struct.pack("<I", len(s)) + s + struct.pack("<I", len(payload)) + payload
