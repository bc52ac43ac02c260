"""vudo: the Python host runtime for DOL Spirits (WebAssembly modules).

Load a Spirit with :func:`load_spirit`, call it, read and write its memory, and run many Spirits
together in a :class:`Seance` that pass messages to each other.
"""

from __future__ import annotations

from ._guest_alloc import GuestAllocatorError
from ._wasi import WasiExit, WasiOptions, run_command
from .abi import HOST_FUNCTIONS, NAMESPACES, EffectId, HostFunctionSpec, LogLevel, ResultCode
from .allocator import Allocator, BumpAllocator, FreeListAllocator
from .broker import Message, MessageBroker, MessageBus
from .effects import Permissions, StandardEffectHandler
from .errors import (
    BrokerUnavailable,
    FuelExhausted,
    HostFunctionError,
    LimitExceeded,
    LinkError,
    LoadError,
    MemoryAccessError,
    MemoryLimitExceeded,
    SeanceError,
    SpiritAssertionError,
    SpiritPanic,
    SpiritTerminated,
    SpiritTimeout,
    SpiritTrap,
    UnknownExportError,
    UnresolvedImport,
    VudoError,
)
from .genes import GeneField, GeneLayout, gene_layout
from .limits import Limits, MemoryOptions
from .loa import HostFunction, Loa, LoaContext, LoaRegistry, create_loa, f32, f64, i32, i64
from .memory import PAGE_SIZE, WasmMemory
from .providers import (
    DebugHandler,
    DefaultDebugHandler,
    DefaultEffectHandler,
    EffectHandler,
    Logger,
    LoggerBase,
    RandomProvider,
    StdLogger,
    SystemRandomProvider,
    SystemTimeProvider,
    TimeProvider,
)
from .seance import AsyncSeance, Seance, SpiritStats
from .spirit import Spirit, SpiritProxy, aload_spirit, load_spirit

__version__ = "0.1.0"

__all__ = [
    "HOST_FUNCTIONS",
    "NAMESPACES",
    "PAGE_SIZE",
    "Allocator",
    "AsyncSeance",
    "BrokerUnavailable",
    "BumpAllocator",
    "DebugHandler",
    "DefaultDebugHandler",
    "DefaultEffectHandler",
    "EffectHandler",
    "EffectId",
    "FreeListAllocator",
    "FuelExhausted",
    "GeneField",
    "GeneLayout",
    "GuestAllocatorError",
    "HostFunction",
    "HostFunctionError",
    "HostFunctionSpec",
    "LimitExceeded",
    "Limits",
    "LinkError",
    "Loa",
    "LoaContext",
    "LoaRegistry",
    "LoadError",
    "LogLevel",
    "Logger",
    "LoggerBase",
    "MemoryAccessError",
    "MemoryLimitExceeded",
    "MemoryOptions",
    "Message",
    "MessageBroker",
    "MessageBus",
    "Permissions",
    "RandomProvider",
    "ResultCode",
    "Seance",
    "SeanceError",
    "Spirit",
    "SpiritAssertionError",
    "SpiritPanic",
    "SpiritProxy",
    "SpiritStats",
    "SpiritTerminated",
    "SpiritTimeout",
    "SpiritTrap",
    "StandardEffectHandler",
    "StdLogger",
    "SystemRandomProvider",
    "SystemTimeProvider",
    "TimeProvider",
    "UnknownExportError",
    "UnresolvedImport",
    "VudoError",
    "WasiExit",
    "WasiOptions",
    "WasmMemory",
    "__version__",
    "aload_spirit",
    "create_loa",
    "f32",
    "f64",
    "gene_layout",
    "i32",
    "i64",
    "load_spirit",
    "run_command",
]
