"""What a Spirit holds is released when it is closed, not when the garbage collector runs."""

from __future__ import annotations

import asyncio
import gc
import logging
import weakref
from collections.abc import Iterator
from importlib.resources import files

import pytest

import vudo
import vudo.providers
from vudo.errors import SpiritTerminated

PING = files("vudo") / "examples" / "ping.wat"


@pytest.fixture
def no_gc() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def test_close_frees_the_store_without_the_garbage_collector(no_gc: None) -> None:
    stores = []
    for i in range(200):
        spirit = vudo.load_spirit(PING, name=f"ping-{i}")
        stores.append(weakref.ref(spirit.store))
        spirit.close()
        del spirit
    assert sum(ref() is not None for ref in stores) == 0


def test_a_closed_spirit_refuses_calls_and_memory_access() -> None:
    spirit = vudo.load_spirit(PING)
    memory = spirit.memory
    spirit.close()
    spirit.close()  # twice is fine
    with pytest.raises(SpiritTerminated):
        spirit.call("start", 1)
    with pytest.raises(vudo.errors.MemoryAccessError):
        memory.read_bytes(0, 1)


def test_the_private_event_loop_of_async_host_functions_is_closed() -> None:
    async def answer() -> vudo.i32:
        await asyncio.sleep(0)
        return 42

    spirit = vudo.load_spirit(
        '(module (import "vudo" "answer" (func $a (result i32)))'
        ' (func (export "run") (result i32) call $a))',
        imports={"answer": answer},
    )
    assert spirit.call("run") == 42
    loop = spirit._bridge._private
    assert loop is not None and not loop.is_closed()
    spirit.close()
    assert loop.is_closed()


def test_per_spirit_loggers_are_not_kept_by_logging() -> None:
    before = len(logging.Logger.manager.loggerDict)
    for i in range(100):
        vudo.load_spirit(PING, name=f"unique-{i}").close()
    assert len(logging.Logger.manager.loggerDict) == before


def test_a_configured_per_spirit_logger_is_used(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="vudo.spirit.named")
    logger = vudo.providers.StdLogger("named")
    logger.warn("careful")
    assert [(r.name, r.message) for r in caplog.records] == [("vudo.spirit.named", "careful")]
