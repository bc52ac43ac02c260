"""The time Loa: ``vudo_now``, ``vudo_sleep``, ``vudo_monotonic_now``."""

from __future__ import annotations

from collections.abc import Callable

from ..loa import LoaContext


def vudo_now(ctx: LoaContext) -> Callable[[], int]:
    """Wall clock in milliseconds since the Unix epoch."""
    return ctx.time.now


def vudo_sleep(ctx: LoaContext) -> Callable[[int], None]:
    """Pause this Spirit only (other Spirits run meanwhile); negative means 0."""
    sleep = ctx.time.sleep

    def host(ms: int) -> None:
        sleep(ms if ms > 0 else 0)

    return host


def vudo_monotonic_now(ctx: LoaContext) -> Callable[[], int]:
    """Monotonic nanoseconds; never decreases, even if the provider misbehaves."""
    clock = ctx.time.monotonic_now
    last = [0]

    def host() -> int:
        now = clock()
        if now < last[0]:
            return last[0]
        last[0] = now
        return now

    return host
