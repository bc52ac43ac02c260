"""The time Loa: ``vudo_now``, ``vudo_sleep``, ``vudo_monotonic_now``."""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..context import HostContext

_log = logging.getLogger("vudo.host")


def vudo_now(ctx: HostContext) -> Callable[[], int]:
    """Wall clock in milliseconds since the Unix epoch."""
    return ctx.time.now


def vudo_sleep(ctx: HostContext) -> Callable[[int], None]:
    """Pause this Spirit only (other Spirits run meanwhile); negative means 0.

    A sleep never outlasts the call's timeout (the call fails with ``SpiritTimeout`` when the
    time left runs out) and, with the system clock, ``interrupt()``/``dismiss()`` wake it.
    A sleep over the Spirit's ``max_sleep`` is refused: it returns at once, with a WARNING.
    """
    sleep = ctx.sleep
    cap = ctx.limits.max_sleep
    if cap is None:
        return sleep
    cap_ms = cap * 1000

    def host(ms: int) -> None:
        if ms > cap_ms:
            _log.warning("vudo_sleep: Spirit %r asked to sleep %d ms, over its max_sleep of "
                         "%gs; refused", ctx.name, ms, cap)
            return
        sleep(ms)

    return host


def vudo_monotonic_now(ctx: HostContext) -> Callable[[], int]:
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
