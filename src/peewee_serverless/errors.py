"""The one exception tree of peewee-serverless, and the classification of driver errors.

::

    PeeweeServerlessError
     ├── ConfigurationError            a setting is missing or malformed (names the setting)
     ├── DatabaseUnavailable           no usable connection in time -> HTTP 503 + Retry-After
     │    ├── ConnectionLimitReached   the server refused us for lack of connection slots
     │    ├── ConnectionLost           the connection died where a silent retry could lose or
     │    │                            duplicate work (inside a transaction, a write in flight)
     │    ├── ServerReadOnly           the server takes no writes (read-only, disk full)
     │    └── DeadlineExceeded         the invocation's time ran out while waiting
     ├── RequestInProgress             an idempotent call with the same key still runs
     │                                 elsewhere -> HTTP 409 + Retry-After (raised as
     │                                 ``idempotency.IdempotencyRequestInProgress``, which is
     │                                 also Powertools' ``IdempotencyAlreadyInProgressError``)
     ├── MigrationLockTimeout          another migrator held the migration lock too long
     ├── PackagingError                a deployment zip could not be built (names the cause)
     ├── CommandError                  a CLI command's user error: one line, exit 2
     ├── InvalidInput                  malformed input to the local tools (also a ValueError):
     │                                 TargetError, MalformedBody, FunctionError,
     │                                 LaunchError, TemplateError, MalformedResponseError
     ├── BodyTooLarge                  (local) a request body over the limit -> HTTP 413
     └── HTTPError                     (http.py) an HTTP error answer: status, code, message

Driver errors reach us wrapped by Peewee (``peewee.OperationalError`` and friends); the
original PyMySQL / psycopg2 exception is chained as ``__context__``. :func:`classify` reads the
driver's error *code* (MySQL errno, PostgreSQL SQLSTATE) where the driver gives one and falls back
to message fragments only where it gives none (psycopg2 reports connect failures and dropped
sockets without a SQLSTATE).
"""

from __future__ import annotations

import enum
import functools

__all__ = [
    "CommandError",
    "ConfigurationError",
    "ConnectionLimitReached",
    "ConnectionLost",
    "DatabaseUnavailable",
    "DeadlineExceeded",
    "ErrorKind",
    "InvalidInput",
    "MigrationLockTimeout",
    "PackagingError",
    "PeeweeServerlessError",
    "RequestInProgress",
    "ServerReadOnly",
    "classify",
    "driver_error",
]


class PeeweeServerlessError(Exception):
    """Base class of every error raised by peewee-serverless."""


class ConfigurationError(PeeweeServerlessError, ValueError):
    """A setting is missing or malformed.

    ``setting`` names the environment variable (or keyword) at fault. The message never contains
    a password or a full URL with credentials.
    """

    def __init__(self, setting: str, message: str) -> None:
        self.setting = setting
        super().__init__(f"{setting}: {message}")


class DatabaseUnavailable(PeeweeServerlessError):
    """No usable database connection could be obtained before giving up.

    ``retry_after`` is a hint in whole seconds for the client (the HTTP layer sends it as
    ``Retry-After`` with a 503). ``kind`` is the :class:`ErrorKind` of the last failure.
    """

    def __init__(
        self, message: str, *, retry_after: int = 1, kind: ErrorKind | None = None
    ) -> None:
        self.retry_after = retry_after
        self.kind = kind
        super().__init__(message)


class ConnectionLimitReached(DatabaseUnavailable):
    """The server refused new connections (MySQL 1040/1203/1226, PostgreSQL 53300)."""


class ConnectionLost(DatabaseUnavailable):
    """The server dropped the connection where a silent retry could lose or duplicate work.

    Raised inside a transaction (what had run of it is gone) and for a write whose outcome is
    unknown (MySQL 2013 "lost connection during query"). The invocation fails cleanly; the client
    may retry (safely, with an ``Idempotency-Key``).
    """


