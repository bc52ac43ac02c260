"""DB_QUERY: SQL on the granted SQLite database, under an authorizer.

This module is the only one that imports sqlite3; the standard handler imports it on the first
DB effect, so ``import vudo`` does not pay for it.

What a query may do is decided by the authorizer at prepare time (views and triggers included):
reads only, or (``db_write``) anything but attaching files and transactions; in both cases only
the SQL functions in ``ALLOWED_FUNCTIONS`` may be called, because some built-in functions
(``fts3_tokenizer``, ``load_extension``, ``fts5``) hand out or take raw pointers. Result size is
bounded by SQLite itself (``SQLITE_LIMIT_LENGTH``: no string, blob or row larger than the cap
is ever built) and by counting the JSON body while rows are fetched.
"""

from __future__ import annotations

import base64
import json
import math
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .._config.permissions import Permissions
from ..abi import EffectId, ResultCode
from ._outcome import Failed, Invalid, Refused, label, log
from ._queue import Job
from ._wire import encode_result

__all__ = ["ALLOWED_FUNCTIONS", "Databases", "db_query"]

# Ordinary scalar, aggregate, window, date/time, math and JSON functions of SQLite 3.35-3.47.
# Anything else (fts3_tokenizer, load_extension, fts5, sqlite_* internals, functions added by
# extensions) is denied. Names are compared in lower case.
ALLOWED_FUNCTIONS = frozenset(
    """
    abs char coalesce concat concat_ws format glob hex ifnull iif instr last_insert_rowid
    length like likelihood likely lower ltrim max min nullif octet_length printf quote random
    randomblob replace round rtrim sign soundex substr substring trim typeof unhex unicode
    unlikely upper zeroblob changes total_changes
    avg count group_concat string_agg sum total
    row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value last_value
    nth_value
    date time datetime julianday unixepoch strftime timediff
    acos acosh asin asinh atan atan2 atanh ceil ceiling cos cosh degrees exp floor ln log
    log10 log2 mod pi pow power radians sin sinh sqrt tan tanh trunc
    json json_array json_array_length json_error_position json_extract json_insert
    json_object json_patch json_pretty json_remove json_replace json_set json_type json_valid
    json_quote json_group_array json_group_object jsonb jsonb_array jsonb_extract jsonb_insert
    jsonb_object jsonb_patch jsonb_remove jsonb_replace jsonb_set jsonb_group_array
    jsonb_group_object -> ->>
    """.split()
)

