"""The database a function's tests run against: fresh, migrated once, emptied before each test.

``TestDatabase.from_url("sqlite", tmpdir)`` is a new SQLite file; a ``mysql://`` or
``postgresql://`` URL names a test database on a server, which is created when missing and has
every table dropped at the start of the session (its name must contain ``test``, so that a
production URL is never emptied by mistake). :meth:`TestDatabase.setup` then applies the
function's migrations (:func:`peewee_serverless.migrate.run_migrations`); :meth:`empty` removes
every row before a test (auto-increment counters restart at 1), keeping the migration history.

Isolation is by emptying the tables rather than by a rolled-back transaction around each test:
the handler under test runs ``database_lifecycle``, which commits the route's work and rolls
back whatever it finds open at the end of an invocation, so a surrounding test transaction would
be ended by the first request. What a migration inserted (seed rows) is removed too.

Engine differences are three small classes (how to create a database, drop and empty tables).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlparse

from ..config import settings_from_env
from ..database import ServerlessDatabase
from ..errors import ConfigurationError
from ..migrate import HISTORY_TABLE, run_migrations

__all__ = ["TestDatabase"]

SETTING = "PEEWEE_SERVERLESS_TEST_DATABASE_URL"


def _quoted(db: ServerlessDatabase, name: str) -> str:
    first, last = db.quote[0], db.quote[1]
    return f"{first}{name}{last}"


class _Engine:
    """Per-engine SQL; the base is SQLite (a fresh file: nothing to create or drop)."""

    def ensure_database(self, url: str) -> None:
        """Create the test database when it does not exist."""

    def drop_tables(self, db: ServerlessDatabase, tables: list[str]) -> None:
        for table in tables:
            db.execute_sql(f"DROP TABLE IF EXISTS {_quoted(db, table)}")

    def empty(self, db: ServerlessDatabase, tables: list[str]) -> None:
        enforced = db.execute_sql("PRAGMA foreign_keys").fetchone()[0]
        db.execute_sql("PRAGMA foreign_keys = OFF")  # rows go in any order
        try:
            with db.atomic():
                for table in tables:
                    db.execute_sql(f"DELETE FROM {_quoted(db, table)}")
                # Tables declared AUTOINCREMENT keep their counters here: restart them.
                if db.table_exists("sqlite_sequence"):
                    db.execute_sql("DELETE FROM sqlite_sequence")
        finally:
            db.execute_sql(f"PRAGMA foreign_keys = {int(enforced)}")


class _MySQL(_Engine):
    def ensure_database(self, url: str) -> None:
        settings = settings_from_env({"DATABASE_URL": url})
        admin = replace(settings, database="information_schema").create_database()
        try:
            name = settings.database.replace("`", "``")
            admin.execute_sql(
                f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4 "
                "COLLATE utf8mb4_unicode_ci"
            )
        finally:
            admin.close()

    def drop_tables(self, db: ServerlessDatabase, tables: list[str]) -> None:
        db.execute_sql("SET FOREIGN_KEY_CHECKS = 0")
        try:
            super().drop_tables(db, tables)
        finally:
            db.execute_sql("SET FOREIGN_KEY_CHECKS = 1")

    def empty(self, db: ServerlessDatabase, tables: list[str]) -> None:
        db.execute_sql("SET FOREIGN_KEY_CHECKS = 0")
        try:
            for table in tables:  # TRUNCATE also restarts AUTO_INCREMENT
                db.execute_sql(f"TRUNCATE TABLE {_quoted(db, table)}")
        finally:
            db.execute_sql("SET FOREIGN_KEY_CHECKS = 1")


class _Postgres(_Engine):
    def ensure_database(self, url: str) -> None:
        settings = settings_from_env({"DATABASE_URL": url})
        admin = replace(settings, database="postgres").create_database()
        try:
            found = admin.execute_sql(
                "SELECT 1 FROM pg_database WHERE datname = %s", (settings.database,)
            ).fetchone()
            if found is None:
                name = settings.database.replace('"', '""')
                admin.execute_sql(f'CREATE DATABASE "{name}"')  # autocommit: not in a txn
        finally:
            admin.close()

    def drop_tables(self, db: ServerlessDatabase, tables: list[str]) -> None:
        for table in tables:
            db.execute_sql(f"DROP TABLE IF EXISTS {_quoted(db, table)} CASCADE")

    def empty(self, db: ServerlessDatabase, tables: list[str]) -> None:
        if tables:
            names = ", ".join(_quoted(db, t) for t in tables)
            db.execute_sql(f"TRUNCATE {names} RESTART IDENTITY CASCADE")


_ENGINES: dict[str, _Engine] = {"sqlite": _Engine(), "mysql": _MySQL(), "postgres": _Postgres()}


class TestDatabase:
    """One session's test database; see the module docstring."""

    __test__ = False  # not a test class, whatever pytest's naming rules say

    def __init__(self, url: str) -> None:
        self.url = url
        self.settings = settings_from_env({"DATABASE_URL": url})
        self._engine = _ENGINES[self.settings.engine]
        self._db: ServerlessDatabase | None = None

    @classmethod
    def from_url(cls, value: str | None, tmpdir: str | os.PathLike[str]) -> TestDatabase:
        """``"sqlite"`` / empty: a new file in ``tmpdir``; otherwise a server URL (see above)."""
        if not value or value.strip().lower() == "sqlite":
            return cls(f"sqlite:///{Path(tmpdir, 'test.sqlite3')}")
        url = value.strip()
        parsed = urlparse(url)
        name = parsed.path.lstrip("/")
        if parsed.scheme.startswith("sqlite"):
            return cls(url)
        if "test" not in name.lower():
            raise ConfigurationError(
                SETTING, f"names database {name!r}: a test database's name must contain 'test'"
            )
        worker = os.environ.get("PYTEST_XDIST_WORKER")
        if worker:  # one database per pytest-xdist worker
            url = url.replace(f"/{name}", f"/{name}_{worker}", 1)
        return cls(url)

    @property
    def db(self) -> ServerlessDatabase:
        """The test database (a serverless database of its own, not the function's)."""
        if self._db is None:
            self._db = self.settings.create_database()
        return self._db

    def _tables(self) -> list[str]:
        # SQLite's own tables (sqlite_sequence) are neither dropped nor emptied like the others.
        return [t for t in self.db.get_tables() if not t.startswith("sqlite_")]

    def setup(self, migrations: str | os.PathLike[str] | None) -> list[str]:
        """Create the database if needed, drop every table, apply ``migrations`` (if the folder
        exists); returns the migrations applied."""
        self._engine.ensure_database(self.url)
        self._engine.drop_tables(self.db, self._tables())
        if migrations is None or not Path(migrations).is_dir():
            return []
        return run_migrations(self.db, migrations)

    def empty(self) -> None:
        """Remove every row of every table but the migration history."""
        self._engine.empty(self.db, [t for t in self._tables() if t != HISTORY_TABLE])

    def close(self) -> None:
        """Close the test database's own connection."""
        if self._db is not None and not self._db.is_closed():
            self._db.close()

    def __repr__(self) -> str:
        return f"TestDatabase({self.settings!r})"
