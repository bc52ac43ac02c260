"""vudo: the Python host runtime for DOL Spirits (WebAssembly modules).

Load a Spirit with :func:`load_spirit`, call it, read and write its memory, and run many Spirits
together in a :class:`Seance` that pass messages to each other. Documented submodules:
:mod:`vudo.abi` (the ABI table), :mod:`vudo.errors`, :mod:`vudo.providers`, :mod:`vudo.testing`
(test doubles) and :mod:`vudo.nats` (sessions across processes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import abi as abi  # documented submodules
from . import errors as errors
from . import providers as providers
from ._compat import deprecated_names
from ._config import Limits, MemoryOptions, Permissions, SpiritConfig, WasiOptions
from ._effects import StandardEffectHandler
from ._host import (
    HostContext,
    HostFunction,
    Loa,
    LoaRegistry,
    Message,
    MessageBroker,
    create_loa,
    f32,
    f64,
    i32,
    i64,
)
from ._memory import GeneField, GeneLayout, WasmMemory, gene_layout
from ._providers import MessageBus, Providers
from ._runtime.cache import configure_cache
from ._runtime.valtypes import ExternRef, FuncRef
from ._session import AsyncSeance, Seance
from ._spirit import Spirit, aload_spirit, load_spirit
from ._spirit.toolchains import run_command
from .errors import LoadError, SpiritError, VudoError

if TYPE_CHECKING:
    from .nats import NatsBroker

__version__ = "0.1.0"

__all__ = [
    "AsyncSeance",
    "ExternRef",
    "FuncRef",
    "GeneField",
    "GeneLayout",
    "HostContext",
    "HostFunction",
    "Limits",
    "Loa",
    "LoaRegistry",
    "LoadError",
    "MemoryOptions",
    "Message",
    "MessageBroker",
    "MessageBus",
    "NatsBroker",
    "Permissions",
    "Providers",
    "Seance",
    "Spirit",
    "SpiritConfig",
    "SpiritError",
    "StandardEffectHandler",
    "VudoError",
    "WasiOptions",
    "WasmMemory",
    "__version__",
    "aload_spirit",
    "configure_cache",
    "create_loa",
    "f32",
    "f64",
    "gene_layout",
    "i32",
    "i64",
    "load_spirit",
    "native_available",
    "run_command",
]


def native_available() -> bool:
    """Whether the native call path (the optional C extension) is the one in use."""
    from ._runtime.backend import get_backend

    return get_backend().name == "native"


_ERROR_NAMES = (
    "BrokerUnavailable CallCancelled ConfigError ForeignReferenceError FuelExhausted "
    "HostFunctionError HostHeapExhausted InvalidLimitsError LimitExceeded LinkError "
    "MemoryAccessError SpiritTrap MemoryLimitExceeded NameTaken "
    "SeanceError SpiritAssertionError SpiritPanic StackExhausted SpiritTerminated "
    "SpiritTimeout UnknownExportError UnresolvedImport"
).split()
_PROVIDER_NAMES = (
    "DebugHandler DefaultDebugHandler DefaultEffectHandler EffectHandler Logger LoggerBase "
    "RandomProvider StdLogger SystemRandomProvider SystemTimeProvider TimeProvider"
).split()
_moved: dict[str, str] = {
    **dict.fromkeys(_ERROR_NAMES, "vudo.errors"),
    **dict.fromkeys(_PROVIDER_NAMES, "vudo.providers"),
    **dict.fromkeys(("HOST_FUNCTIONS", "NAMESPACES", "EffectId", "HostFunctionSpec",
                     "LogLevel", "ResultCode"), "vudo.abi"),
    **dict.fromkeys(("Allocator", "BumpAllocator", "FreeListAllocator", "PAGE_SIZE"),
                    "vudo._memory"),
    "LoaContext": "vudo._host.context",
    "SpiritProxy": "vudo._spirit",
    "SpiritStats": "vudo._session",
}
_deprecated = deprecated_names(__name__, _moved)


if not TYPE_CHECKING:  # hidden from type checkers, so ``vudo.<typo>`` is an error, not Any

    def __getattr__(name: str) -> Any:
        if name == "NatsBroker":  # lazily: ``import vudo`` never imports nats-py
            from .nats import NatsBroker

            globals()["NatsBroker"] = NatsBroker
            return NatsBroker
        return _deprecated(name)
