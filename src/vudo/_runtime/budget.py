"""``max_memory`` as one budget for the whole instance: every memory and every table.

wasmtime-py 50 offers the store's built-in limiter only (``Store.set_limits``): one byte cap
applied to *each* memory and one element cap applied to *each* table, checked at creation
and on every grow. No callback limiter is exposed. So the caps are chosen from the module's
shape (read from its bytes) such that the instance as a whole cannot exceed the budget, even
when everything grows to its cap: a per-item cap ``L`` with

    sum over memories of min(max_m, L)  +  8 * sum over tables of min(max_t, L // 8)  <=  budget

taking the largest such ``L`` (a module with one memory and no table gets the whole budget).
Table elements are counted at 8 bytes, as wasmtime documents.
"""

from __future__ import annotations

from .wasmscan import ModuleShape

__all__ = ["TABLE_ELEMENT_BYTES", "store_limits"]

TABLE_ELEMENT_BYTES = 8
_INT64_MAX = 2**63 - 1  # Store.set_limits takes int64: larger values wrap to "no limit"


def _total(shape: ModuleShape, cap: int) -> int:
    mems = sum(cap if mx is None else min(mx, cap) for _, mx in shape.memories)
    elems = cap // TABLE_ELEMENT_BYTES
    tabs = sum(elems if mx is None else min(mx, elems) for _, mx in shape.tables)
    return mems + TABLE_ELEMENT_BYTES * tabs


def store_limits(shape: ModuleShape | None, budget: int) -> dict[str, int]:
    """The ``Store.set_limits`` keywords enforcing ``budget`` bytes for the whole instance.

    ``shape`` is ``None`` for a module vudo did not read (a foreign ``wasmtime.Module``):
    then each memory and table is capped separately, the best the limiter can do.
    """
    budget = min(budget, _INT64_MAX)
    if shape is None or len(shape.memories) + len(shape.tables) <= 1:
        per = budget
    else:
        lo, hi = 0, budget  # the largest per-item cap whose worst case fits the budget
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if _total(shape, mid) <= budget:
                lo = mid
            else:
                hi = mid - 1
        per = lo
    return {
        "memory_size": per,
        "table_elements": max(per // TABLE_ELEMENT_BYTES, 0),
        **({} if shape is None else {
            "memories": max(len(shape.memories), 1), "tables": max(len(shape.tables), 1)}),
    }
