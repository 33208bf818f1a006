"""Usage watch, zombie reaping and yielding on the shared servers, with per-user / role limits."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg2
import pymysql
import pytest
from hypothesis import given
from hypothesis import strategies as st

from peewee_serverless.governor import zombie_timeout
from peewee_serverless.lifecycle import database_lifecycle
from peewee_serverless.local.context import LambdaContext
from tests.conftest import MYSQL_ADMIN, PG_ADMIN, TEST_DB


class _Log:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def info(self, msg: str, extra: dict[str, Any] | None = None) -> None:
        self.records.append(extra or {})


@given(
    ratio=st.floats(min_value=0.0, max_value=2.0),
    threshold=st.floats(min_value=0.0, max_value=1.0),
    low=st.floats(min_value=0.0, max_value=100.0),
    span=st.floats(min_value=0.0, max_value=1000.0),
)
def test_zombie_timeout_stays_within_bounds(
    ratio: float, threshold: float, low: float, span: float
) -> None:
    high = low + span
    timeout = zombie_timeout(ratio, threshold, low, high)
    assert low <= timeout <= high
    if threshold < 1.0 and ratio >= 1.0:
        assert timeout == pytest.approx(low)
    if ratio <= threshold:
        assert timeout == pytest.approx(high)


class Accounts:
    """Two application accounts on a shared server: ``app`` (limit 10) and ``other``."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.engine = backend.engine
        suffix = uuid.uuid4().hex[:8]
        self.app = f"pst_gov_app_{suffix}"
        self.other = f"pst_gov_other_{suffix}"
        for name in (self.app, self.other):
            if self.engine == "mysql":
                backend.query(
                    f"CREATE USER '{name}' IDENTIFIED BY 'pw' WITH MAX_USER_CONNECTIONS 10"
                )
                backend.query(f"GRANT ALL ON `{TEST_DB}`.* TO '{name}'")
                backend.query(f"GRANT PROCESS ON *.* TO '{name}'")
            else:
                backend.query(f"CREATE ROLE {name} LOGIN PASSWORD 'pw' CONNECTION LIMIT 10")
        self.raw: list[Any] = []

    def env(self, name: str, **extra: str) -> dict[str, str]:
        return {
            **self.backend.env,
            "DB_USER": name,
            "DB_PASSWORD": "pw",
            "DB_APPLICATION_NAME": name,
            **extra,
        }

    def connect(self, name: str, application_name: str | None = None) -> Any:
        """A plain driver connection as ``name`` (marked like the serverless ones on PG)."""
        if self.engine == "mysql":
            conn = pymysql.connect(
                host=MYSQL_ADMIN["host"],
                port=MYSQL_ADMIN["port"],
                user=name,
                password="pw",
                database=TEST_DB,
                autocommit=True,
            )
        else:
            conn = psycopg2.connect(
                host=PG_ADMIN["host"],
                port=PG_ADMIN["port"],
                user=name,
                password="pw",
                dbname=TEST_DB,
                application_name=application_name or name,
            )
            conn.autocommit = True
        self.raw.append(conn)
        return conn

    def session_id(self, conn: Any) -> int:
        if self.engine == "mysql":
            return int(conn.thread_id())
        return int(conn.get_backend_pid())

    def alive_ids(self) -> set[int]:
        if self.engine == "mysql":
            rows = self.backend.query(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE USER IN (%s, %s)",
                (self.app, self.other),
            )
        else:
            rows = self.backend.query(
                "SELECT pid FROM pg_stat_activity WHERE usename IN (%s, %s)",
                (self.app, self.other),
            )
        return {int(r[0]) for r in rows}

    def wait_gone(self, ids: set[int], timeout: float = 10.0) -> set[int]:
        """The alive ids, once none of ``ids`` is among them (or the bound ran out)."""
        waiter = threading.Event()
        deadline = time.monotonic() + timeout
        alive = self.alive_ids()
        while ids & alive and time.monotonic() < deadline:
            waiter.wait(0.02)  # poll interval; the condition is re-read each round
            alive = self.alive_ids()
        return alive

    def drop(self) -> None:
        for conn in self.raw:
            with contextlib.suppress(Exception):  # killed ones refuse to close cleanly
                conn.close()
        for name in (self.app, self.other):
            if self.engine == "mysql":
                for (tid,) in self.backend.query(
                    "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s", (name,)
                ):
                    with contextlib.suppress(Exception):  # gone already
                        self.backend.query(f"KILL {int(tid)}")
                self.backend.query(f"DROP USER IF EXISTS '{name}'")
            else:
                self.backend.query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                    (name,),
                )
                self.backend.query(f"DROP ROLE IF EXISTS {name}")


