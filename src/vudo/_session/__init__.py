"""Sessions: :class:`Seance` and :class:`AsyncSeance`, sharing a message broker, and SPAWN."""

from __future__ import annotations

from .aseance import AsyncSeance
from .seance import Seance, SeanceOptions, SpiritStats
from .spawn import SeanceFull

__all__ = ["AsyncSeance", "Seance", "SeanceFull", "SeanceOptions", "SpiritStats"]
