"""Migrations: playhouse.migrations runner under the advisory lock, on every backend."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playhouse.migrations import Runner

from peewee_serverless import ConfigurationError, ConnectionLost, MigrationLockTimeout
from peewee_serverless.migrate import (
    advisory_key,
    default_lock_name,
    migration_handler,
    migration_lock,
    run_migrations,
    status,
)

from .conftest import ROOT, TEST_DB, Backend

# 0001 would fail if it ran twice (no IF NOT EXISTS): applying it once per run is the contract.
CREATE_NOTE = """
def up(migrator, db):
    db.execute_sql("CREATE TABLE note (id INTEGER PRIMARY KEY, body VARCHAR(100))")


def down(migrator, db):
    db.execute_sql("DROP TABLE note")
"""
ADD_KARMA = """
from peewee import IntegerField


def up(migrator, db):
    migrator.migrate(migrator.add_column("note", "karma", IntegerField(default=0)))


def down(migrator, db):
    migrator.migrate(migrator.drop_column("note", "karma"))
"""
NAMES = ["0001_create_note", "0002_add_karma"]


@pytest.fixture
def migrations(tmp_path: Path) -> Path:
    """A migrations directory with two tiny playhouse migrations."""
    return write_migrations(
        tmp_path / "migrations", {"0001_create_note": CREATE_NOTE, "0002_add_karma": ADD_KARMA}
    )


def write_migrations(directory: Path, sources: dict[str, str]) -> Path:
    """``directory``, made, with a ``NAME.py`` for each migration name -> source."""
    directory.mkdir()
    for name, source in sources.items():
        (directory / f"{name}.py").write_text(source)
    return directory


def history(backend: Backend) -> list[str]:
    """Names recorded in the runner's history table, as another connection sees them."""
    return [r[0] for r in backend.query("SELECT name FROM schema_migration ORDER BY name")]


def tables(db: Any) -> set[str]:
    with db.connection_context():
        return set(db.get_tables())


def columns(db: Any, table: str) -> set[str]:
    with db.connection_context():
        return {c.name for c in db.get_columns(table)}


def test_up_status_down(backend: Backend, db: Any, migrations: Path) -> None:
    assert [(m.name, m.applied) for m in status(db, migrations)] == [(n, None) for n in NAMES]

    assert run_migrations(db, migrations) == NAMES
    assert history(backend) == NAMES
    assert columns(db, "note") >= {"id", "body", "karma"}
    assert [m.name for m in status(db, migrations) if m.applied] == NAMES

    # Re-running is a no-op (0001 would fail if it ran again).
    assert run_migrations(db, migrations, "up") == []
    assert history(backend) == NAMES

    assert run_migrations(db, migrations, "down") == ["0002_add_karma"]
    assert "karma" not in columns(db, "note")
    assert [m.name for m in status(db, migrations) if not m.applied] == ["0002_add_karma"]

    assert run_migrations(db, migrations, "down") == ["0001_create_note"]
    assert "note" not in tables(db)
    assert history(backend) == []

    assert run_migrations(db, migrations, "up", target="0001_create_note") == ["0001_create_note"]
    assert history(backend) == ["0001_create_note"]
    assert run_migrations(db, migrations, "up") == ["0002_add_karma"]
    assert run_migrations(db, migrations, "down", target="0001_create_note") == NAMES[::-1]
    assert history(backend) == []
    # The caller's connection state is left as found: closed.
    assert db.is_closed()


