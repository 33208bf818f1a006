"""Peewee databases for Aurora MySQL and Aurora PostgreSQL through the Data API.

The same models, queries, ``atomic()`` blocks, migrations and the lifecycle decorator work
unchanged; only the wire differs (HTTPS calls instead of a database socket, see :mod:`.driver`):

* a "connection" costs no network call, so there is nothing to keep warm, nothing to check after
  a freeze (``_ping`` is a no-op), nothing to reap: the Data API pools the real connections;
* ``atomic()`` maps to ``BeginTransaction`` / ``CommitTransaction`` / ``RollbackTransaction``,
  savepoints (nested ``atomic()``) are plain SQL inside the transaction;
* ``insert_many`` without ``RETURNING`` (MySQL always, PostgreSQL with ``.as_rowcount()``) is
  one ``BatchExecuteStatement`` with one parameter set per row; with ``RETURNING`` (PostgreSQL's
  default, the ids come back as records) it stays one multi-row ``ExecuteStatement``;
* ``lastrowid`` comes from ``generatedFields`` on MySQL and from ``RETURNING`` on PostgreSQL;
* "not now" answers (throttling, a cluster resuming from auto-pause, "Communications link
  failure", a statement timeout outside a transaction) are retried with
  :func:`~peewee_serverless.backoff.retry_call` and the connect back-off settings
  (``DB_CONNECT_RETRIES``, ``DB_BACKOFF_*``) until the invocation's deadline, then raise
  :class:`~peewee_serverless.errors.DatabaseUnavailable` (HTTP 503 with ``Retry-After``).
  Inside a transaction only answers that certainly ran nothing are retried; an expired
  transaction is :class:`~peewee_serverless.errors.ConnectionLost`.

Do not use it for long result sets: the Data API returns at most 1 MiB per call (page with
``LIMIT`` / keyset, as the example's cursor pagination does).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

import peewee
from peewee import Insert, MySQLDatabase, PostgresqlDatabase

from ..backoff import ConnectRetryMixin, emit_event, retry_call
from ..database import ServerlessDatabaseMixin
from ..errors import DatabaseUnavailable, ErrorKind
from . import driver

__all__ = ["DataApiDatabaseMixin", "DataApiMySQLDatabase", "DataApiPostgresqlDatabase"]

logger = logging.getLogger("peewee_serverless.data_api")

#: Peewee's translation of DB-API errors into its own (by class name).
_WRAPPER: Any = peewee.__exception_wrapper__  # type: ignore[attr-defined]

_DRIVER_PARAMS = frozenset(
    ("resource_arn", "secret_arn", "client", "schema", "read_timeout", "endpoint_url")
)


def _driver_error(exc: BaseException) -> driver.Error | None:
    current: BaseException | None = exc
    for _ in range(4):
        if isinstance(current, driver.Error):
            return current
        if current is None:
            return None
        current = current.__cause__ or current.__context__
    return None


class DataApiDatabaseMixin:
    """Data API connection handling; place it first, before ``ConnectRetryMixin``.

    Connect parameters: ``resource_arn`` (the cluster ARN), ``secret_arn``, optional
    ``client`` (a boto3 ``rds-data`` client: injectable for tests and custom endpoints) and
    ``schema`` (PostgreSQL). ``DB_CONNECT_TIMEOUT`` bounds the HTTPS connect.
    """

    options: Any
    events: Any
    _deadline: float | None
    connect_params: dict[str, Any]
    database: Any
    server_version: Any
    _state: Any
    #: ``"mysql"`` or ``"postgres"`` (the driver converts PostgreSQL json / uuid like psycopg2).
    engine: str = "mysql"
    #: SQL returning the server version string, run once per container at the first connect.
    version_sql = "SELECT VERSION()"

    if TYPE_CHECKING:  # provided by the Peewee database class

        def in_transaction(self) -> bool: ...

    def __init__(self, database: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(database, *args, **kwargs)  # type: ignore[call-arg]
        # No name is fine: the Data API then uses the secret's / cluster's default database.
        self.deferred = False

    def __repr__(self) -> str:
        arn = self.connect_params.get("resource_arn", "")
        return f"<{type(self).__name__} cluster={arn!r} database={self.database!r}>"

    # -- connecting: no socket -------------------------------------------------------------------
    def _driver_connect(self) -> Any:
        # Only what the driver takes: Peewee adds MySQL's charset / sql_mode to the parameters.
        params = {k: v for k, v in self.connect_params.items() if k in _DRIVER_PARAMS}
        return driver.connect(
            params.pop("resource_arn"),
            params.pop("secret_arn"),
            self.database or None,
            engine=self.engine,
            connect_timeout=float(self.options.connect_timeout),
            **params,
        )

    def _set_server_version(self, conn: Any) -> None:
        cursor = self._retrying(lambda: self._raw_execute(conn, self.version_sql), "version")
        row = cursor.fetchone()
        self._apply_server_version(str(row[0]) if row else "")

    def _apply_server_version(self, raw: str) -> None:
        raise NotImplementedError

    def _raw_execute(self, conn: Any, sql: str) -> Any:
        with _WRAPPER:
            cursor = conn.cursor()
            cursor.execute(sql)
        return cursor

    def set_deadline(self, deadline: float | None) -> None:
        # Every Data API call (not only connecting) must be answered by the deadline.
        super().set_deadline(deadline)  # type: ignore[misc]
        conn = self._state.conn
        if conn is not None:
            conn.deadline = deadline

    def _connect(self) -> Any:
        conn = super()._connect()  # type: ignore[misc]
        conn.deadline = self._deadline
        return conn

    def _ping(self, conn: Any) -> bool:
        return True  # nothing to check: every call is a fresh HTTPS request

    def _server_in_transaction(self, conn: Any) -> bool:
        return getattr(conn, "transaction_id", None) is not None

    def get_binary_type(self) -> Any:
        return bytes

    def server_connection_id(self) -> int | None:
        """``None``: statements outside a transaction run on whichever pooled connection."""
        return None

    @contextlib.contextmanager
    def pinned_session(self) -> Iterator[None]:
        """Run the block on one server session (migrations: the lock is session-level).

        Without it, statements outside a transaction may each run on another pooled server
        connection. :func:`~peewee_serverless.migrate.run_migrations` uses it.
        """
        if self.is_closed():  # type: ignore[attr-defined]
            self.connect()  # type: ignore[attr-defined]
        conn = self._state.conn
        self._retrying(conn.pin, "BeginTransaction")
        ok = False
        try:
            yield
            ok = True
        finally:
            try:
                conn.unpin(commit=ok)
            except driver.Error:
                if ok:
                    raise

    # -- retry ------------------------------------------------------------------------------------
    def _retryable(self, exc: BaseException) -> bool:
        if isinstance(exc, DatabaseUnavailable):
            return False  # an inner retry (the version query at connect) already gave up
        err = _driver_error(exc)
        if err is None or err.error_kind is not ErrorKind.SERVER_UNAVAILABLE:
            return False
        # Inside a transaction only a call that certainly ran nothing may be sent again.
        return err.executed is False or not self.in_transaction()

    def _retrying(self, func: Any, what: str) -> Any:
        policy = self.backoff_policy()  # type: ignore[attr-defined]
        retried = 0

        def on_retry(n: int, wait: float, exc: BaseException) -> None:
            nonlocal retried
            retried = n
            self.events.retries += 1
            err = _driver_error(exc)
            emit_event(
                self,
                "retry",
                attempt=n,
                wait_ms=round(wait * 1000, 1),
                reason=(err.aws_code or "error") if err else "error",
                call=what,
            )

        try:
            return retry_call(
                func,
                policy=policy,
                retryable=self._retryable,
                deadline=self._deadline,
                on_retry=on_retry,
                rng=getattr(self, "backoff_rng", None),
            )
        except Exception as exc:
            err = _driver_error(exc)
            if isinstance(exc, DatabaseUnavailable) or err is None:
                raise
            if err.error_kind is not ErrorKind.SERVER_UNAVAILABLE:
                raise
            self.events.gave_up += 1
            emit_event(self, "give_up", retries=retried, reason=err.aws_code or "error")
            raise DatabaseUnavailable(
                f"the Data API did not accept the {what} in time ({err.aws_code or 'error'}, "
                f"after {retried} retries)",
                retry_after=policy.retry_after(),
                kind=ErrorKind.SERVER_UNAVAILABLE,
            ) from exc

    def execute_sql(self, sql: str, params: Any = None) -> Any:
        parent: Any = super()
        return self._retrying(lambda: parent.execute_sql(sql, params), "statement")

    def begin(self, *args: Any, **kwargs: Any) -> None:
        parent: Any = super()
        self._retrying(lambda: parent.begin(*args, **kwargs), "BeginTransaction")

    def commit(self, *args: Any, **kwargs: Any) -> None:
        parent: Any = super()
        self._retrying(lambda: parent.commit(*args, **kwargs), "CommitTransaction")

    # -- insert_many -> BatchExecuteStatement -----------------------------------------------------
    def execute(self, query: Any, **context_options: Any) -> Any:
        batch = self._batch_insert(query, context_options)
        if batch is not None:
            return batch
        return super().execute(query, **context_options)  # type: ignore[misc]

    def _batch_insert(self, query: Any, context_options: dict[str, Any]) -> Any:
        # Peewee's Insert keeps rows, RETURNING and ON CONFLICT in private attributes.
        if not isinstance(query, Insert):
            return None
        query = cast(Any, query)
        if query._query_type != Insert.MULTI:
            return None
        if query._returning or query._on_conflict is not None:
            return None
        rows = query._insert
        if not isinstance(rows, (list, tuple)) or len(rows) < 2:
            return None
        sql = None
        param_sets = []
        for row in rows:
            single = query.clone()
            single._insert = [row]
            ctx = self.get_sql_context(**context_options)  # type: ignore[attr-defined]
            row_sql, row_params = ctx.sql(single).query()
            if sql is None:
                sql = row_sql
            elif row_sql != sql:
                return None  # rows with different columns: one multi-row statement instead
            param_sets.append(row_params)
        self._log_query(sql, param_sets[0])  # type: ignore[attr-defined]

        def run() -> Any:
            with _WRAPPER:
                cursor = self.cursor()  # type: ignore[attr-defined]
                cursor.executemany(sql, param_sets)
            return cursor

        return self._retrying(run, "BatchExecuteStatement")


class DataApiMySQLDatabase(
    DataApiDatabaseMixin, ConnectRetryMixin, ServerlessDatabaseMixin, MySQLDatabase
):
    """Aurora MySQL through the Data API."""

    engine = "mysql"

    def _apply_server_version(self, raw: str) -> None:
        self.server_version = self._extract_server_version(raw)  # type: ignore[attr-defined]
        self._set_csq_grouped(  # type: ignore[attr-defined]
            "maria" in raw.lower() or self.server_version >= (10,)
        )


class DataApiPostgresqlDatabase(
    DataApiDatabaseMixin, ConnectRetryMixin, ServerlessDatabaseMixin, PostgresqlDatabase
):
    """Aurora PostgreSQL through the Data API."""

    engine = "postgres"
    version_sql = "SHOW server_version_num"

    def _apply_server_version(self, raw: str) -> None:
        self.server_version = int(raw) if raw.isdigit() else 0
