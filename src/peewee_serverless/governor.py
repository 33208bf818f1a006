"""Connection-usage watch, zombie reaping and yielding: sharing a server's connection slots.

Every warm Lambda container keeps its connection between invocations; most of them sit idle
("Sleep" in MySQL's process list, ``idle`` in ``pg_stat_activity``), many belong to containers
that are frozen or already gone. When the server runs short of slots, a function that just
finished its work helps the others, at the end of its invocation (:meth:`GovernorMixin.finish`):

1. **watch**: read the server's connection usage, at most every ``usage_check_seconds``
   (cached on the database object, so between warm invocations; re-read on every invocation
   while usage is above the threshold or when this invocation had to wait for a slot):

   * MySQL / MariaDB: ``Threads_connected`` against ``@@max_connections``, and this user's
     connections against ``@@max_user_connections`` (whose session value is the account's
     ``MAX_USER_CONNECTIONS`` when one is set); the higher ratio counts;
   * PostgreSQL: client backends in ``pg_stat_activity`` (other roles' sessions included, which
     need no extra privilege) against ``max_connections`` minus the superuser reserve, and
     this role's backends against its ``rolconnlimit``; the higher counts.

2. **reap**: above ``usage_threshold`` (default 0.8), kill *this application's* connections
   that have been idle longer than a timeout computed from the usage: ``zombie_max_seconds`` at
   the threshold, falling linearly to ``zombie_min_seconds`` at 100 %. A connection that is
   running a statement or has a transaction open is never a candidate. A candidate that is
   already gone when we kill it (MySQL ``ER_NO_SUCH_THREAD``, ``pg_terminate_backend`` false)
   is a normal race, not an error.

3. **yield**: when nothing could be reaped *and others are waiting for a slot*, close our own
   connection instead of keeping it for the next warm invocation (which then connects again,
   lazily). Usage alone does not say anyone waits: ten containers on ten slots read 100 % and
   used to hand their connections back and forth after every invocation for nobody (2-4x the
   sessions of plain Peewee, and slower). Evidence that someone waits, any of:

   * this container was refused a slot within the last ``pressure_window_seconds`` (it queued,
     so others are queueing with it);
   * MySQL / MariaDB at the server's limit: ``Connection_errors_max_connections`` (refused
     connects, counted by the server) rose since this container's previous look;
   * where no refusal is counted (PostgreSQL; a MySQL per-user limit): every slot is taken and
     we have held ours for ``usage_check_seconds`` — a lease, so that containers that got in
     first cannot keep the others out for longer than that.

"This application's" connections:

* PostgreSQL: ``application_name`` (``DB_APPLICATION_NAME``, default the Lambda function name),
  set as a connect parameter, together with the same role and database;
* MySQL / MariaDB: the **database user**. MariaDB's process list shows user, host, database,
  command and idle time but neither connection attributes (they need ``performance_schema``,
  off by default) nor user variables, so give each application its own database user. Only
  ``Sleep`` connections of ``CURRENT_USER()`` on the same database are candidates, and only
  those without an InnoDB transaction (``information_schema.INNODB_TRX``, which needs the
  ``PROCESS`` privilege: without it nothing is reaped and the function only yields). InnoDB
  lists a transaction only from its first read or write, so our ``begin()`` is
  ``START TRANSACTION WITH CONSISTENT SNAPSHOT``, which starts it at once: a session of ours
  that ran only ``BEGIN`` is never reaped. (A client of the same user that is not ours and ran
  a bare ``BEGIN`` cannot be told apart: another reason to give each application its own user.)

Behind a proxy (``DB_MODE=proxy``, e.g. RDS Proxy) all of this is off: the proxy multiplexes
connections, killing its backend sessions is wrong, and the extra statements would pin a
session. Connect retry (:mod:`.backoff`) stays on in both modes.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import classify, driver_error
from .stats import emit_event

__all__ = ["GovernorMixin", "MySQLGovernor", "PostgresGovernor", "Usage", "zombie_timeout"]

logger = logging.getLogger("peewee_serverless.governor")

#: At most this many sessions are killed by one invocation (bounds the work at the end).
MAX_REAP = 50
#: Governance (a few statements) is skipped when less time than this is left in the invocation.
GOVERN_MIN_SECONDS = 1.0

_ER_NO_SUCH_THREAD = 1094
_ER_SPECIFIC_ACCESS_DENIED = 1227


@dataclass(frozen=True)
class Usage:
    """The server's connection usage as one invocation saw it."""

    connections: int
    limit: int
    scope: str  # "server", "user" or "role": which limit is the tighter one
    checked_at: float = 0.0
    #: Connects the server has refused at this limit so far (a counter), ``None``: not counted.
    refused: int | None = None

    @property
    def ratio(self) -> float:
        """``connections / limit`` (1.0 when the limit is 0 or less)."""
        return self.connections / self.limit if self.limit > 0 else 1.0


