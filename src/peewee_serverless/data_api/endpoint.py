"""A local stand-in for Aurora's Data API, executing on a real MySQL/MariaDB or PostgreSQL server.

``peewee-serverless data-api serve`` speaks the Data API's REST-JSON protocol as botocore's
``rds-data`` model defines it (``POST /Execute``, ``/BatchExecute``, ``/BeginTransaction``,
``/CommitTransaction``, ``/RollbackTransaction``; errors as ``x-amzn-ErrorType`` plus a JSON
``message``), so a function (or boto3, or any Data API client) pointed at it with
``AWS_ENDPOINT_URL_RDS_DATA=http://127.0.0.1:PORT`` runs its Data API code against a local
database::

    peewee-serverless data-api serve \\
        --cluster arn:aws:rds:us-east-1:123456789012:cluster:dev=mysql://root@127.0.0.1:3306/app

Each ``--cluster ARN=URL`` maps a cluster ARN to a server (``mysql://`` or ``postgresql://``,
credentials in the URL: this mapping stands in for the secret); ``--secret-arn`` limits the
accepted secret ARNs (default: any). Outside a transaction every statement runs in autocommit
on a pooled server connection (so, as on AWS, two statements may see two sessions); a
``transactionId`` pins one server connection from ``BeginTransaction`` to its commit or
rollback, and expires after ``--transaction-timeout`` idle seconds (AWS: 3 minutes).

SQL errors answer ``BadRequestException`` with the server's message in the Data API's wording
(MySQL: ``Database error code: 1062. Message: Duplicate entry ...``; PostgreSQL:
``ERROR: duplicate key value ...; SQLState: 23505``), an unreachable server answers
``BadRequestException`` "Communications link failure", an unknown ``transactionId``
``TransactionNotFoundException``. On PostgreSQL a ``stringValue`` parameter is cast to
``varchar`` (``json`` / ``uuid`` with those type hints), as Aurora's JDBC ``setString`` types it,
so a hint the driver forgot fails here as on AWS. Tests inject other AWS answers (throttling,
a resuming cluster) with :meth:`DataApiEndpoint.inject`.

It is a development and test tool: no authentication (requests are not signature-checked),
no TLS, no 1 MiB result limit. It is not AWS; see the README for what was tested where.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import decimal
import json
import logging
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlparse

from .driver import SCALAR_FIELDS
from .placeholders import named_to_pyformat

__all__ = ["ClusterTarget", "DataApiEndpoint", "add_arguments", "parse_cluster"]

logger = logging.getLogger("peewee_serverless.data_api.endpoint")

#: URI -> operation name, from botocore's rds-data service-2.json (2018-08-01).
OPERATIONS = {
    "/Execute": "ExecuteStatement",
    "/BatchExecute": "BatchExecuteStatement",
    "/BeginTransaction": "BeginTransaction",
    "/CommitTransaction": "CommitTransaction",
    "/RollbackTransaction": "RollbackTransaction",
}
#: HTTP status of each error shape (service-2.json ``error.httpStatusCode``).
STATUS = {
    "BadRequestException": 400,
    "DatabaseErrorException": 400,
    "DatabaseResumingException": 400,
    "StatementTimeoutException": 400,
    "InvalidSecretException": 400,
    "ThrottlingException": 400,
    "ForbiddenException": 403,
    "TransactionNotFoundException": 404,
    "NotFoundException": 404,
    "InternalServerErrorException": 500,
    "ServiceUnavailableError": 503,
    "DatabaseUnavailableException": 504,
}
LINK_FAILURE = (
    "Communications link failure\n\nThe last packet sent successfully to the server was 0 "
    "milliseconds ago. The driver has not received any packets from the server."
)

# Column type names for columnMetadata.typeName (as the Data API reports them).
_MYSQL_TYPES = {
    0: "DECIMAL", 1: "TINYINT", 2: "SMALLINT", 3: "INT", 4: "FLOAT", 5: "DOUBLE", 7: "TIMESTAMP",
    8: "BIGINT", 9: "MEDIUMINT", 10: "DATE", 11: "TIME", 12: "DATETIME", 13: "YEAR",
    15: "VARCHAR", 16: "BIT", 245: "JSON", 246: "DECIMAL", 247: "ENUM", 248: "SET",
    249: "TINYBLOB", 250: "MEDIUMBLOB", 251: "LONGBLOB", 252: "TEXT", 253: "VARCHAR", 254: "CHAR",
}  # fmt: skip
_PG_TYPES = {
    16: "bool", 17: "bytea", 20: "int8", 21: "int2", 23: "int4", 25: "text", 26: "oid",
    114: "json", 700: "float4", 701: "float8", 1042: "bpchar", 1043: "varchar", 1082: "date",
    1083: "time", 1114: "timestamp", 1184: "timestamptz", 1266: "timetz", 1700: "numeric",
    2950: "uuid", 3802: "jsonb", 19: "name",
}  # fmt: skip


class ApiError(Exception):
    """An answer in one of the Data API's error shapes."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ClusterTarget:
    """The real server behind one cluster ARN (credentials kept out of repr)."""

    engine: str  # "mysql" or "postgres"
    host: str
    port: int
    user: str
    password: str = field(default="", repr=False)
    database: str = ""

    def connect(self, database: str) -> Any:
        """A new autocommit server connection; :class:`ApiError` when the server is gone."""
        name = database or self.database
        try:
            if self.engine == "mysql":
                import pymysql

                return pymysql.connect(
                    host=self.host, port=self.port, user=self.user, password=self.password,
                    database=name or None, autocommit=True, charset="utf8mb4",
                    connect_timeout=5,
                )  # fmt: skip
            import psycopg2

            conn = psycopg2.connect(
                host=self.host, port=self.port, user=self.user, password=self.password,
                dbname=name or "postgres", connect_timeout=5,
            )  # fmt: skip
            conn.autocommit = True
            return conn
        except Exception as exc:
            errno = getattr(exc, "args", (None,))[0]
            if self.engine == "mysql" and errno == 1049:  # ER_BAD_DB_ERROR
                raise ApiError("BadRequestException", _mysql_message(exc)) from None
            if "does not exist" in str(exc):
                raise ApiError("BadRequestException", f"FATAL: {str(exc).strip()}") from None
            raise ApiError("BadRequestException", LINK_FAILURE) from None


