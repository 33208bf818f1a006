"""Burst benchmark: many containers, few connection slots; plain Peewee against peewee-serverless.

The same burst (``--containers`` simulated Lambda containers, each invoking ``POST /users``
``--invocations`` times) hits the same server whose application account may hold only
``--limit`` connections (MariaDB ``max_connections``, PostgreSQL role ``CONNECTION LIMIT``):

(a) plain Peewee, connect and close in every invocation;
(b) plain Peewee, one module-level connection kept by the container;
(c) peewee-serverless (``examples.users.app:handler``): connect retry with jittered back-off,
    usage watch, zombie reaping and yielding.

Each run reports success rate, the peak number of the account's connections seen on the server
(sampled by a separate admin connection) and p50/p99 invocation latency, and writes the table
to ``docs/benchmarks.md`` between the ``burst`` markers. Run it on a private server::

    python bench/burst.py --engine mariadb,postgres --containers 40 --limit 10

This module also holds what the tests share with the benchmark: the event factory, the plain
Peewee handlers, the connection sampler and the limited account set-up.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HANDLERS = {
    "plain-per-invocation": "bench.burst:plain_per_invocation_handler",
    "plain-module-level": "bench.burst:plain_module_handler",
    "peewee-serverless": "examples.users.app:handler",
}
MARK_START = "<!-- burst:start -->"
MARK_END = "<!-- burst:end -->"


# -- the workload ---------------------------------------------------------------------------------
def post_user_event(container: int, seq: int) -> dict[str, Any]:
    """``POST /users`` (API Gateway REST proxy event) with an email unique to this invocation."""
    from peewee_serverless.local.events import HttpRequest, build_v1_event

    tag = f"c{container}s{seq}-{uuid.uuid4().hex[:8]}"
    body = json.dumps({"name": f"User {tag}", "email": f"{tag}@example.com"}).encode()
    request = HttpRequest.from_target(
        "POST", "/users", [("Content-Type", "application/json")], body
    )
    return build_v1_event(request)


def _plain_database() -> Any:
    """A plain Peewee database from the same DB_* environment (no serverless handling)."""
    import peewee

    engine = os.environ["DB_ENGINE"]
    params: dict[str, Any] = {
        "host": os.environ["DB_HOST"],
        "port": int(os.environ["DB_PORT"]),
        "user": os.environ["DB_USER"],
        "password": os.environ.get("DB_PASSWORD", ""),
    }
    if engine == "mysql":
        return peewee.MySQLDatabase(os.environ["DB_NAME"], **params)
    return peewee.PostgresqlDatabase(os.environ["DB_NAME"], **params)


_plain: dict[str, Any] = {}


def _plain_db() -> Any:
    # Created once per container (like a module-level ``db = MySQLDatabase(...)``).
    if "db" not in _plain:
        _plain["db"] = _plain_database()
    return _plain["db"]


def _create_user(db: Any, event: dict[str, Any]) -> dict[str, Any]:
    from examples.users.models import User

    data = json.loads(event["body"])
    with db.bind_ctx([User]), db.atomic():
        user = User.create(name=data["name"], email=data["email"])
    return {"statusCode": 201, "body": json.dumps({"id": user.id})}


def plain_per_invocation_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Plain Peewee, connect-per-invocation: open, work, close (errors propagate)."""
    db = _plain_db()
    db.connect()
    try:
        return _create_user(db, event)
    finally:
        db.close()


