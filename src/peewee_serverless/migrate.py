"""Schema migrations on Peewee's own :mod:`playhouse.migrations` runner, safe to run concurrently.

Migrations are the playhouse files (``0001_create_user.py`` defining ``up(migrator, db)`` and
``down(migrator, db)``), recorded in the runner's ``schema_migration`` history table. This module
adds only what a deploy needs on top of that runner:

* :func:`migration_lock`: one migrator at a time per database, so two copies of the migration
  function (or two ``peewee-serverless migrate`` processes) started at once apply each migration
  exactly once. MySQL / MariaDB: ``GET_LOCK``; PostgreSQL: ``pg_advisory_lock``; SQLite: an
  exclusive ``flock`` on a ``<database>.migrate-lock`` file next to the database file;
* :func:`run_migrations` / :func:`status`: the runner's ``up`` / ``down`` / ``status`` under that
  lock. The runner reads the history *after* the lock is taken, so the process that waited sees
  the other one's work and does nothing;
* :func:`migration_handler`: a Lambda handler applying pending migrations, once per deploy;
* :func:`create_migration`: a new numbered file, empty or generated from your models by
  Peewee's own generator (``playhouse.schema_diff`` + ``playhouse.migrations.template``);
* :func:`add_arguments`: ``peewee-serverless migrate [up|down|status|create NAME]``.

Through a connection multiplexer (``DB_MODE=proxy``: RDS Proxy, PgBouncer in transaction pooling)
consecutive transactions may run on different server sessions, so a session-level lock (and the
session check below) means nothing there. On PostgreSQL each migration then runs as ONE
transaction that first takes ``pg_advisory_xact_lock`` (released by its own COMMIT or ROLLBACK,
waiting at most the lock timeout set with ``SET LOCAL``-scoped ``set_config(..., true)``),
re-reads the history and applies the migration only if nobody else did: DDL is transactional
there, so a migration and its history row commit together or not at all. A migration declaring
``atomic = False`` cannot be one transaction and is refused with a message to use the direct
endpoint. MySQL keeps ``GET_LOCK``: RDS Proxy pins the session that takes it for as long as the
migrator stays connected, which is what a migration needs (its DDL commits implicitly, so no
transaction-scoped lock could cover it).

Setting: ``DB_MIGRATION_LOCK_TIMEOUT`` (seconds, default 60): how long to wait for another
migrator before giving up with :class:`~peewee_serverless.errors.MigrationLockTimeout`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from peewee import AutoField, DatabaseError, InterfaceError, Model, SqliteDatabase
from playhouse.migrations import Migration, MigrationError, Runner, template

from .config import database_from_env
from .errors import (
    ConfigurationError,
    ConnectionLost,
    MigrationLockTimeout,
    PeeweeServerlessError,
    driver_error,
)

if TYPE_CHECKING:
    import argparse

__all__ = [
    "DEFAULT_LOCK_TIMEOUT",
    "HISTORY_TABLE",
    "add_arguments",
    "create_migration",
    "lock_timeout_from_env",
    "migration_handler",
    "migration_lock",
    "run_migrations",
    "status",
]

#: Seconds to wait for another migrator when ``DB_MIGRATION_LOCK_TIMEOUT`` is not set.
DEFAULT_LOCK_TIMEOUT = 60.0
#: The playhouse runner's history table (its own default).
HISTORY_TABLE = "schema_migration"

_SQLITE_POLL_SECONDS = 0.05
_MYSQL_LOCK_NAME_MAX = 64


def lock_timeout_from_env(environ: Mapping[str, str] | None = None) -> float:
    """``DB_MIGRATION_LOCK_TIMEOUT`` in seconds (``DEFAULT_LOCK_TIMEOUT`` when unset)."""
    env = os.environ if environ is None else environ
    raw = env.get("DB_MIGRATION_LOCK_TIMEOUT", "").strip()
    if not raw:
        return DEFAULT_LOCK_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(
            "DB_MIGRATION_LOCK_TIMEOUT", f"must be a number of seconds, got {raw!r}"
        ) from None
    if value < 0:
        raise ConfigurationError("DB_MIGRATION_LOCK_TIMEOUT", f"must be >= 0, got {raw!r}")
    return value


def default_lock_name(db: Any) -> str:
    """The lock name for ``db``: per database, because MySQL locks are server-wide."""
    return f"peewee_serverless.migrate:{db.database}"


def _mysql_lock_name(name: str) -> str:
    # MySQL refuses names longer than 64 characters; a digest keeps long names distinct.
    if len(name) <= _MYSQL_LOCK_NAME_MAX:
        return name
    return "peewee_serverless:" + hashlib.sha256(name.encode()).hexdigest()[:40]


def advisory_key(name: str) -> int:
    """A stable signed 64-bit PostgreSQL advisory-lock key for ``name`` (same in every process)."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _timed_out(name: str, timeout: float, exc: BaseException | None = None) -> MigrationLockTimeout:
    err = MigrationLockTimeout(
        f"another migration holds the lock {name!r}; gave up after {timeout:g}s",
        name=name,
        timeout=timeout,
    )
    if exc is not None:
        err.__cause__ = exc
    return err


