"""peewee-serverless: the Peewee ORM made safe and fast inside AWS Lambda.

Importing this package is cheap: it imports Peewee and nothing heavier (no Powertools, pydantic,
boto3). Names that need those are loaded on first attribute access.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .config import DatabaseSettings, ServerlessOptions, database_from_env, settings_from_env
from .database import (
    ConnectionEvents,
    ServerlessDatabase,
    ServerlessDatabaseMixin,
    ServerlessMySQLDatabase,
    ServerlessPostgresqlDatabase,
    ServerlessSqliteDatabase,
)
from .errors import *  # noqa: F403 - the whole exception tree and classify (errors.__all__)
from .errors import __all__ as _errors_all
from .lifecycle import database_lifecycle

__version__ = "0.1.0"

if TYPE_CHECKING:
    # The lazy names below, seen with their real types by type checkers (never imported here);
    # `X as X` marks each as re-exported (mypy --strict, ruff).
    from .aws_deadline import DeadlineBoundClient as DeadlineBoundClient
    from .idempotency import PeeweePersistenceLayer as PeeweePersistenceLayer
    from .idempotency import (
        transactional_idempotent_function as transactional_idempotent_function,
    )
    from .migrate import migration_handler as migration_handler
    from .migrate import migration_lock as migration_lock
    from .migrate import run_migrations as run_migrations
    from .packaging import build_package as build_package
    from .secrets import CredentialSource as CredentialSource
    from .secrets import IamTokenSource as IamTokenSource
    from .secrets import SecretsManagerSource as SecretsManagerSource
    from .secrets import StaticCredentials as StaticCredentials
    from .tls import TlsSettings as TlsSettings

# Public names whose modules import heavy dependencies: resolved lazily (PEP 562).
_LAZY: dict[str, str] = {
    "DeadlineBoundClient": ".aws_deadline",
    "PeeweePersistenceLayer": ".idempotency",
    "transactional_idempotent_function": ".idempotency",
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
    "ConnectionEvents",
    "DatabaseSettings",
    "ServerlessDatabase",
    "ServerlessDatabaseMixin",
    "ServerlessMySQLDatabase",
    "ServerlessOptions",
    "ServerlessPostgresqlDatabase",
    "ServerlessSqliteDatabase",
    "database_from_env",
    "database_lifecycle",
    "settings_from_env",
    *_errors_all,  # listed once, in errors.py: every error of the tree is exported
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'peewee_serverless' has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value
