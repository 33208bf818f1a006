"""A private PgBouncer (transaction pooling) in front of a PostgreSQL server, for tests and bench.

``DB_MODE=proxy`` exists for connection multiplexers such as RDS Proxy; PgBouncer in
``pool_mode = transaction`` is the strictest real one we can run locally: every transaction may
land on another server session, so anything that relies on session state (a session ``SET``,
a server-side prepared statement, a session-level advisory lock) breaks visibly. ::

    from tests.pgbouncer import pgbouncer

    with private_server("postgres", options={"max_connections": 10}) as srv:
        with pgbouncer(srv.host, srv.port, pool_size=7) as bouncer:
            env = bouncer.env(srv.test_db)      # DB_* + DB_MODE=proxy, through PgBouncer
            bouncer.show("POOLS")               # its admin console

PgBouncer runs as its own process in a temporary directory, on a free port of 127.0.0.1,
with ``auth_type = trust`` for the listed users (the server behind it decides, as with RDS
Proxy's IAM/secret auth, which is out of scope here). Readiness is a real query answered
through it. It refuses to run as root, so as root (CI containers) it runs as ``postgres``.
The Debian package ``pgbouncer`` is installed by ``scripts/services`` when missing.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg2

from .servers import READY_TIMEOUT, _chown_tree, _find, _server_user, free_port

__all__ = ["PgBouncer", "logged_statements", "pgbouncer", "session_state_statements"]


class PgBouncer:
    """One PgBouncer process in transaction pooling mode (see the module docstring)."""

    def __init__(
        self,
        server_host: str,
        server_port: int,
        *,
        pool_size: int = 8,
        max_client_conn: int = 2000,
        users: Sequence[str] = ("postgres",),
        pool_mode: str = "transaction",
    ) -> None:
        self.server_host = server_host
        self.server_port = server_port
        self.pool_size = pool_size
        self.max_client_conn = max_client_conn
        self.users = list(users)
        self.pool_mode = pool_mode
        self.host = "127.0.0.1"
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="pst-pgbouncer-"))
        self.root.chmod(0o755)
        self.log_path = self.root / "pgbouncer.log"
        self.user = _server_user("postgres")
        self.process: subprocess.Popen[bytes] | None = None

    def _write_config(self) -> Path:
        auth = self.root / "users.txt"
        auth.write_text("".join(f'"{u}" ""\n' for u in self.users))
        ini = self.root / "pgbouncer.ini"
        ini.write_text(
            "\n".join(
                [
                    "[databases]",
                    # Any database name is forwarded to the same name on the server.
                    f"* = host={self.server_host} port={self.server_port}",
                    "[pgbouncer]",
                    f"listen_addr = {self.host}",
                    f"listen_port = {self.port}",
                    "unix_socket_dir =",
                    "auth_type = trust",
                    f"auth_file = {auth}",
                    f"admin_users = {self.users[0]}",
                    f"pool_mode = {self.pool_mode}",
                    f"default_pool_size = {self.pool_size}",
                    f"max_db_connections = {self.pool_size}",
                    f"max_client_conn = {self.max_client_conn}",
                    # psycopg2 sends none of these, other clients (and admin tools) may.
                    "ignore_startup_parameters = extra_float_digits",
                    f"logfile = {self.log_path}",
                    f"pidfile = {self.root / 'pgbouncer.pid'}",
                    "log_connections = 0",
                    "log_disconnections = 0",
                    "",
                ]
            )
        )
        return ini

    def start(self) -> PgBouncer:
        """Start PgBouncer and wait until a query through it is answered."""
        ini = self._write_config()
        _chown_tree(self.root, self.user)
        kwargs: dict[str, Any] = {}
        if self.user is not None:
            kwargs = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        self.process = subprocess.Popen(
            [_find("pgbouncer"), str(ini)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            **kwargs,
        )
        deadline = time.monotonic() + READY_TIMEOUT
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited during start:\n{self.log_tail()}")
            try:
                self.show("VERSION")
                return self
            except psycopg2.Error as exc:  # not listening yet
                last = exc
                time.sleep(0.05)  # poll interval between connect attempts
        raise RuntimeError(f"pgbouncer did not answer ({last}):\n{self.log_tail()}")

    def stop(self) -> None:
        """Shut PgBouncer down (SIGINT: safe shutdown) and delete its directory."""
        proc = self.process
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(READY_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(READY_TIMEOUT)
        self.process = None
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PgBouncer:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 30) -> str:
        """The end of PgBouncer's log (for failure messages)."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def show(self, what: str) -> list[dict[str, Any]]:
        """``SHOW <what>`` on PgBouncer's admin console, rows as dicts."""
        conn = psycopg2.connect(
            host=self.host,
            port=self.port,
            user=self.users[0],
            dbname="pgbouncer",
            connect_timeout=2,
        )
        try:
            conn.autocommit = True  # the console accepts no BEGIN
            with conn.cursor() as cur:
                cur.execute(f"SHOW {what}")
                names = [d[0] for d in cur.description or ()]
                return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        finally:
            conn.close()

    def env(self, database: str, user: str | None = None) -> dict[str, str]:
        """The DB_* environment of a function that reaches ``database`` through PgBouncer."""
        return {
            "DB_ENGINE": "postgres",
            "DB_NAME": database,
            "DB_HOST": self.host,
            "DB_PORT": str(self.port),
            "DB_USER": user or self.users[0],
            "DB_MODE": "proxy",
        }