def plain_module_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Plain Peewee, module-level connection: opened once, kept by the warm container."""
    db = _plain_db()
    db.connect(reuse_if_open=True)
    return _create_user(db, event)


# -- the server side ------------------------------------------------------------------------------
@dataclass
class Account:
    """A database user / role limited to ``limit`` connections, and the env to use it."""

    name: str
    password: str
    limit: int
    env: dict[str, str]


def create_limited_account(server: Any, limit: int, prefix: str = "burst") -> Account:
    """Create a user (MariaDB) / role (PostgreSQL) that may hold ``limit`` connections.

    On MariaDB ``limit`` 0 means no per-user limit (the server's ``max_connections`` applies).

    ``server`` is a :class:`tests.servers.PrivateServer` (or anything with ``query``, ``engine``,
    ``env()`` and ``test_db``). The account owns the users table it will write to.
    """
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    db_name = server.test_db
    if server.engine == "mysql":
        server.query(
            f"CREATE USER '{name}' IDENTIFIED BY '{password}' WITH MAX_USER_CONNECTIONS {limit}"
        )
        server.query(f"GRANT ALL ON `{db_name}`.* TO '{name}'")
        server.query(f"GRANT PROCESS ON *.* TO '{name}'")  # to see which sessions are idle
    else:
        server.query(f"CREATE ROLE {name} LOGIN PASSWORD '{password}' CONNECTION LIMIT {limit}")
        server.query(f'GRANT ALL ON DATABASE "{db_name}" TO {name}')
        server.query(f"GRANT ALL ON SCHEMA public TO {name}", database=db_name)
    env = server.env(user=name, password=password)
    return Account(name, password, limit, env)


def create_users_table(env: dict[str, str]) -> None:
    """Apply the users service's migrations (users and idempotency tables) as the account."""
    from peewee_serverless import database_from_env
    from peewee_serverless.migrate import run_migrations

    db = database_from_env(env)
    run_migrations(db, ROOT / "examples" / "users" / "migrations")
    db.close()


def account_connections(server: Any, account: str) -> int:
    """How many sessions ``account`` holds on ``server`` right now."""
    if server.engine == "mysql":
        sql = "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = %s"
    else:
        sql = "SELECT count(*) FROM pg_stat_activity WHERE usename = %s"
    return int(server.query(sql, (account,))[0][0])


class ConnectionSampler:
    """Polls the account's session count from an admin connection; remembers the peak."""

    def __init__(self, server: Any, account: str, interval: float = 0.01) -> None:
        self.server = server
        self.account = account
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def _run(self) -> None:
        conn = self.server.connect()
        if self.server.engine == "mysql":
            sql = "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = %s"
        else:
            sql = "SELECT count(*) FROM pg_stat_activity WHERE usename = %s"
        try:
            with conn.cursor() as cur:
                while not self._stop.is_set():
                    cur.execute(sql, (self.account,))
                    self.peak = max(self.peak, int(cur.fetchone()[0]))
                    self.samples += 1
                    self._stop.wait(self.interval)  # the sampling period
        finally:
            conn.close()

    def __enter__(self) -> ConnectionSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def serverless_env(limit: int) -> dict[str, str]:
    """peewee-serverless settings for a burst against ``limit`` connections."""
    return {
        "DB_CONNECT_RETRIES": "60",
        "DB_BACKOFF_BASE_MS": "20",
        "DB_BACKOFF_CAP_MS": "500",
        "DB_BACKOFF_JITTER": "decorrelated",
        "DB_USAGE_THRESHOLD": "0.8",
        "DB_USAGE_CHECK_SECONDS": "1",
        "DB_ZOMBIE_MIN_SECONDS": "3",
        "DB_ZOMBIE_MAX_SECONDS": "60",
        "DB_APPLICATION_NAME": "users",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }


# -- one burst ------------------------------------------------------------------------------------
@dataclass
class BurstOutcome:
    """One variant's numbers."""

    variant: str
    containers: int
    limit: int
    invocations: int
    success_rate: float
    peak_connections: int
    p50_ms: float
    p99_ms: float
    statuses: dict[Any, int]


def run_burst(
    server: Any,
    variant: str,
    *,
    containers: int,
    invocations: int,
    limit: int,
    pause: float | tuple[float, float] = (0.0, 0.05),
    log_path: str | None = None,
) -> BurstOutcome:
    """Run one variant against a fresh account on ``server``, limited to ``limit`` sessions.

    On MariaDB the limit is the server's own ``max_connections`` (see :func:`limited_server`):
    its per-user ``MAX_USER_CONNECTIONS`` is not reliable under a burst (MariaDB 10.11 admits
    more sessions than the limit after rejected attempts). On PostgreSQL it is the role's
    ``CONNECTION LIMIT``.
    """
    from peewee_serverless.local.containers import run_containers

    account_limit = limit if server.engine == "postgres" else 0
    account = create_limited_account(server, account_limit)
    try:
        create_users_table(account.env)
        env = dict(account.env)
        if variant == "peewee-serverless":
            env.update(serverless_env(limit))
        with ConnectionSampler(server, account.name) as sampler:
            report = run_containers(
                HANDLERS[variant],
                containers=containers,
                invocations=invocations,
                event="bench.burst:post_user_event",
                env=env,
                pause=pause,
                timeout=30.0,
                sys_path=[str(ROOT)],
                log_path=log_path,
                seed=1,
            )
        return BurstOutcome(
            variant,
            containers,
            limit,
            len(report.results),
            report.success_rate,
            sampler.peak,
            report.percentile(50),
            report.percentile(99),
            report.statuses(),
        )
    finally:
        drop_account(server, account.name)


def drop_account(server: Any, name: str) -> None:
    """Disconnect and drop a benchmark account."""
    if server.engine == "mysql":
        for (thread_id,) in server.query(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s", (name,)
        ):
            with contextlib.suppress(Exception):
                server.query(f"KILL {int(thread_id)}")
        server.query(f"DROP USER IF EXISTS '{name}'")
    else:
        server.query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (name,)
        )
        server.query(f"DROP OWNED BY {name}", database=server.test_db)
        server.query(f"DROP ROLE IF EXISTS {name}")


