"""Running ``async def`` host functions for a Spirit that WebAssembly calls synchronously."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine
from typing import Any

__all__ = ["AsyncBridge"]


class AsyncBridge:
    """Where one Spirit's coroutine host functions run.

    ``loop`` is a running event loop to hand coroutines to (an ``AsyncSeance`` sets it);
    otherwise a private loop is created on first use and closed by :meth:`close`.
    """

    __slots__ = ("_private", "loop")

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self._private: asyncio.AbstractEventLoop | None = None

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run ``coro`` to completion and return its result (called on the Spirit's thread)."""
        loop = self.loop
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is not None and loop.is_running() and running is not loop:
            return asyncio.run_coroutine_threadsafe(coro, loop).result()
        private = self._private
        if running is not None or (private is not None and private.is_running()):
            # Called from code already inside an event loop (e.g. spirit.call in a coroutine,
            # or a re-entrant call): that loop is blocked on this call, so run on a helper.
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                return pool.submit(asyncio.run, coro).result()
        if private is None:
            private = self._private = asyncio.new_event_loop()
        return private.run_until_complete(coro)

    def close(self) -> None:
        """Close the private loop, if one was made."""
        private, self._private = self._private, None
        if private is not None and not private.is_running():
            private.close()