# Pragmas a Spirit may run: schema introspection with any argument; the rest only as reads.
_INTROSPECTION_PRAGMAS = frozenset(
    {
        "table_info",
        "table_xinfo",
        "table_list",
        "index_list",
        "index_info",
        "index_xinfo",
        "foreign_key_list",
    }
)
_READ_PRAGMAS = frozenset(
    {
        "user_version",
        "application_id",
        "page_count",
        "page_size",
        "freelist_count",
        "encoding",
        "data_version",
    }
)
_READ_ACTIONS = frozenset(
    {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
)
# Denied even with db_write: ATTACH/DETACH (and VACUUM INTO, which attaches) reach other files;
# transactions could leave the shared connection locked between effects.
_NEVER_ACTIONS = frozenset(
    {
        sqlite3.SQLITE_ATTACH,
        sqlite3.SQLITE_DETACH,
        sqlite3.SQLITE_TRANSACTION,
        sqlite3.SQLITE_SAVEPOINT,
    }
)
_ACTION_NAMES = {
    getattr(sqlite3, n): n.removeprefix("SQLITE_")
    for n in dir(sqlite3)
    if n.startswith("SQLITE_")
    and n not in ("SQLITE_OK", "SQLITE_DENY", "SQLITE_IGNORE")
    and isinstance(getattr(sqlite3, n), int)
}
_SQLITE_TOOBIG = 18  # the primary result code of "string or blob too big"


def _authorizer(write: bool, denied: list[str]) -> Callable[..., int]:
    """An SQLite authorizer: reads only, or (``write``) anything but the ``_NEVER_ACTIONS``;
    SQL functions only from ``ALLOWED_FUNCTIONS`` either way."""

    def authorize(
        action: int, arg1: str | None, arg2: str | None, _db: str | None, _src: str | None
    ) -> int:
        if action == sqlite3.SQLITE_PRAGMA:
            name = (arg1 or "").lower()
            ok = name in _INTROSPECTION_PRAGMAS or (name in _READ_PRAGMAS and arg2 is None)
            ok = ok or (write and name == "user_version")
        elif action == sqlite3.SQLITE_FUNCTION:
            ok = (arg2 or "").lower() in ALLOWED_FUNCTIONS
            if not ok:
                denied.append(f"FUNCTION {arg2}")
                return sqlite3.SQLITE_DENY
        elif write:
            ok = action not in _NEVER_ACTIONS
        else:
            ok = action in _READ_ACTIONS
        if ok:
            return sqlite3.SQLITE_OK
        denied.append(_ACTION_NAMES.get(action, str(action)) + (f" {arg1}" if arg1 else ""))
        return sqlite3.SQLITE_DENY

    return authorize


class _Database:
    """One shared SQLite connection; queries are serialised by ``lock``."""

    def __init__(self, database: str) -> None:
        self.lock = threading.Lock()
        # isolation_level=None: autocommit, so every DB_QUERY is its own transaction.
        self.conn = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
        # Builds without extension support lack the method; either way no extension loads.
        disable = getattr(self.conn, "enable_load_extension", None)
        if disable is not None:
            disable(False)


class Databases:
    """The connections of one handler, opened on first use and closed together."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[str, _Database] = {}

    def get(self, database: str) -> _Database:
        """The shared connection to ``database``, opened on first use."""
        key = database if database == ":memory:" else str(Path(database).resolve())
        with self._lock:
            db = self._open.get(key)
            if db is None:
                try:
                    db = self._open[key] = _Database(key)
                except sqlite3.Error as exc:
                    raise Failed(ResultCode.ERROR, f"cannot open database: {exc}") from None
            return db

    def close(self) -> None:
        """Close every connection (waiting for a query that is running)."""
        with self._lock:
            databases, self._open = list(self._open.values()), {}
        for db in databases:
            with db.lock:
                db.conn.close()


def db_query(
    perms: Permissions, payload: bytes, databases: Databases, name: str, message_cap: int | None
) -> Job:
    """Check a DB_QUERY payload and return the job running it for the Spirit ``name``."""
    if perms.database is None:
        raise Refused("no database granted")
    raw_sql, sep, raw_params = payload.partition(b"\x00")
    try:
        sql = raw_sql.decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid("SQL is not UTF-8") from None
    if not sql.strip():
        raise Invalid("empty SQL")
    params: list[object] | dict[str, object] = []
    if sep and raw_params.strip():
        try:
            decoded = json.loads(raw_params)
        except (UnicodeDecodeError, ValueError) as exc:
            raise Invalid(f"parameters are not JSON: {exc}") from None
        if isinstance(decoded, list):
            params = [_sql_param(v) for v in decoded]
        elif isinstance(decoded, dict):
            params = {str(k): _sql_param(v) for k, v in decoded.items()}
        else:
            raise Invalid("parameters must be a JSON array or object")
    database = str(perms.database)
    write, max_rows, timeout = perms.db_write, perms.db_max_rows, perms.db_timeout
    cap, what = perms.db_max_result_bytes, "db_max_result_bytes"
    if message_cap is not None and message_cap - 4 < cap:
        cap, what = max(message_cap - 4, 1), "max_message_size"
    too_big = Failed(ResultCode.BUFFER_TOO_SMALL, f"query result exceeds {what} ({cap} bytes)")

    def job() -> bytes:
        db = databases.get(database)
        denied: list[str] = []
        deadline = time.monotonic() + timeout
        with db.lock:
            conn = db.conn
            try:
                conn.execute(f"PRAGMA busy_timeout = {max(1, int(timeout * 1000))}")
                # query_only backs up the authorizer for read-only Spirits.
                conn.execute(f"PRAGMA query_only = {0 if write else 1}")
                # SQLite itself refuses to build a string, blob or row over the cap.
                conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, cap)
                conn.set_authorizer(_authorizer(write, denied))
                conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 1000)
                cursor = conn.execute(sql, params)
                try:
                    columns = [d[0] for d in cursor.description or ()]
                    rows, truncated = _fetch(cursor, max_rows, cap - len(json.dumps(columns)))
                    if rows is None:
                        raise too_big
                    changes = max(cursor.rowcount, 0)
                    # lastrowid is per connection: only report it for this statement's rows.
                    last_row_id = cursor.lastrowid if changes else None
                finally:
                    cursor.close()
            except sqlite3.Error as exc:
                if denied:
                    log.warning(
                        "Spirit %r refused effect %s: SQL not permitted (%s)",
                        name,
                        label(EffectId.DB_QUERY),
                        ", ".join(denied),
                    )
                    raise Failed(
                        ResultCode.NOT_PERMITTED, f"not permitted: {', '.join(denied)}"
                    ) from None
                if getattr(exc, "sqlite_errorcode", None) == _SQLITE_TOOBIG:
                    raise too_big from None
                if time.monotonic() > deadline:
                    raise Failed(ResultCode.TIMEOUT, f"query took over {timeout}s") from None
                raise Failed(ResultCode.ERROR, f"SQL error: {exc}") from None
            finally:
                conn.set_authorizer(None)
                conn.set_progress_handler(None, 0)
        head = {"columns": columns}
        tail = {"truncated": truncated, "changes": changes, "last_row_id": last_row_id}
        body = (
            json.dumps(head)[:-1] + ', "rows": [' + ", ".join(rows) + "], " + json.dumps(tail)[1:]
        ).encode("utf-8")
        if len(body) > cap:
            raise too_big
        return encode_result(ResultCode.OK, body)

    return job


def _fetch(cursor: sqlite3.Cursor, max_rows: int, budget: int) -> tuple[list[str] | None, bool]:
    """Up to ``max_rows`` rows as JSON arrays and whether more were left; ``None`` for the rows
    once their JSON exceeds ``budget`` characters (fetching stops there)."""
    rows: list[str] = []
    used = 0
    while len(rows) < max_rows:
        row = cursor.fetchone()
        if row is None:
            return rows, False
        text = json.dumps([_json_value(v) for v in row])
        used += len(text) + 2
        if used > budget:
            return None, False
        rows.append(text)
    return rows, cursor.fetchone() is not None


def _json_value(value: object) -> object:
    if isinstance(value, bytes):
        return {"blob": base64.b64encode(value).decode("ascii")}
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def _sql_param(value: object) -> object:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict) and set(value) == {"blob"} and isinstance(value["blob"], str):
        try:
            return base64.b64decode(value["blob"], validate=True)
        except ValueError as exc:
            raise Invalid(f"bad base64 in blob parameter: {exc}") from None
    raise Invalid(f"unsupported SQL parameter {value!r}")
