"""The serverless database on real servers: lazy connect, warm reuse, dead connections."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import peewee
import pytest

from peewee_serverless import ConnectionLost, database_lifecycle
from peewee_serverless.local.context import LambdaContext

from .conftest import EXAMPLE_MIGRATIONS, ROOT, Backend


class RecordingLogger:
    """Collects the lifecycle's structured ``db`` records."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def info(self, msg: str, extra: dict[str, Any] | None = None) -> None:
        self.records.append((extra or {})["db"])


def select_one_handler(db: Any) -> tuple[Callable[[Any, Any], Any], RecordingLogger]:
    """A handler under ``database_lifecycle(db)`` that runs ``SELECT 1``, and its records."""
    log = RecordingLogger()

    @database_lifecycle(db, logger=log)
    def handler(event: Any, context: Any) -> Any:
        return db.execute_sql("SELECT 1").fetchone()[0]

    return handler, log


class Note(peewee.Model):
    body = peewee.CharField(max_length=50)


def _bind(db: Any) -> None:
    Note.bind(db)
    db.create_tables([Note])


def note_handler(
    db: Any, answer: Callable[[], Any]
) -> tuple[Callable[[Any, Any], Any], RecordingLogger]:
    """``Note`` on ``db`` and a handler under ``database_lifecycle(db)`` that inserts the event's
    ``body`` in a transaction (and, when the event has ``fail``, raises in it after the write)
    and returns ``answer()``; and its records."""
    _bind(db)
    log = RecordingLogger()

    @database_lifecycle(db, logger=log)
    def handler(event: Any, context: Any) -> Any:
        with db.atomic():
            Note.create(body=event["body"])
            if event.get("fail"):
                raise RuntimeError("boom after a write")
        return answer()

    return handler, log


def _session_id(db: Any) -> Any:
    """The server's id for the current session (SQLite: the identity of the connection)."""
    sid = db.server_connection_id()
    return sid if sid is not None else id(db.connection())


CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import examples.users.app as app
print(json.dumps({"imported": True, "closed": app.db.is_closed()}), flush=True)
sys.stdin.readline()
from peewee_serverless.local.context import LambdaContext
from peewee_serverless.local.events import HttpRequest, build_event
response = app.handler(build_event(HttpRequest.from_target("GET", "/users")), LambdaContext())
print(json.dumps({"status": response["statusCode"], "closed": app.db.is_closed(),
                  "session": app.db.server_connection_id()}), flush=True)
