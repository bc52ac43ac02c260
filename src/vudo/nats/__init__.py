"""Distributed messaging over NATS JetStream: :class:`NatsBroker`.

Spirits of one session may run in several processes on several machines; every process gives its
:class:`~vudo.seance.Seance` a ``NatsBroker`` for the same ``url`` and ``session`` and the Spirits
message each other by name as they would through the in-process :class:`~vudo.broker.MessageBus`.
``docs/distributed.md`` states the delivery contract and the layout on the server.

Importing this package imports nats-py lazily (on the first connection); ``import vudo`` never
imports it.
"""

from __future__ import annotations

from ..errors import BrokerUnavailable
from ._broker import NatsBroker
from ._wire import name_token

__all__ = ["BrokerUnavailable", "NatsBroker", "name_token"]
