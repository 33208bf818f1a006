"""How the serverless database behaves: :class:`ServerlessOptions`, read from the environment.

The choices are ``Literal``-style tuples; each environment variable is parsed by one small
helper that names the variable in its :class:`~peewee_serverless.errors.ConfigurationError`.
No other module of the package is imported here (``config`` builds databases, ``database``
reads options: neither needs the other to read a setting).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import ConfigurationError

__all__ = [
    "CLOSE_POLICIES",
    "ENGINES",
    "JITTERS",
    "LOG_INVOCATIONS",
    "MODES",
    "ServerlessOptions",
    "int_setting",
]

#: Accepted engine names (``DB_ENGINE`` values and URL schemes) -> canonical engine.
ENGINES: dict[str, str] = {
    "mysql": "mysql",
    "mariadb": "mysql",
    "postgres": "postgres",
    "postgresql": "postgres",
    "sqlite": "sqlite",
}
CLOSE_POLICIES = ("keep", "close")
MODES = ("direct", "proxy", "data-api")
LOG_INVOCATIONS = ("notable", "all", "off")
JITTERS = ("full", "decorrelated")

T = TypeVar("T")


def _number(kind: Callable[[str], T], name: str, raw: str, minimum: float | None = None) -> T:
    try:
        value = kind(raw.strip())
    except ValueError:
        raise ConfigurationError(name, f"must be a {kind.__name__}, got {raw!r}") from None
    if minimum is not None and value < minimum:  # type: ignore[operator]
        raise ConfigurationError(name, f"must be >= {minimum}, got {raw!r}")
    return value


def int_setting(
    name: str, default: int, *, minimum: int = 1, environ: Mapping[str, str] | None = None
) -> int:
    """An integer environment variable of an application; :class:`ConfigurationError` if bad."""
    raw = (os.environ if environ is None else environ).get(name, "").strip()
    return _number(int, name, raw, minimum) if raw else default


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
        ``direct`` (default) or ``proxy`` (behind RDS Proxy: no killing, no session ``SET``),
        or ``data-api`` (Aurora's Data API, see :mod:`peewee_serverless.data_api`).
    ``DB_LOG_INVOCATIONS``
        ``notable`` (default: the lifecycle's log line at INFO unless the invocation merely
        reused a warm connection), ``all`` or ``off``.
    ``DB_CONNECT_RETRIES``, ``DB_BACKOFF_BASE_MS``, ``DB_BACKOFF_CAP_MS``, ``DB_BACKOFF_JITTER``
        connect retry on connection limits / a restarting server (see :mod:`.backoff`).
    ``DB_USAGE_THRESHOLD``, ``DB_USAGE_CHECK_SECONDS``, ``DB_ZOMBIE_MIN_SECONDS``,
    ``DB_ZOMBIE_MAX_SECONDS``
        the connection-usage watch, zombie reaping and yielding (see :mod:`.governor`).
    """

    idle_check_seconds: float = 5.0
    close_policy: str = "keep"
    connect_timeout: float = 5.0
    application_name: str = "peewee-serverless"
    mode: str = "direct"
    log_invocations: str = "notable"
    #: ``None`` (unset): retry until the invocation's deadline minus a margin (see .backoff).
    connect_retries: int | None = None
    backoff_base_ms: float = 50.0
    backoff_cap_ms: float = 2000.0
    backoff_jitter: str = "decorrelated"
    usage_threshold: float = 0.8
    usage_check_seconds: float = 5.0
    zombie_min_seconds: float = 30.0
    zombie_max_seconds: float = 900.0

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
        if raw := environ.get("DB_LOG_INVOCATIONS"):
            kwargs["log_invocations"] = _choice("DB_LOG_INVOCATIONS", raw, LOG_INVOCATIONS)
        if raw := environ.get("DB_CONNECT_RETRIES"):
            kwargs["connect_retries"] = _number(int, "DB_CONNECT_RETRIES", raw, 0)
        for name, key in (
            ("DB_BACKOFF_BASE_MS", "backoff_base_ms"),
            ("DB_BACKOFF_CAP_MS", "backoff_cap_ms"),
            ("DB_USAGE_THRESHOLD", "usage_threshold"),
            ("DB_USAGE_CHECK_SECONDS", "usage_check_seconds"),
            ("DB_ZOMBIE_MIN_SECONDS", "zombie_min_seconds"),
            ("DB_ZOMBIE_MAX_SECONDS", "zombie_max_seconds"),
        ):
            if raw := environ.get(name):
                kwargs[key] = _number(float, name, raw, 0)
        if raw := environ.get("DB_BACKOFF_JITTER"):
            kwargs["backoff_jitter"] = _choice("DB_BACKOFF_JITTER", raw, JITTERS)
        options = cls(**kwargs)
        if options.backoff_base_ms <= 0 or options.backoff_cap_ms < options.backoff_base_ms:
            raise ConfigurationError(
                "DB_BACKOFF_CAP_MS", "must be >= DB_BACKOFF_BASE_MS, and the base above 0"
            )
        if options.zombie_max_seconds < options.zombie_min_seconds:
            raise ConfigurationError("DB_ZOMBIE_MAX_SECONDS", "must be >= DB_ZOMBIE_MIN_SECONDS")
        return options