def zombie_timeout(ratio: float, threshold: float, min_seconds: float, max_seconds: float) -> float:
    """How long a connection must have been idle to be reaped at usage ``ratio``.

    ``max_seconds`` at the threshold, ``min_seconds`` at full usage, linear between, always
    within ``[min_seconds, max_seconds]``.
    """
    if threshold >= 1.0:
        return max_seconds
    pressure = (ratio - threshold) / (1.0 - threshold)
    pressure = min(1.0, max(0.0, pressure))
    return max(min_seconds, min(max_seconds, max_seconds - (max_seconds - min_seconds) * pressure))


def _pick(candidates: list[tuple[int, int, str]]) -> tuple[int, int, str]:
    # The tightest limit (highest ratio) is the one that refuses us first.
    return max(candidates, key=lambda c: c[0] / c[1] if c[1] > 0 else 1.0)


class GovernorMixin:
    """Watches connection usage and reaps / yields at the end of an invocation.

    Place it before ``ServerlessDatabaseMixin`` (after ``ConnectRetryMixin``). Options:
    ``usage_threshold``, ``usage_check_seconds``, ``zombie_min_seconds``,
    ``zombie_max_seconds``, ``mode``, ``application_name``. Counters: ``events.reaped``,
    ``events.yielded``.
    """

    options: Any
    events: Any
    _state: Any

    _usage: Usage | None = None
    #: ``time.monotonic()`` from which ``_usage`` is read again (see ``_current_usage``).
    _usage_due: float = 0.0
    _reap_supported: bool = True
    #: The server's refused-connect counter read with the last usage (``None``: not counted).
    _refused_counter: int | None = None
    #: The server's refusal counter at this container's previous usage read.
    _refused_before: int | None = None
    #: ``time.monotonic()`` when the current connection was opened (seen at an invocation's end).
    _held_since: float | None = None

    #: How long a refusal of our own connect counts as "others are waiting" (seconds).
    pressure_window_seconds: float = 10.0
    #: Above the usage threshold, usage is read again after this long (not at every invocation).
    busy_check_seconds: float = 1.0
    #: With others waiting, a connection is handed over only once held this long (a lease, in
    #: seconds; per backend below). Each handover costs a close, a connect and the waiters'
    #: refused attempts.
    hold_seconds: float = 0.0
    #: No zombie-reaping look before this ``time.monotonic()`` (the last look found none).
    _no_zombies_until: float | None = None

    if TYPE_CHECKING:  # provided by the Peewee database / ServerlessDatabaseMixin

        def execute_sql(self, sql: str, params: Any = None) -> Any: ...
        def is_closed(self) -> bool: ...
        def close(self) -> bool: ...
        def discard_connection(self) -> None: ...

    # -- backend hooks (per-backend classes below; the base is an embedded database's) -------
    def _usage_candidates(self) -> list[tuple[int, int, str]] | None:
        """``(connections, limit, scope)`` for each limit that applies (None: no server)."""
        return None

    def _reap(self, idle_seconds: float) -> int:
        """Kill this application's sessions idle ``idle_seconds`` or more; how many."""
        return 0

    # -- reading usage -------------------------------------------------------------------------
    def connection_usage(self) -> Usage | None:
        """Ask the server for its connection usage now (None for an embedded database)."""
        candidates = self._usage_candidates()
        if not candidates:
            return None
        connections, limit, scope = _pick(candidates)
        # A server's counter covers only its own max_connections, not a per-user / role limit.
        refused = self._refused_counter if scope == "server" else None
        return Usage(connections, limit, scope, time.monotonic(), refused)

    def _current_usage(self, now: float | None = None) -> Usage | None:
        cached = self._usage
        if now is None:
            now = time.monotonic()
        # The cached reading is used until ``_usage_due`` (set when it was read), unless this
        # invocation had to retry its connect (the server is short of slots now).
        if cached is not None and now < self._usage_due and not self.events.retries:
            return cached
        if cached is not None and cached.refused is not None:
            self._refused_before = cached.refused
        usage = self._usage = self.connection_usage()
        if usage is not None:
            opts = self.options
            every = opts.usage_check_seconds
            if usage.ratio > opts.usage_threshold:
                # Above the threshold a holder must learn soon that others queue (the refusal
                # counter), but not at every invocation: at 1x every slot is taken and nobody
                # waits, and two statements per invocation made it 5x slower than plain Peewee.
                every = min(self.busy_check_seconds, every)
            self._usage_due = usage.checked_at + every
        return usage

    def queued_recently(self, now: float | None = None) -> bool:
        """Whether this container was refused a slot within ``pressure_window_seconds``."""
        refused_at = getattr(self, "refused_at", None)
        if refused_at is None:
            return False
        now = time.monotonic() if now is None else now
        return now - refused_at <= self.pressure_window_seconds

    def others_waiting(self, usage: Usage) -> bool:
        """Whether there is evidence that other containers wait for a slot (module docstring)."""
        now = time.monotonic()
        if self.queued_recently(now):
            return True
        if usage.refused is not None:
            before = self._refused_before
            return before is not None and usage.refused > before
        held_since = self._held_since if self._held_since is not None else now
        return usage.connections >= usage.limit and now - held_since >= (
            self.options.usage_check_seconds
        )

    # -- reaping -------------------------------------------------------------------------------
    def reap_zombies(self, idle_seconds: float) -> int:
        """Kill this application's connections idle for ``idle_seconds`` or more; how many."""
        return self._reap(idle_seconds)

    # -- yielding ------------------------------------------------------------------------------
    def yield_connection(self) -> None:
        """Close our own connection rather than keep a slot the server is short of."""
        self.close()
        self._usage = None  # our own slot is free now: read usage afresh next time
        self.events.yielded += 1

    # -- end of invocation ---------------------------------------------------------------------
    def finish(self) -> bool:
        """Roll back leftovers (see the base), then reap or yield when the server is short."""
        leftover: bool = super().finish()  # type: ignore[misc]
        try:
            self.govern()
        except Exception as exc:  # noqa: BLE001 - helping others must never fail an invocation
            logger.warning("connection governance skipped: %s", classify(exc).value)
            if not self.is_closed():
                self.discard_connection()
        return leftover

    def govern(self) -> None:
        """Check usage and reap zombies or yield our connection (no-op behind a proxy)."""
        # The usual warm invocation, decided before anything else: usage was read a moment ago
        # (still cached) and was below the threshold, this invocation neither connected nor
        # retried, and no connect of ours was refused within the pressure window. Every check
        # below would end in doing nothing.
        events = self.events
        usage = self._usage
        if (
            usage is not None
            and not (events.connects or events.retries)
            and self._held_since is not None
        ):
            now = time.monotonic()
            if (
                now < self._usage_due
                and usage.ratio <= self.options.usage_threshold
                and not self.queued_recently(now)
            ):
                return
        opts = self.options
        if opts.mode == "proxy":
            return
        state = self._state
        if state.closed or getattr(state, "broken", False) or state.transactions:
            return
        left = self.time_left()  # type: ignore[attr-defined]
        if left is not None and left < GOVERN_MIN_SECONDS:
            return  # helping others never costs our answer its deadline
        now = time.monotonic()
        if self.events.connects or self._held_since is None:
            self._held_since = now
        if self.queued_recently(now):
            # This container queued for its slot moments ago: the server is full and others
            # queue as it did. No usage read is needed to know that (two statements fewer
            # while holding a slot others wait for); reap if due, else hand the slot over.
            self._relieve(None, 1.0, now)
            return
        usage = self._current_usage(now)
        if usage is None or usage.ratio <= opts.usage_threshold:
            return
        self._relieve(usage, usage.ratio, now)

    def _reap_due(self, now: float) -> bool:
        # A zombie is idle for zombie_min_seconds at least: a container that found none needs
        # not look again for a while (every look scans the server's process list).
        return self._no_zombies_until is None or now >= self._no_zombies_until

    def _relieve(self, usage: Usage | None, ratio: float, now: float) -> None:
        """The server is short of slots: reap zombies (when due) or yield our connection."""
        opts = self.options
        timeout = zombie_timeout(
            ratio, opts.usage_threshold, opts.zombie_min_seconds, opts.zombie_max_seconds
        )
        fields: dict[str, Any] = {"idle_timeout_s": round(timeout, 1)}
        if usage is not None:
            fields.update(connections=usage.connections, limit=usage.limit, scope=usage.scope)
        reaped = 0
        if self._reap_due(now):
            reaped = self.reap_zombies(timeout)
            self._no_zombies_until = None if reaped else now + opts.usage_check_seconds
        if reaped:
            self.events.reaped += reaped
            self._usage = None
            emit_event(self, "reap", reaped=reaped, **fields)
            return
        if usage is not None and not self.others_waiting(usage):
            return
        held = now - (self._held_since if self._held_since is not None else now)
        if held < self.hold_seconds:
            return
        self.yield_connection()
        self._held_since = None
        emit_event(self, "yield", **fields)


