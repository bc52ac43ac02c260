"""The Spirit layer: loading sources, instantiating from a link plan, calling exports."""

from __future__ import annotations

from .api import aload_spirit, load_spirit
from .context import SpiritContext
from .loading import Source, compile_source, engine_message, read_wasm
from .options import LoadOptions, SpiritOptions, split_options
from .proxy import SpiritProxy
from .spirit import Spirit

__all__ = [
    "LoadOptions",
    "Source",
    "Spirit",
    "SpiritContext",
    "SpiritOptions",
    "SpiritProxy",
    "aload_spirit",
    "compile_source",
    "engine_message",
    "load_spirit",
    "read_wasm",
    "split_options",
]
