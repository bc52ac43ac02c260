"""Channel names and subscription patterns.

A subscription that ends in ``*`` is a pattern: ``"*"`` matches every channel, ``"sensor.*"``
every channel whose name starts with ``"sensor."``. Only the final ``*`` is special; any other
``*`` is an ordinary character. Channel names are not restricted (they were not before
patterns existed), so a registered channel whose name is exactly the subscription text wins:
subscribing to ``"a*"`` when a channel ``"a*"`` is registered joins that channel.
"""

from __future__ import annotations

__all__ = ["covers", "is_pattern", "matches"]


def is_pattern(pattern: str) -> bool:
    """Whether ``pattern`` ends in the wildcard ``*``."""
    return pattern.endswith("*")


def matches(pattern: str, channel: str) -> bool:
    """Whether ``pattern`` (a name, or a prefix and ``*``) matches the channel ``channel``."""
    return pattern == channel or (is_pattern(pattern) and channel.startswith(pattern[:-1]))


def covers(grant: str, pattern: str) -> bool:
    """Whether every channel ``pattern`` can match is also matched by ``grant``."""
    if grant == pattern or not is_pattern(pattern):
        return matches(grant, pattern)
    return is_pattern(grant) and pattern[:-1].startswith(grant[:-1])
