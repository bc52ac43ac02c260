"""How an effect's checks and jobs report what went wrong, and the ``vudo.effects`` logger."""

from __future__ import annotations

import logging

from ..abi import EffectId, ResultCode

__all__ = ["Failed", "Invalid", "Refused", "label", "log"]

#: Every effect module logs here, so one logger shows refusals, failures and (DEBUG) traffic.
log = logging.getLogger("vudo.effects")


class Refused(Exception):
    """A permission check failed: the effect returns NOT_PERMITTED."""


class Invalid(Exception):
    """The payload is malformed: the effect returns INVALID_ARG."""


class Failed(Exception):
    """The effect failed: deliver ``status`` with ``message`` as the body."""

    def __init__(self, status: ResultCode, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def label(effect_id: int) -> str:
    """``FS_READ (10)`` for a standard id, ``custom (300)`` otherwise (for log lines)."""
    try:
        return f"{EffectId(effect_id).name} ({effect_id})"
    except ValueError:
        return f"custom ({effect_id})"
