"""The per-invocation lifecycle decorator: rollback, close policy, logging, composition."""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

import peewee
import pytest

from peewee_serverless import ConfigurationError, database_lifecycle
from peewee_serverless.lifecycle import deadline_from_context
from peewee_serverless.local.context import LambdaContext

from .conftest import Backend
from .test_database import Note, RecordingLogger, _bind, note_handler, select_one_handler


def test_exception_in_handler_commits_nothing_and_leaves_no_transaction(
    backend: Backend, db: Any
) -> None:
    handler, log = note_handler(db, lambda: Note.select().count())
    with pytest.raises(RuntimeError, match="boom"):
        handler({"body": "lost", "fail": True}, LambdaContext())
    assert not db.in_transaction()
    assert backend.query("SELECT COUNT(*) FROM note")[0][0] == 0
    assert log.records[-1]["outcome"] == "error"
    assert handler({"body": "kept"}, LambdaContext()) == 1
    assert backend.query("SELECT body FROM note") == [("kept",)]


def test_transaction_left_open_by_the_handler_is_rolled_back(backend: Backend, db: Any) -> None:
    """A raw BEGIN that the handler never ends: the next invocation must not inherit it."""
    _bind(db)
    log = RecordingLogger()

    @database_lifecycle(db, logger=log)
    def sloppy(event: Any, context: Any) -> Any:
        db.begin()
        Note.create(body="uncommitted")
        return "done"

    assert sloppy({}, LambdaContext()) == "done"
    assert log.records[-1]["rolled_back"] is True
    assert backend.query("SELECT COUNT(*) FROM note")[0][0] == 0
    assert not db._server_in_transaction(db.connection())


def test_exception_inside_nested_atomic_blocks(backend: Backend, db: Any) -> None:
    _bind(db)

    @database_lifecycle(db, logger=RecordingLogger())
    def handler(event: Any, context: Any) -> Any:
        with db.atomic():
            Note.create(body="outer")
            with db.atomic():
                Note.create(body="inner")
                raise KeyError("inner failure")

    with pytest.raises(KeyError):
        handler({}, LambdaContext())
    assert backend.query("SELECT COUNT(*) FROM note")[0][0] == 0
    assert db.transaction_depth() == 0


def test_close_policy_close_opens_one_connection_per_invocation(backend: Backend) -> None:
    db = backend.make_db({"DB_CLOSE_POLICY": "close"})
    handler, log = select_one_handler(db)

    for _ in range(3):
        assert handler({}, LambdaContext()) == 1
        assert db.is_closed()
    assert [r["connects"] for r in log.records] == [1, 1, 1]
    assert all(r["closed"] for r in log.records)


def test_bad_close_policy_is_a_configuration_error(db: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        database_lifecycle(db, close_policy="never")
    assert info.value.setting == "close_policy"


def test_composes_with_powertools_logger_and_logs_no_credentials(backend: Backend) -> None:
    from aws_lambda_powertools import Logger

    secret_env = dict(backend.env)
    db = backend.make_db({"DB_LOG_INVOCATIONS": "all"})
    stream = io.StringIO()
    # A service name of its own: Powertools shares handlers between Loggers of one service.
    logger = Logger(service=f"test-users-{uuid.uuid4().hex}", stream=stream)

    @logger.inject_lambda_context
    @database_lifecycle(db, logger=logger)
    def handler(event: Any, context: Any) -> Any:
        return {"ok": db.execute_sql("SELECT 1").fetchone()[0]}

    context = LambdaContext(function_name="users-fn")
    assert handler({}, context) == {"ok": 1}
    assert handler({}, LambdaContext(function_name="users-fn")) == {"ok": 1}
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    records = [line for line in lines if line["message"] == "database lifecycle"]
    assert len(records) == 2
    assert records[0]["function_name"] == "users-fn"
    assert records[0]["function_request_id"] == context.aws_request_id
    assert records[0]["db"]["connection"] == "lazy"
    assert records[1]["db"]["connection"] == "reused"
    assert records[0]["db"]["connects"] == 1
    assert records[0]["db"]["db_ms"] >= 0
    text = stream.getvalue()
    for key in ("DB_PASSWORD", "DB_USER"):
        if secret_env.get(key):
            assert f'"{secret_env[key]}"' not in text
    db.close()


def test_deadline_from_context_leaves_a_margin() -> None:
    class Ctx:
        def get_remaining_time_in_millis(self) -> int:
            return 1000

    import time

    now = time.monotonic()
    deadline = deadline_from_context(Ctx(), margin=0.25)
    assert deadline is not None
    assert now + 0.70 <= deadline <= time.monotonic() + 0.75
    assert deadline_from_context(object()) is None


def test_handler_without_database_work_opens_no_connection(backend: Backend, db: Any) -> None:
    log = RecordingLogger()

    @database_lifecycle(db, logger=log)
    def handler(event: Any, context: Any) -> Any:
        return "static"

    assert handler({}, LambdaContext()) == "static"
    assert db.is_closed()
    assert log.records[-1]["connects"] == 0


def test_sqlite_wrapped_model_errors_still_propagate(db: Any) -> None:
    @database_lifecycle(db, logger=RecordingLogger())
    def handler(event: Any, context: Any) -> Any:
        return db.execute_sql("SELECT * FROM no_such_table").fetchall()

    with pytest.raises(peewee.DatabaseError):
        handler({}, LambdaContext())
    assert not db.in_transaction()


@pytest.mark.parametrize(
    ("mode", "levels"),
    [
        ("notable", ["INFO", "DEBUG", "INFO"]),
        ("all", ["INFO", "INFO", "INFO"]),
        ("off", []),
    ],
)
def test_log_invocations_modes(backend: Backend, mode: str, levels: list[str]) -> None:
    """Routine warm reuse is a DEBUG line under "notable"; connects and failures stay INFO."""
    from aws_lambda_powertools import Logger

    db = backend.make_db({"DB_LOG_INVOCATIONS": mode})
    stream = io.StringIO()
    logger = Logger(service=f"test-modes-{uuid.uuid4().hex}", stream=stream, level="DEBUG")

    @database_lifecycle(db, logger=logger)
    def handler(event: Any, context: Any) -> Any:
        db.execute_sql("SELECT 1")
        if event.get("fail"):
            raise ValueError("failed invocation")

    handler({}, LambdaContext())  # connects: notable
    handler({}, LambdaContext())  # routine reuse
    with pytest.raises(ValueError):
        handler({"fail": True}, LambdaContext())  # an error: notable
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["level"] for line in lines if line["message"] == "database lifecycle"] == levels
    if levels:
        assert lines[-1]["db"]["outcome"] == "error"
    db.close()


def test_notable_mode_skips_routine_lines_when_debug_is_off(backend: Backend) -> None:
    db = backend.make_db()
    assert db.options.log_invocations == "notable"
    handler, log = select_one_handler(db)

    for _ in range(3):
        handler({}, LambdaContext())
    assert [r["connection"] for r in log.records] == ["lazy"]
    db.close()
