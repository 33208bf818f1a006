"""Serverless behaviour for Peewee databases, as a mixin placed before Peewee's own classes.

What the mixin adds to a plain ``MySQLDatabase`` / ``PostgresqlDatabase`` / ``SqliteDatabase``:

* **lazy connect**: nothing happens at construction or import; the first query connects;
* **warm reuse**: the connection survives between invocations of a warm container;
* **check after a freeze**: :meth:`~ServerlessDatabaseMixin.prepare` (called by the lifecycle at
  the start of each invocation) pings the connection only when it sat idle for
  ``options.idle_check_seconds`` or more, and replaces it when it is dead;
* **reconnect without losing or duplicating work**: when the server dropped the connection,
  the statement is retried once on a new connection *only* outside a transaction and only when it
  certainly did not run (the error says the socket was already dead) or it cannot change data
  (a ``SELECT``). Otherwise :class:`~peewee_serverless.errors.ConnectionLost` is raised, so the
  invocation fails cleanly instead of silently losing half a transaction. ``BEGIN`` is always
  safe to retry, so a write wrapped in ``db.atomic()`` survives a connection killed while the
  container was frozen.

Do not use it behind a connection pool of your own (``playhouse.pool``): one Lambda container
runs one invocation at a time and needs exactly one connection.
"""

from __future__ import annotations

import contextlib
import logging
import re
import select
import time
from typing import TYPE_CHECKING, Any, TypeAlias

from peewee import (
    DatabaseError,
    InterfaceError,
    MySQLDatabase,
    OperationalError,
    PostgresqlDatabase,
    SqliteDatabase,
)
from peewee import __exception_wrapper__ as _driver_errors  # type: ignore[attr-defined]

from .backoff import ConnectRetryMixin
from .deadline import pg_bounded, pg_can_bound, pg_connecting, pg_wait_for
from .errors import (
    ConnectionLimitReached,
    ConnectionLost,
    DatabaseUnavailable,
    DeadlineExceeded,
    ErrorKind,
    ServerReadOnly,
    classify,
    driver_error,
)
from .governor import GovernorMixin, MySQLGovernor, PostgresGovernor
from .options import ServerlessOptions
from .stats import ConnectionEvents
from .watchdog import WATCHDOG, Arm

if TYPE_CHECKING:
    from .secrets import CredentialSource

__all__ = [
    "ConnectionEvents",
    "ServerlessDatabase",
    "ServerlessDatabaseMixin",
    "ServerlessMySQLDatabase",
    "ServerlessPostgresqlDatabase",
    "ServerlessSqliteDatabase",
    "database_class_for",
]

logger = logging.getLogger("peewee_serverless.database")

_DEAD = (ErrorKind.CONNECTION_DEAD, ErrorKind.CONNECTION_LOST)
#: How long cancelling a statement cut at the deadline may take (inside the answer's margin).
CANCEL_SECONDS = 0.1
_PQ_CONNECTION_OK = 0  # libpq's ConnStatusType CONNECTION_OK (psycopg2 exports no name for it)

