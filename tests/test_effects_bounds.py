"""Effects cannot make the host hold unbounded memory: a bounded job queue, payloads and
results within the Spirit's ``max_message_size``, DB results capped in bytes."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from effects_helpers import FakeSpirit, emit, run, warnings_of

from vudo import Limits
from vudo._effects import (
    Permissions,
    StandardEffectHandler,
    decode_result,
    encode_db_query,
    encode_fs_write,
    encode_http_post,
    encode_result,
)
from vudo._effects._queue import JobQueue
from vudo.abi import EffectId, ResultCode

OK, ERROR = ResultCode.OK, ResultCode.ERROR


class _Gate:
    """A one-thread executor whose worker is held until :meth:`open` (nothing runs before)."""

    def __init__(self) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1)
        self._event = threading.Event()
        self.executor.submit(self._event.wait, 30)

    def open(self) -> None:
        self._event.set()

    def close(self) -> None:
        self._event.set()
        self.executor.shutdown(wait=True)


@pytest.fixture
def gate() -> Iterator[_Gate]:
    g = _Gate()
    yield g
    g.close()


def test_queue_refuses_jobs_past_max_queued_per_spirit(
    tmp_path: Path, gate: _Gate, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "f").write_bytes(b"x")
    perms = Permissions.allow(fs_root=tmp_path)
    with StandardEffectHandler(perms, executor=gate.executor, max_queued=3) as handler:
        busy, other = FakeSpirit("busy"), FakeSpirit("other")
        codes = [emit(handler, busy, EffectId.FS_READ, b"f") for _ in range(5)]
        assert codes == [OK, OK, OK, ERROR, ERROR]
        assert any("max_queued" in m for m in warnings_of(caplog))
        assert emit(handler, other, EffectId.FS_READ, b"f") == OK  # its own budget
        assert handler.pending == 4
        gate.open()
        assert handler.wait_idle(30)
        assert len(busy.inbox) == 3 and len(other.inbox) == 1
        assert emit(handler, busy, EffectId.FS_READ, b"f") == OK  # room again once drained
        assert handler.wait_idle(30)


def test_queue_refuses_jobs_past_max_queued_bytes(tmp_path: Path, gate: _Gate) -> None:
    perms = Permissions.allow(fs_root=tmp_path, fs_write=True)
    payload = encode_fs_write("f", b"x" * 400)
    with StandardEffectHandler(
        perms, executor=gate.executor, max_queued_bytes=1000
    ) as handler:
        spirits = [FakeSpirit(f"s{i}") for i in range(3)]
        codes = [emit(handler, s, EffectId.FS_WRITE, payload) for s in spirits]
        assert codes == [OK, OK, ERROR]  # the bound is shared by every Spirit
        gate.open()
        assert handler.wait_idle(30)
        assert emit(handler, spirits[2], EffectId.FS_WRITE, payload) == OK
        assert handler.wait_idle(30)


def test_queue_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_queued"):
        StandardEffectHandler(max_queued=0)


@pytest.mark.parametrize(
    ("effect", "payload"),
    [
        (EffectId.HTTP_POST, encode_http_post("http://127.0.0.1:9/", b"b" * 200)),
        (EffectId.FS_WRITE, encode_fs_write("big.txt", b"d" * 200)),
    ],
)
def test_payloads_over_max_message_size_are_refused(
    tmp_path: Path, effect: int, payload: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    perms = Permissions.allow(fs_root=tmp_path, fs_write=True, http_hosts=["127.0.0.1"])
    spirit = FakeSpirit(limits=Limits(max_message_size=100))
    with StandardEffectHandler(perms) as handler:
        assert emit(handler, spirit, effect, payload) == ResultCode.INVALID_ARG
        assert handler.pending == 0
    assert any("exceeds max_message_size 100" in m for m in warnings_of(caplog))
    assert not (tmp_path / "big.txt").exists()


def test_fs_read_result_over_max_message_size_is_an_error_result(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(b"z" * 500)
    spirit = FakeSpirit(limits=Limits(max_message_size=100))
    with StandardEffectHandler(Permissions.allow(fs_root=tmp_path)) as handler:
        rc, result = run(handler, spirit, EffectId.FS_READ, b"big")
    assert rc == OK and result is not None
    assert result[1] == ResultCode.BUFFER_TOO_SMALL and b"max_message_size" in result[2]


def test_any_result_larger_than_the_receiver_allows_becomes_an_error_result() -> None:
    queue = JobQueue(None)
    spirit = FakeSpirit(limits=Limits(max_message_size=64))
    try:
        assert queue.submit(spirit, "effect:300", lambda: encode_result(0, b"r" * 5000), 0) == OK
        assert queue.wait_idle(30)
    finally:
        queue.close()
    sender, payload = spirit.inbox[0]
    assert sender == "effect:300" and len(payload) <= 64
    status, body = decode_result(payload)
    assert status == ResultCode.BUFFER_TOO_SMALL and body.startswith(b"result of 5004 bytes")


def _db_status(spirit: FakeSpirit, perms: Permissions, sql: str) -> tuple[int, bytes]:
    with StandardEffectHandler(perms) as handler:
        rc, result = run(handler, spirit, EffectId.DB_QUERY, encode_db_query(sql))
    assert rc == OK and result is not None and result[0] == "effect:DB_QUERY"
    return result[1], result[2]


def test_a_huge_value_is_refused_before_sqlite_builds_it() -> None:
    perms = Permissions.allow(database=":memory:", db_max_rows=1)
    status, body = _db_status(FakeSpirit(), perms, "SELECT zeroblob(200000000)")
    assert status == ResultCode.BUFFER_TOO_SMALL
    assert b"db_max_result_bytes" in body


def test_many_rows_over_db_max_result_bytes_are_refused() -> None:
    perms = Permissions.allow(database=":memory:", db_max_result_bytes=10_000)
    sql = (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 900) "
        "SELECT printf('%020d', x) FROM c"
    )
    status, body = _db_status(FakeSpirit(), perms, sql)
    assert status == ResultCode.BUFFER_TOO_SMALL and b"10000 bytes" in body
    status, body = _db_status(FakeSpirit(), perms, sql.replace("900", "100"))
    assert status == 0 and len(json.loads(body)["rows"]) == 100 and len(body) <= 10_000


def test_db_result_over_the_receivers_max_message_size_is_an_error_result() -> None:
    spirit = FakeSpirit(limits=Limits(max_message_size=1000))
    perms = Permissions.allow(database=":memory:")
    status, body = _db_status(spirit, perms, "SELECT randomblob(2000)")
    assert status == ResultCode.BUFFER_TOO_SMALL and b"max_message_size" in body
    status, body = _db_status(spirit, perms, "SELECT 'small'")
    assert status == 0 and json.loads(body)["rows"] == [["small"]]


def test_db_max_result_bytes_is_validated() -> None:
    for bad in (0, -1, 2_000_000_000):
        with pytest.raises(ValueError, match="db_max_result_bytes"):
            Permissions(db_max_result_bytes=bad)
