"""The baseline of the cold-start benchmark: plain Peewee written the way the seed was.

A module-level database connected while the module is imported (the Lambda init phase), the
model and route of :mod:`bench.seed_model`: no lifecycle, no Powertools, no validation.
``bench/cold.py`` starts it exactly as it starts the example (a fresh interpreter, or
awslambdaric), so the difference is what peewee-serverless and the example's stack cost on a
cold start. The engine and connection come from the same ``DB_*`` variables.
"""

from __future__ import annotations

import os
from typing import Any

import peewee

from bench.seed_model import User, get_user


def _database() -> peewee.Database:
    engine = os.environ.get("DB_ENGINE", "sqlite")
    name = os.environ["DB_NAME"]
    if engine == "sqlite":
        return peewee.SqliteDatabase(name, pragmas={"journal_mode": "wal"})
    params: dict[str, Any] = {
        "host": os.environ.get("DB_HOST", "127.0.0.1"),
        "port": int(os.environ.get("DB_PORT") or (3306 if engine == "mysql" else 5432)),
        "user": os.environ.get("DB_USER"),
        "password": os.environ.get("DB_PASSWORD", ""),
    }
    if engine == "mysql":
        return peewee.MySQLDatabase(name, **params)
    return peewee.PostgresqlDatabase(name, **params)


db = _database()
db.connect()  # at import: the seed's module-level connection
User.bind(db)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """``GET /users/{id}``."""
    return get_user(event)
