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
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlparse

from .errors import ConfigurationError

if TYPE_CHECKING:
    from .database import ServerlessDatabaseMixin

__all__ = [
    "ENGINES",
    "DatabaseSettings",
    "ServerlessOptions",
    "database_from_env",
    "settings_from_env",
]

#: Accepted engine names (``DB_ENGINE`` values and URL schemes) -> canonical engine.
ENGINES: dict[str, str] = {
    "mysql": "mysql",
    "mariadb": "mysql",
    "postgres": "postgres",
    "postgresql": "postgres",
    "sqlite": "sqlite",
}

DEFAULT_PORTS = {"mysql": 3306, "postgres": 5432}
DEFAULT_SQLITE_PATH = os.path.join(tempfile.gettempdir(), "peewee-serverless.sqlite3")
CLOSE_POLICIES = ("keep", "close")
MODES = ("direct", "proxy")

T = TypeVar("T")


def _number(kind: Callable[[str], T], name: str, raw: str, minimum: float | None = None) -> T:
    try:
        value = kind(raw.strip())
    except ValueError:
        raise ConfigurationError(name, f"must be a {kind.__name__}, got {raw!r}") from None
    if minimum is not None and value < minimum:  # type: ignore[operator]
        raise ConfigurationError(name, f"must be >= {minimum}, got {raw!r}")
    return value


def _choice(name: str, raw: str, choices: tuple[str, ...]) -> str:
    value = raw.strip().lower()
    if value not in choices:
        raise ConfigurationError(name, f"must be one of {', '.join(choices)}; got {raw!r}")
    return value


def _flag(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(name, f"must be true or false, got {raw!r}")


@dataclass(frozen=True)
class ServerlessOptions:
    """How the serverless database behaves between and around invocations.

    Environment variables (all optional):

    ``DB_IDLE_CHECK_SECONDS``
        after an idle gap this long (a frozen container), check the connection before reuse.
    ``DB_CLOSE_POLICY``
        ``keep`` the connection for the next warm invocation (default) or ``close`` it.
    ``DB_CONNECT_TIMEOUT``
        seconds to wait for the TCP connect / handshake.
    ``DB_APPLICATION_NAME``
        marks our connections on the server (defaults to the Lambda function name).
    ``DB_MODE``
        ``direct`` (default) or ``proxy`` (behind RDS Proxy: no killing, no session ``SET``).
    """

    idle_check_seconds: float = 5.0
    close_policy: str = "keep"
    connect_timeout: float = 5.0
    application_name: str = "peewee-serverless"
    mode: str = "direct"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ServerlessOptions:
        """Read the options from ``environ``; defaults for what is unset."""
        kwargs: dict[str, Any] = {}
        if raw := environ.get("DB_IDLE_CHECK_SECONDS"):
            kwargs["idle_check_seconds"] = _number(float, "DB_IDLE_CHECK_SECONDS", raw, 0)
        if raw := environ.get("DB_CLOSE_POLICY"):
            kwargs["close_policy"] = _choice("DB_CLOSE_POLICY", raw, CLOSE_POLICIES)
        if raw := environ.get("DB_CONNECT_TIMEOUT"):
            kwargs["connect_timeout"] = _number(float, "DB_CONNECT_TIMEOUT", raw, 0.1)
        name = environ.get("DB_APPLICATION_NAME") or environ.get("AWS_LAMBDA_FUNCTION_NAME")
        if name:
            kwargs["application_name"] = name.strip()[:63]
        if raw := environ.get("DB_MODE"):
            kwargs["mode"] = _choice("DB_MODE", raw, MODES)
        return cls(**kwargs)


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

    def __repr__(self) -> str:
        shown = "***" if self.password else None
        return (
            f"DatabaseSettings(engine={self.engine!r}, database={self.database!r}, "
            f"host={self.host!r}, port={self.port!r}, user={self.user!r}, password={shown!r}, "
            f"options={self.options!r})"
        )

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
        return params

    def create_database(self, **overrides: Any) -> ServerlessDatabaseMixin:
        """Build the (unconnected) serverless Peewee database for these settings."""
        from .database import database_class_for

        cls = database_class_for(self.engine)
        params = self.connect_params()
        params.update(overrides)
        return cls(self.database, options=self.options, **params)


def _from_url(url: str, environ: Mapping[str, str]) -> DatabaseSettings:
    from playhouse import db_url

    try:
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
        if not database:
            raise ConfigurationError("DATABASE_URL", "sqlite URLs need a path: sqlite:///path.db")
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


def settings_from_env(environ: Mapping[str, str] | None = None) -> DatabaseSettings:
    """Read :class:`DatabaseSettings` from ``environ`` (``os.environ`` by default)."""
    env = os.environ if environ is None else environ
    url = env.get("DATABASE_URL", "").strip()
    if url:
        return _from_url(url, env)

    host = env.get("DB_HOST", "").strip() or None
    raw_engine = env.get("DB_ENGINE", "").strip()
    if raw_engine:
        engine = ENGINES.get(raw_engine.lower())
        if engine is None:
            known = ", ".join(sorted(ENGINES))
            raise ConfigurationError("DB_ENGINE", f"must be one of {known}; got {raw_engine!r}")
    else:
        # The seed example is MySQL configured by DB_HOST & co; nothing set means local SQLite.
        engine = "mysql" if host else "sqlite"

    options = ServerlessOptions.from_env(env)
    name = env.get("DB_NAME", "").strip()
    if engine == "sqlite":
        return DatabaseSettings("sqlite", name or DEFAULT_SQLITE_PATH, options=options)

    if not name:
        raise ConfigurationError("DB_NAME", f"is required for the {engine} engine")
    if not host:
        raise ConfigurationError("DB_HOST", f"is required for the {engine} engine")
    raw_port = env.get("DB_PORT", "").strip()
    port = DEFAULT_PORTS[engine]
    if raw_port:
        port = _number(int, "DB_PORT", raw_port, 1)
        if port > 65535:
            raise ConfigurationError("DB_PORT", f"must be at most 65535, got {raw_port!r}")
    return DatabaseSettings(
        engine,
        name,
        host=host,
        port=port,
        user=env.get("DB_USER", "").strip() or None,
        password=env.get("DB_PASSWORD") or None,
        options=options,
    )


def database_from_env(
    environ: Mapping[str, str] | None = None, **overrides: Any
) -> ServerlessDatabaseMixin:
    """Build the serverless database described by the environment. Opens no connection.

    ``overrides`` are passed to the database class (driver connect parameters, ``options=``).
    """
    return settings_from_env(environ).create_database(**overrides)