def parse_cluster(spec: str) -> tuple[str, ClusterTarget]:
    """``ARN=mysql://user:pass@host:port/db`` -> (ARN, target); ValueError when malformed."""
    arn, sep, url = spec.partition("=")
    if not sep or not arn.startswith("arn:"):
        raise ValueError(f"expected ARN=URL, got {spec.split('=')[0]!r}...")
    parsed = urlparse(url)
    engines = {"mysql": "mysql", "mariadb": "mysql", "postgres": "postgres"}
    engines["postgresql"] = "postgres"
    engine = engines.get(parsed.scheme)
    if engine is None or not parsed.hostname:
        raise ValueError(f"{arn}: the URL must be mysql://... or postgresql://user@host:port/db")
    return arn, ClusterTarget(
        engine=engine,
        host=parsed.hostname,
        port=parsed.port or (3306 if engine == "mysql" else 5432),
        user=unquote(parsed.username or ("root" if engine == "mysql" else "postgres")),
        password=unquote(parsed.password or ""),
        database=parsed.path.strip("/"),
    )


# -- values ------------------------------------------------------------------------------------


def _param_value(param: Mapping[str, Any]) -> Any:
    value = param.get("value") or {}
    hint = param.get("typeHint")
    if value.get("isNull"):
        return None
    for key, decode in SCALAR_FIELDS.items():
        if key in value:
            return decode(value[key])
    if "stringValue" in value:
        text = str(value["stringValue"])
        try:
            if hint == "DATE":
                return datetime.date.fromisoformat(text)
            if hint == "TIME":
                return datetime.time.fromisoformat(text)
            if hint == "TIMESTAMP":
                return datetime.datetime.fromisoformat(text)
            if hint == "DECIMAL":
                return decimal.Decimal(text)
        except (ValueError, decimal.InvalidOperation):
            raise ApiError(
                "BadRequestException",
                f"Parameter {param.get('name')}: {text!r} is not a valid {hint}",
            ) from None
        return text
    if "arrayValue" in value:
        raise ApiError("BadRequestException", "Array parameters are not supported.")
    raise ApiError("BadRequestException", f"Parameter {param.get('name')} has no value")


