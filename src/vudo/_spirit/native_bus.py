"""Whether a Spirit's messaging and host-heap functions are served in C (``vudo._nbus``).

They are when the native core is active, the Spirit is not traced, its imports of them are the
core Loa's own with the ABI's signatures, its broker is exactly the C ``MessageBus`` (not a
subclass, a wrapper such as ``TracingBroker``, or NATS) and its host heap exactly the C
``FreeListAllocator`` growing this Spirit's memory. Otherwise every one of them stays the Python
host function, unchanged.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from .._host import HostContext
from .._host.loas import CORE_LOA
from .._host.loas.memory import _refusal_logger
from .._linking import LinkPlan
from .._runtime import cnative, native
from .._runtime.native import NativeBus
from ..abi import HOST_FUNCTIONS_BY_NAME

__all__ = ["native_bus"]


def _bound_to(fn: object, broker: object, name: str) -> bool:
    """Whether ``fn`` is ``partial(broker.<method>, name)``."""
    return (isinstance(fn, partial) and fn.args == (name,) and not fn.keywords
            and getattr(fn.func, "__self__", None) is broker)


def _plain_imports(plan: LinkPlan) -> bool:
    for entry in plan.imports:
        if entry.name not in cnative.BUS_FUNCTIONS or entry.memory_type is not None:
            continue
        spec = HOST_FUNCTIONS_BY_NAME[entry.name]
        if entry.host is not CORE_LOA.functions.get(entry.name) or (
            entry.params, entry.results
        ) != (spec.param_types, spec.results):
            return False  # a user's override or a variant: all of them stay Python
    return True


def native_bus(plan: LinkPlan, ctx: HostContext) -> NativeBus | None:
    """What the backend needs to serve the messaging/heap functions in C, or ``None``."""
    nbus: Any = native.native_module()
    if nbus is None or not cnative.native_bus_available() or not _plain_imports(plan):
        return None
    inbox, name = ctx.inbox, ctx.name
    broker = getattr(getattr(inbox.post, "func", None), "__self__", None)
    if type(broker) is not nbus.MessageBus:
        return None
    if not all(_bound_to(fn, broker, name) for fn in (
        inbox.post, inbox.recv, inbox.peek, inbox.pending, inbox.broadcast
    )) or getattr(inbox.requeue, "__self__", None) is not broker or inbox.done is not None:
        return None
    heap: Any = ctx.memory.allocator
    if type(heap) is not nbus.FreeListAllocator or getattr(
        heap.grow, "__self__", None
    ) is not ctx.memory:
        return None
    limits = ctx.limits

    def exhausted(fn: str) -> Any:
        return lambda: _refusal_logger(ctx, fn)(0)  # a fresh spell: logged once

    return NativeBus(broker, heap, heap.grow, name, limits.max_message_size, limits.max_alloc,
                     exhausted)
