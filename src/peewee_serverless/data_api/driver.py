"""A thin DB-API 2.0 driver over Aurora's Data API (boto3's ``rds-data`` client).

Why our own and not ``aurora-data-api`` (0.5.0, the maintained DB-API driver SQLAlchemy's
dialect uses): it opens a Data API transaction for every cursor and has no autocommit mode
(each Peewee statement would cost ``BeginTransaction`` + ``ExecuteStatement`` +
``CommitTransaction``, and Peewee never commits outside ``atomic()``); it accepts only named
parameters (Peewee writes ``%s``); it converts results by PostgreSQL type names only (MySQL's
``DATETIME`` or ``DECIMAL`` come back as strings); it sends no ``typeHint`` for JSON or UUID;
and it imports boto3 at import time. What is here is the part of a driver Peewee uses:

* ``cursor.execute(sql, params)``: ``%s`` placeholders become ``:p1``..., each value a typed
  ``SqlParameter`` (``longValue``, ``doubleValue``, ``stringValue``, ``booleanValue``,
  ``blobValue``, ``isNull``; ``typeHint`` ``DATE``, ``TIME``, ``TIMESTAMP``, ``DECIMAL``,
  ``JSON``, ``UUID``), one ``ExecuteStatement`` with ``includeResultMetadata``; records become
  tuples typed by ``columnMetadata`` (dates, decimals, blobs, booleans; PostgreSQL ``json`` /
  ``jsonb`` decoded as psycopg2 does); ``lastrowid`` from ``generatedFields`` (MySQL);
* ``cursor.executemany(sql, seq)``: ``BatchExecuteStatement`` (``lastrowid`` of the first row);
* the statements ``BEGIN`` / ``START TRANSACTION`` / ``COMMIT`` / ``ROLLBACK`` that Peewee sends
  for ``atomic()`` become ``BeginTransaction`` / ``CommitTransaction`` / ``RollbackTransaction``;
  every statement in between carries the ``transactionId``. Outside a transaction each statement
  commits on its own (the Data API's autocommit);
* AWS errors become DB-API errors carrying an :class:`~peewee_serverless.errors.ErrorKind`
  (``error_kind``) and whether the statement certainly did not run (``executed is False``):
  a duplicate key (MySQL 1062, SQLSTATE 23505, read from the message as the Data API reports it)
  is an ``IntegrityError``; throttling, ``DatabaseResumingException``, "Communications link
  failure", ``StatementTimeoutException`` are ``OperationalError`` with kind
  ``SERVER_UNAVAILABLE`` (retried by :mod:`.database`); an expired transaction
  (``TransactionNotFoundException``) is ``CONNECTION_LOST``.

There is no socket: ``connect()`` makes no call, a "connection" is the ARNs, the database name,
the client and the open ``transactionId``. The client is built on first use (boto3 is imported
then, not at import) with botocore's own retries off, so that the caller's back-off, bounded by
the invocation's deadline, is the only one. A connection's ``deadline`` (the database sets it
from the Lambda context) bounds every call: near it, a client with shorter HTTP timeouts is used,
and an answer that does not come in time is an unknown outcome (``CONNECTION_LOST``: a read is
sent again on a fresh connection, a write is not). No ARN, secret or parameter value is logged.

The clients are :class:`~peewee_serverless.aws_deadline.DeadlineBoundClient`'s: one stand-in
per region, timeouts and endpoint for the process (:func:`make_client`), shared by every
connection (a reconnect builds a new one), its budget steps those of that module's table. Two
things differ from its defaults: ``max_attempts=1`` (the retries are the database layer's, see
above), and a ``min_budget`` of one second (:data:`MIN_BUDGET`) where other services start at
half a second: a statement cut by its read timeout is an unknown outcome (a write is not sent
again), while a call not sent is a clean ``SERVER_UNAVAILABLE`` with ``executed=False``, so a
statement is not sent with less time than it can usefully run in. With less left,
:class:`~peewee_serverless.errors.DeadlineExceeded` becomes that ``OperationalError`` (the
database layer answers 503 as for any unavailable server).
"""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from ..aws_deadline import DeadlineBoundClient
from ..errors import DeadlineExceeded, ErrorKind
from .placeholders import format_to_named