# -- which statements may run twice ------------------------------------------------------------
# A statement whose answer was lost may have run. Running it again is harmless only when it
# cannot change anything, and the first word does not prove that: ``SELECT add_audit()`` writes,
# ``EXPLAIN ANALYZE INSERT`` executes the insert, ``SELECT ... INTO t`` creates a table. The rule,
# deliberately conservative (a statement it rejects simply is not retried):
#
# * it starts with SELECT, SHOW, DESCRIBE/DESC, or EXPLAIN not followed by ANALYZE;
# * it is one statement (no ``;``) and has no ``INTO`` (``SELECT INTO``, ``INTO OUTFILE``);
# * every ``name(`` in it (string literals and quoted identifiers removed first) is a SQL keyword
#   or one of the built-in pure functions below: any other call might be a user function
#   that writes (a quoted ``"name"(`` is never accepted).
_READ_ONLY_VERBS = frozenset(("SELECT", "SHOW", "EXPLAIN", "DESCRIBE", "DESC"))
_PURE_CALLS = frozenset(
    (
        "select",
        "from",
        "join",
        "in",
        "exists",
        "any",
        "all",
        "some",
        "values",
        "as",
        "on",
        "and",
        "or",
        "not",
        "where",
        "when",
        "then",
        "else",
        "case",
        "over",
        "filter",
        "within",
        "lateral",
        "union",
        "except",
        "intersect",
        "using",
        "by",
        "having",
        "is",
        "between",
        "like",
        "count",
        "sum",
        "min",
        "max",
        "avg",
        "coalesce",
        "nullif",
        "greatest",
        "least",
        "cast",
        "convert",
        "lower",
        "upper",
        "length",
        "char_length",
        "character_length",
        "octet_length",
        "substr",
        "substring",
        "trim",
        "ltrim",
        "rtrim",
        "concat",
        "replace",
        "abs",
        "round",
        "floor",
        "ceil",
        "ceiling",
        "mod",
        "sign",
        "sqrt",
        "power",
        "exp",
        "ln",
        "log",
        "now",
        "current_timestamp",
        "date",
        "extract",
        "date_part",
        "date_trunc",
        "if",
        "ifnull",
        "iif",
        "group_concat",
        "string_agg",
        "array_agg",
        "row_number",
        "rank",
        "dense_rank",
        "json_extract",
        "json_object",
        "json_build_object",
        "to_char",
        "strftime",
        "distinct",
        "row",
        "connection_id",
        "pg_backend_pid",
        "version",
        "current_user",
        "current_database",
        "database",
        "current_setting",
        "pg_is_in_recovery",
    )
)
_QUOTED = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|`(?:[^`]|``)*`")
_CALL = re.compile(r"([A-Za-z_][A-Za-z_0-9$.]*|\x00)\s*\(")


def _is_read_only(sql: str) -> bool:
    """Whether ``sql`` certainly changes nothing, so that running it twice is harmless."""
    head = sql.lstrip(" \t\r\n(").split(None, 2)
    if not head or head[0].upper() not in _READ_ONLY_VERBS:
        return False
    if head[0].upper() == "EXPLAIN" and len(head) > 1 and head[1].upper().startswith("ANALY"):
        return False
    bare = _QUOTED.sub("\x00", sql)  # a quoted name followed by "(" becomes a refused call
    if ";" in bare.rstrip().rstrip(";") or re.search(r"\binto\b", bare, re.IGNORECASE):
        return False
    return all(
        name.rsplit(".", 1)[-1].lower() in _PURE_CALLS and "." not in name
        for name in _CALL.findall(bare)
    )


class ServerlessDatabaseMixin:
    """Lazy, warm-reusing, freeze-checking, safely reconnecting connection handling.

    Place it before a Peewee database class. Backend differences live in the small hooks
    ``_ping``, ``_server_in_transaction`` and ``connection_id_sql``.
    """

    #: SQL that returns the server-side id of this session (``None``: not applicable).
    connection_id_sql: str | None = None
    #: The canonical engine name (``mysql``, ``postgres``, ``sqlite``), set by each backend's
    #: class (the Data API classes set theirs too): what code outside the classes (migration
    #: locks) is chosen by, rather than by ``isinstance`` on Peewee's classes.
    engine: str

    if TYPE_CHECKING:  # provided by the Peewee Database class this mixin is combined with
        _state: Any
        _adapter: Any

        def is_closed(self) -> bool: ...
        def in_transaction(self) -> bool: ...
        def connect(self, reuse_if_open: bool = False) -> bool: ...
        def close(self) -> bool: ...

    def __init__(
        self,
        database: Any,
        *args: Any,
        options: ServerlessOptions | None = None,
        credentials: CredentialSource | None = None,
        **kwargs: Any,
    ) -> None:
        self.options = options or ServerlessOptions()
        self.events = ConnectionEvents()
        self._last_used: float | None = None
        self._deadline: float | None = None
        self._timing = False
        #: This connect attempt's own driver parameters (see ``_params_now``); empty between.
        self._attempt: dict[str, Any] = {}
        #: ``select.poll`` object watching the current connection's socket (None: nothing to
        #: watch). Registered once per connection: the check is one ``poll(0)`` system call.
        self._poller: Any = None
        #: The server's id of the current session (for cancelling a statement cut at the
        #: deadline), read from the driver at connect: no round trip.
        self._session: int | None = None
        #: A connection idle this long is not used again (see ``retire_after_seconds``).
        self._retire_after = self.retire_after_seconds(self.options)
        #: ``options.idle_check_seconds``, read on every warm invocation (options never change).
        self._idle_check = self.options.idle_check_seconds
        #: Where user/password (and maybe host, port, name) come from at each connect.
        self.credentials = credentials
        #: How many times a rejected password was fetched again (over the container's life).
        self.credential_refreshes = 0
        super().__init__(database, *args, **kwargs)  # type: ignore[call-arg]
        if credentials is not None and not database:
            # The database name comes from the secret at first connect, not at construction.
            self.deferred = False

    # -- backend hooks -------------------------------------------------------------------------
    def _ping(self, conn: Any) -> bool:
        """Cheap liveness check of an idle connection (one round trip at most)."""
        return True

    def _socket_fd(self, conn: Any) -> int | None:
        """The driver's socket (file descriptor) for the zero-timeout check; None: no socket."""
        return None

    def _deadline_set(self, deadline: float | None) -> None:
        """An invocation with ``deadline`` starts (None: it ended); backends prepare for it."""

    def _session_of(self, conn: Any) -> int | None:
        """The server's id for ``conn``'s session, known without a round trip (None: none)."""
        return None

    def _cancel_on_server(self, session: int, within: float) -> None:
        """Stop what ``session`` is running, from a second connection, in ``within`` seconds."""

    def connect_timeout_within(self, remaining: float, configured: float) -> float:
        """The driver's connect timeout for an attempt with ``remaining`` seconds left."""
        return max(0.001, min(float(configured), remaining))

    def _readable_but_alive(self, conn: Any) -> bool:
        """The idle socket has something to read: is the connection still usable?

        MySQL never speaks unasked, so a readable idle socket is a kill notice or EOF: dead.
        PostgreSQL may (notifications, parameter changes): its hook consumes them and says.
        """
        return False

    def _server_in_transaction(self, conn: Any) -> bool:
        """Whether the driver says a transaction is open, without asking the server."""
        return False

    # -- connecting ------------------------------------------------------------------------------
    def _connect(self) -> Any:
        # A connect made by a statement's first use is inside execute_sql's own timing: count
        # it there only (``_timing``), or db_ms would hold the connect twice.
        started = time.perf_counter()
        try:
            conn = self._open_connection()
        finally:
            if not self._timing:
                self.events.db_seconds += time.perf_counter() - started
        self.events.connects += 1
        self._last_used = time.monotonic()
        self._state.broken = False
        self._watch(conn)
        self._session = self._session_of(conn)
        return conn

    # -- the reaper and the connection's owner never fight ----------------------------------
    #: Slack between the server's idle clock (from the end of the last statement) and ours (from
    #: when its answer reached us): our idle time is never shorter by more than this.
    REAP_MARGIN_SECONDS = 0.25

    def retire_after_seconds(self, options: ServerlessOptions) -> float:
        """Idle time after which our connection is replaced instead of reused.

        The reaper (:mod:`.governor`, in any container of this application) kills only
        connections the server has seen idle for ``zombie_min_seconds`` or more. Their owner
        stops using a connection a margin before that: when it would next send a statement,
        the connection is dropped unsent and a new one opened. So a connection the reaper can
        choose is one its owner will never use, and no kill can hit a statement in flight
        (a listing that is a moment old included). Behind a proxy nothing reaps: never retired.
        A zombie timeout under 0.2 s (tests) cannot leave room for the margin: no retirement.
        """
        minimum = options.zombie_min_seconds
        if options.mode == "proxy" or not self.reaps or minimum < 0.2:
            return float("inf")
        return minimum - min(self.REAP_MARGIN_SECONDS, minimum / 2)

    #: Whether this backend's governor can kill other sessions (server databases only).
    reaps = False

    # -- liveness without a round trip ---------------------------------------------------------
    def _watch(self, conn: Any) -> None:
        fd = self._socket_fd(conn)
        if fd is None:
            self._poller = None
            return
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLPRI)  # HUP and ERR are always reported
        self._poller = poller

    def socket_alive(self) -> bool:
        """Zero-timeout look at the idle connection's socket, no round trip (~1-2 µs).

        A server that ends a session tells the client: MariaDB/MySQL close the socket (EOF),
        PostgreSQL sends ``FATAL 57P01`` and closes it. Either makes the idle socket readable.
        False means the connection is certainly dead; True means nothing says so (a network
        partition can still swallow the notice: that is what the ping after an idle gap is for).
        """
        poller = self._poller
        if poller is None or not poller.poll(0):
            return True
        return self._readable_but_alive(self._state.conn)

    def _close(self, conn: Any) -> None:
        self._poller = None
        super()._close(conn)  # type: ignore[misc]

    def _open_connection(self) -> Any:
        """Open one driver connection; connect failures become typed errors.

        The burst handling (back-off on connection limits) hooks in here.
        """
        try:
            return self._driver_connect()
        except Exception as exc:
            raise self._connect_failure(exc) from exc

    def _driver_connect(self) -> Any:
        """One driver connect (Peewee's ``_connect``) with ``credentials`` applied.

        A password the server rejects is fetched again once (rotation, see :mod:`.secrets`);
        no other retry, no wrapping.
        """
        from .secrets import connect_with_credentials

        return connect_with_credentials(self, self._connect_as)

    def _connect_as(self, credentials: dict[str, Any]) -> Any:
        # The credentials join this attempt's own parameters (``_params_now``) for this one
        # driver connect only: never ``connect_params``, which outlives it.
        attempt = self._attempt
        self._attempt = {**attempt, **credentials}
        try:
            return super()._connect()  # type: ignore[misc]
        finally:
            self._attempt = attempt

    def _connect_failure(self, exc: BaseException, retried: int = 0) -> Exception:
        """The typed error for a connect failure (``exc`` itself when it is not ours to wrap)."""
        kind = classify(exc)
        if kind is ErrorKind.CONNECTION_LIMIT:
            self.events.gave_up += 1
            return ConnectionLimitReached(
                f"database refused the connection: no free connection slot "
                f"(after {retried} retries)",
                retry_after=2,
                kind=kind,
            )
        if kind in (ErrorKind.SERVER_UNAVAILABLE, *_DEAD):
            self.events.gave_up += 1
            return DatabaseUnavailable(
                f"database server is not reachable (after {retried} retries)",
                retry_after=2,
                kind=kind,
            )
        return exc if isinstance(exc, Exception) else RuntimeError(str(exc))

    def set_deadline(self, deadline: float | None) -> None:
        """Latest ``time.monotonic()`` by which every database wait must end (see
        :mod:`.deadline`); None: no deadline (no Lambda context, or the invocation ended)."""
        self._deadline = deadline
        self._deadline_set(deadline)

    def time_left(self) -> float | None:
        """Seconds until the deadline (None: no deadline; <= 0: it has passed)."""
        deadline = self._deadline
        return None if deadline is None else deadline - time.monotonic()

    def _out_of_time(self, exc: BaseException | None = None) -> DeadlineExceeded:
        """The connection whose wait was cut is unusable: drop it (or mark it, in a transaction,
        so that the rollback sends nothing and ``finish`` drops it).

        A statement cut while the server still works on it (a lock wait) would go on and
        could commit after our 503: it is cancelled from a second connection first (KILL QUERY /
        pg_cancel_backend, bounded by a tenth of a second; not behind a proxy, whose session
        ids are not the server's). Where that fails its fate is unknown, as for ConnectionLost.
        """
        if exc is not None and self._session is not None and self.options.mode == "direct":
            try:
                self._cancel_on_server(self._session, CANCEL_SECONDS)
            except Exception as failure:  # noqa: BLE001 - best effort, already out of time
                logger.warning("could not cancel the cut statement: %s", type(failure).__name__)
        if self.in_transaction():
            self._state.broken = True
        elif not self.is_closed():
            self.discard_connection()
        self.events.gave_up += 1
        if isinstance(exc, DeadlineExceeded):
            exc.retry_after = max(exc.retry_after, 1)
            return exc
        return DeadlineExceeded(
            "the invocation's time ran out waiting for the database", retry_after=1
        )

    def _past_deadline(self) -> bool:
        # A driver timeout set from the time left fires at the deadline, give or take a tick.
        deadline = self._deadline
        return deadline is not None and time.monotonic() >= deadline - 0.01

    # -- per invocation --------------------------------------------------------------------------
    def prepare(self) -> str:
        """Make the connection fit for a new invocation; say what it took.

        Returns ``"lazy"`` (no connection yet: the first query opens one), ``"reused"``
        (used recently, no round trip), ``"checked"`` (idle long enough to be pinged, alive),
        ``"replaced"`` (its socket or the ping said dead: dropped, the first query reconnects)
        or ``"retired"`` (idle long enough for a reaper to pick it: dropped unused, see
        :meth:`retire_after_seconds`).
        """
        state = self._state
        if state.closed:
            return "lazy"
        # Every invocation looks at the socket (no round trip): a connection the server ended
        # while we were frozen or idle (KILL, pg_terminate_backend, wait_timeout, a reaper in
        # another container) is replaced before the handler runs, whatever the idle gap.
        # (``socket_alive`` inlined: this runs on every warm invocation.)
        poller = self._poller
        if getattr(state, "broken", False) or (
            poller is not None and poller.poll(0) and not self._readable_but_alive(state.conn)
        ):
            return self._replace("its socket says the server ended it")
        idle = time.monotonic() - (self._last_used or 0.0)
        if idle >= self._retire_after:
            self.events.reconnects += 1
            self.discard_connection()
            return "retired"
        if idle < self._idle_check:
            self.events.reused += 1
            return "reused"
        # A long gap: the notice may have been lost (a partition, a NAT that forgot the flow),
        # so pay one round trip.
        self.events.checks += 1
        started = time.perf_counter()
        alive = self._ping(self._state.conn)
        self.events.db_seconds += time.perf_counter() - started
        if alive:
            self._last_used = time.monotonic()
            return "checked"
        return self._replace("it did not answer the ping")

    def _replace(self, why: str) -> str:
        self.events.reconnects += 1
        self.discard_connection()
        logger.info("idle connection was dead (%s); it will be replaced on first use", why)
        return "replaced"

    def discard_connection(self) -> None:
        """Forget the current connection without talking to the server (it is gone anyway)."""
        conn = self._state.conn
        self._poller = None
        if conn is not None:
            # A dead socket may refuse even to close.
            with contextlib.suppress(Exception):
                conn.close()
        self._state.reset()

    def finish(self) -> bool:
        """End-of-invocation clean-up: roll back what was left open. True if anything was."""
        state = self._state
        if state.closed:
            return False
        if getattr(state, "broken", False):
            self.discard_connection()
            return False
        leftover = bool(state.transactions) or self._server_in_transaction(state.conn)
        if leftover:
            del state.transactions[:]
            try:
                self.rollback()
            except Exception:  # noqa: BLE001 - a failed rollback means the connection is unusable
                self.discard_connection()
        return leftover

    def server_connection_id(self) -> int | None:
        """The server's id for our session (``CONNECTION_ID()`` / ``pg_backend_pid()``)."""
        if self.connection_id_sql is None:
            return None
        row = self.execute_sql(self.connection_id_sql).fetchone()
        return int(row[0])

    # -- statements ------------------------------------------------------------------------------
    def execute_sql(self, sql: str, params: Any = None) -> Any:
        if self._timing:  # nested (a hook running SQL inside a statement): timed by the outer
            return self._run_reconnecting(super().execute_sql, sql, params, retry_safe=None)  # type: ignore[misc]
        started = time.perf_counter()
        self._timing = True
        try:
            cursor = self._run_reconnecting(super().execute_sql, sql, params, retry_safe=None)  # type: ignore[misc]
        finally:
            self._timing = False
            self.events.db_seconds += time.perf_counter() - started
        self._last_used = time.monotonic()
        return cursor

    def begin(self, *args: Any, **kwargs: Any) -> None:
        # BEGIN changes nothing, so it may always be retried on a fresh connection.
        self._run_reconnecting(super().begin, *args, retry_safe=True, **kwargs)  # type: ignore[misc]

    def rollback(self, *args: Any, **kwargs: Any) -> None:
        if getattr(self._state, "broken", False):
            # The server rolled back when the connection died; nothing to send.
            return
        if self._deadline is not None:
            left = self.time_left()
            if left is not None and left <= 0:
                # No time to send it: dropping the connection rolls back on the server.
                self._state.broken = True
                return
        try:
            super().rollback(*args, **kwargs)  # type: ignore[misc]
        except DeadlineExceeded:
            self._state.broken = True  # the server rolls back when the connection goes
        except (OperationalError, InterfaceError) as exc:
            if classify(exc) not in (*_DEAD, ErrorKind.SERVER_UNAVAILABLE):
                raise
            # Dying rolled the transaction back on the server: the rollback is done. A ROLLBACK
            # that could not be sent (refused, throttled, no time left) leaves the transaction
            # to end with the dropped connection (or to expire, on the Data API); raising here
            # would hide the error that made atomic() roll back (a duplicate: 409, not 500).
            self._state.broken = True

    def _read_only(self, exc: BaseException) -> ServerReadOnly:
        """The typed error for a refused write; the connection is dropped (see ServerReadOnly)."""
        self.events.reconnects += 1
        if self.in_transaction():
            # Peewee's atomic() still rolls back; ``broken`` makes that a no-op and finish()
            # drops the connection at the end of the invocation.
            self._state.broken = True
        else:
            self.discard_connection()
        return ServerReadOnly(
            f"the database server refused a write ({driver_error(exc)}); retry shortly",
            retry_after=2,
            kind=ErrorKind.SERVER_READ_ONLY,
        )

    def commit(self, *args: Any, **kwargs: Any) -> None:
        if getattr(self._state, "broken", False):
            raise ConnectionLost("connection lost inside a transaction; nothing was committed")
        if self._deadline is not None:
            left = self.time_left()
            if left is not None and left <= 0:
                raise self._out_of_time()
        try:
            super().commit(*args, **kwargs)  # type: ignore[misc]
        except DeadlineExceeded as exc:
            # Cut while COMMIT was on its way: the outcome is unknown, as for a lost connection.
            self._state.broken = True
            raise ConnectionLost(
                "the invocation's time ran out during COMMIT; the outcome is unknown",
                kind=ErrorKind.CONNECTION_LOST,
            ) from exc
        except (DatabaseError, InterfaceError) as exc:
            kind = self._death_of(exc)
            self._state.broken = True
            raise ConnectionLost(
                "database connection lost during COMMIT; the outcome is unknown", kind=kind
            ) from exc

    def _death_of(self, exc: DatabaseError | InterfaceError) -> ErrorKind:
        """How a statement's connection died (``CONNECTION_DEAD`` / ``_LOST``), for the caller
        to decide on a retry. Any other error is raised from here: a read-only server as
        :class:`ServerReadOnly` (the connection replaced), the rest as it is."""
        kind = classify(exc)
        if kind is ErrorKind.SERVER_READ_ONLY:
            raise self._read_only(exc) from exc
        if kind not in _DEAD:
            raise exc
        return kind

    # When may a statement run again on a new connection? The rule:
    #
    # * Dead before it was sent -> reconnect and run it once more (write or not, outside a
    #   transaction; ``BEGIN`` always). Proof that it was never sent: the socket check just
    #   before sending found the socket readable/closed (the server had already ended the
    #   session), or the driver failed while sending or saw the connection already closed
    #   (``ErrorKind.CONNECTION_DEAD``: PyMySQL 2006 / InterfaceError 0, psycopg2 "connection
    #   already closed"), or the server's answer was its own kill notice (MariaDB 1927,
    #   PostgreSQL 57P01/57P02/57P05: the session ended before running anything more).
    # * Fate unknown (``CONNECTION_LOST``: the connection broke after the statement went out)
    #   -> raise ConnectionLost, unless the statement is provably read-only (``_is_read_only``).
    # * Inside a transaction -> always ConnectionLost: what ran of it is gone with the session.
    def _run_reconnecting(
        self, func: Any, *args: Any, retry_safe: bool | None, **kwargs: Any
    ) -> Any:
        # Every statement of every invocation passes here: the common case (nothing dead, time
        # left) is kept to one frame of ours; failures go to _statement_failed.
        deadline = self._deadline
        poller = self._poller
        if deadline is not None or poller is not None:
            now = time.monotonic()  # one clock read for both checks
            if deadline is not None and deadline <= now:
                raise self._out_of_time()
            if (
                poller is not None
                and not self._state.transactions
                and (poller.poll(0) or now - (self._last_used or 0.0) >= self._retire_after)
            ):
                self._check_before_sending()
        try:
            try:
                return func(*args, **kwargs)
            except (DatabaseError, InterfaceError) as exc:
                if deadline is not None and self._past_deadline():
                    raise  # cut at the deadline (PostgreSQL's watchdog): never retried
                return self._statement_failed(exc, func, args, kwargs, retry_safe)
        except (DeadlineExceeded, ConnectionLost, DatabaseError, InterfaceError) as exc:
            # Under a deadline, a wait cut by our own timeout (not by the server) is the
            # deadline's doing: 503 with Retry-After, the cut connection discarded.
            if deadline is None or not (isinstance(exc, DeadlineExceeded) or self._past_deadline()):
                raise
            raise self._out_of_time(exc) from exc

    def _check_before_sending(self) -> None:
        """The idle socket is readable, or the connection idled long: look before sending."""
        if not self.socket_alive():
            # Proven dead before this statement was sent: nothing of it can have run.
            self.discard_connection()
            self.events.reconnects += 1
            logger.info("connection was ended by the server while idle; reconnecting")
        elif time.monotonic() - (self._last_used or 0.0) >= self._retire_after:
            # Idle long enough to be a reaper's candidate: never send on it (see above).
            self.discard_connection()
            self.events.reconnects += 1

    def _statement_failed(
        self,
        exc: DatabaseError | InterfaceError,
        func: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        retry_safe: bool | None,
    ) -> Any:
        """A statement failed: raise the right error, or reconnect and run it once more."""
        kind = self._death_of(exc)
        in_txn = self.in_transaction()
        if retry_safe is None:
            sql = args[0] if args else ""
            retry_safe = kind is ErrorKind.CONNECTION_DEAD or _is_read_only(sql)
        if in_txn or not retry_safe:
            self._state.broken = True
            if not in_txn:
                self.discard_connection()
            where = "inside a transaction" if in_txn else "during a write"
            raise ConnectionLost(
                f"database connection lost {where}; the statement was not retried",
                kind=kind,
            ) from exc
        logger.info("database connection was dropped by the server (%s); reconnecting", kind.value)
        self.discard_connection()
        self.events.reconnects += 1
        self.connect()
        return func(*args, **kwargs)


def _params_now(db: Any) -> dict[str, Any]:
    """The driver parameters for the connect attempt under way: a fresh dict, built from the
    configured ``connect_params`` and this attempt's own values (timeouts bounded by the
    deadline, the handshake timeout), which never touch ``connect_params`` itself."""
    return {**db.connect_params, **getattr(db, "_attempt", {})}


class _AttemptPostgresqlDatabase(PostgresqlDatabase):
    """Peewee's ``PostgresqlDatabase._connect`` with the attempt's parameters (same steps)."""

    engine = "postgres"

    if TYPE_CHECKING:  # set by PostgresqlDatabase.init (untyped)
        _adapter: Any
        _isolation_level: Any

    def _connect(self) -> Any:
        self._adapter.check_driver()
        conn = self._adapter.connect(self, **_params_now(self))
        if self._isolation_level:
            conn.set_isolation_level(self._isolation_level)
        conn.autocommit = True
        return conn


class _TlsReusingMySQLDatabase(MySQLDatabase):
    """Peewee's ``MySQLDatabase`` connecting through :func:`.tls.pymysql_connect`.

    Same call as Peewee's ``_connect``; the driver's connection class reuses one TLS context per
    process instead of building one (~20 ms) per connect.
    """

    engine = "mysql"

    def _connect(self) -> Any:
        from .tls import pymysql_connect

        return pymysql_connect(database=self.database, autocommit=True, **_params_now(self))


class ServerlessMySQLDatabase(
    ConnectRetryMixin, MySQLGovernor, ServerlessDatabaseMixin, _TlsReusingMySQLDatabase
):
    """MySQL / MariaDB (PyMySQL) with serverless connection handling."""

    reaps = True
    connection_id_sql = "SELECT CONNECTION_ID()"

    def _socket_fd(self, conn: Any) -> int | None:
        sock = getattr(conn, "_sock", None)
        return None if sock is None else int(sock.fileno())

    def _driver_connect(self) -> Any:
        # PyMySQL bounds only the TCP connect by connect_timeout; it waits for the server's
        # greeting with read_timeout, which is "forever" by default. A server that accepts and
        # never answers would hold the invocation until Lambda kills it, so the handshake gets
        # connect_timeout too, and queries get their own read_timeout back afterwards. Under a
        # deadline every wait of the handshake also ends by the deadline itself (a timeout per
        # round trip would add up past it: see tls.pymysql_connect).
        params = _params_now(self)
        extra: dict[str, Any] = {}
        if self._deadline is not None:
            extra["deadline"] = self._deadline
        handshake_only = (
            params.get("read_timeout") is None and params.get("connect_timeout") is not None
        )
        if handshake_only:
            extra["read_timeout"] = params["connect_timeout"]
        if not extra:
            return super()._driver_connect()
        self._attempt = {**self._attempt, **extra}
        conn = super()._driver_connect()
        if handshake_only:
            conn._read_timeout = None  # queries: PyMySQL's default again (or the deadline's)
        return conn

    def _ping(self, conn: Any) -> bool:
        # The check after a freeze must not hang on a server that stopped answering: it waits
        # DB_CONNECT_TIMEOUT at most, and never past the deadline.
        saved = conn._read_timeout
        bound = self.connect_params.get("connect_timeout", saved)
        left = self.time_left()
        if left is not None:
            if left <= 0:
                return False
            bound = left if bound is None else min(bound, left)
        conn._read_timeout = bound
        try:
            conn.ping(reconnect=False)
        except Exception:  # noqa: BLE001 - any failure means: replace it
            return False
        finally:
            conn._read_timeout = saved
        return True

    def _deadline_set(self, deadline: float | None) -> None:
        # Our PyMySQL connection ends every socket wait by its ``deadline`` (tls.py), whatever
        # the configured read / write timeouts. The warm connection gets it here for the whole
        # invocation, a connection opened during it at its connect (``_driver_connect``):
        # nothing to do per statement, commit or rollback; None gives the timeouts back alone.
        conn = self._state.conn
        if conn is not None:
            conn.deadline = deadline

    def connect_timeout_within(self, remaining: float, configured: float) -> float:
        """The connect (and handshake) timeout for an attempt with ``remaining`` seconds left."""
        return max(0.001, min(float(configured), remaining))

    def _session_of(self, conn: Any) -> int | None:
        return int(conn.thread_id())  # from the handshake

    def _cancel_on_server(self, session: int, within: float) -> None:
        from .secrets import connect_with_credentials
        from .tls import pymysql_connect

        until = time.monotonic() + within

        def connect(credentials: dict[str, Any]) -> Any:
            params = {**self.connect_params, **credentials, "connect_timeout": within}
            # ``deadline``: the whole exchange (its handshake is four round trips) ends in time.
            params.update(read_timeout=within, write_timeout=within, deadline=until)
            return pymysql_connect(database=self.database, autocommit=True, **params)

        killer = connect_with_credentials(self, connect)
        try:
            with killer.cursor() as cursor:
                cursor.execute(f"KILL QUERY {int(session)}")  # own sessions need no privilege
        finally:
            killer.close()

    def begin(self, isolation_level: str | None = None) -> None:
        # InnoDB lists a transaction (information_schema.INNODB_TRX, what the reaper reads to
        # spare sessions inside one) only from its first read or write; WITH CONSISTENT
        # SNAPSHOT starts it at BEGIN, so ``with db.atomic():`` around a slow call is never
        # mistaken for an idle session. (Under REPEATABLE READ, the default, the snapshot is
        # taken at BEGIN instead of the first read; other isolation levels take none.)
        def run() -> None:
            with _driver_errors:
                cursor = self.cursor()
                if isolation_level:
                    cursor.execute(f"SET TRANSACTION ISOLATION LEVEL {isolation_level}")
                cursor.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")

        self._run_reconnecting(run, retry_safe=True)

    def _server_in_transaction(self, conn: Any) -> bool:
        # PyMySQL keeps the server's status flags from the last reply: SERVER_STATUS_IN_TRANS = 1.
        return bool(getattr(conn, "server_status", 0) & 1)


class ServerlessPostgresqlDatabase(
    ConnectRetryMixin, PostgresGovernor, ServerlessDatabaseMixin, _AttemptPostgresqlDatabase
):
    """PostgreSQL (psycopg2) with serverless connection handling."""

    reaps = True
    connection_id_sql = "SELECT pg_backend_pid()"

    def _socket_fd(self, conn: Any) -> int | None:
        return int(conn.fileno())

    def _readable_but_alive(self, conn: Any) -> bool:
        # An idle PostgreSQL session may receive a NOTIFY or a ParameterStatus; poll() consumes
        # them. A dying server sends FATAL (libpq hands an error that arrives while idle to the
        # notice list) and then EOF (libpq drops the connection: PQstatus CONNECTION_BAD;
        # psycopg2's ``closed`` does not notice until the next use).
        notices = conn.notices
        seen = len(notices)
        try:
            conn.poll()
        except Exception:  # noqa: BLE001 - any failure: dead
            return False
        fatal = any(n.startswith(("FATAL", "PANIC")) for n in notices[seen:] or notices[-1:])
        return not fatal and not conn.closed and conn.info.status == _PQ_CONNECTION_OK

    def _ping(self, conn: Any) -> bool:
        # A SELECT 1, bounded by the deadline through the watchdog (see .watchdog).
        return not self._adapter.is_connection_closed(conn)

    #: This database's place in the process's :data:`.watchdog.WATCHDOG` (made at its first
    #: connect): armed with the deadline per invocation, holding the connection last opened.
    _arm: Arm | None = None

    def _deadline_set(self, deadline: float | None) -> None:
        # Twice per invocation: one arm, one disarm (no wait callback: psycopg2 stays blocking).
        arm = self._arm
        if arm is None:
            return  # never connected: the connect arms it
        if deadline is not None:
            arm.arm(deadline)
        elif arm.disarm() and not self.is_closed():
            self.discard_connection()  # its socket was shut down at the deadline

    def _driver_connect(self) -> Any:
        # The connect is bounded by psycopg2's wait callback, installed for the connect only
        # (its statements then wait in blocking mode under the watchdog).
        deadline = self._deadline
        if deadline is None:
            conn = super()._driver_connect()
        else:
            bounded = pg_bounded(True)
            pg_connecting(deadline)
            try:
                conn = super()._driver_connect()
            finally:
                pg_connecting(None)
                if bounded:
                    pg_bounded(False)
        arm = self._arm
        if arm is None:
            arm = self._arm = WATCHDOG.watch()
        arm.attach(conn)
        if deadline is not None:
            arm.arm(deadline)  # a connection opened during an invocation
        return conn

    def _session_of(self, conn: Any) -> int | None:
        return int(conn.get_backend_pid())  # from the connection start-up

    def _cancel_on_server(self, session: int, within: float) -> None:
        from .secrets import connect_with_credentials

        def connect(credentials: dict[str, Any]) -> Any:
            return self._adapter.connect(self, **{**self.connect_params, **credentials})

        until = time.monotonic() + within
        bounded = pg_bounded(True)  # so that the connect below ends in time
        pg_connecting(until)
        try:
            canceller = connect_with_credentials(self, connect)
            pg_connecting(None)
            try:
                pg_wait_for(canceller, until)
                canceller.autocommit = True
                with canceller.cursor() as cursor:
                    cursor.execute("SELECT pg_cancel_backend(%s)", (session,))
            finally:
                canceller.close()
        finally:
            pg_connecting(None)
            if bounded:
                pg_bounded(False)

    def connect_timeout_within(self, remaining: float, configured: float) -> float:
        """The connect timeout for an attempt with ``remaining`` seconds left.

        With our wait callback (installed for the connect) the deadline ends the attempt anyway:
        libpq keeps the configured value. Where it cannot be installed (the application installed
        its own callback) libpq's whole seconds (at least 2) are rounded down, and an attempt
        that cannot fit is not made.
        """
        if pg_can_bound():
            return configured
        whole = min(int(configured), int(remaining))
        if whole < 2:
            raise DeadlineExceeded("too little time left to connect to PostgreSQL")
        return whole

    def _server_in_transaction(self, conn: Any) -> bool:
        try:
            return self._adapter.txn_status(conn) != self._adapter.txn_idle
        except Exception:  # noqa: BLE001
            return False


class ServerlessSqliteDatabase(
    ConnectRetryMixin, GovernorMixin, ServerlessDatabaseMixin, SqliteDatabase
):
    """SQLite with the same interface (embedded: nothing to reconnect, locks to respect)."""

    engine = "sqlite"

    def __init__(self, database: Any, *args: Any, **kwargs: Any) -> None:
        # WAL lets readers run beside a writer. Waiting for a lock is Peewee's ``timeout=``
        # (default 5 s, also ``?timeout=`` in a URL): no busy_timeout pragma to override it.
        kwargs.setdefault("pragmas", {"journal_mode": "wal"})
        for key in ("host", "port", "user", "password", "connect_timeout", "application_name"):
            kwargs.pop(key, None)
        super().__init__(database, *args, **kwargs)

    def _server_in_transaction(self, conn: Any) -> bool:
        return bool(conn.in_transaction)

    def govern(self) -> None:
        """Nothing to govern: an embedded database has no server whose slots could run short.

        (The governor's base would find no usage to read, on every invocation.)
        """


#: What :func:`~peewee_serverless.database_from_env` returns: one of the concrete classes, each
#: both a ``peewee.Database`` (``atomic()``, ``create_tables()``, ``Meta.database``...) and a
#: :class:`ServerlessDatabaseMixin`, so a user's ``mypy --strict`` keeps Peewee's whole API.
ServerlessDatabase: TypeAlias = (
    ServerlessMySQLDatabase | ServerlessPostgresqlDatabase | ServerlessSqliteDatabase
)

_CLASSES: dict[str, type[ServerlessDatabase]] = {
    "mysql": ServerlessMySQLDatabase,
    "postgres": ServerlessPostgresqlDatabase,
    "sqlite": ServerlessSqliteDatabase,
}


def database_class_for(engine: str) -> type[ServerlessDatabase]:
    """The serverless database class for a canonical engine name (see ``config.ENGINES``)."""
    return _CLASSES[engine]
