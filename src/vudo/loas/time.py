"""The time Loa: ``vudo_now``, ``vudo_sleep``, ``vudo_monotonic_now``."""

from __future__ import annotations

from collections.abc import Callable
from time import monotonic as _monotonic

from .. import _signals
from ..errors import SpiritTerminated, SpiritTimeout
from ..loa import LoaContext
from ..providers import SystemTimeProvider


def vudo_now(ctx: LoaContext) -> Callable[[], int]:
    """Wall clock in milliseconds since the Unix epoch."""
    return ctx.time.now


def vudo_sleep(ctx: LoaContext) -> Callable[[int], None]:
    """Pause this Spirit only (other Spirits run meanwhile); negative means 0.

    A sleep never outlasts the call's timeout (the call fails with ``SpiritTimeout`` when the
    time left runs out) and, with the system clock, ``interrupt()``/``dismiss()`` wake it.
    """
    spirit = ctx.spirit
    sleep = ctx.time.sleep
    wake = spirit._wake.wait if isinstance(ctx.time, SystemTimeProvider) else None

    def host(ms: int) -> None:
        ms = ms if ms > 0 else 0
        deadline = spirit._deadline
        cut = False
        if deadline is not None:
            left = max(int((deadline - _monotonic()) * 1000), 0)
            if ms > left:
                ms, cut = left, True
        if wake is not None:
            _signals.interruptible_wait(spirit, ms / 1000)  # also ends on a deferred signal
        else:
            sleep(ms)
        if spirit._cancelled:
            raise SpiritTerminated(spirit.name, "vudo_sleep", spirit.termination_cause or "")
        if cut:
            raise SpiritTimeout(
                spirit.name, spirit.current_function, "timeout", f"{spirit.limits.timeout}s"
            )

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