def _quietly(db: Any, sql: str, params: tuple[Any, ...]) -> None:
    """Run a clean-up statement (release a lock, restore a setting) whose failure changes
    nothing: a session that died has released its locks and settings already."""
    with contextlib.suppress(DatabaseError, InterfaceError, PeeweeServerlessError):
        db.execute_sql(sql, params)


@contextlib.contextmanager
def _mysql_lock(db: Any, name: str, timeout: float) -> Iterator[None]:
    lock = _mysql_lock_name(name)
    # GET_LOCK is held by the session (not a transaction): DDL's implicit commits keep it.
    row = db.execute_sql("SELECT GET_LOCK(%s, %s)", (lock, timeout)).fetchone()
    if not row or row[0] != 1:
        raise _timed_out(name, timeout)
    try:
        yield
    finally:
        _quietly(db, "SELECT RELEASE_LOCK(%s)", (lock,))


def _pg_wait_for_lock(
    db: Any, function: str, key: int, name: str, timeout: float, *, local: bool
) -> None:
    """``SELECT function(key)`` (an advisory lock) waiting ``timeout`` at most, else
    :class:`MigrationLockTimeout`. The wait is ``lock_timeout`` (any lock, advisory ones
    included: SQLSTATE 55P03 lock_not_available), set for the transaction (``local``) or the
    session; at least 1 ms, because 0 would mean "wait forever"."""
    wait_ms = f"{max(1, int(timeout * 1000))}ms"
    db.execute_sql("SELECT set_config('lock_timeout', %s, %s)", (wait_ms, local))
    try:
        db.execute_sql(f"SELECT {function}(%s)", (key,))
    except DatabaseError as exc:
        if getattr(driver_error(exc), "pgcode", None) != "55P03":
            raise
        raise _timed_out(name, timeout, exc) from exc


