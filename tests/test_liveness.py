"""Liveness without a round trip: a connection the server ended is replaced before it is used.

The scenario of issue 16: a warm function serves a plain write (no ``db.atomic()``); the server
then kills its idle connection (``KILL`` / ``pg_terminate_backend``, what a reaper in another
container, ``wait_timeout`` or a failover does); a moment later the next invocation writes again.
Every write must succeed, exactly once.
"""

from __future__ import annotations

import os
import random
import signal
from typing import Any

import peewee
import pytest

from peewee_serverless import database_lifecycle
from peewee_serverless.local.context import LambdaContext

from .conftest import Backend
from .servers import private_server


class Row(peewee.Model):
    tag = peewee.CharField(max_length=40, unique=True)


class _Quiet:
    def info(self, msg: str, extra: Any = None) -> None:
        pass


def _writer(db: Any) -> Any:
    Row.bind(db)
    db.create_tables([Row])

    @database_lifecycle(db, logger=_Quiet())
    def handler(event: Any, context: Any) -> Any:
        Row.create(tag=event["tag"])  # a plain write: autocommit, no transaction
        return db.server_connection_id()

    return handler


def _kill_now(backend: Backend, session: int) -> None:
    """The server ends the session; returns once the server no longer lists it.

    ``pg_terminate_backend`` only signals the backend, which ends the session a moment later.
    A write sent inside that moment meets a session being killed: its fate is unknown to the
    client (libpq reports "server closed the connection unexpectedly" whether or not the
    statement ran), so it fails as ConnectionLost by design. "Killed" here means: ended.
    """
    backend.kill(session, wait=True)


def test_writes_after_the_server_killed_the_idle_connection(server_backend: Backend) -> None:
    db = server_backend.make_db({"DB_IDLE_CHECK_SECONDS": "3600"})  # no ping: the socket decides
    handler = _writer(db)
    rng = random.Random(16)
    session = handler({"tag": "r-first"}, LambdaContext())
    wait = __import__("threading").Event()
    for n in range(100):
        _kill_now(server_backend, session)
        # 0 to 100 ms later (a third of the rounds at once).
        delay = 0.0 if n % 3 == 0 else rng.uniform(0.0, 0.1)
        if delay:
            wait.wait(delay)
        new_session = handler({"tag": f"r-{n}"}, LambdaContext())
        assert new_session != session
        session = new_session
    tags = [r[0] for r in server_backend.query("SELECT tag FROM row ORDER BY tag")]
    assert len(tags) == 101 == len(set(tags))
    db.close()


