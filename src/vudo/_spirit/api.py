"""Loading: :func:`load_spirit` and :func:`aload_spirit`."""

from __future__ import annotations

import asyncio
from typing import Unpack

from .loading import Source, compile_source
from .options import LoadOptions, split_options
from .spirit import Spirit

__all__ = ["aload_spirit", "load_spirit"]


def load_spirit(source: Source, **options: Unpack[LoadOptions]) -> Spirit:
    """Load, link and instantiate a Spirit.

    ``source`` is a path (``.wasm`` or ``.wat``), a package resource (``Traversable``),
    ``bytes``, WAT text, or a compiled ``wasmtime.Module``. Options: ``config``
    (:class:`~vudo.SpiritConfig`) and ``providers`` (:class:`~vudo.Providers`), with typed
    shortcuts for their fields (``limits=``, ``permissions=``, ``logger=``, ...), and ``name``,
    ``loas``, ``imports`` and ``broker``. Compiled modules are cached in memory and on disk
    (:func:`vudo.configure_cache`). Raises :class:`~vudo.LoadError` or
    :class:`~vudo.errors.LinkError`.
    """
    config, providers = split_options(options)
    module, label, default_name = compile_source(
        source, cache=config.cache if config is not None else True
    )
    return Spirit(
        module,
        name=options.get("name") or default_name,
        source_label=label,
        config=config,
        providers=providers,
        loas=options.get("loas"),
        imports=options.get("imports"),
        broker=options.get("broker"),
    )


async def aload_spirit(source: Source, **options: Unpack[LoadOptions]) -> Spirit:
    """:func:`load_spirit` for asyncio code: reading and compiling run off the event loop."""
    return await asyncio.to_thread(lambda: load_spirit(source, **options))
