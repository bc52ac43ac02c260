"""The keyword options of :func:`vudo.load_spirit` (and ``summon``), typed once."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TypedDict

from .._config import Limits, MemoryOptions, Permissions, SpiritConfig, WasiOptions
from .._config.spirit_config import AllocatorName
from .._host import (
    DebugHandler,
    EffectHandler,
    LoaRegistry,
    Logger,
    MessageBroker,
    RandomProvider,
    TimeProvider,
)
from .._linking import ImportSpec
from .._providers import Providers

__all__ = ["LoadOptions", "SpiritOptions", "split_options"]


class SpiritOptions(TypedDict, total=False):
    """Per-Spirit options: typed shortcuts for :class:`~vudo.SpiritConfig` and
    :class:`~vudo.Providers` fields, and what a Spirit links against.

    ``config``/``providers`` come first; a shortcut given too overrides their field.
    """

    config: SpiritConfig
    providers: Providers
    limits: Limits
    permissions: Permissions
    allocator: AllocatorName
    memory: MemoryOptions | Mapping[str, int]
    debug: bool
    trace: bool
    cache: bool
    wasi: WasiOptions
    logger: Logger
    time_provider: TimeProvider
    random_provider: RandomProvider
    effect_handler: EffectHandler
    debug_handler: DebugHandler
    loas: LoaRegistry
    imports: ImportSpec


class LoadOptions(SpiritOptions, total=False):
    """Options of :func:`vudo.load_spirit`: the Spirit's options, its name and its broker."""

    name: str
    broker: MessageBroker


_CONFIG_FIELDS = ("limits", "permissions", "allocator", "memory", "debug", "trace", "cache", "wasi")
_PROVIDER_FIELDS = {
    "logger": "logger", "time_provider": "time", "random_provider": "random",
    "effect_handler": "effects", "debug_handler": "debug",
}


def split_options(options: SpiritOptions) -> tuple[SpiritConfig | None, Providers | None]:
    """The config and providers the options describe (``None`` where nothing was given).

    Shortcuts are applied over ``config``/``providers`` as partial overrides: a ``limits=``
    shortcut merges into the config's limits field by field.
    """
    unknown = set(options) - set(SpiritOptions.__annotations__) - {"name", "broker"}
    if unknown:
        raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
    raw: dict[str, object] = dict(options)
    config = options.get("config")
    shortcuts = {k: raw[k] for k in _CONFIG_FIELDS if k in raw}
    if shortcuts:
        base = config if config is not None else SpiritConfig()
        limits = shortcuts.pop("limits", None)
        if isinstance(limits, Limits):
            shortcuts["limits"] = base.limits.merged(limits)
        config = dataclasses.replace(base, **shortcuts)  # type: ignore[arg-type]
    providers = options.get("providers")
    given = {_PROVIDER_FIELDS[k]: raw[k] for k in _PROVIDER_FIELDS if raw.get(k) is not None}
    if given:
        providers = (providers or Providers()).merged(Providers(**given))  # type: ignore[arg-type]
    return config, providers