# -- the report -----------------------------------------------------------------------------------
def markdown(results: dict[str, list[BurstOutcome]], command: str) -> str:
    """The benchmark section (between the markers) for ``docs/benchmarks.md``."""
    lines = [
        MARK_START,
        "## Bursts against a connection limit",
        "",
        f"`{command}`: each container is a real process invoking `POST /users` of the users "
        "service repeatedly (0-50 ms apart); the application may hold `limit` connections "
        "(MariaDB: the private server's `max_connections`; PostgreSQL: the role's "
        "`CONNECTION LIMIT`). success = answered without raising and without a 5xx; peak = "
        "most sessions of the account seen on the server (sampled every 10 ms); latency per "
        "invocation, inside the container. (a) connect/close per invocation and (b) one "
        "module-level connection are plain Peewee; (c) is peewee-serverless with "
        "`bench.burst.serverless_env()` settings. MariaDB's per-user `MAX_USER_CONNECTIONS` "
        "is not used for the limit: 10.11 admitted more sessions than it after rejected "
        "attempts (12 for a limit of 10). Machine: 2 shared cores; latencies are indicative, "
        "the success column is the point.",
        "",
    ]
    for engine, outcomes in results.items():
        lines += [
            f"**{engine}**",
            "",
            "| variant | containers | limit | invocations | success | peak conns "
            "| p50 ms | p99 ms |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for o in outcomes:
            lines.append(
                f"| {o.variant} | {o.containers} | {o.limit} | {o.invocations} | "
                f"{o.success_rate:.1%} | {o.peak_connections} | {o.p50_ms:.1f} | "
                f"{o.p99_ms:.1f} |"
            )
        lines.append("")
    lines.append(MARK_END)
    return "\n".join(lines)


def write_section(path: Path, section: str) -> None:
    """Replace (or append) the ``burst`` section of ``path``, leaving the rest untouched."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if MARK_START in text and MARK_END in text:
        head, _, rest = text.partition(MARK_START)
        _, _, tail = rest.partition(MARK_END)
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


@contextlib.contextmanager
def limited_server(engine: str, limit: int) -> Iterator[Any]:
    """A private server where the burst account can hold at most ``limit`` sessions.

    MariaDB: ``max_connections = limit + 1``, the extra slot taken by the connection sampler,
    which connects first (root's reserved SUPER slot stays free for set-up and clean-up).
    PostgreSQL: a default server; the limit is the role's (:func:`run_burst`).
    """
    from tests.servers import private_server

    options = {"max_connections": limit + 1} if engine == "mariadb" else {}
    with private_server(engine, options=options) as server:
        yield server


def main(argv: list[str] | None = None) -> int:
    """Run the three variants and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", default="mariadb,postgres", help="comma-separated")
    parser.add_argument("--containers", type=int, default=40)
    parser.add_argument("--invocations", type=int, default=5)
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--variants", default=",".join(HANDLERS))
    parser.add_argument("--output", default=str(ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    results: dict[str, list[BurstOutcome]] = {}
    for engine in args.engine.split(","):
        outcomes = results.setdefault(engine, [])
        with limited_server(engine, args.limit) as server:
            for variant in args.variants.split(","):
                outcome = run_burst(
                    server,
                    variant,
                    containers=args.containers,
                    invocations=args.invocations,
                    limit=args.limit,
                )
                print(
                    f"{engine:9} {variant:22} success {outcome.success_rate:7.1%}  peak "
                    f"{outcome.peak_connections:3}  p50 {outcome.p50_ms:8.1f} ms  "
                    f"p99 {outcome.p99_ms:8.1f} ms  {outcome.statuses}",
                    flush=True,
                )
                outcomes.append(outcome)
    # The command as a reader would type it: the default output path is left out.
    shown = list(argv if argv is not None else sys.argv[1:])
    if "--output" in shown and Path(args.output) == ROOT / "docs" / "benchmarks.md":
        i = shown.index("--output")
        del shown[i : i + 2]
    command = "python bench/burst.py " + " ".join(shown)
    section = markdown(results, command.strip())
    if not args.no_write:
        write_section(Path(args.output), section)
    print(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
