"""Shared fixtures: one test body runs on SQLite, MariaDB and PostgreSQL (real servers).

Backends come from ``PEEWEE_SERVERLESS_TEST_BACKENDS`` (default
``sqlite,mariadb,postgres,pgbouncer,data-api-mysql,data-api-postgres,dynamodb``). A listed
server that cannot be reached FAILS the run; leave it out of the list to opt out.
``pgbouncer`` is the PostgreSQL test database reached through a PgBouncer of this test run
(transaction pooling, ``DB_MODE=proxy``); ``data-api-mysql`` / ``data-api-postgres`` are Peewee
over Aurora's Data API protocol, served by ``peewee_serverless.data_api.endpoint`` (started
here, in a thread) on the same MariaDB / PostgreSQL servers. Those are ways to reach a server
rather than engines, so only the example service's tests run on them
(:data:`EXAMPLE_BACKENDS`), the generic ``backend`` fixture does not. ``dynamodb`` is the
example's users store in DynamoDB (moto's server, started here): only the users routes' tests
run on it (:data:`USERS_ROUTES_BACKENDS`).
Each test run uses the database ``PEEWEE_SERVERLESS_TEST_DB`` (default ``peewee_serverless_test``)
on the servers, created here if missing, and starts every test with no tables in it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import peewee
import psycopg2
import pymysql
import pytest

from peewee_serverless import database_from_env

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # makes `examples.users` importable from the tests

ALL_BACKENDS = (
    "sqlite",
    "mariadb",
    "postgres",
    "pgbouncer",
    "data-api-mysql",
    "data-api-postgres",
    "dynamodb",
)
DATA_API_BACKENDS = ("data-api-mysql", "data-api-postgres")
#: Backends that only the example service's tests run on: ways to reach a server (pgbouncer,
#: the Data API) and a users store that is not SQL at all (dynamodb: the users routes only).
EXAMPLE_ONLY_BACKENDS = ("pgbouncer", *DATA_API_BACKENDS, "dynamodb")
SELECTED = tuple(
    b.strip()
    for b in os.environ.get("PEEWEE_SERVERLESS_TEST_BACKENDS", ",".join(ALL_BACKENDS)).split(",")
    if b.strip()
)
#: What the ``backend`` fixture runs on: the engines themselves.
GENERAL_BACKENDS = tuple(b for b in SELECTED if b not in EXAMPLE_ONLY_BACKENDS)
#: What the example service's tests run on (``example_backend``): its SQL backends.
EXAMPLE_BACKENDS = tuple(b for b in SELECTED if b != "dynamodb")
#: What the users routes' tests (tests/test_example_users.py) run on: every store.
USERS_ROUTES_BACKENDS = SELECTED
SERVER_BACKENDS = tuple(b for b in GENERAL_BACKENDS if b != "sqlite")
DATA_API_CLUSTERS = {
    "mysql": "arn:aws:rds:us-east-1:123456789012:cluster:local-mysql",
    "postgres": "arn:aws:rds:us-east-1:123456789012:cluster:local-postgres",
}
DATA_API_SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:local-AbCdEf"
TEST_DB = os.environ.get("PEEWEE_SERVERLESS_TEST_DB", "peewee_serverless_test")

MYSQL_ADMIN = {
    "host": os.environ.get("TEST_MYSQL_HOST", "127.0.0.1"),
    "port": int(os.environ.get("TEST_MYSQL_PORT", "3306")),
    "user": os.environ.get("TEST_MYSQL_USER", "root"),
    "password": os.environ.get("TEST_MYSQL_PASSWORD", ""),
}
PG_ADMIN = {
    "host": os.environ.get("TEST_PG_HOST", "127.0.0.1"),
    "port": int(os.environ.get("TEST_PG_PORT", "5432")),
    "user": os.environ.get("TEST_PG_USER", "postgres"),
    "password": os.environ.get("TEST_PG_PASSWORD", ""),
}


@dataclass
class Backend:
    """One database server (or SQLite file) the tests run against."""

    name: str
    engine: str
    env: dict[str, str]
    tmp: Path
    _admins: list[Any] = field(default_factory=list)

    def make_db(self, environ: dict[str, str] | None = None, **overrides: Any) -> Any:
        """A fresh, unconnected serverless database configured exactly like a function would be."""
        env = dict(self.env)
        env.update(environ or {})
        return database_from_env(env, **overrides)

    # -- a second, independent connection: counting and killing ------------------------------
    def admin(self) -> Any:
        """A plain driver connection (autocommit) to the test database, closed after the test."""
        if self.engine == "mysql":
            conn = pymysql.connect(database=TEST_DB, autocommit=True, **MYSQL_ADMIN)
        elif self.engine == "postgres":
            conn = psycopg2.connect(dbname=TEST_DB, **PG_ADMIN)
            conn.autocommit = True
        else:
            raise RuntimeError("SQLite has no server to administer")
        self._admins.append(conn)
        return conn

    def query(self, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        """Run ``sql`` on a fresh admin connection and return all rows."""
        if self.engine == "dynamodb":
            raise RuntimeError("the dynamodb backend has no SQL (see UsersService.user_rows)")
        if self.engine == "sqlite":
            db = peewee.SqliteDatabase(self.env["DB_NAME"])
            with db:
                return list(db.execute_sql(sql, params).fetchall())
        conn = self.admin()
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall()) if cur.description else []

    def kill(self, connection_id: int, wait: bool = True) -> None:
        """Kill a server session from outside, as a server restart or reaper would.

        With ``wait`` return once the server no longer lists it (``pg_terminate_backend`` only
        signals the backend; bounded), so "killed" means killed. One short-lived connection.
        """
        if self.engine == "mysql":
            conn = pymysql.connect(database=TEST_DB, autocommit=True, **MYSQL_ADMIN)
            kill = f"KILL {int(connection_id)}"
            listed = "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = %s"
        else:
            conn = psycopg2.connect(dbname=TEST_DB, **PG_ADMIN)
            conn.autocommit = True
            kill = f"SELECT pg_terminate_backend({int(connection_id)})"
            listed = "SELECT COUNT(*) FROM pg_stat_activity WHERE pid = %s"
        try:
            with conn.cursor() as cur:
                cur.execute(kill)
                deadline = time.monotonic() + 10.0
                while wait and time.monotonic() < deadline:
                    cur.execute(listed, (connection_id,))
                    if cur.fetchone()[0] == 0:
                        break
                    time.sleep(0.002)  # poll interval; the condition is re-read each round
        finally:
            conn.close()

    def connection_ids(self) -> set[int]:
        """Server session ids connected to the test database (our admin connections excluded)."""
        if self.engine == "mysql":
            rows = self.query(
                "SELECT id FROM information_schema.processlist"
                " WHERE db = %s AND id <> CONNECTION_ID()",
                (TEST_DB,),
            )
        else:
            rows = self.query(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (TEST_DB,),
            )
        own = {self._admin_id(c) for c in self._admins[:-1]}
        return {int(r[0]) for r in rows} - own

    def _admin_id(self, conn: Any) -> int:
        if self.engine == "mysql":
            return int(conn.thread_id())
        return int(conn.get_backend_pid())

    def close(self) -> None:
        for conn in self._admins:
            with contextlib.suppress(Exception):
                conn.close()
        self._admins.clear()


def _ensure_server_database(engine: str) -> None:
    """Create the test database; fail the run (not skip) when the server is unreachable."""
    try:
        if engine == "mysql":
            conn = pymysql.connect(autocommit=True, connect_timeout=5, **MYSQL_ADMIN)
            with conn.cursor() as cur:
                cur.execute(
                    f"CREATE DATABASE IF NOT EXISTS `{TEST_DB}` "
                    "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
                )
            conn.close()
        else:
            conn = psycopg2.connect(dbname="postgres", connect_timeout=5, **PG_ADMIN)
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (TEST_DB,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{TEST_DB}"')
            conn.close()
    except Exception as exc:  # noqa: BLE001
        pytest.fail(
            f"backend {engine} is not reachable ({exc}); start it (scripts/test does) or opt out "
            f"with PEEWEE_SERVERLESS_TEST_BACKENDS",
            pytrace=False,
        )


def _drop_all_tables(backend: Backend) -> None:
    db = backend.make_db()
    with db.connection_context():
        if backend.engine == "mysql":
            db.execute_sql("SET FOREIGN_KEY_CHECKS = 0")
        cascade = " CASCADE" if backend.engine == "postgres" else ""
        for table in db.get_tables():
            db.execute_sql(f"DROP TABLE IF EXISTS {db.quote[0]}{table}{db.quote[1]}{cascade}")


_ready: set[str] = set()


def backend_env(name: str, tmp: Path, data_api_url: str = "") -> dict[str, str]:
    """The environment a function would have for ``name`` (DB_* variables)."""
    if name in DATA_API_BACKENDS:
        engine = "mysql" if name == "data-api-mysql" else "postgres"
        scheme = "mysql" if engine == "mysql" else "postgresql"
        return {
            "DATABASE_URL": f"{scheme}+data-api://{DATA_API_CLUSTERS[engine]}/{TEST_DB}"
            f"?secret_arn={DATA_API_SECRET}",
            "AWS_ENDPOINT_URL_RDS_DATA": data_api_url,
        }
    if name == "sqlite":
        return {"DB_ENGINE": "sqlite", "DB_NAME": str(tmp / "test.sqlite3")}
    if name == "mariadb":
        return _server_env("mysql", MYSQL_ADMIN)
    return _server_env("postgres", PG_ADMIN)


def _server_env(engine: str, admin: dict[str, Any]) -> dict[str, str]:
    env = {
        "DB_ENGINE": engine,
        "DB_NAME": TEST_DB,
        "DB_HOST": admin["host"],
        "DB_PORT": str(admin["port"]),
        "DB_USER": admin["user"],
    }
    if admin["password"]:
        env["DB_PASSWORD"] = admin["password"]
    return env


ENGINE_OF = {
    "sqlite": "sqlite",
    "mariadb": "mysql",
    "postgres": "postgres",
    "pgbouncer": "postgres",
    "data-api-mysql": "mysql",
    "data-api-postgres": "postgres",
}


def make_backend(name: str, tmp: Path, proxy_env: dict[str, str] | None = None) -> Backend:
    """Prepare ``name`` (create its database once per run, empty its tables) and describe it.

    ``proxy_env``: the variables that reach the server another way (``pgbouncer``, Data API).
    """
    if name not in SELECTED:  # a direct call for a backend the run opted out of
        pytest.skip(f"{name} left out by PEEWEE_SERVERLESS_TEST_BACKENDS")
    engine = ENGINE_OF[name]
    if engine != "sqlite" and engine not in _ready:
        _ensure_server_database(engine)
        _ready.add(engine)
    backend = Backend(name, engine, proxy_env or backend_env(name, tmp), tmp)
    if engine != "sqlite":
        # Directly on the server (also for the Data API backends: same server, fewer hops).
        direct = "mariadb" if engine == "mysql" else "postgres"
        _drop_all_tables(Backend(direct, engine, backend_env(direct, tmp), tmp))
    return backend


@pytest.fixture(scope="session")
def data_api_endpoint() -> Iterator[Any]:
    """The local Data API endpoint on the shared servers, for the whole run.

    boto3 needs credentials to sign (the endpoint does not check them): fake ones are set for
    the run when none are configured, never replacing real ones.
    """
    from peewee_serverless.data_api.endpoint import ClusterTarget, DataApiEndpoint

    clusters = {
        DATA_API_CLUSTERS["mysql"]: ClusterTarget(
            "mysql", MYSQL_ADMIN["host"], MYSQL_ADMIN["port"], MYSQL_ADMIN["user"],
            MYSQL_ADMIN["password"], TEST_DB,
        ),
        DATA_API_CLUSTERS["postgres"]: ClusterTarget(
            "postgres", PG_ADMIN["host"], PG_ADMIN["port"], PG_ADMIN["user"],
            PG_ADMIN["password"], TEST_DB,
        ),
    }  # fmt: skip
    endpoint = DataApiEndpoint(clusters, secret_arns=frozenset((DATA_API_SECRET,))).start()
    added = {}
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        if not os.environ.get(key):
            added[key] = os.environ[key] = "testing"
    try:
        yield endpoint
    finally:
        for key in added:
            os.environ.pop(key, None)
        endpoint.stop()


@pytest.fixture(scope="session")
def pgbouncer_proxy() -> Iterator[Any]:
    """A PgBouncer (transaction pooling) in front of the PostgreSQL test server, for this run."""
    from .pgbouncer import PgBouncer

    try:
        bouncer = PgBouncer(PG_ADMIN["host"], PG_ADMIN["port"], users=[PG_ADMIN["user"]])
        bouncer.start()
    except Exception as exc:  # noqa: BLE001
        pytest.fail(
            f"backend pgbouncer could not start ({exc}); install the Debian package pgbouncer "
            "(scripts/services does) or opt out with PEEWEE_SERVERLESS_TEST_BACKENDS",
            pytrace=False,
        )
    yield bouncer
    bouncer.stop()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto in server mode on 127.0.0.1 (a free port): the endpoint of every AWS API this run
    talks to (DynamoDB, Secrets Manager), one server for the session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def dynamodb_backend(endpoint: str, tmp: Path) -> Backend:
    """The users service storing users in DynamoDB (moto's server), a fresh table per test."""
    import uuid

    env = {
        "USERS_STORE": "dynamodb",
        "USERS_TABLE": f"users-{uuid.uuid4().hex[:12]}",
        "AWS_ENDPOINT_URL_DYNAMODB": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",  # moto accepts any; nothing here can reach AWS
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        # The module-level SQL database of the example stays an unused, unconnected SQLite.
        "DB_ENGINE": "sqlite",
        "DB_NAME": str(tmp / "unused.sqlite3"),
    }
    return Backend("dynamodb", "dynamodb", env, tmp)


def make_selected_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    name = request.param
    if name == "dynamodb":
        return dynamodb_backend(request.getfixturevalue("moto_server"), tmp_path)
    proxy_env = None
    if name == "pgbouncer":
        proxy_env = request.getfixturevalue("pgbouncer_proxy").env(TEST_DB)
        if PG_ADMIN["password"]:
            proxy_env["DB_PASSWORD"] = PG_ADMIN["password"]
    elif name in DATA_API_BACKENDS:
        endpoint = request.getfixturevalue("data_api_endpoint")
        endpoint.service.clear_faults()
        proxy_env = backend_env(name, tmp_path, endpoint.url)
    return make_backend(name, tmp_path, proxy_env)


@pytest.fixture(params=GENERAL_BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Every engine selected for this run, each with an empty test database."""
    b = make_selected_backend(request, tmp_path)
    yield b
    b.close()


@pytest.fixture(params=EXAMPLE_BACKENDS)
def example_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Every backend the example service runs on: the engines and the ways to reach them."""
    b = make_selected_backend(request, tmp_path)
    yield b
    b.close()


@pytest.fixture(params=SERVER_BACKENDS)
def server_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Only the real servers (MariaDB, PostgreSQL): for killing, counting and limits."""
    b = make_backend(request.param, tmp_path)
    yield b
    b.close()


@pytest.fixture
def db(backend: Backend) -> Iterator[Any]:
    """An unconnected serverless database for ``backend``; closed after the test."""
    database = backend.make_db()
    yield database
    if not database.is_closed():
        database.finish()
        database.close()


EXAMPLE_MIGRATIONS = ROOT / "examples" / "users" / "migrations"


@dataclass
class UsersService:
    """The example users service loaded against one backend, schema migrated."""

    backend: Backend
    module: Any  # examples.users.app
    db: Any

    def invoke(self, event: dict[str, Any], context: Any = None) -> dict[str, Any]:
        """Call the Lambda handler once, as Lambda would."""
        from peewee_serverless.local.context import LambdaContext

        return self.module.handler(event, context or LambdaContext())

    def user_rows(self) -> list[tuple[Any, ...]]:
        """Every row of the users table, read through an independent connection."""
        if self.backend.engine == "dynamodb":
            return dynamodb_users(self.backend)
        return self.backend.query("SELECT id, name, email FROM users ORDER BY id")


def _dynamodb_client(backend: Backend) -> Any:
    import boto3

    env = backend.env
    return boto3.client(
        "dynamodb",
        endpoint_url=env["AWS_ENDPOINT_URL_DYNAMODB"],
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


def dynamodb_users(backend: Backend) -> list[tuple[Any, ...]]:
    """(id, name, email) of every user item in the backend's table, by id (a full scan)."""
    client = _dynamodb_client(backend)
    rows: list[tuple[Any, ...]] = []
    params: dict[str, Any] = {"TableName": backend.env["USERS_TABLE"], "ConsistentRead": True}
    while True:
        page = client.scan(**params)
        rows += [
            (int(i["id"]["N"]), i["name"]["S"], i["email"]["S"])
            for i in page.get("Items", [])
            if i["pk"]["S"] == "USERS"
        ]
        if "LastEvaluatedKey" not in page:
            return sorted(rows)
        params["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def load_users_service(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, *, prepare: bool = True
) -> UsersService:
    """(Re)import the example with ``backend``'s environment, as a fresh Lambda container would.

    ``prepare``: migrate the schema (SQL) / create the table (DynamoDB) first.
    """
    import importlib

    from peewee_serverless.migrate import run_migrations

    for key in ("DATABASE_URL", "DB_ENGINE", "DB_NAME", "DB_HOST", "DB_PORT", "DB_USER", "DB_MODE"):
        monkeypatch.delenv(key, raising=False)
    for key in ("USERS_STORE", "USERS_TABLE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in backend.env.items():
        monkeypatch.setenv(key, value)
    # A fresh import of every module of the example (models, stores, app), as a new container
    # would do: reloading only some would leave the others bound to the previous database.
    for name in [m for m in sys.modules if m.startswith("examples.users.")]:
        del sys.modules[name]
    if backend.engine == "dynamodb" or not prepare:
        if backend.engine == "dynamodb" and prepare:
            from examples.users.dynamodb_store import create_table

            create_table(_dynamodb_client(backend), backend.env["USERS_TABLE"])
        app = importlib.import_module("examples.users.app")
        return UsersService(backend, app, app.db)
    app = importlib.import_module("examples.users.app")
    migrator_db = backend.make_db()
    run_migrations(migrator_db, EXAMPLE_MIGRATIONS)
    migrator_db.close()
    return UsersService(backend, app, app.db)


@pytest.fixture
def users_service(
    example_backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> Iterator[UsersService]:
    """The example service on every backend it runs on (:data:`EXAMPLE_BACKENDS`)."""
    service = load_users_service(example_backend, monkeypatch)
    yield service
    if not service.db.is_closed():
        service.db.finish()
        service.db.close()
