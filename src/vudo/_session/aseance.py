"""The asyncio face of a Séance: the same session, awaited."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar, Unpack

from .._host import LoaRegistry, MessageBroker
from .._runtime.asyncbridge import current_waiter
from .._spirit import Source, Spirit, SpiritOptions
from ..abi import ResultCode
from .seance import Seance, SeanceOptions, SpiritStats

__all__ = ["AsyncSeance"]

R = TypeVar("R")


class AsyncSeance:
    """The asyncio face of :class:`Seance`: the same session, awaited.

    Loading and calls run in worker threads, so concurrent ``invoke`` calls on different
    Spirits run in parallel, and ``async def`` host functions run on this event loop.
    """

    def __init__(self, **options: Unpack[SeanceOptions]) -> None:
        #: The synchronous session doing the work.
        self.sync = Seance(**options)

    async def _run(self, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        return await asyncio.to_thread(functools.partial(fn, *args, **kwargs))

    async def summon(
        self, name: str, source: Source, **options: Unpack[SpiritOptions]
    ) -> Spirit:
        """Load a Spirit off the event loop; its async host functions run on this loop."""
        self.sync.use_event_loop(asyncio.get_running_loop())
        return await asyncio.to_thread(lambda: self.sync.summon(name, source, **options))

    async def invoke(self, name: str, function: str, *args: Any) -> Any:
        """Call a Spirit's function in a worker thread.

        Cancelling the awaiting task cancels the running call within one epoch tick, waits
        for it to stop, then raises ``CancelledError``: a cancelled call never keeps running
        with the Spirit locked, and the Spirit stays usable.

        Awaited inside an ``async def`` host function, the call runs on the thread of the
        Spirit call waiting for that host function (so a Spirit may be invoked re-entrantly,
        its own included), one such call at a time.
        """
        spirit = self.sync.get_spirit(name)
        job = functools.partial(self.sync.invoke, name, function, *args)
        # From inside an async host function: run on the thread of the Spirit call that
        # awaits it (re-entrantly, like a synchronous host function's call), not on a worker
        # that would wait for that call's lock forever.
        waiter = current_waiter()
        if waiter is not None and waiter.thread == threading.get_ident():
            return job()  # the host function's loop runs on that very thread
        routed = waiter.submit(job) if waiter is not None else None
        task = (asyncio.wrap_future(routed) if routed is not None
                else asyncio.ensure_future(asyncio.to_thread(job)))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                spirit.cancel_call()
                try:
                    await asyncio.wait([task])
                finally:
                    spirit.cancel_done()
                if not task.cancelled():
                    task.exception()  # retrieved: the CallCancelled of the stopped call
            raise

    async def release(self, name: str) -> None:
        """Remove one Spirit (off the event loop: a distributed broker may wait on the
        network)."""
        await self._run(self.sync.release, name)

    async def dismiss(self) -> None:
        """End the session (off the event loop)."""
        await self._run(self.sync.dismiss)

    async def __aenter__(self) -> AsyncSeance:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.dismiss()

    def get_spirit(self, name: str) -> Spirit:
        """The Spirit called ``name``."""
        return self.sync.get_spirit(name)

    def has_spirit(self, name: str) -> bool:
        """Whether a Spirit called ``name`` is in the session."""
        return self.sync.has_spirit(name)

    def spirits(self) -> list[str]:
        """Names of the Spirits in the session."""
        return self.sync.spirits()

    @property
    def size(self) -> int:
        """Number of Spirits."""
        return self.sync.size

    @property
    def loas(self) -> LoaRegistry:
        """The session's Loas."""
        return self.sync.loas

    @property
    def dismissed(self) -> bool:
        """Whether the session was dismissed."""
        return self.sync.dismissed

    def stats(self, name: str) -> SpiritStats:
        """Calls, failures and time spent in calls of the Spirit ``name``."""
        return self.sync.stats(name)

    @property
    def messages(self) -> MessageBroker:
        """The session's message broker."""
        return self.sync.messages

    async def send(
        self, from_: str, to: str, payload: bytes | str, *, channel: int = 0
    ) -> ResultCode:
        """Queue a message for ``to`` (off the event loop: a broker may wait on the network)."""
        return await self._run(self.sync.send, from_, to, payload, channel=channel)

    def pending(self, name: str, channel: int = 0) -> int:
        """Messages waiting for ``name``."""
        return self.sync.pending(name, channel)

    def broadcast(self, from_: str, payload: bytes | str, *, channel: int = 0) -> int:
        """Send to every Spirit except ``from_``."""
        return self.sync.broadcast(from_, payload, channel=channel)

    def publish(self, channel: str, payload: bytes | str) -> int:
        """Notify every subscriber of ``channel``."""
        return self.sync.publish(channel, payload)

    def register_channel(self, channel: str) -> None:
        """Declare a host channel."""
        self.sync.register_channel(channel)

    def register_module(self, ref: str, source: Source) -> None:
        """Make ``source`` spawnable through the SPAWN effect."""
        self.sync.register_module(ref, source)
