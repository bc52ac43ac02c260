"""DB_QUERY hardening: SQL functions are allow-listed, results are bounded in bytes."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from effects_helpers import FakeSpirit, run, warnings_of

from vudo._effects import Permissions, StandardEffectHandler, encode_db_query
from vudo.abi import EffectId, ResultCode


@pytest.fixture
def db_file(tmp_path: Path) -> Path:
    path = tmp_path / "data.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript(
            """
            CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT);
            INSERT INTO t (body) VALUES ('a'), ('b');
            CREATE VIEW leak AS SELECT fts3_tokenizer('simple') AS p;
            """
        )
    return path


def _query(
    handler: StandardEffectHandler, spirit: FakeSpirit, sql: str, params: Any = None
) -> tuple[int, Any]:
    rc, result = run(handler, spirit, EffectId.DB_QUERY, encode_db_query(sql, params))
    assert rc == ResultCode.OK and result is not None and result[0] == "effect:DB_QUERY"
    status, body = result[1], result[2]
    return status, json.loads(body) if status == 0 else body.decode()


@pytest.mark.parametrize("write", [False, True])
@pytest.mark.parametrize(
    "sql",
    [
        "SELECT fts3_tokenizer('simple')",
        "SELECT FTS3_TOKENIZER('porter')",
        "SELECT load_extension('/tmp/evil.so')",
        "SELECT sqlite_compileoption_get(0)",
        "SELECT count(*) FROM t WHERE fts3_tokenizer('simple') IS NOT NULL",
    ],
)
def test_functions_outside_the_allow_list_are_refused(
    db_file: Path, sql: str, write: bool, caplog: pytest.LogCaptureFixture
) -> None:
    with StandardEffectHandler(Permissions.allow(database=db_file, db_write=write)) as handler:
        status, message = _query(handler, FakeSpirit(), sql)
    assert status == ResultCode.NOT_PERMITTED
    assert "FUNCTION" in message
    assert any("SQL not permitted" in m and "FUNCTION" in m for m in warnings_of(caplog))


def test_a_view_cannot_smuggle_a_pointer_function(db_file: Path) -> None:
    # SQLite refuses fts3_tokenizer in schema objects itself (it is direct-only); whichever
    # layer refuses, the function never runs.
    with StandardEffectHandler(Permissions.allow(database=db_file)) as handler:
        status, message = _query(handler, FakeSpirit(), "SELECT p FROM leak")
    assert status in (ResultCode.NOT_PERMITTED, ResultCode.ERROR)
    assert "fts3_tokenizer" in message or "FUNCTION" in message


def test_ordinary_functions_still_work(db_file: Path) -> None:
    sql = (
        "SELECT count(*), group_concat(body, ','), max(id), abs(-2), lower('A'), "
        "substr('abc', 2), coalesce(NULL, 1), printf('%d', 7), json_extract('{\"a\": 3}', '$.a'), "
        "'{\"a\": 4}' ->> 'a', round(2.5), date('2020-01-02'), length(zeroblob(3)), "
        "typeof(1.5), hex('a'), iif(1, 'y', 'n') FROM t"
    )
    with StandardEffectHandler(Permissions.allow(database=db_file)) as handler:
        status, result = _query(handler, FakeSpirit(), sql)
        assert status == 0, result
        assert result["rows"] == [
            [2, "a,b", 2, 2, "a", "bc", 1, "7", 3, 4, 3.0, "2020-01-02", 3, "real", "61", "y"]
        ]
        status, result = _query(
            handler, FakeSpirit(), "SELECT id, row_number() OVER (ORDER BY id DESC) FROM t"
        )
        assert status == 0 and result["rows"] == [[2, 1], [1, 2]]
