"""Behind a real connection multiplexer: PgBouncer in transaction pooling mode, ``DB_MODE=proxy``.

Each test runs a PRIVATE PostgreSQL limited to 10 connections (``max_connections``; 3 of them
kept for superusers, so the application role gets 7) that logs every statement with its role
(``log_statement = all``), and a PgBouncer of its own in front of it (:mod:`tests.pgbouncer`).
The statement log is how "nothing breaks transaction pooling" is checked: no session ``SET``, no
server-side prepared statement, no session advisory lock, no governor query from the
application's role, ever.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import ROOT, SELECTED
from .pgbouncer import PgBouncer, logged_statements, pgbouncer, session_state_statements
from .servers import PrivateServer
from .test_migrate import ADD_KARMA, write_migrations

sys.path.insert(0, str(ROOT))

from bench.burst import create_limited_account, drop_account  # noqa: E402
from bench.pgbouncer import limited_postgres, run_proxy_burst  # noqa: E402

LIMIT = 7  # the role's share of a server with max_connections = 10

pytestmark = pytest.mark.skipif(
    "pgbouncer" not in SELECTED, reason="pgbouncer left out of PEEWEE_SERVERLESS_TEST_BACKENDS"
)


@pytest.fixture(scope="module")
def server() -> Iterator[PrivateServer]:
    """A private PostgreSQL, max_connections = 10, logging every statement with its role."""
    with limited_postgres(LIMIT, log_statements=True) as srv:
        assert srv.query("SHOW max_connections") == [("10",)]
        yield srv


def _log(server: PrivateServer) -> str:
    return server.log_path.read_text(errors="replace")


# -- the burst ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_200_containers_x_20_invocations_through_pgbouncer(
    server: PrivateServer, tmp_path: Path
) -> None:
    """4000 invocations (create + read back) through 7 server sessions: every one succeeds."""
    outcome = run_proxy_burst(
        server,
        "pgbouncer",
        containers=200,
        invocations=20,
        limit=LIMIT,
        pause=0.0,
        timeout=120.0,
        log_path=str(tmp_path / "containers.log"),
    )
    assert outcome.invocations == 200 * 20
    assert outcome.statuses == {200: 4000}, _tail(tmp_path / "containers.log")
    assert outcome.success_rate == 1.0
    assert len(set(outcome.created)) == 4000  # each one a user of its own, read back equal
    assert 0 < outcome.peak_sessions <= LIMIT
    role = outcome.role
    log = _log(server)
    assert logged_statements(log, role) >= 4000 * 2  # the log is the burst's
    assert session_state_statements(log, role) == []


def _tail(path: Path) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-20:])


# -- migrations through the proxy ----------------------------------------------------------------
# 0001 sleeps inside its transaction, so a second migrator started with the first one has to
# wait on the lock (and would apply 0001 again if the lock did not hold across sessions).
SLOW_CREATE = """
def up(migrator, db):
    db.execute_sql("SELECT pg_sleep(0.5)")
    db.execute_sql("CREATE TABLE note (id INTEGER PRIMARY KEY, body VARCHAR(100))")


def down(migrator, db):
    db.execute_sql("DROP TABLE note")
"""
NOT_ATOMIC = """
atomic = False


def up(migrator, db):
    db.execute_sql("CREATE INDEX CONCURRENTLY note_body ON note (body)")


def down(migrator, db):
    db.execute_sql("DROP INDEX note_body")
"""


@pytest.fixture
def proxied(server: PrivateServer) -> Iterator[tuple[PgBouncer, Any]]:
    """A fresh role (owning a fresh schema) and a PgBouncer that lets it in, 2 server sessions."""
    account = create_limited_account(server, LIMIT, prefix="pgbmig")
    server.query(
        f"CREATE SCHEMA {account.name} AUTHORIZATION {account.name}", database=server.test_db
    )
    try:
        with pgbouncer(server.host, server.port, pool_size=2, users=[account.name]) as bouncer:
            yield bouncer, account
    finally:
        drop_account(server, account.name)


def _migrate(
    bouncer: PgBouncer, server: PrivateServer, account: Any, directory: Path, *args: str
) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DATABASE_URL"))}
    env.update(bouncer.env(server.test_db, account.name))
    env["DB_PASSWORD"] = account.password
    return subprocess.Popen(
        [sys.executable, "-m", "peewee_serverless", "migrate", *args, "--dir", str(directory)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


def _history(server: PrivateServer, schema: str) -> list[str]:
    rows = server.query(
        f"SELECT name FROM {schema}.schema_migration ORDER BY name", database=server.test_db
    )
    return [r[0] for r in rows]


def test_concurrent_migrations_through_pgbouncer_apply_each_once(
    server: PrivateServer, proxied: tuple[PgBouncer, Any], tmp_path: Path
) -> None:
    """Two `migrate` processes through PgBouncer at once: each migration applied exactly once,
    then `down` reverts one; no session state is used and no advisory lock stays behind."""
    bouncer, account = proxied
    directory = write_migrations(
        tmp_path / "migrations", {"0001_create_note": SLOW_CREATE, "0002_add_karma": ADD_KARMA}
    )

    first = _migrate(bouncer, server, account, directory)
    second = _migrate(bouncer, server, account, directory)
    outputs = [p.communicate(timeout=120) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outputs
    applied = sorted(
        line for out, _ in outputs for line in out.splitlines() if line.startswith("applied ")
    )
    assert applied == ["applied 0001_create_note", "applied 0002_add_karma"]
    assert _history(server, account.name) == ["0001_create_note", "0002_add_karma"]

    down = _migrate(bouncer, server, account, directory, "down")
    out, err = down.communicate(timeout=120)
    assert (down.returncode, out.strip()) == (0, "reverted 0002_add_karma"), err
    assert _history(server, account.name) == ["0001_create_note"]

    held = server.query("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
    assert held == [(0,)]
    log = _log(server)
    assert logged_statements(log, account.name) > 0
    assert session_state_statements(log, account.name) == []


def test_a_non_atomic_migration_is_refused_through_the_proxy(
    server: PrivateServer, proxied: tuple[PgBouncer, Any], tmp_path: Path
) -> None:
    """`atomic = False` cannot be one transaction: one line naming the direct endpoint, exit 2;
    what came before it is applied and recorded."""
    bouncer, account = proxied
    directory = write_migrations(
        tmp_path / "migrations",
        {"0001_create_note": SLOW_CREATE, "0002_index_concurrently": NOT_ATOMIC},
    )
    proc = _migrate(bouncer, server, account, directory)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert "0002_index_concurrently" in lines[0] and "direct endpoint" in lines[0]
    assert _history(server, account.name) == ["0001_create_note"]