@contextlib.contextmanager
def _postgres_lock(db: Any, name: str, timeout: float) -> Iterator[None]:
    key = advisory_key(name)
    if timeout <= 0:
        got = db.execute_sql("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]
        if not got:
            raise _timed_out(name, timeout)
    else:
        previous = db.execute_sql("SHOW lock_timeout").fetchone()[0]
        try:
            _pg_wait_for_lock(db, "pg_advisory_lock", key, name, timeout, local=False)
        finally:
            _quietly(db, "SELECT set_config('lock_timeout', %s, false)", (previous,))
    try:
        yield
    finally:
        _quietly(db, "SELECT pg_advisory_unlock(%s)", (key,))


@contextlib.contextmanager
def _sqlite_lock(db: Any, name: str, timeout: float) -> Iterator[None]:
    path = str(db.database)
    try:
        import fcntl
    except ImportError:  # not POSIX: SQLite still serializes each migration's transaction
        yield
        return
    if path in ("", ":memory:") or path.startswith("file:"):
        # A private in-memory database has no second migrator to exclude.
        yield
        return
    # Not BEGIN IMMEDIATE around the runner: SqliteMigrator must toggle foreign_keys outside a
    # transaction (a table rebuild would otherwise cascade deletes). A file lock excludes
    # other processes without holding a transaction.
    with open(path + ".migrate-lock", "a+b") as fh:
        deadline = time.monotonic() + timeout
        polls = int(timeout / _SQLITE_POLL_SECONDS) + 1
        for _ in range(polls + 1):
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise _timed_out(name, timeout) from None
                time.sleep(_SQLITE_POLL_SECONDS)
        else:
            raise _timed_out(name, timeout)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


#: The lock per engine (the database class's ``engine`` attribute, set per backend).
_LOCKS: dict[str, Callable[[Any, str, float], contextlib.AbstractContextManager[None]]] = {
    "mysql": _mysql_lock,
    "postgres": _postgres_lock,
    "sqlite": _sqlite_lock,
}


@contextlib.contextmanager
def migration_lock(
    db: Any, name: str | None = None, timeout: float | None = None
) -> Iterator[None]:
    """Hold the migration lock on ``db`` for the block: one migrator per database at a time.

    ``name`` defaults to :func:`default_lock_name`; ``timeout`` (seconds) to
    ``DB_MIGRATION_LOCK_TIMEOUT``. Raises :class:`MigrationLockTimeout` when another holder keeps
    it longer. The lock belongs to ``db``'s current connection (session-level on the servers),
    so run the migrations on that same ``db`` inside the block.
    """
    lock_name = name or default_lock_name(db)
    wait = lock_timeout_from_env() if timeout is None else max(0.0, float(timeout))
    lock = _LOCKS.get(getattr(db, "engine", ""))
    if lock is None:
        raise TypeError(
            f"no migration lock for {type(db).__name__}: use a peewee-serverless database "
            "(database_from_env), whose `engine` names the lock"
        )
    with lock(db, lock_name, wait):
        yield


def _check_directory(directory: str | os.PathLike[str]) -> str:
    path = os.fspath(directory)
    if not os.path.isdir(path):
        raise ConfigurationError("migrations directory", f"{path!r} does not exist")
    return path


@contextlib.contextmanager
def _connected(db: Any) -> Iterator[None]:
    # Reuse a connection the caller already has; otherwise open one just for this call.
    opened = db.is_closed()
    if opened:
        db.connect()
    try:
        yield
    finally:
        if opened and not db.is_closed():
            db.close()


def _pinned_session(db: Any) -> contextlib.AbstractContextManager[None]:
    # A database whose statements may each run on another pooled session (the Data API) pins
    # one for the lock's lifetime; a socket connection is one session already.
    pin = getattr(db, "pinned_session", None)
    return pin() if pin is not None else contextlib.nullcontext()


def _session_id(db: Any) -> int | None:
    """The server session holding the lock: the database's connection-id hook (None for
    SQLite, whose lock is a file, and for databases without the hook)."""
    hook = getattr(db, "server_connection_id", None)
    return hook() if hook is not None else None


class _SessionGuardedRunner(Runner):
    """Peewee's runner, refusing to apply a migration once the lock's session is gone.

    The advisory lock belongs to the server session. Should the connection die between two
    migrations, a serverless database reconnects transparently, but the lock died with the old
    session and another migrator may be running: so before each migration the session is checked
    and :class:`ConnectionLost` is raised if it changed (what ran so far is committed and recorded).
    """

    def __init__(self, db: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(db, *args, **kwargs)
        self._session = _session_id(db)

    def _run(self, name: str, module: Any, direction: str, fake: bool = False) -> Any:
        if self._session is not None and _session_id(self.database) != self._session:
            raise ConnectionLost(
                f"the database session holding the migration lock was lost before {name}; "
                "nothing more was applied: run the migrations again"
            )
        return super()._run(name, module, direction, fake=fake)


class _TransactionLockedRunner(Runner):
    """Peewee's runner for PostgreSQL behind a transaction-pooling proxy (``DB_MODE=proxy``).

    Every migration is one transaction: ``pg_advisory_xact_lock``, re-read of the history, the
    migration, its history row, COMMIT. Nothing is held between transactions, so it works
    whichever server session each transaction lands on; a second migrator waits on the lock and
    then finds the migration recorded and skips it.
    """

    def __init__(self, db: Any, *args: Any, lock_name: str, timeout: float, **kwargs: Any) -> None:
        super().__init__(db, *args, **kwargs)
        self._key = advisory_key(lock_name)
        self._lock_name = lock_name
        self._timeout = timeout
        self._skipped: set[str] = set()

    def _lock(self) -> None:
        # local: SET LOCAL, gone at COMMIT, never leaks into another client's session.
        db, key, name = self.database, self._key, self._lock_name
        _pg_wait_for_lock(db, "pg_advisory_xact_lock", key, name, self._timeout, local=True)

    def _create_history(self) -> None:
        # Two first-ever migrators creating the table at once would collide in the catalog.
        with self.database.atomic():
            self._lock()
            self.History.create_table()

    def up(self, target: str | None = None, fake: bool = False) -> list[str]:
        self._create_history()
        names: list[str] = super().up(target, fake=fake)
        return [n for n in names if n not in self._skipped]

    def down(self, target: str | None = None) -> list[str]:
        names: list[str] = super().down(target)
        return [n for n in names if n not in self._skipped]

    def _run(self, name: str, module: Any, direction: str, fake: bool = False) -> Any:
        if not getattr(module, "atomic", True):
            raise MigrationError(
                f"{name} sets atomic = False and cannot run as one transaction through a "
                "connection proxy (DB_MODE=proxy): run migrations against the database's direct "
                "endpoint (DB_MODE=direct)"
            )
        with self.database.atomic():
            self._lock()
            recorded = self.History.select().where(self.History.name == name).exists()
            if recorded is (direction == "up"):
                self._skipped.add(name)  # another migrator did it while we waited
                return None
            # The runner's own atomic() nests as a savepoint inside this transaction.
            return super()._run(name, module, direction, fake=fake)


def _behind_proxy(db: Any) -> bool:
    options = getattr(db, "options", None)
    return getattr(options, "mode", "direct") == "proxy" and getattr(db, "engine", "") == "postgres"


def run_migrations(
    db: Any,
    directory: str | os.PathLike[str],
    direction: str = "up",
    target: str | None = None,
    *,
    lock_timeout: float | None = None,
    table_name: str = HISTORY_TABLE,
) -> list[str]:
    """Apply (``up``) or revert (``down``) migrations under the migration lock.

    ``up`` applies every pending migration in order (through ``target`` if given); ``down``
    reverts the most recent one (back through ``target`` if given). Returns the names applied or
    reverted, in order; ``[]`` when there was nothing to do (re-running is a no-op).
    """
    if direction not in ("up", "down"):
        raise ValueError(f"direction must be 'up' or 'down', got {direction!r}")
    path = _check_directory(directory)
    if _behind_proxy(db):
        wait = lock_timeout_from_env() if lock_timeout is None else max(0.0, float(lock_timeout))
        with _connected(db):
            proxied = _TransactionLockedRunner(
                db, path, table_name=table_name, lock_name=default_lock_name(db), timeout=wait
            )
            done: list[str] = proxied.up(target) if direction == "up" else proxied.down(target)
            return done
    with _connected(db), _pinned_session(db), migration_lock(db, timeout=lock_timeout):
        runner = _SessionGuardedRunner(db, path, table_name=table_name)
        # The runner reads the history now, after the lock: a waiter sees the holder's work.
        names: list[str] = runner.up(target) if direction == "up" else runner.down(target)
        return names


def status(
    db: Any,
    directory: str | os.PathLike[str],
    *,
    table_name: str = HISTORY_TABLE,
) -> list[Migration]:
    """Files and history merged, in order: playhouse ``Migration(idx, name, path, applied)``.

    ``applied`` is ``None`` for a pending migration; ``path`` is ``None`` for a recorded one whose
    file is gone. Takes no lock (it only reads).
    """
    path = _check_directory(directory)
    with _connected(db):
        rows: list[Migration] = Runner(db, path, table_name=table_name).status()
        return rows


def _names(rows: list[Migration], applied: bool) -> list[str]:
    return [m.name for m in rows if bool(m.applied) is applied]


def migration_handler(
    directory: str | os.PathLike[str],
    *,
    environ: Mapping[str, str] | None = None,
) -> Callable[[Any, Any], dict[str, Any]]:
    """A Lambda handler ``(event, context)`` that applies pending migrations (run once per deploy).

    The database comes from the environment (:func:`~peewee_serverless.database_from_env`), built
    on the first invocation. Returns ``{"action": "up", "applied": [newly applied], "pending":
    [still pending]}``. The event ``{"action": "status"}`` changes nothing and returns
    ``{"action": "status", "applied": [all applied], "pending": [...]}``. Two copies started
    at once are safe (the lock); a re-run applies nothing. The lock wait is
    ``DB_MIGRATION_LOCK_TIMEOUT``, cut short to end before the invocation's own deadline.
    """
    from .lifecycle import database_lifecycle, deadline_from_context

    state: dict[str, Any] = {}

    def handler(event: Any, context: Any) -> dict[str, Any]:
        wrapped = state.get("handler")
        if wrapped is None:
            db = database_from_env(environ)

            def migrate(event: Any, context: Any) -> dict[str, Any]:
                return _invoke(db, event, context)

            wrapped = state["handler"] = database_lifecycle(db, close_policy="close")(migrate)
        result: dict[str, Any] = wrapped(event, context)
        return result

    def _invoke(db: Any, event: Any, context: Any) -> dict[str, Any]:
        action = "up"
        if isinstance(event, Mapping) and event.get("action"):
            action = str(event["action"])
        if action == "status":
            rows = status(db, directory)
            return {
                "action": "status",
                "applied": _names(rows, True),
                "pending": _names(rows, False),
            }
        if action != "up":
            raise ConfigurationError("action", f"must be 'up' or 'status', got {action!r}")
        timeout = lock_timeout_from_env(environ)
        deadline = deadline_from_context(context, margin=1.0)
        if deadline is not None:
            timeout = max(0.0, min(timeout, deadline - time.monotonic()))
        with _connected(db):  # one connection for the whole invocation
            applied = run_migrations(db, directory, "up", lock_timeout=timeout)
            pending = _names(status(db, directory), False)
        return {"action": "up", "applied": applied, "pending": pending}

    return handler


def _is_abstract_base(model: type[Model]) -> bool:
    # `class BaseModel(Model)` holding only Meta.database: just the implicit id, no table wanted.
    fields = model._meta.sorted_fields
    return len(fields) == 1 and isinstance(fields[0], AutoField) and not model._meta.indexes


def _models_of(module_name: str) -> list[type[Model]]:
    """The models defined in ``module_name`` (imported from the current directory, as Lambda's
    task root would), leaving out abstract bases that declare no field of their own."""
    from importlib import import_module

    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = import_module(module_name)
    except PeeweeServerlessError:
        raise  # its own one-line message (a bad DB_* setting read at import)
    except Exception as exc:  # noqa: BLE001 - the user's module failed: one line, no traceback
        raise ConfigurationError(
            "--auto", f"cannot import {module_name!r}: {type(exc).__name__}: {exc}"
        ) from None
    models = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, Model)
        and value is not Model
        and value.__module__ == module.__name__
        and not _is_abstract_base(value)
    ]
    if not models:
        raise ConfigurationError("--auto", f"no models with fields in {module_name!r}")
    return models


