"""Channel names and subscription patterns.

A pattern is a channel name or a prefix followed by one ``*``: ``"*"`` matches every channel,
``"sensor.*"`` every channel whose name starts with ``"sensor."``. A ``*`` anywhere but at the
end is not allowed, so a name without a trailing ``*`` is always taken literally.
"""

from __future__ import annotations

__all__ = ["check_channel", "check_pattern", "covers", "is_pattern", "matches"]


def is_pattern(pattern: str) -> bool:
    """Whether ``pattern`` ends in the wildcard ``*`` (and so is not a plain channel name)."""
    return pattern.endswith("*")


def check_pattern(pattern: str) -> str | None:
    """Why ``pattern`` is not a valid subscription pattern, or ``None`` when it is."""
    if not pattern:
        return "empty channel name"
    if "*" in pattern[:-1]:
        return f"'*' is only allowed at the end of a channel pattern: {pattern!r}"
    return None


def check_channel(channel: str) -> str | None:
    """Why ``channel`` cannot be a channel name (empty or with a ``*``), or ``None``."""
    if not channel:
        return "empty channel name"
    if "*" in channel:
        return f"a channel name cannot contain '*': {channel!r}"
    return None


def matches(pattern: str, channel: str) -> bool:
    """Whether the (valid) ``pattern`` matches the channel name ``channel``."""
    if is_pattern(pattern):
        return channel.startswith(pattern[:-1])
    return pattern == channel


def covers(grant: str, pattern: str) -> bool:
    """Whether every channel ``pattern`` can match is also matched by ``grant``."""
    if not is_pattern(pattern):
        return matches(grant, pattern)
    return is_pattern(grant) and pattern[:-1].startswith(grant[:-1])
