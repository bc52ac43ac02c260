"""Shared doubles for the effect tests: a Spirit as the effect handler sees it."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from vudo import Limits
from vudo._effects import Permissions, StandardEffectHandler, decode_result


class FakeSpirit:
    """The members of a Spirit the effect handler uses (``EffectTarget`` plus the optional
    ``permissions`` and ``limits``)."""

    def __init__(
        self,
        name: str = "sprite",
        permissions: Permissions | None = None,
        limits: Limits | None = None,
        capacity: int = 1000,
    ) -> None:
        self.name = name
        self.permissions = permissions
        self.limits = limits if limits is not None else Limits(max_message_size=None)
        self.capacity = capacity
        self.inbox: list[tuple[str, bytes]] = []
        self.terminated = False
        self.cause: str | None = None
        self._lock = threading.Lock()

    def deliver(self, from_: str, payload: bytes) -> bool:
        with self._lock:
            if self.terminated or len(self.inbox) >= self.capacity:
                return False
            self.inbox.append((from_, payload))
            return True

    def terminate(self, cause: str) -> None:
        self.terminated = True
        self.cause = cause

    def take(self) -> tuple[str, int, bytes]:
        """The oldest message as (sender, status, body)."""
        with self._lock:
            sender, payload = self.inbox.pop(0)
        status, body = decode_result(payload)
        return sender, status, body


def emit(handler: StandardEffectHandler, spirit: FakeSpirit, effect: int, payload: bytes) -> int:
    target: Any = spirit  # structurally an EffectTarget
    return handler.emit(target, effect, payload)


def run(
    handler: StandardEffectHandler, spirit: FakeSpirit, effect: int, payload: bytes
) -> tuple[int, tuple[str, int, bytes] | None]:
    """Emit, wait for the result, return (return code, result message or None)."""
    rc = emit(handler, spirit, effect, payload)
    assert handler.wait_idle(30)
    return rc, (spirit.take() if spirit.inbox else None)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The WARNING messages logged on ``vudo.effects``."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "vudo.effects" and r.levelno == logging.WARNING
    ]
