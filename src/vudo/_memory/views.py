"""Zero-copy views of linear memory: :meth:`WasmMemory.view` and its typed variants.

A view is a :class:`memoryview` of the Spirit's own bytes (no copy): reading it reads the
memory, writing it writes the memory. The engine never moves a memory, so a view stays valid
for the Spirit's life, growth included: after ``memory.grow`` it still covers exactly the bytes
it covered (it is not widened to the new pages; take a new view for those). A view keeps the
Spirit's store alive, so dropping the Spirit never leaves it dangling. ``Spirit.close()``
releases its views (using one then raises ``ValueError``); a view that cannot be released
because something still exports its buffer (e.g. a NumPy array made from it) keeps the closed
Spirit's bytes alive, unchanged, until it goes.
"""

from __future__ import annotations

import sys
import weakref
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

__all__ = ["VIEW_FORMATS", "MemoryViews"]

#: The ``format`` codes a view may have, with their item size in bytes (``struct`` codes,
#: native byte order: WebAssembly's little-endian on the little-endian hosts vudo supports).
VIEW_FORMATS: dict[str, int] = {
    "B": 1, "b": 1, "H": 2, "h": 2, "I": 4, "i": 4, "Q": 8, "q": 8, "f": 4, "d": 8,
}


class MemoryViews:
    """The view methods of :class:`~vudo.memory.WasmMemory` (mixed into it)."""

    _view: memoryview
    _views: dict[int, weakref.ref[memoryview]]

    if TYPE_CHECKING:
        def _check(self, ptr: int, length: int) -> int:
            """The bounds check of :class:`~vudo.memory.WasmMemory`."""
            ...

    def view(self, ptr: int, length: int, format: str = "B", *,
             readonly: bool = False) -> memoryview:
        """A zero-copy view of ``length`` bytes at ``ptr`` (bounds-checked:
        :class:`~vudo.errors.MemoryAccessError` if any byte is outside the memory).

        ``format`` is a ``struct`` code of :data:`VIEW_FORMATS` (``"i"``: i32, ``"d"``: f64,
        ...); ``length`` must then be a multiple of its size. See the module documentation for
        how long a view stays valid.
        """
        size = VIEW_FORMATS.get(format)
        if size is None:
            raise ConfigError(f"memory.view: unknown format {format!r}; expected one of "
                              f"{', '.join(VIEW_FORMATS)}")
        if size > 1 and sys.byteorder != "little":  # pragma: no cover - no such host in CI
            raise ConfigError("memory.view: typed views need a little-endian host")
        if length % size:
            raise ConfigError(f"memory.view: {length} bytes is not a whole number of "
                              f"{format!r} items ({size} bytes each)")
        self._check(ptr, length)
        out: Any = self._view[ptr:ptr + length]
        if format != "B":
            out = out.cast(format)
        if readonly:
            out = out.toreadonly()
        self._track_view(out)
        view: memoryview = out
        return view

    def view_i32(self, ptr: int, count: int) -> memoryview:
        """``count`` signed 32-bit integers at ``ptr``, as a writable zero-copy view."""
        return self.view(ptr, count * 4, "i")

    def view_u32(self, ptr: int, count: int) -> memoryview:
        """``count`` unsigned 32-bit integers at ``ptr``, as a writable zero-copy view."""
        return self.view(ptr, count * 4, "I")

    def view_i64(self, ptr: int, count: int) -> memoryview:
        """``count`` signed 64-bit integers at ``ptr``, as a writable zero-copy view."""
        return self.view(ptr, count * 8, "q")

    def view_f32(self, ptr: int, count: int) -> memoryview:
        """``count`` 32-bit floats at ``ptr``, as a writable zero-copy view."""
        return self.view(ptr, count * 4, "f")

    def view_f64(self, ptr: int, count: int) -> memoryview:
        """``count`` 64-bit floats at ``ptr``, as a writable zero-copy view."""
        return self.view(ptr, count * 8, "d")

    def _track_view(self, view: memoryview) -> None:
        # Keyed by id: a live view's id is unique, and its entry goes when it is freed.
        views, key = self._views, id(view)
        views[key] = weakref.ref(view, lambda _ref: views.pop(key, None))

    def _release_views(self) -> None:
        """Release every view still alive (the memory is going away)."""
        views, self._views = self._views, {}
        for ref in list(views.values()):
            view = ref()
            if view is not None:
                try:
                    view.release()
                except BufferError:  # something still exports it: documented as unusable
                    pass
