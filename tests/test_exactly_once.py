"""Exactly-once ``POST /users``: crashes, a lost COMMIT answer, 50 concurrent duplicates.

Each scenario is a client that retries one request with the same ``Idempotency-Key`` until it
gets a final answer, as a well-behaved API client does (at once after no answer or a 5xx, after
``Retry-After`` on 409 ``request_in_progress``; a bounded number of attempts). Whatever happened
to the first attempt, the final answer must be ``201`` with the one stored user, the users table
must hold exactly that row, and no attempt may answer "Email already exists".

Every attempt is a real ``peewee-serverless invoke`` process of the example
(``tests.apps.crashing_users``, which SIGKILLs itself at ``PST_CRASH_AT``) against a private
MariaDB / PostgreSQL server; the lost COMMIT answer comes from a loopback proxy
(``tests/faultproxy.py`` in its ``drop_commit_answer`` mode) that forwards the transaction's
COMMIT to the server and resets the client's connection before the answer.
"""

from __future__ import annotations

import importlib
import json
import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from peewee_serverless import database_from_env
from peewee_serverless.local.events import HttpRequest, build_event
from peewee_serverless.migrate import run_migrations

from .conftest import EXAMPLE_MIGRATIONS, ROOT
from .faultproxy import FaultProxy
from .servers import PrivateServer, private_server

#: Simulated Lambda timeout of every attempt: a crashed attempt's claim lapses after it.
TIMEOUT = 3.0
MAX_ATTEMPTS = 12
CONCURRENT = 50
PAYLOAD = {"name": "Ada", "email": "Ada@Example.com"}


@pytest.fixture(scope="module", params=["mariadb", "postgres"])
def server(request: pytest.FixtureRequest) -> Iterator[PrivateServer]:
    """A private server per engine (proxies and crashes never touch the shared ones)."""
    with private_server(request.param) as srv:
        yield srv


_databases = iter(range(1, 1000))