sys.stdin.readline()
"""


def _read_json(stream: Any, key: str) -> dict[str, Any]:
    """The next JSON line on ``stream`` that has ``key`` (log lines are skipped; bounded)."""
    for _ in range(100):
        line = stream.readline()
        if not line:
            break
        data = json.loads(line)
        if key in data:
            return data
    raise AssertionError(f"no line with {key!r} from the child")


def test_import_and_handler_construction_open_no_connection(backend: Backend) -> None:
    from peewee_serverless.migrate import run_migrations

    migrator = backend.make_db()
    run_migrations(migrator, EXAMPLE_MIGRATIONS)
    migrator.close()
    before = backend.connection_ids() if backend.engine != "sqlite" else set()

    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DATABASE_URL"))}
    env.update(backend.env)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(ROOT)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        first = _read_json(child.stdout, "imported")
        assert first == {"imported": True, "closed": True}
        if backend.engine != "sqlite":
            assert backend.connection_ids() - before == set()

        child.stdin.write("\n")
        child.stdin.flush()
        second = _read_json(child.stdout, "status")
        assert second["status"] == 200
        assert second["closed"] is False
        if backend.engine != "sqlite":
            # Exactly one server connection appeared, and it is the child's.
            assert backend.connection_ids() - before == {second["session"]}
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.wait(timeout=30) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_warm_invocations_reuse_one_server_connection(backend: Backend) -> None:
    db = backend.make_db({"DB_LOG_INVOCATIONS": "all"})
    log = RecordingLogger()

    @database_lifecycle(db, logger=log)
    def handler(event: Any, context: Any) -> Any:
        return _session_id(db)

    before = backend.connection_ids() if backend.engine != "sqlite" else set()
    sessions = {handler({}, LambdaContext()) for _ in range(10)}
    assert len(sessions) == 1
    assert [r["connection"] for r in log.records] == ["lazy"] + ["reused"] * 9
    assert sum(r["connects"] for r in log.records) == 1
    if backend.engine != "sqlite":
        assert backend.connection_ids() - before == sessions
    db.close()


@pytest.mark.parametrize("idle_check", ["0", "3600"], ids=["checked-after-idle", "no-check"])
def test_connection_killed_between_invocations_is_replaced(
    server_backend: Backend, idle_check: str
) -> None:
    """Frozen container, connection killed meanwhile: the next invocation still succeeds.

    The socket check at the start of the invocation sees that the server ended the session,
    with or without an idle check due: the connection is replaced before the handler runs.
    """
    db = server_backend.make_db({"DB_IDLE_CHECK_SECONDS": idle_check, "DB_LOG_INVOCATIONS": "all"})
    handler, log = note_handler(
        db, lambda: {"session": db.server_connection_id(), "notes": Note.select().count()}
    )
    first = handler({"body": "one"}, LambdaContext())
    server_backend.kill(first["session"])
    second = handler({"body": "two"}, LambdaContext())

    assert second["notes"] == 2
    assert second["session"] != first["session"]
    assert log.records[-1]["reconnects"] == 1
    assert log.records[-1]["outcome"] == "ok"
    assert log.records[-1]["connection"] == "replaced"
    assert sorted(r[0] for r in server_backend.query("SELECT body FROM note")) == ["one", "two"]
    db.close()


def test_read_after_kill_is_retried_transparently(server_backend: Backend) -> None:
    db = server_backend.make_db({"DB_IDLE_CHECK_SECONDS": "3600"})
    old = db.server_connection_id()
    server_backend.kill(old)
    assert db.execute_sql("SELECT 41 + 1").fetchone()[0] == 42
    assert db.server_connection_id() != old
    assert db.events.reconnects == 1
    db.close()


def test_autocommit_write_after_kill_runs_once_on_a_new_connection(
    server_backend: Backend,
) -> None:
    """Killed while idle: the socket shows it before the write is sent, so the write cannot
    have run; it runs once on a new connection."""
    db = server_backend.make_db({"DB_IDLE_CHECK_SECONDS": "3600"})
    _bind(db)
    old = db.server_connection_id()
    server_backend.kill(old)
    Note.create(body="sure")
    assert server_backend.query("SELECT body FROM note") == [("sure",)]
    assert db.server_connection_id() != old
    assert db.events.reconnects == 1
    db.close()


def test_write_in_flight_when_the_connection_dies_is_not_retried(server_backend: Backend) -> None:
    """A write whose fate is unknown is neither lost silently nor run twice: it fails typed."""
    import threading
    import time

    db = server_backend.make_db({"DB_IDLE_CHECK_SECONDS": "3600"})
    _bind(db)
    slow = (
        "INSERT INTO note (body) SELECT 'maybe' FROM (SELECT SLEEP(5)) AS s"
        if server_backend.engine == "mysql"
        else "INSERT INTO note (body) SELECT 'maybe' FROM pg_sleep(5)"
    )
    outcome: dict[str, Any] = {}

    def write() -> None:
        try:
            db.execute_sql(slow)
        except Exception as exc:  # noqa: BLE001 - inspected below
            outcome["error"] = exc

    thread = threading.Thread(target=write)
    thread.start()
    # Peewee keeps one connection per thread: find the writer's session by its statement.
    active = (
        "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE %s AND ID <> CONNECTION_ID()"
        if server_backend.engine == "mysql"
        else "SELECT pid FROM pg_stat_activity WHERE query LIKE %s AND pid <> pg_backend_pid()"
    )
    deadline = time.monotonic() + 10
    while not (rows := server_backend.query(active, ("INSERT INTO note%",))):
        assert time.monotonic() < deadline, "the write never started"
        thread.join(0.01)
    session = int(rows[0][0])
    server_backend.kill(session)
    thread.join(30)
    assert isinstance(outcome.get("error"), ConnectionLost)
    assert server_backend.query("SELECT COUNT(*) FROM note")[0][0] == 0
    # The broken connection was dropped: the next statement simply reconnects.
    Note.create(body="sure")
    assert server_backend.query("SELECT body FROM note") == [("sure",)]
    db.close()


def test_connection_lost_inside_a_transaction_fails_cleanly(server_backend: Backend) -> None:
    db = server_backend.make_db()
    _bind(db)
    log = RecordingLogger()

    @database_lifecycle(db, logger=log)
    def handler(event: Any, context: Any) -> Any:
        with db.atomic():
            Note.create(body="first half")
            if event.get("kill"):
                server_backend.kill(db.server_connection_id())
            Note.create(body="second half")
        return Note.select().count()

    with pytest.raises(ConnectionLost):
        handler({"kill": True}, LambdaContext())
    assert log.records[-1]["outcome"] == "error"
    assert server_backend.query("SELECT COUNT(*) FROM note")[0][0] == 0
    assert not db.in_transaction()
    assert handler({}, LambdaContext()) == 2
    db.close()


def test_connection_lost_at_commit_is_a_typed_error(server_backend: Backend) -> None:
    """The server dies between the last statement and COMMIT: ConnectionLost, never a 500."""
    db = server_backend.make_db()
    _bind(db)

    @database_lifecycle(db, logger=RecordingLogger())
    def handler(event: Any, context: Any) -> Any:
        with db.atomic():
            Note.create(body="unknown fate")
            if event.get("kill"):
                server_backend.kill(db.server_connection_id())
        return Note.select().count()

    with pytest.raises(ConnectionLost):
        handler({"kill": True}, LambdaContext())
    assert server_backend.query("SELECT COUNT(*) FROM note")[0][0] == 0
    assert handler({}, LambdaContext()) == 1
    db.close()


@pytest.mark.parametrize("engine", ["mariadb"])
def test_check_after_a_freeze_does_not_hang_on_a_stopped_server(engine: str) -> None:
    """The server stops answering (SIGSTOP) while the container is frozen: the check gives up
    after DB_CONNECT_TIMEOUT and drops the connection instead of hanging the invocation."""
    import signal

    from peewee_serverless import database_from_env

    from .servers import private_server

    with private_server(engine) as server:
        env = {**server.env(), "DB_IDLE_CHECK_SECONDS": "0", "DB_CONNECT_TIMEOUT": "1"}
        db = database_from_env(env)
        assert db.execute_sql("SELECT 1").fetchone()[0] == 1
        assert server.process is not None
        server.process.send_signal(signal.SIGSTOP)
        # Stopping is asynchronous: wait until the kernel reports the child stopped.
        _, status = os.waitpid(server.process.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status)
        try:
            assert db.prepare() == "replaced"
            assert db.is_closed()
        finally:
            server.process.send_signal(signal.SIGCONT)
        assert db.execute_sql("SELECT 2").fetchone()[0] == 2  # a fresh connection
        db.close()


@pytest.mark.parametrize(
    ("sql", "read_only"),
    [
        ('SELECT "t1"."id" FROM "note" AS "t1" WHERE ("t1"."id" = %s) LIMIT %s', True),
        ("SELECT COUNT(1) FROM (SELECT 1 FROM note) AS t", True),
        ("SHOW TABLES", True),
        ("EXPLAIN SELECT 1", True),
        ("SELECT 'add_audit()' AS text", True),
        ("SELECT add_audit()", False),  # a function may write
        ("SELECT public.add_audit()", False),
        ('SELECT "add_audit"()', False),
        ("SELECT nextval('s')", False),
        ("EXPLAIN ANALYZE INSERT INTO note (body) VALUES ('x')", False),
        ("SELECT * INTO copy FROM note", False),
        ("SELECT 1; DELETE FROM note", False),
        ("INSERT INTO note (body) VALUES (%s)", False),
        ("WITH d AS (DELETE FROM note RETURNING id) SELECT * FROM d", False),
    ],
)
def test_only_provably_read_only_statements_count_as_read_only(sql: str, read_only: bool) -> None:
    from peewee_serverless.database import _is_read_only

    assert _is_read_only(sql) is read_only


def test_db_ms_counts_the_connect_once(backend: Backend) -> None:
    """The lifecycle's db_ms holds each wait once: never more than the invocation took."""
    db = backend.make_db({"DB_LOG_INVOCATIONS": "all"})
    handler, log = select_one_handler(db)

    assert handler({}, LambdaContext()) == 1
    record = log.records[-1]
    assert record["connects"] == 1
    assert 0 < record["db_ms"] <= record["total_ms"]
    db.close()