@pytest.fixture
def accounts(server_backend: Any) -> Iterator[Accounts]:
    acc = Accounts(server_backend)
    yield acc
    acc.drop()


def _invoke(db: Any, work: Any = None) -> dict[str, Any]:
    """One invocation through the lifecycle; the structured log line's ``db`` fields."""
    log = _Log()

    @database_lifecycle(db, logger=log)
    def handler(event: Any, context: Any) -> dict[str, Any]:
        db.execute_sql("SELECT 1")
        if work is not None:
            work()
        return {"statusCode": 200}

    handler({}, LambdaContext(timeout=30))
    return dict(log.records[-1]["db"])


def _hold_active(accounts: Accounts) -> tuple[Any, threading.Thread, dict[str, Any]]:
    """An ``app`` connection busy in a statement (blocked on a lock the admin holds)."""
    admin = accounts.backend.admin()
    busy = accounts.connect(accounts.app)
    lock_sql = (
        "SELECT GET_LOCK('pst_gov', 60)"
        if accounts.engine == "mysql"
        else "SELECT pg_advisory_lock(4242)"
    )
    with admin.cursor() as cur:
        cur.execute(lock_sql)  # the admin takes the lock first: ``busy`` will wait for it
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            with busy.cursor() as cur:
                cur.execute(lock_sql)
                outcome["row"] = cur.fetchone()
        except Exception as exc:  # noqa: BLE001 - reported to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    # Wait until the server shows it as running that statement (a real signal, bounded).
    busy_id = accounts.session_id(busy)
    for _ in range(500):
        if accounts.engine == "mysql":
            rows = accounts.backend.query(
                "SELECT COMMAND FROM information_schema.PROCESSLIST WHERE ID = %s", (busy_id,)
            )
            if rows and rows[0][0] == "Query":
                break
        else:
            rows = accounts.backend.query(
                "SELECT state FROM pg_stat_activity WHERE pid = %s", (busy_id,)
            )
            if rows and rows[0][0] == "active":
                break
        thread.join(0.01)
    else:
        pytest.fail("the busy connection never showed as active")
    return admin, thread, outcome


def _release(accounts: Accounts, admin: Any) -> None:
    with admin.cursor() as cur:
        if accounts.engine == "mysql":
            cur.execute("SELECT RELEASE_LOCK('pst_gov')")
        else:
            cur.execute("SELECT pg_advisory_unlock(4242)")


def test_only_this_applications_idle_connections_are_reaped(accounts: Accounts) -> None:
    backend = accounts.backend
    idle_app = [accounts.connect(accounts.app) for _ in range(3)]
    idle_other = [accounts.connect(accounts.other) for _ in range(2)]
    in_txn = accounts.connect(accounts.app)
    with in_txn.cursor() as cur:
        if accounts.engine == "mysql":
            cur.execute("CREATE TABLE IF NOT EXISTS gov_t (id INT) ENGINE=InnoDB")
            cur.execute("BEGIN")
            cur.execute("INSERT INTO gov_t VALUES (1)")
        else:
            cur.execute("BEGIN")
            cur.execute("SELECT 1")
    admin, thread, outcome = _hold_active(accounts)

    db = backend.make_db(
        accounts.env(
            accounts.app,
            DB_USAGE_THRESHOLD="0.3",
            DB_ZOMBIE_MIN_SECONDS="0",
            DB_ZOMBIE_MAX_SECONDS="0",
        )
    )
    try:
        fields = _invoke(db)
        assert fields["reaped"] == 3
        assert fields["yielded"] == 0
        assert not db.is_closed()  # something was reaped: we keep our connection
        # pg_terminate_backend only signals: the backends leave pg_stat_activity a moment later.
        reaped_ids = {accounts.session_id(c) for c in idle_app}
        alive = accounts.wait_gone(reaped_ids)
        assert not reaped_ids & alive
        assert {accounts.session_id(c) for c in idle_other} <= alive
        assert accounts.session_id(in_txn) in alive
        with in_txn.cursor() as cur:  # still usable, transaction intact
            cur.execute("ROLLBACK")
        _release(accounts, admin)
        thread.join(30)
        assert "error" not in outcome, outcome.get("error")
        assert outcome["row"] is not None
    finally:
        _release(accounts, admin)
        db.close()