@pytest.mark.parametrize("engine", ["mariadb", "postgres"])
def test_kill_while_the_container_is_frozen(engine: str) -> None:
    """The container is stopped (SIGSTOP) longer than the server's idle timeout, which ends the
    session meanwhile; after SIGCONT the next plain write succeeds on a new connection."""
    import subprocess
    import sys

    options = {"wait_timeout": 1} if engine == "mariadb" else {"idle_session_timeout": "1000"}
    child_code = r"""
import json, sys
from peewee_serverless import database_from_env, database_lifecycle
from peewee_serverless.local.context import LambdaContext
import peewee
db = database_from_env()
class Row(peewee.Model):
    tag = peewee.CharField(max_length=40)
Row.bind(db); db.create_tables([Row])
@database_lifecycle(db)
def handler(event, context):
    Row.create(tag=event["tag"])
    return db.server_connection_id()
for line in sys.stdin:
    print(json.dumps({"session": handler({"tag": line.strip()}, LambdaContext())}), flush=True)
"""
    with private_server(engine, options=options) as server:
        env = {**os.environ, **server.env(), "DB_IDLE_CHECK_SECONDS": "3600"}
        env["DB_LOG_INVOCATIONS"] = "off"
        child = subprocess.Popen(
            [sys.executable, "-c", child_code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            assert child.stdin is not None and child.stdout is not None
            sessions = []
            for n in range(3):
                child.stdin.write(f"frozen-{n}\n")
                child.stdin.flush()
                sessions.append(__import__("json").loads(child.stdout.readline())["session"])
                child.send_signal(signal.SIGSTOP)
                try:
                    _wait_session_gone(server, sessions[-1])
                finally:
                    child.send_signal(signal.SIGCONT)
            assert len(set(sessions)) == 3
            rows = server.query("SELECT tag FROM row ORDER BY tag", database=server.test_db)
            assert [r[0] for r in rows] == ["frozen-0", "frozen-1", "frozen-2"]
        finally:
            child.kill()
            child.wait(10)


def _wait_session_gone(server: Any, session: int, timeout: float = 20.0) -> None:
    """Until the server's idle timeout ended ``session`` (a real condition, bounded)."""
    import time

    if server.engine == "mysql":
        sql = "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = %s"
    else:
        sql = "SELECT COUNT(*) FROM pg_stat_activity WHERE pid = %s"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.query(sql, (session,))[0][0] == 0:
            return
        time.sleep(0.05)  # poll interval
    raise AssertionError(f"the server never ended session {session}")


@pytest.mark.parametrize("engine", ["mariadb", "postgres"])
def test_reaping_under_load_never_fails_a_plain_write(engine: str, tmp_path: Any) -> None:
    """Containers above the usage threshold reap the idle connections of three warm "victim"
    functions of the same application (a zombie timeout far below DB_IDLE_CHECK_SECONDS: the
    fight of issue 16) while the victims keep writing after random idle gaps: every write of
    both succeeds, exactly once."""
    import json
    import sys
    import threading
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root))
    from bench.burst import create_limited_account, create_users_table, drop_account
    from peewee_serverless import database_from_env
    from peewee_serverless.local.containers import run_containers

    with private_server(engine) as server:
        account = create_limited_account(server, 12, prefix="reap")
        try:
            create_users_table(account.env)
            env = {
                **account.env,
                "DB_USAGE_CHECK_SECONDS": "0",
                "DB_ZOMBIE_MIN_SECONDS": "0.3",
                "DB_ZOMBIE_MAX_SECONDS": "0.6",
                "DB_APPLICATION_NAME": "users",
            }
            reaper_env = {
                **env,
                "DB_USAGE_THRESHOLD": "0.1",  # 2 of 12 slots: always above
                "DB_LOG_INVOCATIONS": "all",
                "POWERTOOLS_LOG_LEVEL": "INFO",
            }
            victims = [database_from_env({**env, "DB_USAGE_THRESHOLD": "1"}) for _ in range(3)]
            handlers = [_writer(v) for v in victims]
            stop = threading.Event()
            victim_errors: list[BaseException] = []
            written: list[str] = []

            def victims_write() -> None:
                rng = random.Random(16)
                n = 0
                while not stop.is_set():
                    for handler in handlers:
                        try:
                            handler({"tag": f"v-{n}"}, LambdaContext())
                            written.append(f"v-{n}")
                        except BaseException as exc:  # noqa: BLE001 - reported below
                            victim_errors.append(exc)
                        n += 1
                    stop.wait(rng.uniform(0.0, 1.5))  # idle gap: long enough to be reaped

            thread = threading.Thread(target=victims_write)
            thread.start()
            log_path = tmp_path / "containers.log"
            try:
                report = run_containers(
                    "examples.users.app:handler",
                    containers=3,
                    invocations=12,
                    event="bench.burst:post_user_event",
                    env=reaper_env,
                    pause=(0.0, 0.5),
                    sys_path=[str(root)],
                    seed=16,
                    log_path=str(log_path),
                )
            finally:
                stop.set()
                thread.join(60)
            assert victim_errors == []
            assert [r for r in report.results if r.status != 201] == []
            created = [json.loads(r.body)["email"] for r in report.results]
            stored = [
                r[0] for r in server.query("SELECT email FROM users", database=server.test_db)
            ]
            assert sorted(created) == sorted(stored)  # each once, none lost
            rows = [r[0] for r in server.query("SELECT tag FROM row", database=server.test_db)]
            assert sorted(rows) == sorted(written)
            reaped = 0
            for line in log_path.read_text().splitlines():
                with __import__("contextlib").suppress(ValueError):
                    reaped += int(json.loads(line).get("db", {}).get("reaped", 0))
            assert reaped > 0, "no connection was reaped: the test did not provoke the fight"
            for v in victims:
                v.close()
        finally:
            drop_account(server, account.name)


def test_a_connection_idle_near_the_zombie_timeout_is_retired_unused(
    server_backend: Backend,
) -> None:
    """Past DB_ZOMBIE_MIN_SECONDS minus the margin a connection is a reaper's candidate: its
    owner drops it without sending anything and connects afresh."""
    db = server_backend.make_db({"DB_ZOMBIE_MIN_SECONDS": "0.4", "DB_ZOMBIE_MAX_SECONDS": "1"})
    assert db.retire_after_seconds(db.options) == pytest.approx(0.2)
    first = db.server_connection_id()
    assert db.prepare() == "reused"
    __import__("threading").Event().wait(0.25)  # an idle gap past the retirement age
    assert db.prepare() == "retired"
    assert db.is_closed()
    assert db.server_connection_id() != first
    proxy = server_backend.make_db({"DB_MODE": "proxy", "DB_ZOMBIE_MIN_SECONDS": "0.4"})
    assert proxy.retire_after_seconds(proxy.options) == float("inf")  # nothing reaps
    db.close()