def test_missing_directory_is_a_configuration_error(db: Any, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        run_migrations(db, tmp_path / "nope")


@contextlib.contextmanager
def held_lock(backend: Backend, db: Any) -> Iterator[None]:
    """Hold the migration lock from a second, independent connection (or process lock file)."""
    name = default_lock_name(db)
    if backend.engine == "mysql":
        conn = backend.admin()
        with conn.cursor() as cur:
            cur.execute("SELECT GET_LOCK(%s, 0)", (name,))
            assert cur.fetchone()[0] == 1
        yield
        with conn.cursor() as cur:
            cur.execute("SELECT RELEASE_LOCK(%s)", (name,))
    elif backend.engine == "postgres":
        conn = backend.admin()
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (advisory_key(name),))
        yield
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", (advisory_key(name),))
    else:
        import fcntl

        with open(str(db.database) + ".migrate-lock", "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            yield
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def test_lock_excludes_a_second_migrator(backend: Backend, db: Any, migrations: Path) -> None:
    with held_lock(backend, db):
        with pytest.raises(MigrationLockTimeout) as info:
            run_migrations(db, migrations, lock_timeout=0.2)
        assert info.value.name == default_lock_name(db)
        with pytest.raises(MigrationLockTimeout):
            run_migrations(db, migrations, lock_timeout=0)
        assert "schema_migration" not in tables(db)
    # Released: the same call now goes through, and the lock can be retaken afterwards.
    assert run_migrations(db, migrations, lock_timeout=0.2) == NAMES
    with db.connection_context(), migration_lock(db, timeout=0):
        pass


def test_lock_is_released_on_error(backend: Backend, db: Any) -> None:
    with db.connection_context():
        with pytest.raises(RuntimeError), migration_lock(db, timeout=0):
            raise RuntimeError("boom")
        with migration_lock(db, timeout=0):
            pass
    if backend.engine == "postgres":
        # The session's lock_timeout is restored after a bounded wait.
        with db.connection_context():
            db.execute_sql("SET lock_timeout = '7s'")
            with migration_lock(db, timeout=0.5):
                assert db.execute_sql("SHOW lock_timeout").fetchone()[0] == "7s"


def _waiting_for_lock(backend: Backend) -> int:
    """How many sessions are blocked on the migration lock right now (server's own view)."""
    if backend.engine == "mysql":
        sql = (
            "SELECT COUNT(*) FROM information_schema.processlist "
            "WHERE db = %s AND info LIKE 'SELECT GET_LOCK%%'"
        )
    else:
        sql = (
            "SELECT COUNT(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
            "WHERE l.locktype = 'advisory' AND NOT l.granted AND d.datname = %s"
        )
    return int(backend.query(sql, (TEST_DB,))[0][0])


def migrate_argv(*args: str) -> list[str]:
    """``python -m peewee_serverless migrate ...`` (the installed CLI)."""
    return [sys.executable, "-m", "peewee_serverless", "migrate", *args]


def run_migrate(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``migrate ARGS`` to the end with ``env``."""
    return subprocess.run(
        migrate_argv(*args), env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def subprocess_env(backend: Backend, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DB_") and k != "DATABASE_URL"}
    env.update(backend.env)
    env.update(extra)
    return env


def _drain(procs: list[subprocess.Popen[str]]) -> list[str]:
    """stderr of the processes that already exited (for a failure message)."""
    return [p.communicate()[1] for p in procs if p.poll() is not None]


def test_two_concurrent_migrate_processes_apply_each_migration_once(
    server_backend: Backend, migrations: Path
) -> None:
    backend = server_backend
    db = backend.make_db()
    env = subprocess_env(backend, DB_MIGRATION_LOCK_TIMEOUT="120")
    argv = migrate_argv("up", "--dir", str(migrations))
    procs: list[subprocess.Popen[str]] = []
    try:
        # Both start while the lock is held, so both really contend for it when it is released.
        with held_lock(backend, db):
            for _ in range(2):
                procs.append(
                    subprocess.Popen(
                        argv,
                        env=env,
                        cwd=ROOT,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        text=True,
                    )
                )
            for _ in range(600):  # both blocked on the lock (or one died: caught below)
                if _waiting_for_lock(backend) == 2 or any(p.poll() is not None for p in procs):
                    break
                time.sleep(0.05)
            if _waiting_for_lock(backend) != 2:
                pytest.fail(f"not both waiting: {[p.poll() for p in procs]} {_drain(procs)}")
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
    stdout = sorted(out for out, _ in outputs)
    assert stdout == sorted(
        ["applied 0001_create_note\napplied 0002_add_karma\n", "nothing to apply\n"]
    ), outputs
    assert history(backend) == NAMES


def test_cli_status_up_down(backend: Backend, migrations: Path) -> None:
    env = subprocess_env(backend)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return run_migrate(env, *args, "--dir", str(migrations))

    result = run("status")
    assert (result.returncode, result.stdout) == (0, "[ ] 0001_create_note\n[ ] 0002_add_karma\n")
    result = run("up", "--target", "0001_create_note")
    assert (result.returncode, result.stdout) == (0, "applied 0001_create_note\n")
    result = run("status")
    assert result.stdout == "[x] 0001_create_note\n[ ] 0002_add_karma\n"
    result = run("down")
    assert (result.returncode, result.stdout) == (0, "reverted 0001_create_note\n")
    assert history(backend) == []


def test_cli_errors_are_one_line_exit_2(backend: Backend, tmp_path: Path, migrations: Path) -> None:
    missing = run_migrate(subprocess_env(backend), "up", "--dir", str(tmp_path / "nope"))
    assert missing.returncode == 2
    assert missing.stderr.count("\n") == 1 and "does not exist" in missing.stderr
    bad = run_migrate(subprocess_env(backend, DB_ENGINE="oracle"), "up", "--dir", str(migrations))
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "DB_ENGINE" in bad.stderr


def test_migration_handler_applies_once_and_reports(backend: Backend, migrations: Path) -> None:
    handler = migration_handler(migrations, environ=backend.env)
    assert handler({"action": "status"}, None) == {
        "action": "status",
        "applied": [],
        "pending": NAMES,
    }
    assert handler({}, None) == {"action": "up", "applied": NAMES, "pending": []}
    assert handler({}, None) == {"action": "up", "applied": [], "pending": []}
    assert handler({"action": "status"}, None)["applied"] == NAMES
    assert history(backend) == NAMES
    with pytest.raises(ConfigurationError, match="action"):
        handler({"action": "down"}, None)


def test_example_migrations_up_and_down(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("DB_") or k == "DATABASE_URL"]:
        monkeypatch.delenv(key)
    for key, value in backend.env.items():
        monkeypatch.setenv(key, value)
    import importlib

    from examples.users import migrate_handler

    # A fresh module: its handler builds the database from this backend's environment.
    importlib.reload(migrate_handler)
    names = sorted(p.stem for p in migrate_handler.MIGRATIONS.glob("[0-9]*.py"))
    assert names[0] == "0001_create_user"
    result = migrate_handler.handler({}, None)
    assert result == {"action": "up", "applied": names, "pending": []}
    assert history(backend) == names
    db = backend.make_db()
    assert columns(db, "users") >= {"id", "name", "email", "created_at"}
    reverted = run_migrations(db, migrate_handler.MIGRATIONS, "down", target=names[0])
    assert reverted == names[::-1]
    assert "users" not in tables(db)
    assert history(backend) == []


def test_losing_the_lock_session_between_migrations_stops_the_run(
    server_backend: Backend, migrations: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock dies with its session: a silently reconnected runner must not go on."""
    db = server_backend.make_db()
    applied: list[str] = []
    original = Runner._run

    def run_then_lose_session(self: Any, name: str, module: Any, direction: str, **kw: Any) -> Any:
        result = original(self, name, module, direction, **kw)
        applied.append(name)
        if len(applied) == 1:
            server_backend.kill(self._session)  # as a failover or a reaper would
        return result

    monkeypatch.setattr(Runner, "_run", run_then_lose_session)
    with pytest.raises(ConnectionLost, match="migration lock"):
        run_migrations(db, migrations)
    assert applied == NAMES[:1]
    assert history(server_backend) == NAMES[:1]
    assert "karma" not in columns(db, "note")

    monkeypatch.undo()
    assert run_migrations(db, migrations) == NAMES[1:]
    assert history(server_backend) == NAMES


def test_the_lock_follows_the_database_classes_engine(tmp_path: Path) -> None:
    from peewee import SqliteDatabase

    from peewee_serverless.database import database_class_for

    for engine in ("mysql", "postgres", "sqlite"):
        assert database_class_for(engine).engine == engine
    # A plain Peewee database names no engine: refused, not guessed.
    plain = SqliteDatabase(str(tmp_path / "plain.db"))
    with pytest.raises(TypeError, match="database_from_env"), migration_lock(plain, timeout=0):
        pass
