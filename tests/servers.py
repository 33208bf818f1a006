"""Private MariaDB and PostgreSQL servers for tests that need what the shared servers must not do.

Restarting a server, lowering ``max_connections`` or starting one with TLS options would disturb
everyone else using the shared servers, so such tests start their own instance::

    from servers import private_server

    with private_server("mariadb", options={"max_connections": 10}) as srv:
        env = srv.env()          # DB_* variables for a function / a subprocess
        srv.query("SELECT 1")
        srv.restart()            # same port, same data
    # stopped and deleted here

Each server lives in its own temporary directory (data, socket, log) and listens on its own
TCP port on 127.0.0.1. The data directory is initialised once per test process
(``mariadb-install-db`` / ``initdb``) and copied for every further server, so a server starts in
about a second. ``options`` become server command-line options (``--name=value`` for MariaDB,
``-c name=value`` for PostgreSQL), so TLS is e.g.
``options={"ssl_cert": ..., "ssl_key": ..., "ssl_ca": ...}`` resp.
``options={"ssl": "on", "ssl_cert_file": ..., "ssl_key_file": ...}``; ``files`` copies files
(certificates, keys) into the data directory first, owned by the server's user with mode 0600,
and the option values may refer to them as ``{datadir}/name``. PostgreSQL's ``pg_hba.conf`` lines
can be replaced with ``hba=[...]`` (default: trust for local and 127.0.0.1).

Readiness is a server answering a real connection, never a fixed sleep. When run as root (CI
containers), MariaDB runs with ``--user=root`` and PostgreSQL, which refuses root, as the
``postgres`` system user (``nobody`` when there is none).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import psycopg2
import pymysql

__all__ = ["MariaDBServer", "PostgresServer", "PrivateServer", "free_port", "private_server"]

#: Upper bound for a server to start answering (or to stop) before the test fails.
READY_TIMEOUT = 60.0

_TEMPLATES: dict[str, Path] = {}
_TEMPLATE_ROOT: Path | None = None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _find(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
        for prefix in ("/usr/sbin", "/usr/bin", "/usr/local/bin"):
            candidate = Path(prefix) / name
            if candidate.exists():
                return str(candidate)
    for version_dir in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        for name in names:
            if (version_dir / name).exists():
                return str(version_dir / name)
    raise RuntimeError(f"none of {names} is installed")


def _server_user(preferred: str) -> pwd.struct_passwd | None:
    """The unprivileged user to run a server as when we are root (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in (preferred, "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and no unprivileged user to run the server as")


def _chown_tree(path: Path, user: pwd.struct_passwd | None) -> None:
    if user is None:
        return
    os.chown(path, user.pw_uid, user.pw_gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), user.pw_uid, user.pw_gid, follow_symlinks=False)


def _template_root() -> Path:
    global _TEMPLATE_ROOT
    if _TEMPLATE_ROOT is None:
        _TEMPLATE_ROOT = Path(tempfile.mkdtemp(prefix="pst-templates-"))
        os.chmod(_TEMPLATE_ROOT, 0o755)
        atexit.register(shutil.rmtree, _TEMPLATE_ROOT, True)
    return _TEMPLATE_ROOT