def _pg_cast(param: Mapping[str, Any]) -> str | None:
    """The type Aurora PostgreSQL gives a string parameter (the Data API's JDBC ``setString``).

    A ``stringValue`` is a ``varchar`` unless its ``typeHint`` says otherwise, so, as on AWS,
    a string sent for a ``date`` or ``uuid`` column without a hint is an error here too.
    """
    if "stringValue" not in (param.get("value") or {}):
        return None
    return {"JSON": "json", "UUID": "uuid", None: "varchar"}.get(param.get("typeHint"))


def _field(value: Any) -> dict[str, Any]:
    if value is None:
        return {"isNull": True}
    if isinstance(value, bool):
        return {"booleanValue": value}
    if isinstance(value, int):
        return {"longValue": value}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"blobValue": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return {"stringValue": value.isoformat(sep=" ")}
    if isinstance(value, (datetime.date, datetime.time)):
        return {"stringValue": value.isoformat()}
    if isinstance(value, datetime.timedelta):  # PyMySQL's TIME
        seconds = int(value.total_seconds())
        return {"stringValue": f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"}
    if isinstance(value, (dict, list)):
        return {"stringValue": json.dumps(value)}
    return {"stringValue": str(value)}  # str, Decimal, UUID


def _column_metadata(engine: str, description: Any) -> list[dict[str, Any]]:
    columns = []
    for col in description:
        name, type_code = col[0], col[1]
        if engine == "mysql":
            type_name = _MYSQL_TYPES.get(type_code, "VARCHAR")
        else:
            type_name = _PG_TYPES.get(type_code, "text")
        columns.append(
            {"name": name, "label": name, "typeName": type_name, "nullable": 1, "type": 0}
        )
    return columns


def _mysql_message(exc: BaseException) -> str:
    args: tuple[Any, ...] = tuple(getattr(exc, "args", ()))
    if len(args) >= 2 and isinstance(args[0], int):
        return f"Database error code: {args[0]}. Message: {args[1]}"
    return str(exc)


def _pg_message(exc: Any) -> str:
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) or str(exc).strip()
    detail = getattr(diag, "message_detail", None)
    text = f"ERROR: {primary}"
    if detail:
        text += f"\n  Detail: {detail}"
    return f"{text}; SQLState: {getattr(exc, 'pgcode', None) or 'XX000'}"


# -- the service -------------------------------------------------------------------------------


@dataclass
class _Transaction:
    conn: Any
    target: ClusterTarget
    database: str
    used: float
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class _Fault:
    operation: str | None
    code: str
    message: str
    remaining: int | None