def test_nothing_to_reap_means_yielding_our_own_connection(accounts: Accounts) -> None:
    db = accounts.backend.make_db(
        accounts.env(accounts.app, DB_USAGE_THRESHOLD="0.05", DB_ZOMBIE_MIN_SECONDS="0")
    )
    db.hold_seconds = 0.0  # no lease (MySQL's default keeps a fresh slot for 0.25 s)
    db.refused_at = time.monotonic()  # others wait: this container was just refused a slot
    fields = _invoke(db)
    assert fields["reaped"] == 0
    assert fields["yielded"] == 1
    assert db.is_closed()
    fields = _invoke(db)  # the next invocation simply connects again
    assert fields["connects"] == 1


def test_with_others_waiting_a_slot_is_kept_for_its_lease_then_handed_over(
    accounts: Accounts,
) -> None:
    """A handover costs a connect: the slot is kept ``hold_seconds``, then yielded."""
    db = accounts.backend.make_db(
        accounts.env(accounts.app, DB_USAGE_THRESHOLD="0.05", DB_ZOMBIE_MIN_SECONDS="0")
    )
    db.hold_seconds = 60.0  # a lease no invocation of this test outlasts
    db.refused_at = time.monotonic()
    try:
        fields = _invoke(db)
        assert (fields["reaped"], fields["yielded"]) == (0, 0)
        assert not db.is_closed()
        db._held_since -= 61.0  # the lease is over: its start moved back, no sleeping
        fields = _invoke(db)
        assert (fields["connects"], fields["yielded"]) == (0, 1)
        assert db.is_closed()
    finally:
        db.close()


def test_a_container_that_just_queued_yields_without_reading_usage(accounts: Accounts) -> None:
    """Its own refusal says the server is full and others queue: no usage statements."""
    db = accounts.backend.make_db(accounts.env(accounts.app, DB_ZOMBIE_MIN_SECONDS="0"))
    db.hold_seconds = 0.0

    def no_usage_read() -> None:
        raise AssertionError("usage was read although this container just queued")

    db.connection_usage = no_usage_read
    db.refused_at = time.monotonic()
    fields = _invoke(db)
    assert fields["yielded"] == 1  # an AssertionError would have been logged and skipped
    assert db.is_closed()


def test_above_the_threshold_with_nobody_waiting_the_connection_is_kept(
    accounts: Accounts,
) -> None:
    """High usage alone is no reason to churn: nobody was refused, so nobody waits."""
    db = accounts.backend.make_db(
        accounts.env(
            accounts.app,
            DB_USAGE_THRESHOLD="0.05",
            DB_ZOMBIE_MIN_SECONDS="0",
            DB_LOG_INVOCATIONS="all",
        )
    )
    for _ in range(3):
        fields = _invoke(db)
        assert (fields["reaped"], fields["yielded"]) == (0, 0)
    assert fields["connects"] == 0 and fields["reused"] == 1
    assert not db.is_closed()
    db.close()


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({"DB_USAGE_THRESHOLD": "0.8"}, id="below-the-threshold"),
        pytest.param({"DB_MODE": "proxy", "DB_USAGE_THRESHOLD": "0"}, id="proxy-mode"),
    ],
)
def test_nothing_is_reaped_nor_yielded(accounts: Accounts, settings: dict[str, str]) -> None:
    """Below the usage threshold, and in proxy mode at any usage, both connections stay."""
    idle = accounts.connect(accounts.app)
    db = accounts.backend.make_db(accounts.env(accounts.app, DB_ZOMBIE_MIN_SECONDS="0", **settings))
    fields = _invoke(db)
    assert (fields["reaped"], fields["yielded"]) == (0, 0)
    assert not db.is_closed()
    assert accounts.session_id(idle) in accounts.alive_ids()
    db.close()