@pytest.fixture
def env(server: PrivateServer) -> dict[str, str]:
    """The DB_* environment of a fresh database on the private server, schema migrated."""
    name = f"exactly_once_{next(_databases)}"
    if server.engine == "mysql":
        server.query(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    else:
        server.query(f'CREATE DATABASE "{name}"')
    env = dict(server.env(), DB_NAME=name)
    db = database_from_env(env)
    run_migrations(db, EXAMPLE_MIGRATIONS)
    db.close()
    return env


def rows(server: PrivateServer, env: dict[str, str], sql: str) -> list[tuple[Any, ...]]:
    return server.query(sql, database=env["DB_NAME"])


def _event(key: str) -> dict[str, Any]:
    headers = [("Content-Type", "application/json"), ("Idempotency-Key", key)]
    body = json.dumps(PAYLOAD).encode()
    return build_event(HttpRequest.from_target("POST", "/users", headers, body), "v2")


def attempt(
    env: dict[str, str], key: str, crash_at: str = ""
) -> tuple[int | None, Any, dict[str, str]]:
    """One invocation in its own process: (status, JSON body, headers); status None = no answer."""
    child = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DATABASE_URL"))}
    child.update(env, PYTHONPATH=str(ROOT), POWERTOOLS_LOG_LEVEL="WARNING", PST_CRASH_AT=crash_at)
    done = subprocess.run(
        [sys.executable, "-m", "peewee_serverless", "invoke", "tests.apps.crashing_users:handler"]
        + ["--event", "-", "--timeout", str(TIMEOUT)],
        input=json.dumps(_event(key)),
        capture_output=True,
        text=True,
        env=child,
        cwd=ROOT,
        timeout=60,
    )
    if crash_at:
        assert done.returncode == -9, (crash_at, done.returncode, done.stderr[-2000:])
        return None, None, {}
    assert done.returncode in (0, 1), done.stderr[-2000:]
    result = json.loads(done.stdout)
    if "statusCode" not in result:  # the handler raised: Lambda answers API Gateway with a 502
        return 502, result, {}
    return result["statusCode"], json.loads(result["body"]), result.get("headers") or {}


def post_until_final(
    env: dict[str, str], key: str, first: Any = None
) -> list[tuple[int | None, Any]]:
    """The retrying client: every answer it got, the final one last (``first``: attempt one)."""
    answers: list[tuple[int | None, Any]] = []
    for n in range(MAX_ATTEMPTS):
        status, body, headers = first() if n == 0 and first else attempt(env, key)
        answers.append((status, body))
        if status is None or status >= 500:
            continue
        if status == 409 and body["error"] == "request_in_progress":
            time.sleep(int(headers["Retry-After"]))  # the client honours Retry-After
            continue
        return answers
    raise AssertionError(f"no final answer after {MAX_ATTEMPTS} attempts: {answers}")


def assert_exactly_once(
    server: PrivateServer, env: dict[str, str], answers: list[tuple[int | None, Any]]
) -> None:
    status, body = answers[-1]
    assert status == 201, answers
    assert (body["name"], body["email"]) == ("Ada", "ada@example.com")
    assert rows(server, env, "SELECT id, name, email FROM users") == [
        (body["id"], "Ada", "ada@example.com")
    ]
    assert not [a for a in answers if a[1] and a[1].get("message") == "Email already exists"]
    assert rows(server, env, "SELECT status FROM idempotency_record") == [("COMPLETED",)]


POINTS = ["before_insert", "after_insert", "after_commit", "before_response"]


@pytest.mark.parametrize("crash_at", POINTS)
def test_crash_at_each_point_then_retry_gets_the_one_user(
    server: PrivateServer, env: dict[str, str], crash_at: str
) -> None:
    key = f"crash-{crash_at}"
    answers = post_until_final(env, key, lambda: attempt(env, key, crash_at))
    assert answers[0][0] is None  # the first attempt died without answering
    assert_exactly_once(server, env, answers)
    if crash_at in ("after_commit", "before_response"):
        # Committed together: the first retry already replays the stored answer.
        assert [a[0] for a in answers] == [None, 201]
    else:
        # Nothing committed but the claim: retries wait for it to lapse, then create the user
        # (a 503 "retry" is allowed on the way: a loaded machine may miss a deadline).
        assert {a[0] for a in answers[1:-1]} <= {409, 503}


#: The example's user INSERT, as Peewee quotes it on PostgreSQL and on MySQL/MariaDB.
USER_INSERT = (b'INSERT INTO "users"', b"INSERT INTO `users`")


def test_lost_commit_answer_then_retry_gets_the_one_user(
    server: PrivateServer, env: dict[str, str]
) -> None:
    with FaultProxy(server.host, server.port) as proxy:
        via_proxy = dict(env, DB_HOST=proxy.host, DB_PORT=str(proxy.port))
        # The transaction that writes the user (not the idempotency claim's): its COMMIT
        # reaches the server, the answer does not reach the client.
        proxy.set_mode("drop_commit_answer", after=USER_INSERT)
        answers = post_until_final(via_proxy, "lost-commit")
        assert proxy.cuts == 1
    first_status, first_body = answers[0]
    assert first_status == 503, answers  # the outcome is unknown: "retry", never "failed"
    assert first_body["error"] == "database_unavailable"
    assert_exactly_once(server, env, answers)
    assert {a[0] for a in answers[1:-1]} <= {409, 503}


def _concurrent_client(handler: Any, barrier: Any, results: Any) -> None:
    """One container posting the shared key, retrying like the client above (in-process)."""
    from peewee_serverless.local.context import LambdaContext

    answers: list[tuple[int, Any]] = []
    try:
        barrier.wait(timeout=120)
        for _ in range(MAX_ATTEMPTS):
            # A roomier timeout than the crash tests: 50 processes share this machine's cores.
            result = handler(_event("burst"), LambdaContext(timeout=4 * TIMEOUT))
            body = json.loads(result["body"])
            answers.append((result["statusCode"], body))
            retry = result["statusCode"] == 503 or (
                result["statusCode"] == 409 and body["error"] == "request_in_progress"
            )
            if not retry:
                break
            time.sleep(int(result["headers"]["Retry-After"]))  # honoured on 409 and 503
        results.put(answers)
    except BaseException as exc:  # noqa: BLE001 - the parent reports it
        results.put([(-1, repr(exc))])


def test_concurrent_same_key_one_row_every_final_answer_the_same_201(
    server: PrivateServer, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Import the example once here (no connection is opened at import), then fork: 50
    # containers that start in milliseconds instead of 50 interpreters importing Powertools.
    for key in [k for k in os.environ if k.startswith("DB_") or k == "DATABASE_URL"]:
        monkeypatch.delenv(key)
    for key, value in dict(env, POWERTOOLS_LOG_LEVEL="ERROR").items():
        monkeypatch.setenv(key, value)
    for name in [m for m in sys.modules if m.startswith("examples.users.")]:
        del sys.modules[name]
    app = importlib.import_module("examples.users.app")
    assert app.db.is_closed()
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(CONCURRENT)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_concurrent_client, args=(app.handler, barrier, results))
        for _ in range(CONCURRENT)
    ]
    for p in procs:
        p.start()
    try:
        outcomes = [results.get(timeout=240) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    finals = [answers[-1] for answers in outcomes]
    assert all(status == 201 for status, _ in finals), finals
    assert len({json.dumps(body, sort_keys=True) for _, body in finals}) == 1
    (user_id,) = {body["id"] for _, body in finals}
    assert rows(server, env, "SELECT id FROM users") == [(user_id,)]
    every = [a for answers in outcomes for a in answers]
    assert {s for s, _ in every} <= {201, 409, 503}, every
    assert not [b for s, b in every if s == 409 and b["error"] != "request_in_progress"]
    assert not [b for s, b in every if s == 503 and b["error"] != "database_unavailable"]
