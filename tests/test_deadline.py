"""The deadline is the law: through a fault proxy, every invocation of the users service answers
(its normal answer, or 503 + Retry-After) before a 3 s Lambda timeout would kill it.

Private servers (tests/servers.py) behind tests/faultproxy.py; the real example application,
its real HTTP layer and the local Lambda context. "Answered in time" is the context's own
``get_remaining_time_in_millis()`` still above zero when the handler returned.
"""

from __future__ import annotations

import importlib
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from peewee_serverless import (
    DatabaseUnavailable,
    DeadlineExceeded,
    database_from_env,
    database_lifecycle,
)
from peewee_serverless.local.context import LambdaContext
from peewee_serverless.local.events import HttpRequest, build_v1_event

from .conftest import EXAMPLE_MIGRATIONS, SERVER_BACKENDS
from .faultproxy import FaultProxy
from .servers import PrivateServer, private_server

TIMEOUT = 3.0


@pytest.fixture(scope="module", params=SERVER_BACKENDS)
def server(request: pytest.FixtureRequest) -> Iterator[PrivateServer]:
    from peewee_serverless.migrate import run_migrations

    with private_server(request.param) as srv:
        migrator = database_from_env(srv.env())
        run_migrations(migrator, EXAMPLE_MIGRATIONS)
        migrator.close()
        yield srv


def _load_app(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The users service as a fresh container with ``env`` would import it."""
    for key in ("DATABASE_URL", "DB_ENGINE", "DB_NAME", "DB_HOST", "DB_PORT", "DB_USER"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    import examples.users.app
    import examples.users.models
    import examples.users.sql_store
    import examples.users.store

    # Every module holding the module-level database or its models, in import order.
    for module in (examples.users.models, examples.users.sql_store, examples.users.store):
        importlib.reload(module)
    return importlib.reload(examples.users.app)


_seq = iter(range(1_000_000))


def _post_user() -> dict[str, Any]:
    n = next(_seq)
    body = json.dumps({"name": f"D {n}", "email": f"d{n}-{time.time_ns()}@example.com"}).encode()
    request = HttpRequest.from_target(
        "POST", "/users", [("Content-Type", "application/json")], body
    )
    return build_v1_event(request)


def _answer_in_time(app: Any, expect_ok: bool = False) -> dict[str, Any]:
    context = LambdaContext(timeout=TIMEOUT)
    response = app.handler(_post_user(), context)
    assert context.get_remaining_time_in_millis() > 0, ("answered after the timeout", response)
    status = response["statusCode"]
    assert status in ((201,) if expect_ok else (201, 503)), response
    if status == 503:
        headers = {k.lower(): v for k, v in (response.get("multiValueHeaders") or {}).items()}
        assert int(headers["retry-after"][0]) >= 1
    return response


FAULTS = {
    "blackhole": ("blackhole", 0.0),
    "half_open": ("half_open", 0.0),
    "latency": ("latency", 0.15),  # each way: 300 ms round trips
    "reset": ("reset", 0.0),
    "delayed_greeting": ("delayed_greeting", 10.0),
}


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["cold", "warm", "after_idle_gap"])
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_every_invocation_answers_by_the_deadline(
    server: PrivateServer, fault: str, phase: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FaultProxy(server.host, server.port) as proxy:
        env = {
            **server.env(),
            "DB_HOST": proxy.host,
            "DB_PORT": str(proxy.port),
            "DB_CONNECT_TIMEOUT": "10",  # longer than the invocation: the deadline must decide
            "DB_IDLE_CHECK_SECONDS": "0.2",
            "DB_LOG_INVOCATIONS": "off",
        }
        app = _load_app(env, monkeypatch)
        try:
            if phase != "cold":
                _answer_in_time(app, expect_ok=True)
            if phase == "after_idle_gap":
                threading.Event().wait(0.3)  # the idle gap itself (a ping is due after it)
            mode, seconds = FAULTS[fault]
            proxy.set_mode(mode, seconds)
            if fault == "reset":
                proxy.reset()
            # A slow link may or may not leave time for the POST's round trips: either answer.
            first = _answer_in_time(app)
            second = _answer_in_time(app)  # and the one after
            if fault in ("blackhole", "half_open") and phase == "cold":
                assert first["statusCode"] == second["statusCode"] == 503
            proxy.set_mode("pass")
            _answer_in_time(app, expect_ok=True)  # recovered: a new connection serves it
        finally:
            app.db.close()


def test_a_lock_wait_ends_at_the_deadline(server: PrivateServer) -> None:
    """A row locked by another session (MariaDB would wait 50 s, PostgreSQL forever)."""
    holder = server.hold_row_lock("counter")
    db = database_from_env(server.env())
    try:
        db.connect()  # warm: connected before the invocation, as in a warm container

        @database_lifecycle(db, logger=_Quiet())
        def handler(event: Any, context: Any) -> Any:
            db.execute_sql("UPDATE counter SET n = n + 10 WHERE id = 1")

        context = LambdaContext(timeout=TIMEOUT)
        with pytest.raises(DeadlineExceeded) as raised:
            handler({}, context)
        assert context.get_remaining_time_in_millis() > 0
        assert raised.value.retry_after >= 1
        assert db.is_closed()  # the cut connection was dropped
        with holder.cursor() as cur:
            cur.execute("ROLLBACK")
        handler_ok = database_lifecycle(db, logger=_Quiet())(
            lambda e, c: db.execute_sql("UPDATE counter SET n = n + 10 WHERE id = 1")
        )
        handler_ok({}, LambdaContext(timeout=TIMEOUT))
        assert server.query("SELECT n FROM counter", database=server.test_db) == [(10,)]
    finally:
        holder.close()
        db.close()


def test_a_handshake_of_several_round_trips_ends_at_the_deadline(server: PrivateServer) -> None:
    """A slow link (1 s round trips): each wait of the connect fits the time left, but the
    handshake's round trips (greeting, authentication, SET NAMES, autocommit) together do not.
    The connect must end at the deadline, not when the wait under way at the deadline ends."""
    with FaultProxy(server.host, server.port) as proxy:
        env = {**server.env(), "DB_HOST": proxy.host, "DB_PORT": str(proxy.port)}
        env["DB_CONNECT_TIMEOUT"] = "10"  # longer than the invocation: the deadline decides
        db = database_from_env(env)
        proxy.set_mode("latency", 0.5)

        @database_lifecycle(db, logger=_Quiet())
        def handler(event: Any, context: Any) -> Any:
            return db.execute_sql("SELECT 1").fetchone()[0]

        # The deadline (the 0.25 s margin off 2.1 s) falls in the middle of the handshake's
        # second round trip: a wait bounded only by the time left at its start overruns it.
        context = LambdaContext(timeout=2.1)
        with pytest.raises((DeadlineExceeded, DatabaseUnavailable)):
            handler({}, context)
        assert context.get_remaining_time_in_millis() > 0
        proxy.set_mode("pass")
        assert handler({}, LambdaContext(timeout=TIMEOUT)) == 1  # the link is fine again
        db.close()


def test_without_a_lambda_context_nothing_is_bounded(server: PrivateServer) -> None:
    db = database_from_env(server.env())
    assert db.time_left() is None
    assert db.execute_sql("SELECT 1").fetchone()[0] == 1
    if server.engine == "mysql":
        assert db.connection()._read_timeout is None  # PyMySQL's own default
    else:
        from peewee_serverless.watchdog import WATCHDOG

        assert WATCHDOG.armed() == 0  # nothing watches this connection
    db.close()


class _Quiet:
    def info(self, msg: str, extra: Any = None) -> None:
        pass
