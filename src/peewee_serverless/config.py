"""Environment -> database settings -> a serverless Peewee database.

A Lambda function configures its database from environment variables, once, at module level;
nothing here opens a connection. Two ways to name the server:

* ``DATABASE_URL`` in Peewee's :mod:`playhouse.db_url` schemes (``mysql://``, ``postgres://``,
  ``postgresql://``, ``sqlite:///path``), parsed by ``playhouse.db_url.parse``;
* the seed's ``DB_ENGINE``, ``DB_NAME``, ``DB_USER``, ``DB_PASSWORD``, ``DB_HOST``, ``DB_PORT``.

With neither, the database is an embedded SQLite file (``DB_NAME`` or a file in the temp dir,
the only writable place on Lambda). Every malformed setting raises :class:`ConfigurationError`
naming the variable; no message or repr ever shows a password.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError
from .options import CLOSE_POLICIES as CLOSE_POLICIES  # re-exported: lived here before
from .options import ENGINES as ENGINES
from .options import JITTERS as JITTERS
from .options import LOG_INVOCATIONS as LOG_INVOCATIONS
from .options import MODES as MODES
from .options import ServerlessOptions as ServerlessOptions
from .options import _flag, _number
from .options import int_setting as int_setting

if TYPE_CHECKING:
    # Imported where used: a function with neither a secret nor TLS settings (and SQLite)
    # never loads them, which keeps ``import peewee_serverless`` light (bench/cold.py).
    from .database import ServerlessDatabase
    from .secrets import CredentialSource
    from .tls import TlsSettings

__all__ = [
    "ENGINES",
    "DatabaseSettings",
    "ServerlessOptions",
    "database_from_env",
    "int_setting",
    "settings_from_env",
]


DEFAULT_PORTS = {"mysql": 3306, "postgres": 5432}


def default_sqlite_path() -> str:
    """The SQLite file used when nothing is configured (in the temp dir, Lambda's writable one).

    A function, not a constant computed at import: ``tempfile`` pulls in ``shutil`` and the
    compression modules (a few ms of every cold start) for a default most functions never use.
    """
    import tempfile

    return os.path.join(tempfile.gettempdir(), "peewee-serverless.sqlite3")


def __getattr__(name: str) -> Any:
    # DEFAULT_SQLITE_PATH stays importable (it was a constant), computed on first use.
    if name == "DEFAULT_SQLITE_PATH":
        return default_sqlite_path()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class DatabaseSettings:
    """Where the database is: engine, name and connect parameters (password kept out of repr)."""

    engine: str
    database: str
    host: str | None = None
    port: int | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)
    options: ServerlessOptions = field(default_factory=ServerlessOptions)
    #: Fetches user/password at connect time (``DB_SECRET_ARN``, ``DB_IAM_AUTH``); ``None``: static.
    credentials: CredentialSource | None = field(default=None, repr=False)
    #: ``DB_SSL_MODE`` / ``DB_SSL_CA``; ``None``: the driver's default.
    tls: TlsSettings | None = None

    def __repr__(self) -> str:
        from .secrets import masked_repr  # not at import: a repr is rare, the import is not

        return masked_repr(self)

    def connect_params(self) -> dict[str, Any]:
        """Keyword arguments for the Peewee database class (driver connect parameters)."""
        params: dict[str, Any] = {}
        for key in ("host", "port", "user", "password"):
            value = getattr(self, key)
            if value is not None:
                params[key] = value
        if self.engine == "mysql":
            params.setdefault("connect_timeout", self.options.connect_timeout)
        elif self.engine == "postgres":
            params.setdefault("connect_timeout", max(1, round(self.options.connect_timeout)))
            if self.options.mode == "direct":
                # Marks our connections so that zombie reaping only touches our own.
                params.setdefault("application_name", self.options.application_name)
        params.update(self.extra)
        if self.tls is not None:
            params.update(self.tls.connect_params(self.engine))
        return params

    def create_database(self, **overrides: Any) -> ServerlessDatabase:
        """Build the (unconnected) serverless Peewee database for these settings."""
        from .database import database_class_for

        cls = database_class_for(self.engine)
        params = self.connect_params()
        if self.credentials is not None:
            params.setdefault("credentials", self.credentials)
        params.update(overrides)
        return cls(self.database, options=self.options, **params)


def _from_url(url: str, environ: Mapping[str, str]) -> DatabaseSettings:
    from playhouse import db_url

    try:
        from urllib.parse import urlparse  # only DATABASE_URL needs it: off the cold path

        parsed = urlparse(url)
        scheme = parsed.scheme.lower()
    except ValueError:
        raise ConfigurationError("DATABASE_URL", "is not a URL") from None
    if scheme not in ENGINES:
        known = ", ".join(sorted(ENGINES))
        raise ConfigurationError(
            "DATABASE_URL", f"unsupported scheme {scheme or '(none)'!r}; use one of {known}"
        )
    engine = ENGINES[scheme]
    try:
        port = parsed.port
    except ValueError:
        raise ConfigurationError("DATABASE_URL", "has a port that is not a number") from None
    kwargs = db_url.parseresult_to_dict(parsed, unquote_password=True, unquote_user=True)
    database = kwargs.pop("database", "") or ""
    if engine == "sqlite":
        # playhouse.db_url reads "sqlite://" (no path) as ":memory:".
        return DatabaseSettings(
            engine, database, extra=kwargs, options=ServerlessOptions.from_env(environ)
        )
    if not parsed.hostname:
        raise ConfigurationError("DATABASE_URL", f"{scheme} URLs need a host: {scheme}://host/db")
    if not database:
        raise ConfigurationError("DATABASE_URL", "has no database name after the host")
    password = kwargs.pop("password", None) or kwargs.pop("passwd", None)
    user = kwargs.pop("user", None)
    for key in ("host", "port"):
        kwargs.pop(key, None)
    return DatabaseSettings(
        engine,
        database,
        host=parsed.hostname,
        port=port or DEFAULT_PORTS[engine],
        user=user,
        password=password,
        extra=kwargs,
        options=ServerlessOptions.from_env(environ),
    )


def _with_access(
    settings: DatabaseSettings, env: Mapping[str, str], password_setting: str
) -> DatabaseSettings:
    """Add TLS (``DB_SSL_MODE``/``DB_SSL_CA``) and the credential source (secret or IAM)."""
    secret_arn = env.get("DB_SECRET_ARN", "").strip()
    raw_iam = env.get("DB_IAM_AUTH", "").strip()
    iam = _flag("DB_IAM_AUTH", raw_iam) if raw_iam else False
    if settings.engine == "sqlite":
        if secret_arn or iam:
            name = "DB_SECRET_ARN" if secret_arn else "DB_IAM_AUTH"
            raise ConfigurationError(name, "does not apply to the sqlite engine")
        return settings
    from .tls import TlsSettings, tls_from_env

    tls = tls_from_env(env)
    credentials: CredentialSource | None = None
    if secret_arn and iam:
        raise ConfigurationError("DB_IAM_AUTH", "cannot be combined with DB_SECRET_ARN")
    if (secret_arn or iam) and settings.password:
        source = "DB_SECRET_ARN" if secret_arn else "DB_IAM_AUTH"
        raise ConfigurationError(password_setting, f"must not hold a password with {source}")
    if secret_arn:
        from .secrets import SecretsManagerSource

        credentials = SecretsManagerSource(
            secret_arn,
            engine=settings.engine,
            host=settings.host,
            port=settings.port,
            database=settings.database or None,
            user=settings.user,
        )
    elif iam:
        if not settings.user:
            raise ConfigurationError("DB_USER", "is required with DB_IAM_AUTH")
        region = env.get("AWS_REGION", "").strip()
        if not region:
            raise ConfigurationError("AWS_REGION", "is required with DB_IAM_AUTH (token signing)")
        if tls is None:
            tls = TlsSettings("require")
        elif tls.mode == "disable":
            raise ConfigurationError(
                "DB_SSL_MODE", "cannot be disable with DB_IAM_AUTH: RDS takes IAM tokens over TLS"
            )
        assert settings.host is not None and settings.port is not None
        from .secrets import IamTokenSource

        credentials = IamTokenSource(settings.host, settings.port, settings.user, region)
    return replace(settings, tls=tls, credentials=credentials)


def settings_from_env(environ: Mapping[str, str] | None = None) -> DatabaseSettings:
    """Read :class:`DatabaseSettings` from ``environ`` (``os.environ`` by default)."""
    env = os.environ if environ is None else environ
    url = env.get("DATABASE_URL", "").strip()
    if url:
        return _with_access(_from_url(url, env), env, "DATABASE_URL")

    host = env.get("DB_HOST", "").strip() or None
    raw_engine = env.get("DB_ENGINE", "").strip()
    if raw_engine:
        engine = ENGINES.get(raw_engine.lower())
        if engine is None:
            known = ", ".join(sorted(ENGINES))
            raise ConfigurationError("DB_ENGINE", f"must be one of {known}; got {raw_engine!r}")
    elif env.get("DB_SECRET_ARN", "").strip():
        # The secret is read only at first connect, but the database class is chosen now.
        raise ConfigurationError("DB_ENGINE", "is required with DB_SECRET_ARN (mysql or postgres)")
    else:
        # The seed example is MySQL configured by DB_HOST & co; nothing set means local SQLite.
        engine = "mysql" if host else "sqlite"

    options = ServerlessOptions.from_env(env)
    name = env.get("DB_NAME", "").strip()
    if engine == "sqlite":
        sqlite = DatabaseSettings("sqlite", name or default_sqlite_path(), options=options)
        return _with_access(sqlite, env, "DB_PASSWORD")

    # With a secret, a missing name / host comes from the secret (RDS secret JSON) at connect.
    from_secret = bool(env.get("DB_SECRET_ARN", "").strip())
    if not name and not from_secret:
        raise ConfigurationError("DB_NAME", f"is required for the {engine} engine")
    if not host and not from_secret:
        raise ConfigurationError("DB_HOST", f"is required for the {engine} engine")
    raw_port = env.get("DB_PORT", "").strip()
    port = DEFAULT_PORTS[engine]
    if raw_port:
        port = _number(int, "DB_PORT", raw_port, 1)
        if port > 65535:
            raise ConfigurationError("DB_PORT", f"must be at most 65535, got {raw_port!r}")
    settings = DatabaseSettings(
        engine,
        name,
        host=host,
        port=port if host else None,
        user=env.get("DB_USER", "").strip() or None,
        password=env.get("DB_PASSWORD") or None,
        options=options,
    )
    return _with_access(settings, env, "DB_PASSWORD")


def database_from_env(
    environ: Mapping[str, str] | None = None, **overrides: Any
) -> ServerlessDatabase:
    """Build the serverless database described by the environment. Opens no connection.

    ``overrides`` are passed to the database class (driver connect parameters, ``options=``).
    """
    env = os.environ if environ is None else environ
    # -- Aurora Data API hook (peewee_serverless.data_api): a mysql+data-api:// URL or
    # DB_MODE=data-api selects it; it makes no call and imports no boto3 here.
    from .data_api.settings import data_api_from_env

    data_api = data_api_from_env(env, **overrides)
    if data_api is not None:
        return data_api
    # -- end of the Data API hook
    return settings_from_env(env).create_database(**overrides)