def test_usage_reads_the_account_limit_and_is_cached(accounts: Accounts) -> None:
    others = [accounts.connect(accounts.app) for _ in range(4)]
    db = accounts.backend.make_db(accounts.env(accounts.app, DB_USAGE_CHECK_SECONDS="3600"))
    try:
        db.connect()
        usage = db.connection_usage()
        assert usage is not None
        assert (usage.scope, usage.limit, usage.connections) == (
            "user" if accounts.engine == "mysql" else "role",
            10,
            len(others) + 1,
        )
        first = db._current_usage()
        assert db._current_usage() is first  # below the threshold: no new query until due
    finally:
        db.close()


def test_races_with_connections_already_gone_are_not_errors(accounts: Accounts) -> None:
    """A zombie that disappears between the listing and the kill is skipped quietly."""
    victim = accounts.connect(accounts.app)
    victim_id = accounts.session_id(victim)
    db = accounts.backend.make_db(
        accounts.env(accounts.app, DB_USAGE_THRESHOLD="0.05", DB_ZOMBIE_MIN_SECONDS="0")
    )

    def vanish() -> None:
        accounts.backend.kill(victim_id)

    try:
        db.connect()
        if accounts.engine == "mysql":
            real = db.execute_sql

            def listing_then_vanish(sql: str, params: Any = None) -> Any:
                cursor = real(sql, params)
                if "INNODB_TRX" in sql:
                    vanish()  # gone after being listed, before KILL
                return cursor

            db.execute_sql = listing_then_vanish  # type: ignore[method-assign]
            reaped = db.reap_zombies(0)
            del db.execute_sql
        else:
            # Listing and terminating are one statement on PostgreSQL; a backend that exits
            # meanwhile makes pg_terminate_backend() return false, which is not counted.
            vanish()
            accounts.wait_gone({victim_id})  # termination is asynchronous
            reaped = db.reap_zombies(0)
        assert reaped == 0
        assert not db.is_closed()
        db.execute_sql("SELECT 1")
    finally:
        db.close()


def test_usage_counts_other_roles_sessions_without_extra_privileges(accounts: Accounts) -> None:
    """An unprivileged role sees the server's usage, other roles' sessions included."""
    others = [accounts.connect(accounts.other) for _ in range(3)]
    if accounts.engine == "postgres":  # no role limit: the server-wide count decides
        accounts.backend.query(f"ALTER ROLE {accounts.app} CONNECTION LIMIT -1")
    else:
        accounts.backend.query(f"ALTER USER '{accounts.app}' WITH MAX_USER_CONNECTIONS 0")
    db = accounts.backend.make_db(accounts.env(accounts.app))
    try:
        db.connect()
        usage = db.connection_usage()
        assert usage is not None and usage.scope == "server"
        assert usage.connections >= len(others) + 1
    finally:
        db.close()


def test_a_transaction_that_only_began_is_never_reaped(accounts: Accounts) -> None:
    """``with db.atomic():`` around a slow call: idle, no statement yet, still not a zombie."""
    holder = accounts.backend.make_db(accounts.env(accounts.app))
    reaper = accounts.backend.make_db(
        accounts.env(
            accounts.app,
            DB_USAGE_THRESHOLD="0",
            DB_ZOMBIE_MIN_SECONDS="0",
            DB_ZOMBIE_MAX_SECONDS="0",
        )
    )
    try:
        with holder.atomic():
            session = holder.server_connection_id()
            # BEGIN (and the id query) are the only statements: wait until idle for 1 s+.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if accounts.engine == "mysql":
                    rows = accounts.backend.query(
                        "SELECT TIME FROM information_schema.PROCESSLIST WHERE ID = %s",
                        (session,),
                    )
                    idle = bool(rows) and int(rows[0][0]) >= 1
                else:
                    rows = accounts.backend.query(
                        "SELECT clock_timestamp() - state_change > interval '1 second'"
                        " FROM pg_stat_activity WHERE pid = %s",
                        (session,),
                    )
                    idle = bool(rows) and bool(rows[0][0])
                if idle:
                    break
                threading.Event().wait(0.05)
            assert reaper.connection() is not None
            assert reaper.reap_zombies(0) == 0
            assert session in accounts.alive_ids()
            assert holder.execute_sql("SELECT 1").fetchone()[0] == 1  # transaction still usable
    finally:
        holder.close()
        reaper.close()