@contextlib.contextmanager
def pgbouncer(server_host: str, server_port: int, **kwargs: Any) -> Iterator[PgBouncer]:
    """A started :class:`PgBouncer` in front of ``server_host:server_port``; stopped afterwards."""
    with PgBouncer(server_host, server_port, **kwargs) as bouncer:
        yield bouncer


#: Statements that leave state in the server session (or need one), which a transaction-pooling
#: proxy would hand to the next client or lose, and the governor's queries, which must not run
#: behind a proxy at all. Matched on PostgreSQL's ``log_statement = all`` lines.
_SESSION_STATE = (
    (re.compile(r"^\s*SET\s+(?!LOCAL\b|TRANSACTION\b)", re.I), "session SET"),
    (re.compile(r"^\s*(PREPARE|EXECUTE|DEALLOCATE|DISCARD|LISTEN)\b", re.I), "session statement"),
    (re.compile(r"\bWITH\s+HOLD\b", re.I), "holdable cursor"),
    (re.compile(r"\bCREATE\s+(TEMP|TEMPORARY)\b", re.I), "temporary table"),
    (re.compile(r"pg_(try_)?advisory_(un)?lock", re.I), "session advisory lock"),
    (re.compile(r"set_config\([^)]*,\s*false\s*\)", re.I), "session set_config"),
    (re.compile(r"pg_stat_activity|pg_terminate_backend", re.I), "governor query"),
)


def session_state_statements(log_text: str, user: str) -> list[tuple[str, str]]:
    """``(why, statement)`` for every statement ``user`` sent that breaks transaction pooling.

    ``log_text`` is a PostgreSQL log written with ``log_statement = all`` and
    ``log_line_prefix = '%u|'``.
    """
    found: list[tuple[str, str]] = []
    marker = f"{user}|LOG:  statement: "
    for line in log_text.splitlines():
        if not line.startswith(marker):
            continue
        statement = line[len(marker) :]
        for pattern, why in _SESSION_STATE:
            if pattern.search(statement):
                found.append((why, statement))
    return found


def logged_statements(log_text: str, user: str) -> int:
    """How many statements ``user`` sent (a check that the log is the one we think)."""
    marker = f"{user}|LOG:  statement: "
    return sum(1 for line in log_text.splitlines() if line.startswith(marker))