def create_migration(
    directory: str | os.PathLike[str],
    name: str,
    *,
    models: str | None = None,
    db: Any = None,
    table_name: str = HISTORY_TABLE,
) -> str:
    """Write the next numbered migration file in ``directory`` and return its path.

    Without ``models``: Peewee's empty template (``up`` / ``down`` to fill in). With ``models``
    (a module name such as ``models``): generated by Peewee's own generator. The first migration
    of a directory creates every model's table without touching a database; a later one diffs
    the models against ``db`` (the database configured by the environment when ``None``), which
    must have every migration of ``directory`` applied: the diff is then exactly what is new.
    """
    path = os.fspath(directory)
    if not name.strip():
        raise ConfigurationError("NAME", "must not be empty")
    # The runner wants a database object; writing a template uses none, so an unopened one.
    runner = Runner(db if db is not None else SqliteDatabase(None), path, table_name=table_name)
    if models is None:
        created: str = runner.create(name)
        return created
    # sort_models: Peewee's own dependency order (foreign-key targets first), as schema_diff uses.
    from playhouse.schema_diff import SchemaDiff, diff_models, sort_models

    classes = _models_of(models)
    existing = runner.migrations() if os.path.isdir(path) else []
    if not existing:
        diff = SchemaDiff(sort_models(classes), [], [], [], [])
    else:
        live = db if db is not None else database_from_env()
        with _connected(live):
            pending = _names(status(live, path, table_name=table_name), False)
            if pending:
                raise ConfigurationError(
                    "--auto",
                    f"{len(pending)} migration(s) not applied yet ({', '.join(pending)}): "
                    "run `migrate up` first, so that the diff holds only what is new",
                )
            diff = diff_models(live, classes)
        if not diff:
            raise ConfigurationError("--auto", f"the database already matches {models!r}")
    created = runner.create(name, body=template(diff))
    return created


