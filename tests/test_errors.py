"""``classify``: every code in its tables, by the drivers' own exceptions (real server errors for
PostgreSQL, whose SQLSTATE only a server can set), Peewee-wrapped and bare."""

from __future__ import annotations

from typing import Any

import peewee
import psycopg2
import pymysql
import pytest

from peewee_serverless import errors
from peewee_serverless.errors import ErrorKind, classify

from .conftest import PG_ADMIN, SERVER_BACKENDS, TEST_DB


def _wrapped(exc: BaseException) -> BaseException:
    """``exc`` as Peewee hands it to us (its own class, the driver error as context)."""
    try:
        with peewee.__exception_wrapper__:
            raise exc
    except peewee.PeeweeException as wrapped:
        return wrapped
    raise AssertionError("Peewee did not wrap the driver error")


@pytest.mark.parametrize("code", sorted(errors.mysql_codes()))
def test_every_mysql_code_is_classified_as_its_table_says(code: int) -> None:
    expected = errors.mysql_codes()[code]
    # PyMySQL's own class for the code, as its error packet parser would pick it.
    cls: Any = pymysql.err.error_map.get(code, pymysql.err.OperationalError)
    exc = cls(code, "message")
    assert classify(exc) is expected
    assert classify(_wrapped(exc)) is expected


def test_mysql_tables_use_the_drivers_names() -> None:
    from pymysql.constants import CR, ER

    table = errors.mysql_codes()
    assert table[CR.CR_SERVER_GONE_ERROR] is ErrorKind.CONNECTION_DEAD
    assert table[CR.CR_SERVER_LOST] is ErrorKind.CONNECTION_LOST
    assert table[ER.OPTION_PREVENTS_STATEMENT] is ErrorKind.SERVER_READ_ONLY
    assert table[ER.CON_COUNT_ERROR] is ErrorKind.CONNECTION_LIMIT
    assert classify(pymysql.err.OperationalError(ER.LOCK_WAIT_TIMEOUT, "x")) is ErrorKind.OTHER


@pytest.fixture(scope="module")
def pg() -> Any:
    if "postgres" not in SERVER_BACKENDS:
        pytest.skip("postgres not selected")  # the backend fixture fails loudly elsewhere
    conn = psycopg2.connect(dbname=TEST_DB, **PG_ADMIN)
    conn.autocommit = True
    yield conn
    conn.close()


@pytest.mark.parametrize("sqlstate", sorted(errors.pg_codes()) + ["08006"])
def test_every_postgres_sqlstate_is_classified_as_its_table_says(pg: Any, sqlstate: str) -> None:
    expected = errors.pg_codes().get(sqlstate) or errors._PG_CLASSES[sqlstate[:2]]
    with pg.cursor() as cur, pytest.raises(psycopg2.Error) as raised:
        cur.execute(f"DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '{sqlstate}'; END $$")
    assert raised.value.pgcode == sqlstate
    assert classify(raised.value) is expected
    assert classify(_wrapped(raised.value)) is expected


def test_postgres_names_come_from_errorcodes() -> None:
    from psycopg2 import errorcodes

    table = errors.pg_codes()
    assert table[errorcodes.CANNOT_CONNECT_NOW] is ErrorKind.SERVER_UNAVAILABLE
    assert table[errorcodes.READ_ONLY_SQL_TRANSACTION] is ErrorKind.SERVER_READ_ONLY
    assert table[errorcodes.DISK_FULL] is ErrorKind.SERVER_READ_ONLY


@pytest.mark.parametrize(
    ("fragment", "expected"),
    [
        (fragment, kind)
        for kind, fragments in errors._PG_FRAGMENTS.items()
        for fragment in fragments
    ],
)
def test_every_postgres_message_without_sqlstate_is_classified(
    fragment: str, expected: ErrorKind
) -> None:
    # libpq's connect failures and dropped sockets carry no SQLSTATE: only the text.
    exc = psycopg2.OperationalError(f"connection to server failed: FATAL:  {fragment}\n")
    assert exc.pgcode is None
    assert classify(exc) is expected
    assert classify(_wrapped(exc)) is expected


@pytest.mark.parametrize(
    "message",
    [
        "the database system is not yet accepting connections",
        "the database system is starting up",
        "the database system is shutting down",
    ],
)
def test_postgres_recovery_is_unavailable_not_a_500(message: str) -> None:
    assert classify(psycopg2.OperationalError(message)) is ErrorKind.SERVER_UNAVAILABLE


def test_sqlite_unique_violation() -> None:
    import sqlite3

    exc = sqlite3.IntegrityError("UNIQUE constraint failed: t.x")
    assert classify(_wrapped(exc)) is ErrorKind.UNIQUE_VIOLATION
    assert classify(ValueError("unrelated")) is ErrorKind.OTHER
