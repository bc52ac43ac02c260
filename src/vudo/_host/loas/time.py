"""The time Loa: ``vudo_now``, ``vudo_sleep``, ``vudo_monotonic_now``.

A time provider that raises traps the Spirit: the call fails with a
:class:`~vudo.errors.HostFunctionError` naming the host function and the provider's class, with
the provider's exception as ``__cause__`` (there is no fallback clock: a test double that fails
should fail the test, and a silently substituted clock would hide it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ...errors import HostFunctionError, VudoError
from ..context import HostContext

_log = logging.getLogger("vudo.host")


def _provider_failed(ctx: HostContext, function: str, method: str,
                     exc: Exception) -> HostFunctionError:
    return HostFunctionError(
        ctx.name, ctx.current_function,
        f"host function {function}: time provider {type(ctx.time).__name__}.{method}() raised "
        f"{type(exc).__name__}: {exc}",
    )


def vudo_now(ctx: HostContext) -> Callable[[], int]:
    """Wall clock in milliseconds since the Unix epoch."""
    clock = ctx.time.now

    def host() -> int:
        try:
            return clock()
        except VudoError:
            raise
        except Exception as exc:
            raise _provider_failed(ctx, "vudo_now", "now", exc) from exc

    return host


def vudo_sleep(ctx: HostContext) -> Callable[[int], None]:
    """Pause this Spirit only (other Spirits run meanwhile); negative means 0.

    A sleep never outlasts the call's timeout (the call fails with ``SpiritTimeout`` when the
    time left runs out) and, with the system clock, ``interrupt()``/``dismiss()`` wake it.
    A sleep over the Spirit's ``max_sleep`` is refused: it returns at once, with a WARNING.
    """
    sleep = ctx.sleep
    cap = ctx.limits.max_sleep
    cap_ms = None if cap is None else cap * 1000

    def host(ms: int) -> None:
        if cap_ms is not None and ms > cap_ms:
            _log.warning("vudo_sleep: Spirit %r asked to sleep %d ms, over its max_sleep of "
                         "%gs; refused", ctx.name, ms, cap)
            return
        try:
            sleep(ms)
        except VudoError:  # SpiritTimeout, SpiritTerminated: the sleep was cut short
            raise
        except Exception as exc:
            raise _provider_failed(ctx, "vudo_sleep", "sleep", exc) from exc

    return host


def vudo_monotonic_now(ctx: HostContext) -> Callable[[], int]:
    """Monotonic nanoseconds; never decreases, even if the provider misbehaves."""
    clock = ctx.time.monotonic_now
    last = [0]

    def host() -> int:
        try:
            now = clock()
        except VudoError:
            raise
        except Exception as exc:
            raise _provider_failed(ctx, "vudo_monotonic_now", "monotonic_now", exc) from exc
        if now < last[0]:
            return last[0]
        last[0] = now
        return now

    return host
