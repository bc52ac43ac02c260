"""Channel subscriptions: names, wildcard patterns (``"*"``, ``"sensor.*"``), unsubscribing,
permission checks on patterns, and DEBUG logs of accepted effects and subscriptions."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from effects_helpers import FakeSpirit, emit
from seance_helpers import MESSENGER, NAME_AT, put, wasm_take

import vudo
from vudo._effects import DefaultEffectHandler, Permissions, StandardEffectHandler
from vudo.abi import EffectId, ResultCode

OK = ResultCode.OK
CHANNELS = ("sensor.temp", "sensor.hum", "sensors", "door")


def _sub(handler: DefaultEffectHandler, spirit: FakeSpirit, channel: str) -> int:
    target: Any = spirit
    return handler.subscribe(target, channel)


def _unsub(handler: DefaultEffectHandler, spirit: FakeSpirit, channel: str | None = None) -> int:
    target: Any = spirit
    return handler.unsubscribe(target, channel)


def _handler(*, standard: bool = False) -> DefaultEffectHandler:
    handler = StandardEffectHandler() if standard else DefaultEffectHandler()
    for channel in CHANNELS:
        handler.register_channel(channel)
    return handler


def _received(handler: DefaultEffectHandler, spirit: FakeSpirit) -> list[str]:
    for channel in CHANNELS:
        handler.notify(channel, channel.encode())
    got = [sender for sender, _ in spirit.inbox]
    spirit.inbox.clear()
    return got


@pytest.mark.parametrize("standard", [False, True])
@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("*", ["channel:" + c for c in CHANNELS]),
        ("sensor.*", ["channel:sensor.temp", "channel:sensor.hum"]),
        ("sensor*", ["channel:sensor.temp", "channel:sensor.hum", "channel:sensors"]),
        ("door", ["channel:door"]),
    ],
)
def test_patterns_match_registered_channels(
    standard: bool, pattern: str, expected: list[str]
) -> None:
    handler = _handler(standard=standard)
    spirit = FakeSpirit()
    assert _sub(handler, spirit, pattern) == OK
    assert _received(handler, spirit) == expected


def test_a_pattern_also_matches_channels_registered_later() -> None:
    handler = _handler()
    spirit = FakeSpirit()
    assert _sub(handler, spirit, "sensor.*") == OK
    assert handler.notify("sensor.wind", b"w") == 0  # not registered: nobody gets it
    handler.register_channel("sensor.wind")
    assert handler.notify("sensor.wind", b"w") == 1
    assert spirit.inbox == [("channel:sensor.wind", b"w")]


def test_overlapping_subscriptions_deliver_once() -> None:
    handler = _handler()
    spirit = FakeSpirit()
    for pattern in ("*", "sensor.*", "sensor.temp", "sensor.*"):
        assert _sub(handler, spirit, pattern) == OK
    assert handler.notify("sensor.temp", b"21") == 1
    assert spirit.inbox == [("channel:sensor.temp", b"21")]


def test_only_a_final_star_is_a_wildcard_and_registered_names_win() -> None:
    handler = _handler()
    for name in ("a*b", "x*", ""):  # channel names are not restricted
        handler.register_channel(name)
    literal, wild, other = FakeSpirit("literal"), FakeSpirit("wild"), FakeSpirit("other")
    assert _sub(handler, literal, "a*b") == OK  # the registered name, not a pattern
    assert _sub(handler, wild, "x*") == OK  # registered: joins channel "x*" itself
    assert _sub(handler, other, "a*") == OK  # unregistered: the pattern "a*"
    assert _sub(handler, other, "nope") == ResultCode.NOT_FOUND
    handler.register_channel("xy")
    handler.register_channel("ab")
    assert handler.notify("a*b", b"1") == 2  # literal and (via the pattern "a*") other
    assert handler.notify("xy", b"2") == 0  # "x*" was joined as a name, not as a pattern
    assert handler.notify("ab", b"3") == 1
    assert [m for m, _ in other.inbox] == ["channel:a*b", "channel:ab"]


def test_unsubscribe_one_pattern_or_everything() -> None:
    handler = _handler()
    spirit = FakeSpirit()
    for pattern in ("sensor.*", "door"):
        assert _sub(handler, spirit, pattern) == OK
    assert _unsub(handler, spirit, "sensor.*") == OK
    assert _received(handler, spirit) == ["channel:door"]
    assert _unsub(handler, spirit, "sensor.*") == ResultCode.NOT_FOUND  # already gone
    assert _unsub(handler, spirit, "sensor.temp") == ResultCode.NOT_FOUND  # never by name
    assert _sub(handler, spirit, "*") == OK
    assert _unsub(handler, spirit) == OK
    assert _received(handler, spirit) == []
    assert _unsub(handler, spirit) == ResultCode.NOT_FOUND
    assert handler.subscribers("door") == []


def test_terminated_spirits_are_forgotten_by_patterns_too() -> None:
    handler = _handler()
    spirit = FakeSpirit()
    assert _sub(handler, spirit, "*") == OK
    spirit.terminated = True
    assert handler.subscribers("door") == []
    assert _unsub(handler, spirit) == ResultCode.NOT_FOUND  # nothing kept for it


@pytest.mark.parametrize(
    ("grants", "pattern", "code"),
    [
        (["sensor.*"], "sensor.temp", OK),
        (["sensor.*"], "sensor.*", OK),
        (["sensor.*"], "sensor.t*", OK),
        (["sensor.*"], "*", ResultCode.NOT_PERMITTED),
        (["sensor.*"], "sensor*", ResultCode.NOT_PERMITTED),  # would also match "sensors"
        (["sensor.*"], "door", ResultCode.NOT_PERMITTED),
        (["sensor.temp", "sensor.hum"], "sensor.*", ResultCode.NOT_PERMITTED),
        (["*"], "*", OK),
        (["door"], "door", OK),
    ],
)
def test_pattern_subscriptions_need_a_grant_that_covers_them(
    grants: list[str], pattern: str, code: int, caplog: pytest.LogCaptureFixture
) -> None:
    handler = _handler(standard=True)
    spirit = FakeSpirit(permissions=Permissions.allow(channels=grants))
    assert _sub(handler, spirit, pattern) == code
    if code != OK:
        assert any("refused subscription" in r.getMessage() for r in caplog.records)


def test_permissions_match_channels_against_granted_patterns() -> None:
    perms = Permissions.allow(channels=["sensor.*", "door"])
    assert perms.allows_channel("sensor.temp") and perms.allows_channel("door")
    assert not perms.allows_channel("sensors") and not perms.allows_channel("doors")
    assert Permissions().allows_subscription("*")  # channels=None: any registered channel
    literal = Permissions.allow(channels=["a*b"])  # no final star: an ordinary name
    assert literal.allows_channel("a*b") and not literal.allows_channel("axb")


def test_deliveries_follow_the_current_grants() -> None:
    handler = _handler(standard=True)
    spirit = FakeSpirit()
    assert _sub(handler, spirit, "*") == OK
    spirit.permissions = Permissions.allow(channels=["door"])  # narrowed after subscribing
    assert _received(handler, spirit) == ["channel:door"]


def test_debug_logs_accepted_effects_and_subscriptions(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="vudo.effects")
    (tmp_path / "f").write_bytes(b"x")
    with StandardEffectHandler(Permissions.allow(fs_root=tmp_path)) as handler:
        handler.register_channel("door")
        spirit = FakeSpirit("watcher")
        assert emit(handler, spirit, EffectId.FS_READ, b"f") == OK
        assert emit(handler, spirit, EffectId.NOOP, b"") == OK
        assert emit(handler, spirit, EffectId.HTTP_GET, b"http://x/") == ResultCode.NOT_PERMITTED
        assert _sub(handler, spirit, "do*") == OK
        assert _unsub(handler, spirit, "do*") == OK
        assert handler.wait_idle(30)
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert "Spirit 'watcher': effect FS_READ (10) accepted (1 bytes)" in debug
    assert "Spirit 'watcher': effect NOOP (0) accepted (0 bytes)" in debug
    assert not any("HTTP_GET" in m for m in debug)  # refusals are warnings, not "accepted"
    assert "Spirit 'watcher' subscribed to channel 'do*'" in debug
    assert "Spirit 'watcher' unsubscribed from channel 'do*'" in debug


def test_a_spirit_subscribes_with_a_wildcard_through_vudo_subscribe() -> None:
    with vudo.Seance(channels=["sensor.temp", "sensor.hum", "door"]) as s:
        fan = s.summon("fan", MESSENGER)
        narrow = s.summon("narrow", MESSENGER, permissions=Permissions.allow(channels=["door"]))
        for spirit in (fan, narrow):
            put(spirit, NAME_AT, "sensor.*")
        assert s.invoke("fan", "subscribe", NAME_AT, 8) == OK
        assert s.invoke("narrow", "subscribe", NAME_AT, 8) == ResultCode.NOT_PERMITTED
        assert s.publish("sensor.temp", b"21") == 1
        assert s.publish("door", b"open") == 0
        assert wasm_take(fan) == ("channel:sensor.temp", b"21")
        assert wasm_take(fan) is None
