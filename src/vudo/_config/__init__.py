"""Configuration as typed, frozen objects: limits, memory options, permissions, Spirit config."""

from __future__ import annotations

from .limits import Limits, MemoryOptions
from .permissions import Permissions
from .spirit_config import SpiritConfig
from .wasi import WasiOptions

__all__ = ["Limits", "MemoryOptions", "Permissions", "SpiritConfig", "WasiOptions"]