@pytest.mark.parametrize("how", ["keyword", "url"])
def test_sqlite_keeps_the_users_timeout(tmp_path: Any, how: str) -> None:
    from peewee_serverless import ServerlessSqliteDatabase, database_from_env

    path = tmp_path / "t.db"
    if how == "keyword":
        db = ServerlessSqliteDatabase(str(path), timeout=0.5)
    else:
        db = database_from_env({"DATABASE_URL": f"sqlite:///{path}?timeout=0.5"})
    assert db.execute_sql("PRAGMA busy_timeout").fetchone()[0] == 500
    assert db.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    default = ServerlessSqliteDatabase(str(path))
    assert default.execute_sql("PRAGMA busy_timeout").fetchone()[0] == 5000  # Peewee's default
    default.close()


def test_a_write_refused_as_read_only_drops_the_connection(server_backend: Backend) -> None:
    """A demoted writer (failover) answers 503 and the next connection is a new one."""
    from peewee_serverless import DatabaseUnavailable, ServerReadOnly

    db = server_backend.make_db()
    _bind(db)
    old = db.server_connection_id()
    if server_backend.engine == "postgres":
        db.execute_sql("SET default_transaction_read_only = on")
        refused = "INSERT INTO note (body) VALUES ('x')"  # 25006 read_only_sql_transaction
    else:
        # The server's own error packet for --read-only (1290), as a demoted writer sends it.
        refused = "SIGNAL SQLSTATE 'HY000' SET MYSQL_ERRNO = 1290, MESSAGE_TEXT = 'read-only'"
    with pytest.raises(ServerReadOnly) as raised:
        db.execute_sql(refused)
    assert isinstance(raised.value, DatabaseUnavailable) and raised.value.retry_after >= 1
    assert db.is_closed()
    Note.create(body="after")
    assert db.server_connection_id() != old
    assert server_backend.query("SELECT body FROM note") == [("after",)]
    db.close()