__all__ = [
    "Connection",
    "Cursor",
    "DataError",
    "DatabaseError",
    "Error",
    "IntegrityError",
    "InterfaceError",
    "InternalError",
    "NotSupportedError",
    "OperationalError",
    "ProgrammingError",
    "Warning",
    "apilevel",
    "connect",
    "make_client",
    "paramstyle",
    "threadsafety",
]

apilevel = "2.0"
threadsafety = 1
paramstyle = "format"


class Warning(Exception):  # noqa: A001 - the DB-API name
    """DB-API ``Warning``."""


class Error(Exception):
    """Base of the driver's errors; ``error_kind`` says what it means to a serverless function.

    ``code`` is the database's error code where the Data API reported one (MySQL errno as int,
    PostgreSQL SQLSTATE as str), ``aws_code`` the AWS error code (``BadRequestException``...),
    ``executed`` is ``False`` when the statement certainly did not run, ``None`` when unknown.
    """

    def __init__(
        self,
        message: str,
        *,
        kind: ErrorKind = ErrorKind.OTHER,
        code: int | str | None = None,
        aws_code: str | None = None,
        executed: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.error_kind = kind
        self.code = code
        self.aws_code = aws_code
        self.executed = executed


class InterfaceError(Error):
    """DB-API ``InterfaceError``."""


class DatabaseError(Error):
    """DB-API ``DatabaseError``."""


class DataError(DatabaseError):
    """DB-API ``DataError``."""


class OperationalError(DatabaseError):
    """DB-API ``OperationalError``."""


class IntegrityError(DatabaseError):
    """DB-API ``IntegrityError``."""


class InternalError(DatabaseError):
    """DB-API ``InternalError``."""


class ProgrammingError(DatabaseError):
    """DB-API ``ProgrammingError``."""


class NotSupportedError(DatabaseError):
    """DB-API ``NotSupportedError``."""


# -- AWS errors -> DB-API errors ---------------------------------------------------------------

#: AWS error codes meaning "not now": the request was refused before any SQL ran.
_NOT_NOW = frozenset(
    (
        "ThrottlingException",
        "TooManyRequestsException",
        "DatabaseResumingException",  # Aurora Serverless waking up from a pause
        "DatabaseUnavailableException",  # 504: the cluster is not reachable right now
        "ServiceUnavailableError",  # 503
    )
)
_AUTH = frozenset(
    (
        "AccessDeniedException",
        "ForbiddenException",
        "InvalidSecretException",
        "SecretsErrorException",
    )
)
_TRANSACTION_GONE = frozenset(("TransactionNotFoundException", "NotFoundException"))

# MySQL errnos as the Data API embeds them in its message, both formats seen in the wild:
# "Database error code: 1062. Message: Duplicate entry ..." and "...; Error code: 1062; SQLState:".
_MYSQL_CODE = re.compile(r"(?:Database error code: |Error code: )(\d+)")
# PostgreSQL: "ERROR: duplicate key value ...; SQLState: 23505" (as aurora-data-api parses it).
_SQLSTATE = re.compile(r"SQLState: ([0-9A-Z]{5})")
#: What the Data API says when it cannot reach the cluster (paused, resuming, failing over).
_LINK_FAILURE = "communications link failure"

_MYSQL_UNIQUE = (1062, 1586)  # ER_DUP_ENTRY, ER_DUP_ENTRY_WITH_KEY_NAME
_MYSQL_INTEGRITY = (1048, 1216, 1217, 1451, 1452)  # NOT NULL, foreign keys
_MYSQL_DATA = (1264, 1366, 1406, 1292)  # out of range, bad value, too long, bad datetime


def _database_error(message: str, aws_code: str) -> Error:
    """The DB-API error for an SQL error the Data API reports as a 400 with the server message."""
    if _LINK_FAILURE in message.lower():
        return OperationalError(
            message, kind=ErrorKind.SERVER_UNAVAILABLE, aws_code=aws_code, executed=False
        )
    found = _MYSQL_CODE.search(message)
    if found:
        errno = int(found.group(1))
        if errno in _MYSQL_UNIQUE:
            return IntegrityError(
                message, kind=ErrorKind.UNIQUE_VIOLATION, code=errno, aws_code=aws_code
            )
        if errno in _MYSQL_INTEGRITY:
            return IntegrityError(message, code=errno, aws_code=aws_code)
        if errno in _MYSQL_DATA:
            return DataError(message, code=errno, aws_code=aws_code)
        if errno in (1205, 1213):  # lock wait timeout, deadlock
            return OperationalError(message, code=errno, aws_code=aws_code)
        return ProgrammingError(message, code=errno, aws_code=aws_code)
    state = _SQLSTATE.search(message)
    if state:
        sqlstate = state.group(1)
        if sqlstate == "23505":
            return IntegrityError(
                message, kind=ErrorKind.UNIQUE_VIOLATION, code=sqlstate, aws_code=aws_code
            )
        if sqlstate.startswith("23"):
            return IntegrityError(message, code=sqlstate, aws_code=aws_code)
        if sqlstate.startswith("22"):
            return DataError(message, code=sqlstate, aws_code=aws_code)
        if sqlstate.startswith("40"):
            return OperationalError(message, code=sqlstate, aws_code=aws_code)
        return ProgrammingError(message, code=sqlstate, aws_code=aws_code)
    return ProgrammingError(message, aws_code=aws_code)


def translate_error(exc: Exception) -> Exception:
    """A botocore exception as a DB-API error of this module (``exc`` itself when not AWS's)."""
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        error = response.get("Error") or {}
        code = str(error.get("Code") or "")
        message = str(error.get("Message") or "")
        if code in _NOT_NOW:
            return OperationalError(
                f"{code}: {message}",
                kind=ErrorKind.SERVER_UNAVAILABLE,
                aws_code=code,
                executed=False,
            )
        if code == "StatementTimeoutException":
            # The call timed out and, without continueAfterTimeout, the statement was stopped
            # and its autocommit rolled back; inside a transaction the outcome is unknown.
            return OperationalError(
                f"{code}: {message}", kind=ErrorKind.SERVER_UNAVAILABLE, aws_code=code
            )
        if code in _TRANSACTION_GONE:
            return OperationalError(
                f"{code}: {message}", kind=ErrorKind.CONNECTION_LOST, aws_code=code
            )
        if code in _AUTH:
            return OperationalError(f"{code}: {message}", kind=ErrorKind.AUTH_FAILED, aws_code=code)
        if code in ("BadRequestException", "DatabaseErrorException"):
            return _database_error(message, code)
        return OperationalError(f"{code}: {message}", aws_code=code)
    name = type(exc).__name__
    if name == "ParamValidationError":  # botocore refused the request before sending it
        return ProgrammingError(str(exc), executed=False)
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError"):
        # Nothing reached the service: as safe to retry as a refused connect.
        return OperationalError(
            f"Data API endpoint not reachable: {name}",
            kind=ErrorKind.SERVER_UNAVAILABLE,
            executed=False,
        )
    if name == "ReadTimeoutError":
        # Sent, no answer in time: the statement may still run or have committed, as when a
        # socket dies mid-query (a write is not retried, a read on a fresh connection is).
        return OperationalError(
            "Data API call timed out waiting for the answer", kind=ErrorKind.CONNECTION_LOST
        )
    return exc


# -- values ------------------------------------------------------------------------------------


def to_parameter(name: str, value: Any) -> dict[str, Any]:
    """One Data API ``SqlParameter`` for a Python value."""
    param: dict[str, Any] = {"name": name}
    if value is None:
        param["value"] = {"isNull": True}
    elif isinstance(value, bool):  # before int: bool is an int
        param["value"] = {"booleanValue": value}
    elif isinstance(value, int):
        param["value"] = {"longValue": value}
    elif isinstance(value, float):
        param["value"] = {"doubleValue": value}
    elif isinstance(value, decimal.Decimal):
        param["value"] = {"stringValue": str(value)}
        param["typeHint"] = "DECIMAL"
    elif isinstance(value, str):
        param["value"] = {"stringValue": value}
    elif isinstance(value, (bytes, bytearray, memoryview)):
        param["value"] = {"blobValue": bytes(value)}
    elif isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        param["value"] = {"stringValue": value.isoformat(sep=" ")}
        param["typeHint"] = "TIMESTAMP"
    elif isinstance(value, datetime.date):
        param["value"] = {"stringValue": value.isoformat()}
        param["typeHint"] = "DATE"
    elif isinstance(value, datetime.time):
        param["value"] = {"stringValue": value.isoformat()}
        param["typeHint"] = "TIME"
    elif isinstance(value, uuid.UUID):
        param["value"] = {"stringValue": str(value)}
        param["typeHint"] = "UUID"
    elif isinstance(value, (dict, list)):
        param["value"] = {"stringValue": json.dumps(value)}
        param["typeHint"] = "JSON"
    else:
        raise ProgrammingError(
            f"parameter {name}: cannot send a {type(value).__name__} through the Data API"
        )
    return param


_DATETIME_TYPES = frozenset(("DATETIME", "TIMESTAMP", "TIMESTAMPTZ"))
_DECIMAL_TYPES = frozenset(("DECIMAL", "NUMERIC", "NEWDECIMAL"))
_JSON_TYPES = frozenset(("JSON", "JSONB"))


def _blob(value: bytes | str) -> bytes:
    # botocore decodes a blob; the Data API's JSON (a raw client, the local endpoint) has base64.
    return value if isinstance(value, bytes) else base64.b64decode(value)


#: The ``Field`` variants whose key alone says how to decode the value (a ``stringValue`` needs
#: the column type or the parameter's type hint): key -> decoder.
SCALAR_FIELDS: dict[str, Callable[[Any], Any]] = {
    "longValue": int,
    "booleanValue": bool,
    "doubleValue": float,
    "blobValue": _blob,
}


def _parse_datetime(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("T", " ").rstrip("Z"))


def from_field(field: Mapping[str, Any], type_name: str, engine: str) -> Any:
    """A Python value for one Data API ``Field`` of a column whose type is ``type_name``."""
    if field.get("isNull"):
        return None
    if "stringValue" in field:
        text: str = field["stringValue"]
        kind = type_name.upper()
        if kind in _DATETIME_TYPES:
            return _parse_datetime(text)
        if kind == "DATE":
            return datetime.date.fromisoformat(text)
        if kind in ("TIME", "TIMETZ"):
            return datetime.time.fromisoformat(text)
        if kind in _DECIMAL_TYPES:
            return decimal.Decimal(text)
        if kind in _JSON_TYPES and engine == "postgres":
            return json.loads(text)  # psycopg2 decodes json / jsonb; Peewee expects that
        if kind == "UUID" and engine == "postgres":
            return uuid.UUID(text)
        return text
    for key, decode in SCALAR_FIELDS.items():
        if key in field:
            return decode(field[key])
    if "arrayValue" in field:
        array = field["arrayValue"]
        if "arrayValues" in array:
            return [from_field({"arrayValue": a}, "", engine) for a in array["arrayValues"]]
        return next(iter(array.values()), [])
    return None


# -- client ------------------------------------------------------------------------------------

#: (region, connect timeout, read timeout, endpoint) -> the process's stand-in for those.
_clients: dict[tuple[Any, ...], DeadlineBoundClient] = {}
_clients_lock = threading.Lock()

#: No call starts with less than this (connect + read, seconds) before the deadline.
MIN_BUDGET = 1.0


def _no_deadline() -> None:
    return None  # a stand-in's own time left: each call gives its connection's


def region_of(arn: str) -> str | None:
    """The region part of an ARN (``arn:aws:rds:REGION:account:cluster:name``), if any."""
    parts = arn.split(":")
    return parts[3] if len(parts) > 4 and parts[3] else None


def make_client(
    region: str | None,
    connect_timeout: float = 5.0,
    read_timeout: float = 60.0,
    endpoint_url: str | None = None,
) -> DeadlineBoundClient:
    """The process's ``rds-data`` stand-in for a region, timeouts and endpoint (see the module).

    Used as a boto3 client it calls with these timeouts, botocore's retries off (the caller
    retries, bounded by the invocation's deadline); ``client_now(time_left)`` gives the client
    for a call with a deadline. Its boto3 clients are built on first use, each once per process
    (one per budget step in use). ``endpoint_url`` (``AWS_ENDPOINT_URL_RDS_DATA``) points it at
    a local endpoint.
    """
    key = (region, connect_timeout, read_timeout, endpoint_url)
    client = _clients.get(key)
    if client is None:
        with _clients_lock:
            client = _clients.get(key)
            if client is None:
                client = _clients[key] = DeadlineBoundClient(
                    "rds-data",
                    _no_deadline,
                    connect_timeout=connect_timeout,
                    read_timeout=read_timeout,
                    max_attempts=1,
                    min_budget=MIN_BUDGET,
                    region_name=region,
                    endpoint_url=endpoint_url,
                )
    return client


# -- connection and cursor ---------------------------------------------------------------------

_TXN_WORDS = re.compile(
    r"^\s*(BEGIN|START\s+TRANSACTION|COMMIT|ROLLBACK)(\s+(WORK|TRANSACTION))?\s*;?\s*$",
    re.IGNORECASE,
)
_PG_BEGIN = re.compile(r"^\s*BEGIN\s+TRANSACTION\s+ISOLATION\s+LEVEL\s+", re.IGNORECASE)


class Connection:
    """One Data API "connection": ARNs, database, client and the open ``transactionId``."""

    def __init__(
        self,
        resource_arn: str,
        secret_arn: str,
        database: str | None = None,
        *,
        engine: str = "mysql",
        client: Any = None,
        schema: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        endpoint_url: str | None = None,
    ) -> None:
        self.resource_arn = resource_arn
        self._region = region_of(resource_arn)
        self._secret_arn = secret_arn
        self.database = database
        self.schema = schema
        self.engine = engine
        self._client = client
        self._injected = client is not None
        self._timeouts = (connect_timeout, read_timeout)
        self._endpoint_url = endpoint_url
        #: ``time.monotonic()`` by which every call must have its answer (None: no deadline).
        self.deadline: float | None = None
        self.transaction_id: str | None = None
        #: A pinned session (see :meth:`pin`): transaction words go to the server as SQL.
        self.pinned = False
        self.closed = False
        #: API calls made through this connection (observability, tests).
        self.calls = 0

    def __repr__(self) -> str:
        # The secret's ARN is not a credential, but it names one: not shown.
        return (
            f"<data_api.Connection engine={self.engine} database={self.database!r} "
            f"in_transaction={self.transaction_id is not None}>"
        )

    @property
    def client(self) -> Any:
        """The ``rds-data`` client given, or else the shared stand-in (see :func:`make_client`)."""
        if self._client is None:
            self._client = make_client(
                self._region, *self._timeouts, endpoint_url=self._endpoint_url
            )
        return self._client

    @property
    def autocommit(self) -> bool:
        """True outside a Data API transaction (each statement commits on its own)."""
        return self.transaction_id is None

    def _base(self, operation: str) -> dict[str, Any]:
        args: dict[str, Any] = {"resourceArn": self.resource_arn, "secretArn": self._secret_arn}
        if operation.endswith("_transaction") and operation != "begin_transaction":
            return args  # commit / rollback take only the ARNs and the transaction id
        if self.database:
            args["database"] = self.database
        if self.schema:
            args["schema"] = self.schema
        return args

    def _time_left(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def _client_for_deadline(self) -> Any:
        """The boto3 client whose connect + read timeouts end by :attr:`deadline`.

        The configured client without a deadline or when its timeouts end in time anyway; else
        the one of the largest budget step that fits (``DeadlineBoundClient.client_now``).
        """
        if self._injected:
            return self.client  # a client given by the caller keeps its own timeouts
        try:
            return self.client.client_now(self._time_left)
        except DeadlineExceeded:
            raise OperationalError(
                "no time left before the invocation's deadline for a Data API call",
                kind=ErrorKind.SERVER_UNAVAILABLE,
                executed=False,
            ) from None

    def call(self, operation: str, **args: Any) -> Any:
        """One Data API call, AWS errors translated to this module's.

        With a :attr:`deadline`, the call's HTTP timeouts end by it (a client with shorter
        timeouts is used), and no call starts with less than a second left.
        """
        if self.closed:
            raise InterfaceError("connection is closed")
        client = self._client_for_deadline()
        self.calls += 1
        try:
            return getattr(client, operation)(**self._base(operation), **args)
        except Exception as exc:
            translated = translate_error(exc)
            if translated is exc:
                raise
            raise translated from exc

    def begin(self) -> None:
        """``BeginTransaction``: the following statements run in it."""
        if self.transaction_id is not None:
            raise ProgrammingError("a transaction is already open on this connection")
        self.transaction_id = self.call("begin_transaction")["transactionId"]

    def commit(self) -> None:
        """``CommitTransaction`` (nothing to do outside a transaction)."""
        try:
            self._end_transaction("commit_transaction")
        except OperationalError as exc:
            if exc.executed is not False:
                self.transaction_id = None  # gone (or unknown): never reuse its id
            raise

    def rollback(self) -> None:
        """``RollbackTransaction`` (nothing to do outside a transaction)."""
        try:
            self._end_transaction("rollback_transaction")
        except OperationalError as exc:
            if exc.error_kind is not ErrorKind.CONNECTION_LOST:
                raise
            self.transaction_id = None  # expired: the Data API rolled it back already

    def _end_transaction(self, operation: str) -> None:
        # Commit and roll back differ only in what a failure leaves: each handles its own.
        txn = self.transaction_id
        if txn is not None:
            self.call(operation, transactionId=txn)
            self.transaction_id = None

    def pin(self) -> None:
        """Hold one server session until :meth:`unpin` (through a Data API transaction).

        Outside a transaction each statement may run on another pooled server connection, so
        session state (``GET_LOCK``, ``pg_advisory_lock``, ``CONNECTION_ID()``) means nothing.
        A Data API transaction pins one connection: while pinned, ``BEGIN`` / ``COMMIT`` /
        ``ROLLBACK`` are sent as SQL inside it (the server commits there, the session stays).
        """
        self.begin()
        self.pinned = True

    def unpin(self, commit: bool = True) -> None:
        """Release the pinned session, committing (or rolling back) what is still open."""
        self.pinned = False
        if commit:
            self.commit()
        else:
            self.rollback()

    def cursor(self) -> Cursor:
        """A new cursor on this connection."""
        return Cursor(self)

    def close(self) -> None:
        """Roll back an open transaction (best effort) and refuse further use."""
        if self.closed:
            return
        try:
            self.rollback()
        except Error:
            pass
        finally:
            self.closed = True


class Cursor:
    """DB-API cursor: ``execute`` / ``executemany`` / ``fetch*`` over the Data API."""

    arraysize = 1

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.description: list[tuple[Any, ...]] | None = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self._rows: list[tuple[Any, ...]] = []
        self._pos = 0

    def _reset(self) -> None:
        self.description = None
        self.rowcount = -1
        self.lastrowid = None
        self._rows = []
        self._pos = 0

    def _statement(self, sql: str, params: Sequence[Any] | None) -> tuple[str, list[str]]:
        try:
            return format_to_named(sql, len(params or ()))
        except ValueError as exc:
            raise ProgrammingError(str(exc)) from None

    def _transaction_control(self, sql: str) -> bool:
        if self.connection.pinned:
            return False
        match = _TXN_WORDS.match(sql)
        if match is None:
            if _PG_BEGIN.match(sql):
                # BeginTransaction has no isolation level: the cluster's default applies.
                self.connection.begin()
                return True
            return False
        word = match.group(1).upper()
        if word == "COMMIT":
            self.connection.commit()
        elif word == "ROLLBACK":
            self.connection.rollback()
        else:
            self.connection.begin()
        return True

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> Cursor:
        """Run one statement (``ExecuteStatement``; transaction words become transaction calls)."""
        self._reset()
        if not params and self._transaction_control(sql):
            return self
        text, names = self._statement(sql, params)
        args: dict[str, Any] = {"sql": text, "includeResultMetadata": True}
        if names:
            args["parameters"] = [
                to_parameter(n, v) for n, v in zip(names, params or (), strict=True)
            ]
        conn = self.connection
        if conn.transaction_id is not None:
            args["transactionId"] = conn.transaction_id
        response = conn.call("execute_statement", **args)
        self._load(response)
        return self

    def executemany(self, sql: str, seq_of_params: Sequence[Sequence[Any]]) -> Cursor:
        """Run one statement for each parameter set in one ``BatchExecuteStatement``."""
        self._reset()
        param_sets = list(seq_of_params)
        if not param_sets:
            self.rowcount = 0
            return self
        text, names = self._statement(sql, param_sets[0])
        sets = []
        for values in param_sets:
            if len(values) != len(names):
                raise ProgrammingError(
                    f"every parameter set needs {len(names)} values, one has {len(values)}"
                )
            sets.append([to_parameter(n, v) for n, v in zip(names, values, strict=True)])
        args: dict[str, Any] = {"sql": text, "parameterSets": sets}
        conn = self.connection
        if conn.transaction_id is not None:
            args["transactionId"] = conn.transaction_id
        response = conn.call("batch_execute_statement", **args)
        results = response.get("updateResults") or []
        self.rowcount = len(param_sets)
        for result in results:
            generated = result.get("generatedFields") or []
            if generated and "longValue" in generated[0]:
                self.lastrowid = int(generated[0]["longValue"])
                break
        return self

    def _load(self, response: Mapping[str, Any]) -> None:
        engine = self.connection.engine
        columns = response.get("columnMetadata") or []
        if columns:  # a result set (SELECT, or DML ... RETURNING on PostgreSQL)
            types = [str(c.get("typeName") or "") for c in columns]
            self.description = [
                (c.get("label") or c.get("name"), t, None, None, None, None, None)
                for c, t in zip(columns, types, strict=True)
            ]
            self._rows = [
                tuple(from_field(f, t, engine) for f, t in zip(record, types, strict=False))
                for record in response.get("records") or []
            ]
            self.rowcount = len(self._rows)
        else:
            self.rowcount = int(response.get("numberOfRecordsUpdated", -1))
        generated = response.get("generatedFields") or []
        if generated and "longValue" in generated[0]:
            self.lastrowid = int(generated[0]["longValue"])

    def fetchone(self) -> tuple[Any, ...] | None:
        """The next row, or ``None``."""
        if self._pos >= len(self._rows):
            return None
        row = self._rows[self._pos]
        self._pos += 1
        return row

    def fetchmany(self, size: int | None = None) -> list[tuple[Any, ...]]:
        """Up to ``size`` (default ``arraysize``) more rows."""
        count = self.arraysize if size is None else size
        rows = self._rows[self._pos : self._pos + count]
        self._pos += len(rows)
        return rows

    def fetchall(self) -> list[tuple[Any, ...]]:
        """Every remaining row."""
        rows = self._rows[self._pos :]
        self._pos = len(self._rows)
        return rows

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        while (row := self.fetchone()) is not None:
            yield row

    def setinputsizes(self, sizes: Any) -> None:
        """DB-API no-op."""

    def setoutputsize(self, size: Any, column: Any = None) -> None:
        """DB-API no-op."""

    def close(self) -> None:
        """Drop the fetched rows."""
        self._rows = []

    def __enter__(self) -> Cursor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def connect(
    resource_arn: str,
    secret_arn: str,
    database: str | None = None,
    **kwargs: Any,
) -> Connection:
    """A :class:`Connection` (no network call: the Data API has no session to open)."""
    return Connection(resource_arn, secret_arn, database, **kwargs)