class PrivateServer:
    """A database server process of our own, in a temporary directory.

    Subclasses say how to initialise, start and talk to it. Use it as a context manager (or call
    :meth:`start` and :meth:`destroy`).
    """

    engine = ""
    run_as = ""
    admin_user = ""
    test_db = "pst_private"

    def __init__(
        self,
        options: Mapping[str, Any] | None = None,
        *,
        files: Mapping[str, str | Path] | None = None,
        port: int | None = None,
    ) -> None:
        self.options = dict(options or {})
        self.files = dict(files or {})
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.root = Path(tempfile.mkdtemp(prefix=f"pst-{self.engine}-"))
        os.chmod(self.root, 0o755)
        self.datadir = self.root / "data"
        self.rundir = self.root / "run"
        self.log_path = self.root / "server.log"
        self.user = _server_user(self.run_as)
        self.process: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self._initialised = False

    # -- what subclasses provide ---------------------------------------------------------------
    def _init_template(self, target: Path) -> None:
        raise NotImplementedError

    def _command(self) -> list[str]:
        raise NotImplementedError

    def connect(self, database: str | None = None, **kwargs: Any) -> Any:
        """A plain driver connection (autocommit) as the admin user."""
        raise NotImplementedError

    def _create_test_database(self) -> None:
        raise NotImplementedError

    def _stop_signal(self) -> int:
        return signal.SIGTERM

    # -- lifecycle -----------------------------------------------------------------------------
    def _prepare_datadir(self) -> None:
        template = _TEMPLATES.get(self.engine)
        if template is None:
            template = _template_root() / self.engine
            self._init_template(template)
            _TEMPLATES[self.engine] = template
        shutil.copytree(template, self.datadir, symlinks=True)
        self.rundir.mkdir()
        for name, source in self.files.items():
            target = self.datadir / name
            shutil.copyfile(source, target)
            os.chmod(target, 0o600)
        _chown_tree(self.root, self.user)

    def _option_value(self, value: Any) -> str:
        if isinstance(value, bool):
            return "on" if value else "off"
        return str(value).format(datadir=self.datadir)

    def start(self) -> PrivateServer:
        """Start the server and wait until it answers (data kept from a previous run)."""
        if self.process is not None and self.process.poll() is None:
            return self
        if not self._initialised:
            self._prepare_datadir()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        kwargs: dict[str, Any] = {}
        if self.user is not None:
            kwargs["user"] = self.user.pw_uid
            kwargs["group"] = self.user.pw_gid
            kwargs["extra_groups"] = []
        self.process = subprocess.Popen(
            self._command(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C of the test run must not reach it first
            **kwargs,
        )
        self.wait_ready()
        if not self._initialised:
            self._create_test_database()
            self._initialised = True
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Return once the server accepts a connection; fail with its log when it never does."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.engine} exited during start:\n{self.log_tail()}")
            try:
                conn = self.connect(connect_timeout=2)
            except Exception as exc:  # noqa: BLE001 - not up yet
                last = exc
                time.sleep(0.05)  # poll interval between connect attempts, not a wait for state
                continue
            conn.close()
            return
        raise RuntimeError(f"{self.engine} did not answer ({last}):\n{self.log_tail()}")

    def stop(self, timeout: float = READY_TIMEOUT) -> None:
        """Shut the server down cleanly (its data stays for :meth:`start`)."""
        proc = self.process
        if proc is not None and proc.poll() is None:
            proc.send_signal(self._stop_signal())
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        """Crash the server (SIGKILL), as a failing host would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(READY_TIMEOUT)
        self.stop()

    def restart(self) -> None:
        """Stop and start again on the same port with the same data."""
        self.stop()
        self.start()

    def destroy(self) -> None:
        """Stop the server and delete its directory."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PrivateServer:
        try:
            return self.start()
        except BaseException:
            self.destroy()
            raise

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's log (for failure messages)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- talking to it -------------------------------------------------------------------------
    def query(
        self, sql: str, params: Any = (), database: str | None = None
    ) -> list[tuple[Any, ...]]:
        """Run ``sql`` on a fresh admin connection; all rows (empty for statements)."""
        conn = self.connect(database)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return list(cur.fetchall()) if cur.description else []
        finally:
            conn.close()

    def hold_row_lock(self, table: str) -> Any:
        """``table`` (id, n) in the test database with one row (1, 0), locked by an open
        transaction on the connection returned (``ROLLBACK`` on it, then close it, to release)."""
        self.query(
            f"CREATE TABLE IF NOT EXISTS {table} (id INT PRIMARY KEY, n INT)", database=self.test_db
        )
        self.query(f"DELETE FROM {table}", database=self.test_db)
        self.query(f"INSERT INTO {table} VALUES (1, 0)", database=self.test_db)
        holder = self.connect(self.test_db)
        with holder.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute(f"UPDATE {table} SET n = n + 1 WHERE id = 1")  # holds the row lock
        return holder

    def env(self, user: str | None = None, password: str | None = None) -> dict[str, str]:
        """The DB_* environment a function would have to use this server's test database."""
        env = {
            "DB_ENGINE": self.engine,
            "DB_NAME": self.test_db,
            "DB_HOST": self.host,
            "DB_PORT": str(self.port),
            "DB_USER": user or self.admin_user,
        }
        if password:
            env["DB_PASSWORD"] = password
        return env