# -- command line --------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Apply, revert, list or create migrations.

    Run playhouse.migrations files against the database configured by DATABASE_URL or DB_*
    variables, under a lock that makes concurrent runs safe.
    """
    parser.add_argument(
        "action",
        nargs="?",
        default="up",
        choices=("up", "down", "status", "create"),
        help="up: apply pending (default); down: revert the latest; status: list; "
        "create NAME: write a new migration file",
    )
    parser.add_argument("name", nargs="?", metavar="NAME", help="create: the migration's name")
    parser.add_argument(
        "--auto",
        metavar="MODULE",
        help="create: generate the file from the models in MODULE (Peewee's schema diff)",
    )
    parser.add_argument(
        "--dir",
        dest="directory",
        metavar="DIR",
        default="migrations",
        help="migrations directory (default: ./migrations)",
    )
    parser.add_argument(
        "--target",
        metavar="NAME",
        help="up: stop after NAME; down: revert back through NAME",
    )
    parser.add_argument(
        "--lock-timeout",
        type=float,
        metavar="SECONDS",
        help="seconds to wait for another migrator (default: DB_MIGRATION_LOCK_TIMEOUT or 60)",
    )
    parser.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    """Run the ``migrate`` command; print one line per migration.

    Errors (no such directory, bad settings, database or migration failures) are raised as the
    CLI's ``CommandError``: one line on stderr, exit status 2.
    """
    db: Any = None
    if (args.action == "create") != (args.name is not None):
        from .cli import CommandError

        raise CommandError("NAME is required by `create`, and taken by no other action")
    if args.auto is not None and args.action != "create":
        from .cli import CommandError

        raise CommandError("--auto applies to `create` only")
    try:
        if args.action == "create":
            print(f"created {create_migration(args.directory, args.name, models=args.auto)}")
            return 0
        _check_directory(args.directory)
        timeout = lock_timeout_from_env() if args.lock_timeout is None else args.lock_timeout
        db = database_from_env()
        if args.action == "status":
            for m in status(db, args.directory):
                mark = "x" if m.applied and m.path else ("?" if m.applied else " ")
                suffix = "  (file missing)" if m.applied and not m.path else ""
                print(f"[{mark}] {m.name}{suffix}")
            return 0
        names = run_migrations(db, args.directory, args.action, args.target, lock_timeout=timeout)
        verb = "applied" if args.action == "up" else "reverted"
        for name in names:
            print(f"{verb} {name}")
        if not names:
            print("nothing to apply" if args.action == "up" else "nothing to revert")
        return 0
    except (PeeweeServerlessError, MigrationError, DatabaseError, InterfaceError) as exc:
        from .cli import CommandError

        # The CLI prints it as one line on stderr and exits 2.
        raise CommandError(_one_line(exc)) from exc
    finally:
        if db is not None and not db.is_closed():
            db.close()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, PeeweeServerlessError) else f"{type(exc).__name__}: {text}"
