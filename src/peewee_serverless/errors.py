"""The one exception tree of peewee-serverless, and the classification of driver errors.

::

    PeeweeServerlessError
     ├── ConfigurationError        a setting is missing or malformed (names the setting)
     ├── DatabaseUnavailable       no usable connection could be had in time -> HTTP 503
     │    └── ConnectionLimitReached   the server refused us for lack of connection slots
     └── ConnectionLost            the server dropped the connection after part of a
                                   transaction (or an ambiguous write) had run -> HTTP 503

Driver errors reach us wrapped by Peewee (``peewee.OperationalError`` and friends); the
original PyMySQL / psycopg2 exception is chained as ``__context__``. :func:`classify` reads the
driver's error *code* (MySQL errno, PostgreSQL SQLSTATE) where the driver gives one and falls back
to message fragments only where it gives none (psycopg2 reports connect failures and dropped
sockets without a SQLSTATE).
"""

from __future__ import annotations

import enum

__all__ = [
    "ConfigurationError",
    "ConnectionLimitReached",
    "ConnectionLost",
    "DatabaseUnavailable",
    "ErrorKind",
    "MigrationLockTimeout",
    "PeeweeServerlessError",
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


class MigrationLockTimeout(PeeweeServerlessError):
    """Another migrator held the migration lock longer than the lock timeout.

    ``name`` is the lock's name, ``timeout`` the seconds waited. Nothing was applied; re-run
    once the other migration finished (it is idempotent).
    """

    def __init__(self, message: str, *, name: str = "", timeout: float = 0.0) -> None:
        self.name = name
        self.timeout = timeout
        super().__init__(message)


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
    #: Authentication failed (wrong password, rotated secret, unknown user).
    AUTH_FAILED = "auth_failed"
    #: A unique constraint was violated.
    UNIQUE_VIOLATION = "unique_violation"
    #: Anything else: not ours to interpret.
    OTHER = "other"


# MySQL / MariaDB client and server error numbers.
_MYSQL_CODES: dict[int, ErrorKind] = {
    0: ErrorKind.CONNECTION_DEAD,  # pymysql InterfaceError (0, ''): socket already closed
    2006: ErrorKind.CONNECTION_DEAD,  # CR_SERVER_GONE_ERROR: detected before the query was sent
    4031: ErrorKind.CONNECTION_DEAD,  # ER_CLIENT_INTERACTION_TIMEOUT: closed while idle
    1927: ErrorKind.CONNECTION_DEAD,  # ER_CONNECTION_KILLED (MariaDB): killed while idle
    2013: ErrorKind.CONNECTION_LOST,  # CR_SERVER_LOST: lost during the query
    2014: ErrorKind.CONNECTION_LOST,  # CR_COMMANDS_OUT_OF_SYNC
    2055: ErrorKind.CONNECTION_LOST,  # CR_SERVER_LOST_EXTENDED
    1040: ErrorKind.CONNECTION_LIMIT,  # ER_CON_COUNT_ERROR: Too many connections
    1203: ErrorKind.CONNECTION_LIMIT,  # ER_TOO_MANY_USER_CONNECTIONS
    1226: ErrorKind.CONNECTION_LIMIT,  # ER_USER_LIMIT_REACHED (max_user_connections resource)
    2002: ErrorKind.SERVER_UNAVAILABLE,  # CR_CONNECTION_ERROR (socket)
    2003: ErrorKind.SERVER_UNAVAILABLE,  # CR_CONN_HOST_ERROR: refused / unreachable
    1053: ErrorKind.SERVER_UNAVAILABLE,  # ER_SERVER_SHUTDOWN
    1045: ErrorKind.AUTH_FAILED,  # ER_ACCESS_DENIED_ERROR
    1698: ErrorKind.AUTH_FAILED,  # ER_ACCESS_DENIED_NO_PASSWORD_ERROR
    1062: ErrorKind.UNIQUE_VIOLATION,  # ER_DUP_ENTRY
    1586: ErrorKind.UNIQUE_VIOLATION,  # ER_DUP_ENTRY_WITH_KEY_NAME
}

# PostgreSQL SQLSTATE codes (exact), then classes (first two characters).
_PG_CODES: dict[str, ErrorKind] = {
    "57P01": ErrorKind.CONNECTION_DEAD,  # admin_shutdown (pg_terminate_backend, fast shutdown)
    "57P02": ErrorKind.CONNECTION_DEAD,  # crash_shutdown
    "57P03": ErrorKind.SERVER_UNAVAILABLE,  # cannot_connect_now (starting up)
    "53300": ErrorKind.CONNECTION_LIMIT,  # too_many_connections (also per role / per database)
    "28P01": ErrorKind.AUTH_FAILED,  # invalid_password
    "28000": ErrorKind.AUTH_FAILED,  # invalid_authorization_specification
    "23505": ErrorKind.UNIQUE_VIOLATION,  # unique_violation
}
_PG_CLASSES: dict[str, ErrorKind] = {
    "08": ErrorKind.CONNECTION_LOST,  # connection_exception
}

# psycopg2 gives no SQLSTATE for connect failures or a dropped socket: only then do we read text.
_PG_FRAGMENTS: tuple[tuple[str, ErrorKind], ...] = (
    ("connection already closed", ErrorKind.CONNECTION_DEAD),  # InterfaceError, nothing sent
    ("terminating connection due to administrator command", ErrorKind.CONNECTION_DEAD),
    ("server closed the connection unexpectedly", ErrorKind.CONNECTION_LOST),
    ("too many clients already", ErrorKind.CONNECTION_LIMIT),
    ("too many connections for", ErrorKind.CONNECTION_LIMIT),  # role / database limits
    ("remaining connection slots are reserved", ErrorKind.CONNECTION_LIMIT),
    ("connection refused", ErrorKind.SERVER_UNAVAILABLE),
    ("the database system is starting up", ErrorKind.SERVER_UNAVAILABLE),
    ("the database system is shutting down", ErrorKind.SERVER_UNAVAILABLE),
    ("the database system is in recovery mode", ErrorKind.SERVER_UNAVAILABLE),
    ("could not connect to server", ErrorKind.SERVER_UNAVAILABLE),
    ("timeout expired", ErrorKind.SERVER_UNAVAILABLE),  # libpq connect_timeout
    ("password authentication failed", ErrorKind.AUTH_FAILED),
    ("no password supplied", ErrorKind.AUTH_FAILED),
)


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
        if code is not None and code in _MYSQL_CODES:
            return _MYSQL_CODES[code]
        if code is not None:
            return ErrorKind.OTHER
    pgcode = getattr(err, "pgcode", None) or getattr(err, "sqlstate", None)
    if isinstance(pgcode, str) and pgcode:
        if pgcode in _PG_CODES:
            return _PG_CODES[pgcode]
        return _PG_CLASSES.get(pgcode[:2], ErrorKind.OTHER)
    if module.startswith("psycopg") or type(exc).__module__ == "peewee":
        text = str(err).lower()
        for fragment, kind in _PG_FRAGMENTS:
            if fragment in text:
                return kind
    if module.startswith("sqlite3") or type(err).__name__ == "IntegrityError":
        text = str(err).lower()
        if "unique constraint failed" in text:
            return ErrorKind.UNIQUE_VIOLATION
    return ErrorKind.OTHER