class MariaDBServer(PrivateServer):
    """A private ``mariadbd`` (root with an empty password over TCP)."""

    engine = "mysql"
    run_as = "mysql"
    admin_user = "root"

    def _init_template(self, target: Path) -> None:
        target.mkdir(parents=True)
        user = self.user
        _chown_tree(target, user)
        cmd = [
            _find("mariadb-install-db", "mysql_install_db"),
            "--no-defaults",
            f"--datadir={target}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--skip-name-resolve",
        ]
        if user is not None:
            cmd.append(f"--user={user.pw_name}")
        done = subprocess.run(cmd, capture_output=True, timeout=180, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed: {done.stderr.decode()[-2000:]}")

    def _command(self) -> list[str]:
        cmd = [
            _find("mariadbd", "mysqld"),
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--socket={self.rundir / 'mysqld.sock'}",
            f"--pid-file={self.rundir / 'mysqld.pid'}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            "--skip-name-resolve",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=16M",
            "--innodb-log-file-size=8M",
            "--innodb-flush-log-at-trx-commit=2",
            "--performance-schema=OFF",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_unicode_ci",
        ]
        if self.user is not None:
            cmd.append(f"--user={self.user.pw_name}")
        for name, value in self.options.items():
            cmd.append(f"--{name.replace('_', '-')}={self._option_value(value)}")
        return cmd

    def connect(self, database: str | None = None, **kwargs: Any) -> Any:
        """A PyMySQL connection (autocommit) as root (or the ``user`` / ``password`` given)."""
        kwargs.setdefault("connect_timeout", 5)
        kwargs.setdefault("user", self.admin_user)
        kwargs.setdefault("password", "")
        return pymysql.connect(
            host=self.host, port=self.port, database=database, autocommit=True, **kwargs
        )

    def _create_test_database(self) -> None:
        self.query(
            f"CREATE DATABASE IF NOT EXISTS `{self.test_db}` "
            "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
        )


class PostgresServer(PrivateServer):
    """A private ``postgres`` (superuser ``postgres``, trust authentication on 127.0.0.1)."""

    engine = "postgres"
    run_as = "postgres"
    admin_user = "postgres"

    def __init__(self, *args: Any, hba: Sequence[str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hba = list(hba) if hba is not None else None

    def _init_template(self, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.mkdir()
        _chown_tree(target, self.user)
        cmd = [
            _find("initdb"),
            "-D",
            str(target),
            "-U",
            self.admin_user,
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]
        kwargs: dict[str, Any] = {}
        if self.user is not None:
            kwargs = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        done = subprocess.run(
            cmd, capture_output=True, timeout=180, check=False, cwd=str(target), **kwargs
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr.decode()[-2000:]}")

    def _prepare_datadir(self) -> None:
        super()._prepare_datadir()
        if self.hba is not None:
            (self.datadir / "pg_hba.conf").write_text("\n".join(self.hba) + "\n")
            _chown_tree(self.datadir, self.user)
        os.chmod(self.datadir, 0o700)

    def _command(self) -> list[str]:
        cmd = [
            _find("postgres"),
            "-D",
            str(self.datadir),
            "-p",
            str(self.port),
            "-k",
            str(self.rundir),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "shared_buffers=16MB",
        ]
        for name, value in self.options.items():
            cmd += ["-c", f"{name}={self._option_value(value)}"]
        return cmd

    def _stop_signal(self) -> int:
        return signal.SIGINT  # "fast" shutdown: disconnect clients, then stop

    def connect(self, database: str | None = None, **kwargs: Any) -> Any:
        """A psycopg2 connection (autocommit) as ``postgres`` (or the ``user`` given)."""
        kwargs.setdefault("connect_timeout", 5)
        kwargs.setdefault("user", self.admin_user)
        conn = psycopg2.connect(
            host=self.host, port=self.port, dbname=database or "postgres", **kwargs
        )
        conn.autocommit = True
        return conn

    def _create_test_database(self) -> None:
        rows = self.query("SELECT 1 FROM pg_database WHERE datname = %s", (self.test_db,))
        if not rows:
            self.query(f'CREATE DATABASE "{self.test_db}"')


_SERVERS: dict[str, type[PrivateServer]] = {
    "mariadb": MariaDBServer,
    "mysql": MariaDBServer,
    "postgres": PostgresServer,
    "postgresql": PostgresServer,
}


@contextlib.contextmanager
def private_server(engine: str, **kwargs: Any) -> Iterator[PrivateServer]:
    """Start a private server for ``engine`` (``mariadb`` / ``postgres``); destroyed afterwards.

    ``kwargs`` go to the server class: ``options``, ``files``, ``port``, and ``hba`` (PostgreSQL).
    Skips the test when ``PEEWEE_SERVERLESS_TEST_BACKENDS`` leaves ``engine`` out: the documented
    opt-out (``=sqlite``) must pass on a machine without MariaDB or PostgreSQL installed.
    """
    selected = os.environ.get("PEEWEE_SERVERLESS_TEST_BACKENDS", "").strip()
    if selected and engine not in {b.strip() for b in selected.split(",")}:
        import pytest

        pytest.skip(f"{engine} left out by PEEWEE_SERVERLESS_TEST_BACKENDS={selected}")
    server = _SERVERS[engine](**kwargs)
    with server:
        yield server
