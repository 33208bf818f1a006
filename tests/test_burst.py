"""Bursts and server faults with real servers and real processes (the container simulator).

Each test runs against a PRIVATE server (tests/servers.py): the application may hold 10
connections (MariaDB: the server's ``max_connections``, one more slot taken by the connection
sampler; PostgreSQL: the role's ``CONNECTION LIMIT``), and the restart test stops and starts the
server itself.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from peewee_serverless.local.containers import InvocationResult, run_containers

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.burst import (  # noqa: E402
    ConnectionSampler,
    create_limited_account,
    create_users_table,
    drop_account,
    limited_server,
    run_burst,
    serverless_env,
)
from tests.servers import PrivateServer  # noqa: E402

SELECTED = [
    b.strip()
    for b in os.environ.get("PEEWEE_SERVERLESS_TEST_BACKENDS", "sqlite,mariadb,postgres").split(",")
    if b.strip() in ("mariadb", "postgres")
]
LIMIT = 10
CONTAINERS = 4 * LIMIT
#: Sessions the account may be seen holding at most. MariaDB checks max_connections after
#: authentication and admits max_connections + 1 threads (the last for SUPER), so an attempt it
#: is turning away is listed under the account for a moment: the sampler leaves out the rows in
#: login ('Connect', 'Killed'), but CI still saw one 11th row in 200 refusals sampled with no
#: pause (stop 19), which no local run of 10,000 reproduced. PostgreSQL checks a role's limit
#: before the backend is listed.
SEEN_AT_MOST = {"mysql": LIMIT + 1, "postgres": LIMIT}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=SELECTED)
def server(request: pytest.FixtureRequest) -> Iterator[PrivateServer]:
    """A private server of each selected engine (MariaDB: max_connections = limit + 1)."""
    with limited_server(request.param, LIMIT) as srv:
        yield srv


def _emails(server: PrivateServer, account: Any) -> list[str]:
    conn = server.connect(server.test_db)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT email FROM users")
            return [row[0] for row in cur.fetchall()]
    finally:
        conn.close()


def test_burst_within_the_limit_never_fails(server: PrivateServer) -> None:
    """40 containers, 10 connection slots, default settings: every invocation succeeds."""
    outcome = run_burst(
        server, "peewee-serverless-defaults", containers=CONTAINERS, invocations=3, limit=LIMIT
    )
    assert outcome.invocations == CONTAINERS * 3
    assert outcome.statuses == {201: CONTAINERS * 3}
    assert outcome.success_rate == 1.0
    assert 0 < outcome.peak_connections <= SEEN_AT_MOST[server.engine]


def test_no_churn_when_every_container_has_a_slot(server: PrivateServer) -> None:
    """As many containers as slots: usage reads 100 %, but nobody waits, so nobody yields.

    Each container opens exactly one session for all its invocations (as plain Peewee does).
    """
    outcome = run_burst(
        server, "peewee-serverless-defaults", containers=LIMIT, invocations=5, limit=LIMIT
    )
    assert outcome.statuses == {201: LIMIT * 5}
    assert outcome.sessions == LIMIT
    assert outcome.peak_connections <= SEEN_AT_MOST[server.engine]


def test_plain_peewee_fails_the_same_burst(server: PrivateServer) -> None:
    """The same burst with plain Peewee (module-level connection): invocations fail."""
    outcome = run_burst(
        server, "plain-module-level", containers=CONTAINERS, invocations=3, limit=LIMIT
    )
    assert outcome.invocations == CONTAINERS * 3
    assert outcome.success_rate < 1.0
    assert outcome.statuses.get(None, 0) > 0  # raised: a bare driver error, no response
    assert outcome.peak_connections <= SEEN_AT_MOST[server.engine]


def _log_errors(path: Path) -> str:
    if not path.exists():
        return ""
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if "Error" in ln]
    return "\n".join(lines[-15:])


def test_server_restart_during_load(server: PrivateServer, tmp_path: Path) -> None:
    """Stop and start the server mid-load: 201 or 503 + Retry-After, then all 201, no dupes."""
    account = create_limited_account(server, 100, prefix="restart")
    results: list[InvocationResult] = []
    try:
        create_users_table(account.env)
        env = {**account.env, **serverless_env(LIMIT), "DB_IDLE_CHECK_SECONDS": "0"}
        warm = threading.Event()
        lock = threading.Lock()

        def collect(result: InvocationResult) -> None:
            with lock:
                results.append(result)
                if len(results) >= 20:
                    warm.set()

        simulation: dict[str, Any] = {}

        def simulate() -> None:
            try:
                simulation["report"] = run_containers(
                    "examples.users.app:handler",
                    containers=8,
                    invocations=12,
                    event="bench.burst:post_user_event",
                    env=env,
                    pause=(0.0, 0.05),
                    timeout=30.0,
                    sys_path=[str(ROOT)],
                    on_result=collect,
                    seed=7,
                    log_path=str(tmp_path / "containers.log"),
                )
            except Exception as exc:  # noqa: BLE001 - re-raised in the test thread
                simulation["error"] = exc

        runner = threading.Thread(target=simulate, name="simulation")
        runner.start()
        assert warm.wait(120), "the containers never got going"
        server.restart()
        restarted = time.monotonic()
        runner.join(300)
        assert not runner.is_alive()
        assert "error" not in simulation, simulation.get("error")

        assert len(results) == 8 * 12
        for r in results:
            assert r.error is None, r
            assert r.status in (201, 503), (r, _log_errors(tmp_path / "containers.log"))
            if r.status == 503:
                assert r.retry_after is not None and int(r.retry_after) >= 1
        after = [r for r in results if r.started > restarted]
        assert after, "no invocation started after the restart"
        assert all(r.status == 201 for r in after), [r for r in after if r.status != 201]

        created = [json.loads(r.body)["email"] for r in results if r.status == 201]
        stored = _emails(server, account)
        assert len(stored) == len(set(stored))  # none twice
        assert set(created) <= set(stored)  # every 201 is in the table
    finally:
        drop_account(server, account.name)


def test_sampler_sees_connections(server: PrivateServer) -> None:
    """The peak measurement used above is real: it sees a connection we hold."""
    account = create_limited_account(server, 3, prefix="sampler")
    try:
        from peewee_serverless import database_from_env

        db = database_from_env(account.env)
        db.connect()
        try:
            with ConnectionSampler(server, account.name, interval=0.001) as sampler:
                deadline = time.monotonic() + 30
                while sampler.samples < 3 and time.monotonic() < deadline:
                    db.execute_sql("SELECT 1")
            assert sampler.peak == 1
        finally:
            db.close()
    finally:
        drop_account(server, account.name)


def test_the_sampler_sees_held_sessions_within_the_servers_bound(server: PrivateServer) -> None:
    """The sampler sees every session the account holds, and 200 refused attempts do not
    raise the peak past what the server admits (:data:`SEEN_AT_MOST`)."""
    account = create_limited_account(server, LIMIT if server.engine == "postgres" else 0)
    login = functools.partial(
        server.connect, server.test_db, user=account.name, password=account.password
    )
    held: list[Any] = []
    try:
        with ConnectionSampler(server, account.name, interval=0.0) as sampler:
            held.extend(login() for _ in range(LIMIT))
            for _ in range(200):
                with pytest.raises(Exception, match=r"(?i)too many connections"):
                    login()
        assert LIMIT <= sampler.peak <= SEEN_AT_MOST[server.engine]
    finally:
        for conn in held:
            conn.close()
        drop_account(server, account.name)
