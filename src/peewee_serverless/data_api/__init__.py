"""Peewee over Aurora's Data API (Aurora MySQL and Aurora PostgreSQL), no database socket.

Select it with ``DATABASE_URL=mysql+data-api://<cluster-arn>/<db>?secret_arn=<secret-arn>``
(``postgresql+data-api://`` for Aurora PostgreSQL) or ``DB_MODE=data-api`` with ``DB_ENGINE``,
``DB_CLUSTER_ARN`` and ``DB_SECRET_ARN``; :func:`~peewee_serverless.database_from_env` then
returns a :class:`~.database.DataApiMySQLDatabase` or :class:`~.database.DataApiPostgresqlDatabase`.

Modules: :mod:`.driver` (a thin DB-API 2.0 driver over boto3's ``rds-data`` client, and why not
``aurora-data-api``), :mod:`.database` (the Peewee classes: transactions, batches, retry within
the deadline), :mod:`.settings` (the environment), :mod:`.endpoint` (``peewee-serverless
data-api serve``: a local stand-in speaking the Data API protocol on a real server),
:mod:`.placeholders`. Importing this package imports neither boto3 nor a database driver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .database import DataApiMySQLDatabase, DataApiPostgresqlDatabase

__all__ = ["DataApiMySQLDatabase", "DataApiPostgresqlDatabase"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import database

        return getattr(database, name)
    raise AttributeError(name)
