"""What the benchmark scenarios share: budgets, databases, child processes, statistics, tables.

Every scenario measures in **child processes** (``python -m bench.<scenario> --child ...``):
a fresh interpreter per measurement set, the database configured from ``DB_*`` variables before
the example imports, and the child's stdout sent to ``/dev/null``. The example's Powertools
``Logger`` and the lifecycle's log line (one JSON line per invocation) are therefore formatted
and written, as in Lambda, but to a null stream rather than the terminal. A child writes its
numbers as JSON to the file named by ``--result``.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: The database every server scenario uses (created when missing), on MariaDB and PostgreSQL.
DEFAULT_DATABASE = "peewee_serverless_bench"
ENGINES = ("mariadb", "postgres", "sqlite")
SERVER_ENGINES = ("mariadb", "postgres")
ENGINE_LABELS = {"mariadb": "MariaDB", "postgres": "PostgreSQL", "sqlite": "SQLite"}
#: Users seeded for ``GET /users/{id}`` (the benchmarks cycle through these ids).
SEED_USERS = 100

MYSQL_ADMIN = {
    "host": os.environ.get("BENCH_MYSQL_HOST", "127.0.0.1"),
    "port": int(os.environ.get("BENCH_MYSQL_PORT", "3306")),
    "user": os.environ.get("BENCH_MYSQL_USER", "root"),
    "password": os.environ.get("BENCH_MYSQL_PASSWORD", ""),
}
PG_ADMIN = {
    "host": os.environ.get("BENCH_PG_HOST", "127.0.0.1"),
    "port": int(os.environ.get("BENCH_PG_PORT", "5432")),
    "user": os.environ.get("BENCH_PG_USER", "postgres"),
    "password": os.environ.get("BENCH_PG_PASSWORD", ""),
}


# -- budgets --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Budget:
    """How many iterations each scenario runs (``full`` ~ minutes, ``smoke`` ~ seconds)."""

    name: str
    warm_invocations: int  # per variant and engine
    warm_rounds: int  # variants alternate this many times (drift on a shared machine cancels)
    warm_up: int  # unmeasured invocations per variant first
    cold_runs: int  # fresh processes per import target
    first_runs: int  # fresh processes per first-invocation variant and engine
    freeze_samples: int  # frozen invocations per kind and engine
    server_seconds: float  # load per concurrency level
    server_concurrency: tuple[int, ...]
    inprocess_invocations: int
    profile_invocations: int
    burst_args: tuple[str, ...]


BUDGETS = {
    "full": Budget(
        "full", 3000, 10, 200, 20, 8, 30, 8.0, (1, 8), 3000, 3000,
        ("--levels", "1,4,10,20", "--invocations", "10", "--limit", "10"),
    ),
    "quick": Budget(
        "quick", 600, 4, 50, 6, 3, 8, 3.0, (1, 8), 600, 600,
        ("--levels", "2", "--invocations", "3", "--limit", "10"),
    ),
    "smoke": Budget(
        "smoke", 20, 2, 3, 2, 1, 2, 0.5, (1,), 20, 20,
        ("--levels", "1", "--invocations", "2", "--limit", "10",
         "--variants", "peewee-serverless-defaults"),
    ),
}  # fmt: skip


# -- databases ------------------------------------------------------------------------------------
def sqlite_path(database: str) -> str:
    """Where the SQLite benchmark database lives (the temp dir, as on Lambda)."""
    return os.path.join(tempfile.gettempdir(), f"{database}.sqlite3")


def engine_env(engine: str, database: str = DEFAULT_DATABASE) -> dict[str, str]:
    """``DB_*`` variables a function would have for ``engine``."""
    if engine == "sqlite":
        return {"DB_ENGINE": "sqlite", "DB_NAME": sqlite_path(database)}
    admin = MYSQL_ADMIN if engine == "mariadb" else PG_ADMIN
    env = {
        "DB_ENGINE": "mysql" if engine == "mariadb" else "postgres",
        "DB_NAME": database,
        "DB_HOST": str(admin["host"]),
        "DB_PORT": str(admin["port"]),
        "DB_USER": str(admin["user"]),
    }
    if admin["password"]:
        env["DB_PASSWORD"] = str(admin["password"])
    return env


def admin_connection(engine: str, database: str | None = None) -> Any:
    """A driver connection as the admin user (autocommit), for set-up and killing sessions."""
    if engine == "mariadb":
        import pymysql

        return pymysql.connect(autocommit=True, connect_timeout=5, database=database, **MYSQL_ADMIN)
    import psycopg2

    conn = psycopg2.connect(dbname=database or "postgres", connect_timeout=5, **PG_ADMIN)
    conn.autocommit = True
    return conn


def ensure_database(engine: str, database: str) -> None:
    """Create the benchmark database on ``engine`` when it does not exist."""
    if engine == "sqlite":
        return
    conn = admin_connection(engine)
    try:
        with conn.cursor() as cur:
            if engine == "mariadb":
                cur.execute(
                    f"CREATE DATABASE IF NOT EXISTS `{database}` "
                    "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
                )
            else:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{database}"')
    finally:
        conn.close()


def prepare_database(engine: str, database: str, users: int = SEED_USERS) -> dict[str, str]:
    """Create, migrate (the example's migrations) and seed ``users`` users; return the env."""
    from peewee_serverless import database_from_env
    from peewee_serverless.migrate import run_migrations

    ensure_database(engine, database)
    env = engine_env(engine, database)
    db = database_from_env(env)
    try:
        run_migrations(db, ROOT / "examples" / "users" / "migrations")
        with db.connection_context():
            (count,) = db.execute_sql("SELECT COUNT(*) FROM users").fetchone()
            rows = [
                (f"Bench user {i}", f"bench{i}@example.com", "2024-01-01 00:00:00")
                for i in range(int(count), users)
            ]
            if rows:
                with db.atomic():
                    q = db.param
                    db.cursor().executemany(
                        f"INSERT INTO users (name, email, created_at) VALUES ({q}, {q}, {q})",
                        rows,
                    )
    finally:
        db.close()
    return env


def user_ids(engine: str, database: str, limit: int = SEED_USERS) -> list[int]:
    """Ids of seeded users (what ``GET /users/{id}`` asks for)."""
    from peewee_serverless import database_from_env

    db = database_from_env(engine_env(engine, database))
    with db.connection_context():
        rows = db.execute_sql(f"SELECT id FROM users ORDER BY id LIMIT {int(limit)}").fetchall()
    return [int(r[0]) for r in rows]


def get_user_event(user_id: int, version: str = "v1") -> dict[str, Any]:
    """An API Gateway proxy event for ``GET /users/{user_id}``."""
    from peewee_serverless.local.events import HttpRequest, build_event

    request = HttpRequest.from_target("GET", f"/users/{user_id}", [("Accept", "*/*")])
    return build_event(request, version)


# -- child processes ------------------------------------------------------------------------------
_DB_KEYS = ("DATABASE_URL", "DB_ENGINE", "DB_NAME", "DB_HOST", "DB_PORT", "DB_USER", "DB_PASSWORD")


def child_environ(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment with the benchmark's ``DB_*`` and the repo on the path."""
    base = {k: v for k, v in os.environ.items() if k not in _DB_KEYS}
    base.update(env or {})
    base["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    base.setdefault("POWERTOOLS_SERVICE_NAME", "users")
    return base


def run_python(
    args: Sequence[str],
    env: Mapping[str, str],
    *,
    what: str = "child",
    cwd: str | Path = ROOT,
    timeout: float = 300,
    capture_stdout: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run ``python ARGS`` (this interpreter) with exactly ``env``, in ``cwd``; the ended process.

    Its stderr is captured and, when it exits non-zero, its tail is in the ``RuntimeError`` that
    says ``what`` failed. Its stdout goes to ``/dev/null`` (where Powertools logs) unless
    ``capture_stdout``.
    """
    proc = subprocess.run(
        [sys.executable, *args],
        env=dict(env),
        cwd=str(cwd),
        stdout=subprocess.PIPE if capture_stdout else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def run_child(
    module: str, args: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 600
) -> Any:
    """Run ``python -m module --child ARGS --result FILE``; return the JSON it wrote.

    The child's stdout (where Powertools logs) goes to ``/dev/null``; its stderr is shown when
    it fails.
    """
    what = f"{module} {' '.join(args)}"
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        result = Path(tmp) / "result.json"
        command = ["-m", module, "--child", *args, "--result", str(result)]
        proc = run_python(command, child_environ(env), what=what, timeout=timeout)
        if not result.exists():
            raise RuntimeError(f"{what} wrote no result:\n{proc.stderr[-4000:]}")
        return json.loads(result.read_text())


def scenario_main(child: Callable[[Sequence[str]], int]) -> NoReturn:
    """A scenario module's ``__main__``: ``--child ARGS`` is :func:`run_child` starting
    ``child(ARGS)``; anything else is told to run the benchmarks through ``bench.run``."""
    if sys.argv[1:2] == ["--child"]:
        raise SystemExit(child(sys.argv[2:]))
    raise SystemExit("run the benchmarks with: python -m bench.run")


def write_result(path: str, data: Any) -> None:
    """Where a child hands its numbers to the parent."""
    Path(path).write_text(json.dumps(data))


# -- statistics -----------------------------------------------------------------------------------
def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (linear interpolation between closest ranks)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Stats:
    """Summary of timings, in milliseconds."""

    n: int
    median: float
    p99: float
    mean: float
    minimum: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Stats:
        """Summarise timings given in seconds."""
        ms = [s * 1000.0 for s in seconds]
        return cls(
            len(ms),
            percentile(ms, 50),
            percentile(ms, 99),
            sum(ms) / len(ms) if ms else float("nan"),
            min(ms) if ms else float("nan"),
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Stats:
        """Rebuild from :meth:`as_dict` (JSON from a child)."""
        return cls(**data)

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return {
            "n": self.n,
            "median": self.median,
            "p99": self.p99,
            "mean": self.mean,
            "minimum": self.minimum,
        }


def ratio(value: float, baseline: float) -> float:
    """``value / baseline`` (nan when the baseline is 0 or missing)."""
    return value / baseline if baseline else float("nan")


def fmt_ms(value: float) -> str:
    """Milliseconds with precision that suits the magnitude."""
    if value != value:  # nan
        return "—"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}" if value < 1 else f"{value:.2f}"


def fmt_ratio(value: float) -> str:
    """A ratio like ``1.04x``."""
    if value != value:
        return "—"
    return f"{value:.2f}x" if value < 10 else f"{value:.1f}x"


# -- reports --------------------------------------------------------------------------------------
def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str = "") -> str:
    """A Markdown table; ``align``: one ``l``/``r`` per column (default: first left, rest right)."""
    align = align or "l" + "r" * (len(headers) - 1)
    sep = ["---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(sep) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


def write_marked_section(path: Path, section: str, start: str, end: str) -> None:
    """Put ``section`` (which begins with ``start`` and ends with ``end``) into ``path`` in place
    of the part between those markers, or append it; the rest of the file is left as it is, so
    each scenario script rewrites only its own section of ``docs/benchmarks.md``."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if start in text and end in text:
        head, _, rest = text.partition(start)
        _, _, tail = rest.partition(end)
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def publish(section: str, output: str | Path, start: str, end: str, *, write: bool = True) -> int:
    """A stand-alone script's last step: ``section`` (from ``start`` to ``end``) into ``output``
    in place of its old one (unless not ``write``) and printed; the exit status, 0."""
    if write:
        write_marked_section(Path(output), section, start, end)
    print(section)
    return 0


def command_line(
    script: str, argv: Sequence[str] | None, output: str | Path, drop: Sequence[str] = ()
) -> str:
    """``python SCRIPT ARGS`` as a reader would type it, for a report: without ``--output`` when
    it names the default ``docs/benchmarks.md``, nor ``--no-write`` (where the table went is not
    how it was measured), nor the options in ``drop`` with their values."""
    shown = list(argv if argv is not None else sys.argv[1:])
    if Path(output) == ROOT / "docs" / "benchmarks.md":
        drop = ("--output", *drop)
    for option in drop:
        if option in shown:
            i = shown.index(option)
            del shown[i : i + 2]
    if "--no-write" in shown:
        shown.remove("--no-write")
    return f"python {script} {shlex.join(shown)}".strip()


@dataclass
class Target:
    """One of the issue's targets and whether this run met it."""

    name: str
    goal: str
    measured: str
    met: bool | None  # None: not measured in this run

    @property
    def verdict(self) -> str:
        """``met`` / ``NOT met`` / ``not measured``."""
        return {True: "met", False: "**NOT met**", None: "not measured"}[self.met]


@dataclass
class Section:
    """One scenario's part of the report, and what the plot shows of it."""

    key: str
    title: str
    body: str
    plot: dict[str, Any] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)


# -- the machine ----------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def _server_version(engine: str) -> str:
    try:
        conn = admin_connection(engine)
    except Exception as exc:  # noqa: BLE001 - describe, don't fail the report
        return f"unreachable ({type(exc).__name__})"
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT VERSION()" if engine == "mariadb" else "SHOW server_version")
            return str(cur.fetchone()[0])
    finally:
        conn.close()


def machine(engines: Sequence[str]) -> list[tuple[str, str]]:
    """What the numbers were measured on."""
    import sqlite3

    rows = [
        ("CPU", _cpu_model()),
        ("cores (visible to this run)", str(len(os.sched_getaffinity(0)))),
        ("RAM", _ram_gib()),
        ("OS", f"{platform.system()} {platform.release()}"),
        ("Python", platform.python_version()),
        ("Peewee", _version("peewee")),
        ("aws-lambda-powertools", _version("aws-lambda-powertools")),
        ("PyMySQL", _version("PyMySQL")),
        ("psycopg2", _version("psycopg2-binary")),
        ("SQLite", sqlite3.sqlite_version),
    ]
    if "mariadb" in engines:
        rows.append(("MariaDB server", _server_version("mariadb") + " (127.0.0.1, TCP)"))
    if "postgres" in engines:
        rows.append(("PostgreSQL server", _server_version("postgres") + " (127.0.0.1, TCP)"))
    return rows
