"""The random Loa: ``vudo_random`` and ``vudo_random_bytes``."""

from __future__ import annotations

import math
from collections.abc import Callable

from ..context import HostContext

_MASK = 0xFFFFFFFF


def vudo_random(ctx: HostContext) -> Callable[[], float]:
    """A float uniform in [0, 1); out-of-range provider values are folded back in (NaN/inf: 0)."""
    rand = ctx.random.random

    def host() -> float:
        value = float(rand())
        if 0.0 <= value < 1.0:
            return value
        # Never hand the Spirit NaN/inf or a value outside [0, 1), whatever the provider did.
        return abs(value) % 1.0 if math.isfinite(value) else 0.0

    return host


def vudo_random_bytes(ctx: HostContext) -> Callable[[int, int], None]:
    """Fill ``[ptr, ptr+len)`` with random bytes (bounds checked before generating)."""
    mem = ctx.memory
    rand = ctx.random.random_bytes

    def host(ptr: int, length: int) -> None:
        ptr &= _MASK
        length &= _MASK
        mem.check(ptr, length)
        data = rand(length)
        if len(data) != length:
            raise ValueError(f"random provider returned {len(data)} bytes, not {length}")
        mem.write_bytes(ptr, data)

    return host