class MySQLGovernor(GovernorMixin):
    """MySQL / MariaDB: usage from ``Threads_connected`` and the user's limit; reaping by
    ``KILL CONNECTION`` of idle sessions of the same user and database."""

    #: A quarter of a second lets a container run a few invocations per slot. Measured at 20x
    #: (docs/benchmarks.md): handing the slot over after every invocation opened ~1,900
    #: sessions for 2,000 invocations and the wall was 2x longer: the freed slot's time went
    #: into closes and connects, while waiters' refused attempts cost MariaDB little.
    hold_seconds = 0.25

    def _usage_candidates(self) -> list[tuple[int, int, str]] | None:
        max_conn, max_user, mine = self.execute_sql(
            "SELECT @@max_connections, @@max_user_connections, "
            "(SELECT COUNT(*) FROM information_schema.PROCESSLIST "
            " WHERE USER = SUBSTRING_INDEX(CURRENT_USER(), '@', 1))"
        ).fetchone()
        status = dict(
            self.execute_sql(
                "SHOW GLOBAL STATUS WHERE Variable_name IN "
                "('Threads_connected', 'Connection_errors_max_connections')"
            ).fetchall()
        )
        refused = status.get("Connection_errors_max_connections")
        self._refused_counter = int(refused) if refused is not None else None
        candidates = [(int(status["Threads_connected"]), int(max_conn), "server")]
        if int(max_user) > 0:
            candidates.append((int(mine), int(max_user), "user"))
        return candidates

    def _reap(self, idle_seconds: float) -> int:
        if not self._reap_supported:
            return 0
        sql = (
            "SELECT p.ID FROM information_schema.PROCESSLIST p"
            " WHERE p.USER = SUBSTRING_INDEX(CURRENT_USER(), '@', 1) AND p.DB = DATABASE()"
            " AND p.COMMAND = 'Sleep' AND p.TIME >= %s AND p.ID <> CONNECTION_ID()"
            " AND p.ID NOT IN (SELECT trx_mysql_thread_id FROM information_schema.INNODB_TRX)"
            " ORDER BY p.TIME DESC LIMIT %s"
        )
        try:
            # TIME is whole seconds since the last statement ended: rounding the threshold up
            # keeps every kill at or above it (retirement relies on that, see database.py).
            rows = self.execute_sql(sql, (math.ceil(idle_seconds), MAX_REAP)).fetchall()
        except Exception as exc:
            if _mysql_errno(exc) != _ER_SPECIFIC_ACCESS_DENIED:
                raise
            # Without PROCESS we cannot tell an idle transaction from an idle session: no kills.
            self._reap_supported = False
            logger.warning("zombie reaping needs the PROCESS privilege; only yielding")
            return 0
        reaped = 0
        for (thread_id,) in rows:
            try:
                self.execute_sql(f"KILL CONNECTION {int(thread_id)}")
            except Exception as exc:
                if _mysql_errno(exc) == _ER_NO_SUCH_THREAD:
                    continue  # gone by itself in the meantime: fine
                raise
            reaped += 1
        return reaped


