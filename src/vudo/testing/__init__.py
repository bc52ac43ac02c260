"""Test doubles for the providers of :mod:`vudo.providers`.

Pass them when loading a Spirit and assert on what its host functions did::

    from vudo import load_spirit
    from vudo.testing import MockLogger

    logger = MockLogger()
    spirit = load_spirit(
        '(module (import "vudo" "vudo_print" (func $p (param i32 i32)))'
        ' (memory (export "memory") 1) (data (i32.const 16) "Hello")'
        ' (func (export "greet") (call $p (i32.const 16) (i32.const 5))))',
        logger=logger,
    )
    spirit.call("greet")
    assert logger.output == "Hello"

Every double satisfies its Protocol (``isinstance(MockLogger(), vudo.Logger)`` holds), records
what it receives in plain lists of tuples (named tuples, so they compare equal to plain ones), is
thread-safe, and never sleeps or touches the network.
"""

from __future__ import annotations

from ._context import FakeHostContext, FakeMemory
from ._mocks import (
    AssertRecord,
    BreakpointHit,
    DebugMessage,
    EffectRecord,
    LogRecord,
    MockDebugHandler,
    MockEffectHandler,
    MockLogger,
    MockRandomProvider,
    MockTimeProvider,
    SubscribeRecord,
)

__all__ = [
    "AssertRecord",
    "BreakpointHit",
    "DebugMessage",
    "EffectRecord",
    "FakeHostContext",
    "FakeMemory",
    "LogRecord",
    "MockDebugHandler",
    "MockEffectHandler",
    "MockLogger",
    "MockRandomProvider",
    "MockTimeProvider",
    "SubscribeRecord",
]