class DataApiService:
    """The five operations, executed on the real servers (thread-safe)."""

    def __init__(
        self,
        clusters: Mapping[str, ClusterTarget],
        secret_arns: frozenset[str] | None = None,
        transaction_timeout: float = 180.0,
    ) -> None:
        self.clusters = dict(clusters)
        self.secret_arns = secret_arns
        self.transaction_timeout = transaction_timeout
        self._lock = threading.Lock()
        self._pool: dict[tuple[str, str], list[Any]] = {}
        self._transactions: dict[str, _Transaction] = {}
        self._faults: list[_Fault] = []
        #: Operation name -> calls answered (tests read it).
        self.calls: dict[str, int] = {}

    # -- faults (tests) ------------------------------------------------------------------------
    def inject(
        self, code: str, message: str = "", *, operation: str | None = None, times: int | None = 1
    ) -> None:
        """Answer the next ``times`` calls (of ``operation``, or any) with the error ``code``."""
        with self._lock:
            self._faults.append(_Fault(operation, code, message or code, times))

    def clear_faults(self) -> None:
        """Stop injecting errors."""
        with self._lock:
            self._faults.clear()

    def _fault(self, operation: str) -> ApiError | None:
        with self._lock:
            for fault in self._faults:
                if fault.operation not in (None, operation):
                    continue
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                return ApiError(fault.code, fault.message)
        return None

    # -- connections ---------------------------------------------------------------------------
    def _target(self, body: Mapping[str, Any]) -> ClusterTarget:
        arn = body.get("resourceArn")
        secret = body.get("secretArn")
        if not isinstance(arn, str) or not isinstance(secret, str):
            raise ApiError("BadRequestException", "resourceArn and secretArn are required")
        target = self.clusters.get(arn)
        if target is None:
            raise ApiError("BadRequestException", f"HttpEndpoint is not enabled for resource {arn}")
        if self.secret_arns is not None and secret not in self.secret_arns:
            raise ApiError(
                "BadRequestException", "Error fetching secret: the secret ARN is not valid"
            )
        return target

    def _take(self, arn: str, target: ClusterTarget, database: str) -> Any:
        with self._lock:
            idle = self._pool.get((arn, database))
            if idle:
                return idle.pop()
        return target.connect(database)

    def _give_back(self, arn: str, database: str, conn: Any) -> None:
        with self._lock:
            self._pool.setdefault((arn, database), []).append(conn)

    def _expire_transactions(self) -> None:
        now = time.monotonic()
        with self._lock:
            stale = [
                t for t, x in self._transactions.items() if now - x.used > self.transaction_timeout
            ]
            gone = [self._transactions.pop(t) for t in stale]
        for txn in gone:
            _close_quietly(txn.conn)

    def _transaction(self, body: Mapping[str, Any]) -> _Transaction:
        txn_id = body.get("transactionId")
        with self._lock:
            txn = self._transactions.get(str(txn_id))
        if txn is None:
            raise ApiError("TransactionNotFoundException", f"Transaction {txn_id} is not found")
        return txn

    # -- operations ----------------------------------------------------------------------------
    def handle(self, operation: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Answer one call (raises :class:`ApiError` for an error answer)."""
        with self._lock:
            self.calls[operation] = self.calls.get(operation, 0) + 1
        fault = self._fault(operation)
        if fault is not None:
            raise fault
        self._expire_transactions()
        method = getattr(self, "_op_" + operation)
        return method(body)

    def _op_BeginTransaction(self, body: Mapping[str, Any]) -> dict[str, Any]:  # noqa: N802
        target = self._target(body)
        database = str(body.get("database") or "")
        conn = self._take(str(body["resourceArn"]), target, database)
        try:
            if target.engine == "mysql":
                conn.begin()
            else:
                conn.autocommit = False
        except Exception:
            _close_quietly(conn)
            raise ApiError("BadRequestException", LINK_FAILURE) from None
        txn_id = secrets.token_urlsafe(48)
        with self._lock:
            self._transactions[txn_id] = _Transaction(conn, target, database, time.monotonic())
        return {"transactionId": txn_id}

    def _end(self, body: Mapping[str, Any], commit: bool) -> dict[str, Any]:
        target = self._target(body)
        txn = self._transaction(body)
        with txn.lock:
            with self._lock:
                if self._transactions.pop(str(body["transactionId"]), None) is None:
                    raise ApiError("TransactionNotFoundException", "Transaction is not found")
            try:
                if commit:
                    txn.conn.commit()
                else:
                    txn.conn.rollback()
                if target.engine == "postgres":
                    txn.conn.autocommit = True
            except Exception as exc:
                _close_quietly(txn.conn)
                raise self._sql_error(target, exc) from None
        self._give_back(str(body["resourceArn"]), txn.database, txn.conn)
        return {"transactionStatus": "Transaction Committed" if commit else "Rollback Complete"}

    def _op_CommitTransaction(self, body: Mapping[str, Any]) -> dict[str, Any]:  # noqa: N802
        return self._end(body, commit=True)

    def _op_RollbackTransaction(self, body: Mapping[str, Any]) -> dict[str, Any]:  # noqa: N802
        return self._end(body, commit=False)

    def _sql_error(self, target: ClusterTarget, exc: BaseException) -> ApiError:
        if target.engine == "mysql":
            errno = getattr(exc, "args", (None,))[0]
            if errno in (0, 2006, 2013, 2003, 2055):
                return ApiError("BadRequestException", LINK_FAILURE)
            return ApiError("BadRequestException", _mysql_message(exc))
        if getattr(exc, "pgcode", None) is None and "closed" in str(exc).lower():
            return ApiError("BadRequestException", LINK_FAILURE)
        return ApiError("BadRequestException", _pg_message(exc))

    def _run(self, body: Mapping[str, Any], work: Any, *, atomic: bool = False) -> dict[str, Any]:
        """Run ``work(conn, engine)`` in the caller's transaction or on a pooled connection."""
        target = self._target(body)
        if not isinstance(body.get("sql"), str) or not body["sql"].strip():
            raise ApiError("BadRequestException", "sql is required")
        if body.get("transactionId"):
            txn = self._transaction(body)
            with txn.lock:
                txn.used = time.monotonic()
                try:
                    return work(txn.conn, target.engine)
                except ApiError:
                    raise
                except Exception as exc:
                    raise self._sql_error(target, exc) from None
        arn, database = str(body["resourceArn"]), str(body.get("database") or "")
        conn = self._take(arn, target, database)
        try:
            if atomic:
                if target.engine == "mysql":
                    conn.begin()
                else:
                    conn.autocommit = False
            result = work(conn, target.engine)
            if atomic:
                conn.commit()
        except Exception as exc:
            error = exc if isinstance(exc, ApiError) else self._sql_error(target, exc)
            if error.message == LINK_FAILURE:
                _close_quietly(conn)
                raise error from None
            try:
                if atomic:
                    conn.rollback()
                if target.engine == "postgres":
                    conn.autocommit = True
            except Exception:  # noqa: BLE001 - the connection is broken: drop it
                _close_quietly(conn)
                raise error from None
            self._give_back(arn, database, conn)
            raise error from None
        if target.engine == "postgres":
            conn.autocommit = True
        self._give_back(arn, database, conn)
        return result

    def _statement(self, body: Mapping[str, Any], params: Any) -> tuple[str, dict[str, Any] | None]:
        engine = self._target(body).engine
        if not isinstance(params, list):
            raise ApiError("BadRequestException", "parameters must be a list")
        values = {}
        casts = {}
        for p in params:
            if not isinstance(p, Mapping) or not isinstance(p.get("name"), str):
                raise ApiError("BadRequestException", "every parameter needs a name")
            values[p["name"]] = _param_value(p)
            cast = _pg_cast(p) if engine == "postgres" else None
            if cast:
                casts[p["name"]] = cast
        sql = body.get("sql")
        if not isinstance(sql, str) or not sql.strip():
            raise ApiError("BadRequestException", "sql is required")
        if not values:
            return sql, None
        return named_to_pyformat(sql, values, casts), values

    def _op_ExecuteStatement(self, body: Mapping[str, Any]) -> dict[str, Any]:  # noqa: N802
        sql, values = self._statement(body, body.get("parameters") or [])

        def work(conn: Any, engine: str) -> dict[str, Any]:
            with conn.cursor() as cur:
                cur.execute(sql, values)
                answer: dict[str, Any] = {"numberOfRecordsUpdated": 0}
                if cur.description:
                    rows = cur.fetchall()
                    names = [c[0] for c in cur.description]
                    if body.get("formatRecordsAs") == "JSON":
                        records = [dict(zip(names, map(_plain, r), strict=True)) for r in rows]
                        answer["formattedRecords"] = json.dumps(records)
                    else:
                        answer["records"] = [[_field(v) for v in r] for r in rows]
                    if body.get("includeResultMetadata"):
                        answer["columnMetadata"] = _column_metadata(engine, cur.description)
                else:
                    answer["numberOfRecordsUpdated"] = max(0, cur.rowcount)
                if engine == "mysql" and cur.lastrowid and sql.lstrip()[:6].upper() == "INSERT":
                    answer["generatedFields"] = [{"longValue": int(cur.lastrowid)}]
                else:
                    answer["generatedFields"] = []
                return answer

        return self._run(body, work)

    def _op_BatchExecuteStatement(self, body: Mapping[str, Any]) -> dict[str, Any]:  # noqa: N802
        sets = body.get("parameterSets") or [[]]
        if not isinstance(sets, list):
            raise ApiError("BadRequestException", "parameterSets must be a list")
        statements = [self._statement(body, s) for s in sets]

        def work(conn: Any, engine: str) -> dict[str, Any]:
            results = []
            with conn.cursor() as cur:
                for sql, values in statements:
                    cur.execute(sql, values)
                    generated = []
                    if engine == "mysql" and cur.lastrowid:
                        generated = [{"longValue": int(cur.lastrowid)}]
                    results.append({"generatedFields": generated})
            return {"updateResults": results}

        # Outside a transaction the batch is all-or-nothing: nothing half-written.
        return self._run(body, work, atomic=not body.get("transactionId"))

    def close(self) -> None:
        """Close every server connection."""
        with self._lock:
            conns = [c for idle in self._pool.values() for c in idle]
            conns += [t.conn for t in self._transactions.values()]
            self._pool.clear()
            self._transactions.clear()
        for conn in conns:
            _close_quietly(conn)


def _plain(value: Any) -> Any:
    field_ = _field(value)
    if field_.get("isNull"):
        return None
    return next(iter(field_.values()))


def _close_quietly(conn: Any) -> None:
    with contextlib.suppress(Exception):
        conn.close()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Headers and body are two writes: without TCP_NODELAY, Nagle's algorithm and the
        # client's delayed ACK would add ~40 ms to every call.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        logger.debug("%s %s", self.address_string(), format % args)

    def _answer(self, status: int, payload: Mapping[str, Any], error: str | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        if error:
            self.send_header("x-amzn-ErrorType", error)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802
        operation = OPERATIONS.get(self.path.split("?")[0])
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if operation is None:
            self._answer(404, {"message": f"Unknown operation {self.path}"}, "NotFoundException")
            return
        try:
            body = json.loads(raw or b"{}")
            if not isinstance(body, dict):
                raise ValueError
        except ValueError:
            self._answer(
                400, {"message": "Request body is not a JSON object"}, "BadRequestException"
            )
            return
        try:
            answer = self.server.service.handle(operation, body)
        except ApiError as err:
            status = STATUS.get(err.code, 400)
            self._answer(status, {"message": err.message, "__type": err.code}, err.code)
            return
        except Exception:  # noqa: BLE001 - a bug here must still answer in the API's shape
            logger.exception("Data API endpoint failed on %s", operation)
            self._answer(500, {"message": "Internal error"}, "InternalServerErrorException")
            return
        self._answer(200, answer)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # A burst of cold starts connects at once: the default backlog of 5 would drop SYNs.
    request_queue_size = 128
    service: DataApiService


class DataApiEndpoint:
    """The local endpoint in a thread of this process (tests) or in the foreground (CLI)."""

    def __init__(
        self,
        clusters: Mapping[str, ClusterTarget],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        secret_arns: frozenset[str] | None = None,
        transaction_timeout: float = 180.0,
    ) -> None:
        self.service = DataApiService(clusters, secret_arns, transaction_timeout)
        self._server = _Server((host, port), _Handler)
        self._server.service = self.service
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` to give boto3 as ``endpoint_url``."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def inject(self, code: str, message: str = "", **kwargs: Any) -> None:
        """See :meth:`DataApiService.inject`."""
        self.service.inject(code, message, **kwargs)

    def start(self) -> DataApiEndpoint:
        """Serve in a background thread."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="data-api-endpoint", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted."""
        self._server.serve_forever()

    def stop(self) -> None:
        """Stop serving and close every server connection."""
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.service.close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """A local stand-in for Aurora's Data API (development and tests)."""
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    serve = actions.add_parser("serve", help="serve the Data API protocol on a real server")
    serve.add_argument(
        "--cluster",
        action="append",
        required=True,
        metavar="ARN=URL",
        help="cluster ARN and the server behind it: mysql://user:pass@host:port/db or "
        "postgresql://...; repeatable",
    )
    serve.add_argument(
        "--secret-arn", action="append", help="accepted secret ARN (repeatable; default: any)"
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8081, help="0: any free port")
    serve.add_argument("--transaction-timeout", type=float, default=180.0, metavar="SECONDS")
    serve.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from ..cli import CommandError

    clusters = {}
    for spec in args.cluster:
        try:
            arn, target = parse_cluster(spec)
        except ValueError as exc:
            raise CommandError(f"--cluster: {exc}") from None
        clusters[arn] = target
    if not 0 <= args.port <= 65535:
        raise CommandError(f"--port: must be 0 to 65535, got {args.port}")
    if args.transaction_timeout <= 0:
        raise CommandError("--transaction-timeout: must be > 0")
    secrets_ = frozenset(args.secret_arn) if args.secret_arn else None
    try:
        endpoint = DataApiEndpoint(
            clusters,
            host=args.host,
            port=args.port,
            secret_arns=secrets_,
            transaction_timeout=args.transaction_timeout,
        )
    except OSError as exc:
        raise CommandError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    print(f"Data API endpoint for {len(clusters)} cluster(s) on {endpoint.url}", flush=True)
    try:
        endpoint.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        endpoint.service.close()
    return 0