class PostgresGovernor(GovernorMixin):
    """PostgreSQL: usage from ``pg_stat_activity`` and the role's limit; reaping by
    ``pg_terminate_backend`` of idle sessions with our ``application_name``."""

    #: No lease: every refused attempt costs PostgreSQL a forked backend, so waiting is dear
    #: and a lease makes each waiter's turn come later. Measured at 20x (docs/benchmarks.md):
    #: a 50 ms lease halved the sessions (889-949 instead of 1,838-1,901 for 2,000 invocations)
    #: and cut p50 from ~1 s to 79-157 ms for the benchmark's one-INSERT handler, all answered
    #: in eight bursts, but p99 rose from 10-12 s to 13-17 s, and the whole users service
    #: (heavier invocations) lost 3-21 of 2,000 invocations to their deadline in three bursts,
    #: against 0-1 in two without; 0.1 s and 0.25 s leases lost 1-2 with the light handler.
    hold_seconds = 0.0

    def _usage_candidates(self) -> list[tuple[int, int, str]] | None:
        # Without pg_read_all_stats, PostgreSQL hides backend_type (and state) of other
        # roles' sessions; their database and role stay visible. A row with both is a
        # client session (background processes have no role or no database), so it is
        # counted too: an unprivileged application role sees everyone's slots.
        sql = (
            "SELECT"
            " (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
            "   OR (backend_type IS NULL AND datid IS NOT NULL AND usesysid IS NOT NULL)),"
            " current_setting('max_connections')::int"
            "   - current_setting('superuser_reserved_connections')::int,"
            " (SELECT count(*) FROM pg_stat_activity"
            "   WHERE usename = current_user AND backend_type = 'client backend'),"
            " (SELECT rolconnlimit FROM pg_roles WHERE rolname = current_user)"
        )
        total, max_conn, mine, role_limit = self.execute_sql(sql).fetchone()
        candidates = [(int(total), int(max_conn), "server")]
        if role_limit is not None and int(role_limit) >= 0:
            candidates.append((int(mine), int(role_limit), "role"))
        return candidates

    def _reap(self, idle_seconds: float) -> int:
        # Selecting and terminating in one statement keeps the state check next to the kill.
        sql = (
            "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = %s AND usename = current_user"
            " AND datname = current_database() AND backend_type = 'client backend'"
            " AND state = 'idle' AND pid <> pg_backend_pid()"
            " AND state_change <= clock_timestamp() - make_interval(secs => %s)"
            " ORDER BY state_change LIMIT %s"
        )
        rows = self.execute_sql(
            sql, (self.options.application_name, float(idle_seconds), MAX_REAP)
        ).fetchall()
        return sum(1 for _, terminated in rows if terminated)


def _mysql_errno(exc: BaseException) -> int | None:
    err = driver_error(exc)
    args = getattr(err, "args", ())
    return args[0] if args and isinstance(args[0], int) else None
