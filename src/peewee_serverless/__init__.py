"""peewee-serverless: the Peewee ORM made safe and fast inside AWS Lambda.

Importing this package is cheap: it imports Peewee and nothing heavier (no Powertools, pydantic,
boto3). Names that need those are loaded on first attribute access.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .config import DatabaseSettings, ServerlessOptions, database_from_env, settings_from_env
from .database import (
    ConnectionEvents,
    ServerlessDatabaseMixin,
    ServerlessMySQLDatabase,
    ServerlessPostgresqlDatabase,
    ServerlessSqliteDatabase,
)
from .errors import (
    ConfigurationError,
    ConnectionLimitReached,
    ConnectionLost,
    DatabaseUnavailable,
    ErrorKind,
    MigrationLockTimeout,
    PackagingError,
    PeeweeServerlessError,
    classify,
)
from .lifecycle import database_lifecycle

__version__ = "0.1.0"

# Public names whose modules import heavy dependencies: resolved lazily (PEP 562).
_LAZY: dict[str, str] = {
    "PeeweePersistenceLayer": ".idempotency",
    "migration_handler": ".migrate",
    "migration_lock": ".migrate",
    "run_migrations": ".migrate",
    "build_package": ".packaging",
    "CredentialSource": ".secrets",
    "IamTokenSource": ".secrets",
    "SecretsManagerSource": ".secrets",
    "StaticCredentials": ".secrets",
    "TlsSettings": ".tls",
}

__all__ = [
    "ConfigurationError",
    "ConnectionEvents",
    "ConnectionLimitReached",
    "ConnectionLost",
    "DatabaseSettings",
    "DatabaseUnavailable",
    "ErrorKind",
    "MigrationLockTimeout",
    "PackagingError",
    "PeeweeServerlessError",
    "ServerlessDatabaseMixin",
    "ServerlessMySQLDatabase",
    "ServerlessOptions",
    "ServerlessPostgresqlDatabase",
    "ServerlessSqliteDatabase",
    "classify",
    "database_from_env",
    "database_lifecycle",
    "settings_from_env",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'peewee_serverless' has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value
