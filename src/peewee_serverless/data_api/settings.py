"""Choosing the Data API from the environment (called by ``database_from_env``).

Two spellings, like the direct connection's:

* ``DATABASE_URL=mysql+data-api://<cluster-arn>/<db>?secret_arn=<secret-arn>`` (or
  ``postgresql+data-api://``, ``postgres+data-api://``); the ARNs may be written as they are
  (their colons need no quoting) or percent-encoded;
* ``DB_MODE=data-api`` with ``DB_ENGINE`` (``mysql`` / ``postgres``), ``DB_CLUSTER_ARN``,
  ``DB_SECRET_ARN`` and optionally ``DB_NAME`` (else the secret's / cluster's default database).

``AWS_ENDPOINT_URL_RDS_DATA`` (boto3's setting, read from the same environment) points the
client at another endpoint, e.g. ``peewee-serverless data-api serve``.
``DB_DATA_API_TIMEOUT`` (seconds, default 45: the Data API's own statement limit) bounds the wait
for one answer. Every other ``DB_*`` option (back-off, connect timeout, logging) applies as usual.
Nothing here imports boto3 or makes a call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ConfigurationError
from ..options import ENGINES, ServerlessOptions, _number

__all__ = ["SCHEMES", "data_api_from_env"]

#: DATABASE_URL schemes -> canonical engine.
SCHEMES = {f"{name}+data-api": engine for name, engine in ENGINES.items() if engine != "sqlite"}
#: Settings that name a server socket: meaningless (and a sign of a mix-up) with the Data API.
_SOCKET_SETTINGS = ("DB_HOST", "DB_PORT", "DB_USER", "DB_PASSWORD", "DB_IAM_AUTH")
DEFAULT_TIMEOUT = 45.0


def _check_arn(setting: str, arn: str, service: str, what: str) -> str:
    parts = arn.split(":")
    if len(parts) < 6 or parts[0] != "arn" or parts[2] != service or not parts[3]:
        # The value is not echoed: a mistyped setting may hold something secret.
        raise ConfigurationError(setting, f"must be {what} (arn:aws:{service}:<region>:...)")
    return arn


def _from_url(url: str) -> tuple[str, str, str, str] | None:
    scheme, sep, rest = url.partition("://")
    engine = SCHEMES.get(scheme.strip().lower())
    if not sep or engine is None:
        return None
    # Only a data-api URL needs urllib.parse (and the ipaddress module it loads): not at
    # import, which every database_from_env() does on the cold path.
    from urllib.parse import parse_qs, unquote

    location, _, query = rest.partition("?")
    cluster, _, database = location.partition("/")
    secrets = parse_qs(query).get("secret_arn") or [""]
    cluster_arn, secret_arn = unquote(cluster), secrets[0]
    if not cluster_arn:
        raise ConfigurationError(
            "DATABASE_URL", f"{scheme} URLs need the cluster ARN: {scheme}://<cluster-arn>/<db>"
        )
    if not secret_arn:
        raise ConfigurationError("DATABASE_URL", f"{scheme} URLs need ?secret_arn=<secret-arn>")
    return engine, cluster_arn, secret_arn, unquote(database.strip("/"))


def data_api_from_env(environ: Mapping[str, str], **overrides: Any) -> Any:
    """The Data API database the environment asks for, or ``None`` when it asks for none."""
    url = environ.get("DATABASE_URL", "").strip()
    mode = environ.get("DB_MODE", "").strip().lower()
    parsed = _from_url(url) if url else None
    if parsed is None:
        if mode != "data-api":
            return None
        if url:
            raise ConfigurationError(
                "DATABASE_URL", "with DB_MODE=data-api use a mysql+data-api:// URL or no URL"
            )
        raw_engine = environ.get("DB_ENGINE", "").strip().lower()
        engine = ENGINES.get(raw_engine)
        if engine is None or engine == "sqlite":
            raise ConfigurationError("DB_ENGINE", "must be mysql or postgres with DB_MODE=data-api")
        cluster_arn = environ.get("DB_CLUSTER_ARN", "").strip()
        secret_arn = environ.get("DB_SECRET_ARN", "").strip()
        if not cluster_arn:
            raise ConfigurationError("DB_CLUSTER_ARN", "is required with DB_MODE=data-api")
        if not secret_arn:
            raise ConfigurationError("DB_SECRET_ARN", "is required with DB_MODE=data-api")
        database = environ.get("DB_NAME", "").strip()
        source = "DB_CLUSTER_ARN", "DB_SECRET_ARN"
    else:
        engine, cluster_arn, secret_arn, database = parsed
        source = "DATABASE_URL", "DATABASE_URL"
    for name in _SOCKET_SETTINGS:
        if environ.get(name, "").strip():
            raise ConfigurationError(name, "does not apply to the Data API (no database socket)")
    _check_arn(source[0], cluster_arn, "rds", "an Aurora cluster ARN")
    _check_arn(source[1], secret_arn, "secretsmanager", "a Secrets Manager secret ARN")
    timeout = DEFAULT_TIMEOUT
    if raw := environ.get("DB_DATA_API_TIMEOUT", "").strip():
        timeout = _number(float, "DB_DATA_API_TIMEOUT", raw, 1)
    options = ServerlessOptions.from_env({**environ, "DB_MODE": "data-api"})

    from .database import DataApiMySQLDatabase, DataApiPostgresqlDatabase

    cls = DataApiMySQLDatabase if engine == "mysql" else DataApiPostgresqlDatabase
    params: dict[str, Any] = {
        "resource_arn": cluster_arn,
        "secret_arn": secret_arn,
        "read_timeout": timeout,
    }
    # boto3's own names for a custom endpoint, read from the same environment as the rest.
    endpoint = environ.get("AWS_ENDPOINT_URL_RDS_DATA") or environ.get("AWS_ENDPOINT_URL")
    if endpoint and endpoint.strip():
        params["endpoint_url"] = endpoint.strip()
    params.update(overrides)
    return cls(database, options=options, **params)
