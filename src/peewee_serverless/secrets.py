"""Where the database credentials come from: static, AWS Secrets Manager, or RDS IAM tokens.

A :class:`CredentialSource` is asked for :class:`Credentials` every time the database opens a
connection (never at import or construction). The database connects with them, added to that one
attempt's driver parameters (never stored in ``connect_params``); when the server
rejects them (:attr:`~peewee_serverless.errors.ErrorKind.AUTH_FAILED`: the secret was rotated, the
token expired) the source is asked once more with ``refresh=True`` and the connect is retried
once. :func:`connect_with_credentials` is that loop; ``ServerlessDatabaseMixin`` calls it.

* :class:`StaticCredentials`: fixed user and password (what ``DB_USER``/``DB_PASSWORD`` give).
* :class:`SecretsManagerSource`: the RDS secret JSON (``username``, ``password``, ``host``,
  ``port``, ``dbname``, ``engine``) read through Powertools Parameters, cached across warm
  invocations for ``max_age`` seconds, fetched again (``force_fetch``) after a rejection.
  The read is bounded by the invocation's deadline like every other wait of a connect: the
  process's one ``SecretsProvider`` is built on a
  :class:`~peewee_serverless.aws_deadline.DeadlineBoundClient` (1 s connect / 5 s read, three
  attempts when there is time for them) that reads the time left of the database connecting
  (:func:`connect_with_credentials` says which). Powertools' own shared provider would wait up
  to 60 s connect + 60 s read per attempt, five attempts, whatever the invocation has left.
* :class:`IamTokenSource`: a fresh RDS IAM authentication token per connect
  (``generate_db_auth_token`` signs locally; no network call). Needs TLS.

boto3 and Powertools are imported only when a secret or token is actually needed. Passwords and
tokens never appear in an error message, a log line or a repr.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import KW_ONLY, dataclass, field, fields
from typing import Any, Protocol, runtime_checkable

from .errors import ConfigurationError, DatabaseUnavailable, DeadlineExceeded, ErrorKind, classify

__all__ = [
    "DEFAULT_SECRET_MAX_AGE",
    "CredentialSource",
    "Credentials",
    "IamTokenSource",
    "SecretsManagerSource",
    "StaticCredentials",
    "connect_with_credentials",
]

logger = logging.getLogger("peewee_serverless.secrets")

#: Seconds a fetched secret is reused before Secrets Manager is asked again (unless
#: ``POWERTOOLS_PARAMETERS_MAX_AGE`` says otherwise). A rejected password refetches at once.
DEFAULT_SECRET_MAX_AGE = 300

# Secrets Manager errors that no retry can fix: the setting is wrong (or the role lacks access).
_CONFIG_ERROR_CODES = frozenset(
    (
        "ResourceNotFoundException",
        "AccessDeniedException",
        "AccessDeniedFault",
        "ValidationException",
        "InvalidParameterException",
        "InvalidRequestException",
        "DecryptionFailure",
        "UnrecognizedClientException",
    )
)

#: The time left of the connect reading a secret on this thread (``db.time_left``), if any.
_reading = threading.local()
#: The process's Secrets Manager provider (Powertools' cache of secrets), built on first use.
_shared_provider: Any = None
_shared_lock = threading.Lock()


def _time_left_of_reader() -> float | None:
    time_left = getattr(_reading, "time_left", None)
    return None if time_left is None else time_left()


def shared_secrets_provider() -> Any:
    """The process's Powertools ``SecretsProvider``, its calls bounded by the deadline of the
    connect that reads a secret (see the module)."""
    global _shared_provider
    with _shared_lock:
        if _shared_provider is None:
            from aws_lambda_powertools.utilities import parameters

            from .aws_deadline import DeadlineBoundClient

            client = DeadlineBoundClient("secretsmanager", _time_left_of_reader)
            _shared_provider = parameters.SecretsProvider(boto3_client=client)
        return _shared_provider


# RDS secret ``engine`` values -> our canonical engine names.
_SECRET_ENGINES = {
    "mysql": "mysql",
    "mariadb": "mysql",
    "aurora": "mysql",
    "aurora-mysql": "mysql",
    "postgres": "postgres",
    "postgresql": "postgres",
    "aurora-postgresql": "postgres",
}


@dataclass(frozen=True)
class Credentials:
    """What one connect uses. ``None`` fields leave the configured value in place."""

    user: str | None = None
    password: str | None = field(default=None, repr=False)
    host: str | None = None
    port: int | None = None
    database: str | None = None

    def __repr__(self) -> str:
        return masked_repr(self)


def masked_repr(obj: Any) -> str:
    """A dataclass's repr with its ``password`` shown as ``'***'`` (or ``None`` when unset) and
    the other fields as the dataclass shows them: the one rule for every settings object."""
    shown = []
    for f in fields(obj):
        if f.name == "password":
            shown.append(f"password={'***' if obj.password else None!r}")
        elif f.repr:
            shown.append(f"{f.name}={getattr(obj, f.name)!r}")
    return f"{type(obj).__name__}({', '.join(shown)})"


@runtime_checkable
class CredentialSource(Protocol):
    """Gives the credentials for the next connect.

    ``refreshable`` says whether asking again with ``refresh=True`` can give different
    credentials (a static password cannot; a rotated secret or a new token can).
    """

    refreshable: bool

    def get(self, *, refresh: bool = False) -> Credentials:
        """The credentials to connect with; ``refresh`` bypasses any cache."""
        ...


class StaticCredentials:
    """A fixed user and password (never refreshed)."""

    refreshable = False

    def __init__(self, user: str | None, password: str | None) -> None:
        self._credentials = Credentials(user=user, password=password)

    def get(self, *, refresh: bool = False) -> Credentials:
        """The fixed credentials."""
        return self._credentials

    def __repr__(self) -> str:
        return f"StaticCredentials(user={self._credentials.user!r}, password='***')"


class SecretsManagerSource:
    """Credentials from an AWS Secrets Manager secret in the RDS JSON shape.

    ``secret_id`` is the ARN (or name). ``host``/``port``/``database`` given here win over the
    secret's (e.g. an RDS Proxy endpoint in ``DB_HOST`` with the instance's secret); the secret's
    ``username``/``password`` are always used. ``engine`` is checked against the secret's.

    Without ``boto3_client``/``boto_config`` the secret goes through the process's shared
    provider (:func:`shared_secrets_provider`: one cache for every source, calls bounded by the
    invocation's deadline); with them, through a private ``SecretsProvider`` built on that
    client, which keeps its own timeouts.
    """

    refreshable = True

    def __init__(
        self,
        secret_id: str,
        *,
        engine: str | None = None,
        host: str | None = None,
        port: int | None = None,
        database: str | None = None,
        user: str | None = None,
        max_age: int | None = None,
        boto3_client: Any = None,
        boto_config: Any = None,
        setting: str = "DB_SECRET_ARN",
    ) -> None:
        if not secret_id:
            raise ConfigurationError(setting, "is empty")
        self.secret_id = secret_id
        self.engine = engine
        self.max_age = max_age
        self.setting = setting
        self._pinned = Credentials(user=user, host=host, port=port, database=database)
        self._boto3_client = boto3_client
        self._boto_config = boto_config
        self._provider: Any = None

    def __repr__(self) -> str:
        return f"SecretsManagerSource({self.secret_id!r})"

    # -- fetching --------------------------------------------------------------------------------
    def _max_age(self) -> int | None:
        if self.max_age is not None:
            return self.max_age
        # Powertools' own setting wins over our default when present.
        if os.environ.get("POWERTOOLS_PARAMETERS_MAX_AGE"):
            return None
        return DEFAULT_SECRET_MAX_AGE

    def _fetch(self, refresh: bool) -> Any:
        from aws_lambda_powertools.utilities import parameters

        if self._provider is None:
            if self._boto3_client is None and self._boto_config is None:
                self._provider = shared_secrets_provider()
            else:
                self._provider = parameters.SecretsProvider(
                    boto3_client=self._boto3_client, boto_config=self._boto_config
                )
        return self._provider.get(
            self.secret_id, transform="json", force_fetch=refresh, max_age=self._max_age()
        )

    def fetch(self, *, refresh: bool = False) -> Mapping[str, Any]:
        """The secret's JSON object (cached; ``refresh`` forces a new read)."""
        from aws_lambda_powertools.utilities.parameters.exceptions import (
            GetParameterError,
            TransformParameterError,
        )

        try:
            value = self._fetch(refresh)
        except TransformParameterError:
            # The exception carries the secret's text: do not chain it.
            raise ConfigurationError(
                self.setting, f"secret {self.secret_id!r} does not hold a JSON object"
            ) from None
        except GetParameterError as exc:
            raise self._fetch_failure(exc) from None
        if not isinstance(value, Mapping):
            raise ConfigurationError(
                self.setting, f"secret {self.secret_id!r} does not hold a JSON object"
            )
        return value

    def _fetch_failure(self, exc: BaseException) -> Exception:
        # Powertools raises GetParameterError inside its ``except``: the boto error is the context.
        cause = exc.__context__ or exc.__cause__
        if isinstance(cause, DeadlineExceeded):
            return cause  # no time left for the read: 503 + Retry-After, as for a statement
        response = getattr(cause, "response", None)
        code = ""
        if isinstance(response, Mapping):
            code = str(response.get("Error", {}).get("Code", ""))
        if code in _CONFIG_ERROR_CODES:
            return ConfigurationError(
                self.setting, f"cannot read secret {self.secret_id!r}: {code} ({_brief(cause)})"
            )
        what = code or type(cause or exc).__name__
        logger.warning("Secrets Manager read failed: %s", what)
        return DatabaseUnavailable(
            f"cannot read the database secret from Secrets Manager ({what})",
            retry_after=2,
            kind=ErrorKind.SERVER_UNAVAILABLE,
        )

    def get(self, *, refresh: bool = False) -> Credentials:
        """Credentials from the secret (env-pinned host/port/database win)."""
        secret = self.fetch(refresh=refresh)
        password = secret.get("password")
        if not isinstance(password, str) or not password:
            raise ConfigurationError(
                self.setting, f"secret {self.secret_id!r} has no 'password' string"
            )
        user = secret.get("username") or self._pinned.user
        if not isinstance(user, str) or not user:
            raise ConfigurationError(
                self.setting, f"secret {self.secret_id!r} has no 'username' string"
            )
        self._check_engine(secret.get("engine"))
        host = self._pinned.host
        port = self._pinned.port
        if host is None:
            # Host and port travel together: the secret's port only goes with the secret's host.
            host = _opt_str(secret.get("host"))
            port = _port(secret.get("port"), self.setting, self.secret_id)
        return Credentials(
            user=user,
            password=password,
            host=host,
            port=port,
            database=self._pinned.database or _opt_str(secret.get("dbname")),
        )

    def _check_engine(self, raw: Any) -> None:
        if self.engine is None or not isinstance(raw, str) or not raw:
            return
        engine = _SECRET_ENGINES.get(raw.strip().lower())
        if engine != self.engine:
            raise ConfigurationError(
                "DB_ENGINE",
                f"is {self.engine!r} but secret {self.secret_id!r} is for engine {raw!r}",
            )


@dataclass(repr=False, eq=False)
class IamTokenSource:
    """RDS IAM database authentication: a fresh token (15-minute validity) for every connect.

    The token is a SigV4-presigned string computed locally by boto3
    (``rds.generate_db_auth_token``) from the function's role credentials; the server checks it.
    RDS accepts tokens only over TLS, so connect parameters must require TLS (settings do that).
    """

    host: str
    port: int
    user: str
    region: str
    _: KW_ONLY
    #: An RDS client to sign with; without one, boto3's is built at the first connect.
    boto3_client: Any = None

    refreshable = True

    def __repr__(self) -> str:
        return f"IamTokenSource(host={self.host!r}, port={self.port!r}, user={self.user!r})"

    def _rds(self) -> Any:
        if self.boto3_client is None:
            import boto3

            self.boto3_client = boto3.client("rds", region_name=self.region)
        return self.boto3_client

    def get(self, *, refresh: bool = False) -> Credentials:
        """A newly signed token as the password."""
        try:
            token = self._rds().generate_db_auth_token(
                DBHostname=self.host, Port=self.port, DBUsername=self.user, Region=self.region
            )
        except Exception as exc:  # noqa: BLE001 - botocore: no credentials, bad region, ...
            raise ConfigurationError(
                "DB_IAM_AUTH", f"cannot sign an RDS IAM token: {type(exc).__name__}"
            ) from None
        return Credentials(user=self.user, password=token)


def connect_with_credentials(db: Any, connect: Callable[[dict[str, Any]], Any]) -> Any:
    """Run ``connect(credentials)`` with ``db.credentials``; on an auth failure refresh once, retry.

    ``connect`` gets this attempt's credential parameters (``user``, ``password``, maybe
    ``host``/``port``; ``{}`` without a source) to add to the driver parameters it builds for
    this one connect: they are never stored in ``db.connect_params``, so a rotated secret's new
    password replaces the old one at the next attempt and nothing long-lived holds it.
    A failed TLS certificate verification becomes a :class:`ConfigurationError` naming
    ``DB_SSL_CA`` (retrying cannot fix a wrong CA bundle). While it runs, a secret read on this
    thread is bounded by ``db.time_left()`` (see :func:`shared_secrets_provider`).
    """
    source: CredentialSource | None = getattr(db, "credentials", None)
    outer = getattr(_reading, "time_left", None)
    _reading.time_left = getattr(db, "time_left", None)
    try:
        return _connect_with(db, source, connect)
    finally:
        _reading.time_left = outer


def _connect_with(
    db: Any, source: CredentialSource | None, connect: Callable[[dict[str, Any]], Any]
) -> Any:
    from .tls import verification_failure

    try:
        if source is None:
            return connect({})
        try:
            return connect(_params_for(db, source.get()))
        except Exception as exc:
            if not source.refreshable or classify(exc) is not ErrorKind.AUTH_FAILED:
                raise
        logger.warning("database rejected the credentials; fetching them again once")
        refreshes = getattr(db, "credential_refreshes", 0)
        db.credential_refreshes = refreshes + 1
        return connect(_params_for(db, source.get(refresh=True)))
    except Exception as exc:
        failure = verification_failure(exc)
        if failure is None:
            raise
    # Raised outside the ``except``: with the driver error as its context, ``classify`` would
    # see "server unreachable" and the connect retry would spin on a certificate problem.
    raise failure


def _params_for(db: Any, credentials: Credentials) -> dict[str, Any]:
    """The driver parameters ``credentials`` give one connect. The database name (a secret's
    ``dbname``) is no credential: it becomes ``db.database``, as if it had been configured."""
    if credentials.database:
        db.database = credentials.database
    if not db.database:
        raise ConfigurationError("DB_NAME", "is required: neither DB_NAME nor the secret names one")
    given = {
        "user": credentials.user,
        "password": credentials.password,
        "host": credentials.host,
        "port": credentials.port,
    }
    return {key: value for key, value in given.items() if value is not None}


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _port(value: Any, setting: str, secret_id: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise ConfigurationError(
            setting, f"secret {secret_id!r} has a non-numeric 'port'"
        ) from None
    if not 0 < port < 65536:
        raise ConfigurationError(setting, f"secret {secret_id!r} has an out-of-range 'port'")
    return port


def _brief(exc: BaseException | None) -> str:
    """The service's message for a failed call (names the secret, never holds its value)."""
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        message = response.get("Error", {}).get("Message")
        if message:
            return str(message)[:200]
    return type(exc).__name__