class RequestInProgress(PeeweeServerlessError):
    """An idempotent call with the same key is running in another invocation.

    ``retry_after`` is the hint for the client in whole seconds (1: a live call finishes within
    it). ``expires_in`` is the number of seconds until that invocation's claim lapses at the
    latest (its Lambda timeout; ``None`` when it recorded none): by then it has completed, and a
    retry gets its answer, or it died, and a retry takes the key over and runs the call.
    """

    def __init__(
        self, message: str, *, retry_after: int = 1, expires_in: int | None = None
    ) -> None:
        self.retry_after = max(1, int(retry_after))
        self.expires_in = expires_in
        super().__init__(message)


class ServerReadOnly(DatabaseUnavailable):
    """The server refused a write: it is read-only (a writer demoted by a failover, a standby;
    MySQL 1290 / 1836, PostgreSQL 25006) or out of disk space (PostgreSQL 53100).

    The connection that met it is dropped, so the next invocation connects afresh (after a
    failover: to the new writer behind the same DNS name). HTTP 503 with ``Retry-After``.
    """


class DeadlineExceeded(DatabaseUnavailable):
    """The invocation's time ran out while waiting for the database (connect, statement, lock,
    commit). Raised before Lambda's own timeout would kill the invocation, so the client gets a
    503 with ``Retry-After`` instead of a gateway error; the connection that was cut is dropped.
    """


class MigrationLockTimeout(PeeweeServerlessError):
    """Another migrator held the migration lock longer than the lock timeout.

    ``name`` is the lock's name, ``timeout`` the seconds waited. Nothing was applied; re-run
    once the other migration finished (it is idempotent).
    """

    def __init__(self, message: str, *, name: str = "", timeout: float = 0.0) -> None:
        self.name = name
        self.timeout = timeout
        super().__init__(message)


class PackagingError(PeeweeServerlessError):
    """A deployment zip could not be built: bad arguments, an unresolvable requirement, a file
    that must not ship, or a handler that does not import. The message names the cause."""


class CommandError(PeeweeServerlessError):
    """A user error a CLI command reports as one line on stderr, exiting with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class InvalidInput(PeeweeServerlessError, ValueError):
    """Malformed input to the local tools (a handler target, an event, a template, a body, a
    handler's response): the tool reports it (HTTP 4xx, or one CLI line) instead of crashing."""


class ErrorKind(enum.Enum):
    """What a database error means for a serverless function."""

    #: The connection is dead and the statement certainly did not run (safe to retry anywhere).
    CONNECTION_DEAD = "connection_dead"
    #: The connection broke while a statement was in flight: it may or may not have run.
    CONNECTION_LOST = "connection_lost"
    #: The server has no connection slot for us.
    CONNECTION_LIMIT = "connection_limit"
    #: The server is not there (refused, reset, starting up, shutting down).
    SERVER_UNAVAILABLE = "server_unavailable"
    #: The server takes no writes: read-only (a demoted writer, a standby) or its disk is full.
    #: The connection is replaced: after a failover a new one reaches the new writer.
    SERVER_READ_ONLY = "server_read_only"
    #: Authentication failed (wrong password, rotated secret, unknown user).
    AUTH_FAILED = "auth_failed"
    #: A unique constraint was violated.
    UNIQUE_VIOLATION = "unique_violation"
    #: Anything else: not ours to interpret.
    OTHER = "other"


# The tables name codes by the drivers' own constants (``pymysql.constants.ER`` / ``CR``,
# ``psycopg2.errorcodes``). They are built on the first error, not at import: importing a driver
# costs ~30 ms of cold start and only one of them is installed in a function. MariaDB codes that
# PyMySQL does not name are numbers with the server's constant in the comment.
_MYSQL_NAMES: tuple[tuple[str, str | int, ErrorKind], ...] = (
    # pymysql InterfaceError (0, ''): the socket was already closed; nothing was sent.
    ("", 0, ErrorKind.CONNECTION_DEAD),
    # Detected before the query was sent (PyMySQL raises it when writing to a dead socket).
    ("CR", "CR_SERVER_GONE_ERROR", ErrorKind.CONNECTION_DEAD),
    ("", 4031, ErrorKind.CONNECTION_DEAD),  # ER_CLIENT_INTERACTION_TIMEOUT: closed while idle
    ("", 1927, ErrorKind.CONNECTION_DEAD),  # ER_CONNECTION_KILLED (MariaDB): killed while idle
    ("CR", "CR_SERVER_LOST", ErrorKind.CONNECTION_LOST),  # lost during the query
    ("CR", "CR_COMMANDS_OUT_OF_SYNC", ErrorKind.CONNECTION_LOST),
    ("CR", "CR_SERVER_LOST_EXTENDED", ErrorKind.CONNECTION_LOST),
    ("ER", "CON_COUNT_ERROR", ErrorKind.CONNECTION_LIMIT),  # Too many connections
    ("ER", "TOO_MANY_USER_CONNECTIONS", ErrorKind.CONNECTION_LIMIT),
    ("ER", "USER_LIMIT_REACHED", ErrorKind.CONNECTION_LIMIT),  # MAX_USER_CONNECTIONS resource
    ("CR", "CR_CONNECTION_ERROR", ErrorKind.SERVER_UNAVAILABLE),  # socket
    ("CR", "CR_CONN_HOST_ERROR", ErrorKind.SERVER_UNAVAILABLE),  # refused / unreachable
    ("ER", "SERVER_SHUTDOWN", ErrorKind.SERVER_UNAVAILABLE),
    # --read-only / super_read_only: a writer demoted by a failover (the DNS name moved on).
    ("ER", "OPTION_PREVENTS_STATEMENT", ErrorKind.SERVER_READ_ONLY),
    ("", 1836, ErrorKind.SERVER_READ_ONLY),  # ER_READ_ONLY_MODE
    ("ER", "ACCESS_DENIED_ERROR", ErrorKind.AUTH_FAILED),
    ("", 1698, ErrorKind.AUTH_FAILED),  # ER_ACCESS_DENIED_NO_PASSWORD_ERROR
    ("ER", "DUP_ENTRY", ErrorKind.UNIQUE_VIOLATION),
    ("", 1586, ErrorKind.UNIQUE_VIOLATION),  # ER_DUP_ENTRY_WITH_KEY_NAME
)

# PostgreSQL SQLSTATE names (``psycopg2.errorcodes``), exact codes; then classes.
_PG_NAMES: tuple[tuple[str, ErrorKind], ...] = (
    ("ADMIN_SHUTDOWN", ErrorKind.CONNECTION_DEAD),  # 57P01 pg_terminate_backend, fast shutdown
    ("CRASH_SHUTDOWN", ErrorKind.CONNECTION_DEAD),  # 57P02
    ("IDLE_SESSION_TIMEOUT", ErrorKind.CONNECTION_DEAD),  # 57P05: closed while idle
    ("CANNOT_CONNECT_NOW", ErrorKind.SERVER_UNAVAILABLE),  # 57P03 starting up / recovering
    ("TOO_MANY_CONNECTIONS", ErrorKind.CONNECTION_LIMIT),  # 53300 (also per role / database)
    ("READ_ONLY_SQL_TRANSACTION", ErrorKind.SERVER_READ_ONLY),  # 25006 a standby / demoted
    ("DISK_FULL", ErrorKind.SERVER_READ_ONLY),  # 53100 no write can succeed until space is freed
    ("INVALID_PASSWORD", ErrorKind.AUTH_FAILED),  # 28P01
    ("INVALID_AUTHORIZATION_SPECIFICATION", ErrorKind.AUTH_FAILED),  # 28000
    ("UNIQUE_VIOLATION", ErrorKind.UNIQUE_VIOLATION),  # 23505
)
_PG_CLASSES: dict[str, ErrorKind] = {
    "08": ErrorKind.CONNECTION_LOST,  # connection_exception
}

# psycopg2 gives no SQLSTATE for connect failures or a dropped socket: only then do we read text.
_PG_FRAGMENTS: dict[ErrorKind, tuple[str, ...]] = {
    ErrorKind.CONNECTION_DEAD: (
        "connection already closed",  # InterfaceError, nothing sent
        "terminating connection due to administrator command",
        "terminating connection due to idle-session timeout",
    ),
    ErrorKind.CONNECTION_LOST: (
        "server closed the connection unexpectedly",
        # libpq's socket errors (a reset, a send or receive that failed): at connect the server
        # is unreachable (retried with back-off), during a statement its fate is unknown.
        "connection reset by peer",
        "could not receive data from server",
        "could not send data to server",
    ),
    ErrorKind.CONNECTION_LIMIT: (
        "too many clients already",
        "too many connections for",  # role / database limits
        "remaining connection slots are reserved",
    ),
    ErrorKind.SERVER_UNAVAILABLE: (
        "connection refused",
        "the database system is starting up",
        "the database system is not yet accepting connections",
        "the database system is shutting down",
        "the database system is in recovery mode",
        "could not connect to server",
        "timeout expired",  # libpq connect_timeout
    ),
    ErrorKind.AUTH_FAILED: ("password authentication failed", "no password supplied"),
}


@functools.cache
def mysql_codes() -> dict[int, ErrorKind]:
    """MySQL / MariaDB error number -> kind (client ``CR_*`` and server ``ER_*`` codes)."""
    try:
        from pymysql.constants import CR, ER
    except ImportError:  # a PostgreSQL-only function: MySQL errors cannot occur
        CR = ER = None  # noqa: N806
    table: dict[int, ErrorKind] = {}
    for module, name, kind in _MYSQL_NAMES:
        if isinstance(name, int):
            table[name] = kind
        elif module and (consts := CR if module == "CR" else ER) is not None:
            table[int(getattr(consts, name))] = kind
    return table


@functools.cache
def pg_codes() -> dict[str, ErrorKind]:
    """PostgreSQL SQLSTATE -> kind (exact codes; classes are in ``_PG_CLASSES``)."""
    try:
        from psycopg2 import errorcodes
    except ImportError:  # psycopg 3 or no PostgreSQL driver
        return _pg_codes_psycopg3()
    return {getattr(errorcodes, name): kind for name, kind in _PG_NAMES}


def _pg_codes_psycopg3() -> dict[str, ErrorKind]:
    try:
        from psycopg import errors
    except ImportError:
        return {}
    return {errors.lookup(name).sqlstate: kind for name, kind in _PG_NAMES}


def driver_error(exc: BaseException) -> BaseException:
    """Return the driver's own exception behind a Peewee wrapper (or ``exc`` itself)."""
    seen = 0
    current: BaseException = exc
    while seen < 5:
        module = type(current).__module__ or ""
        if module.startswith(
            ("pymysql", "psycopg2", "psycopg", "MySQLdb", "sqlite3", "peewee_serverless.data_api")
        ):
            return current
        nxt = current.__cause__ or current.__context__
        if nxt is None:
            break
        current = nxt
        seen += 1
    return exc


def _mysql_code(err: BaseException) -> int | None:
    args = getattr(err, "args", ())
    if args and isinstance(args[0], int):
        return args[0]
    return None


def classify(exc: BaseException) -> ErrorKind:
    """Say what a (possibly Peewee-wrapped) driver error means, by code where there is one."""
    err = driver_error(exc)
    # Our own Data API driver knows what its errors mean (it reads the codes the Data API
    # embeds in its messages, see data_api.driver) and says so.
    own = getattr(err, "error_kind", None)
    if isinstance(own, ErrorKind):
        return own
    module = type(err).__module__ or ""
    if module.startswith(("pymysql", "MySQLdb")) or (
        err is exc and _mysql_code(err) is not None and not module.startswith("psycopg")
    ):
        code = _mysql_code(err)
        if code is not None:
            return mysql_codes().get(code, ErrorKind.OTHER)
    pgcode = getattr(err, "pgcode", None) or getattr(err, "sqlstate", None)
    if isinstance(pgcode, str) and pgcode:
        exact = pg_codes().get(pgcode)
        return exact or _PG_CLASSES.get(pgcode[:2], ErrorKind.OTHER)
    if module.startswith("psycopg") or type(exc).__module__ == "peewee":
        text = str(err).lower()
        # In the table's order: a dead connection's message may go on to say it was closed.
        for kind, fragments in _PG_FRAGMENTS.items():
            if any(fragment in text for fragment in fragments):
                return kind
    if module.startswith("sqlite3") or type(err).__name__ == "IntegrityError":
        text = str(err).lower()
        if "unique constraint failed" in text:
            return ErrorKind.UNIQUE_VIOLATION
    return ErrorKind.OTHER
