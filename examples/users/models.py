"""The database and the models of the users service.

The database is configured from the environment at import (``DB_*`` or ``DATABASE_URL``; SQLite
when nothing is set) and opens no connection until the first query.
"""

from __future__ import annotations

import datetime

from peewee import AutoField, CharField, DateTimeField, Model

from peewee_serverless import database_from_env

db = database_from_env()


def utcnow() -> datetime.datetime:
    """Naive UTC now (stored without zone on every backend, served with ``Z``)."""
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None, microsecond=0)


class BaseModel(Model):
    class Meta:
        database = db


class User(BaseModel):
    """A user; ``email`` is unique (stored lower-cased so every backend agrees on duplicates)."""

    id = AutoField()  # Peewee's implicit primary key, declared so that type checkers know it
    name = CharField(max_length=100)
    email = CharField(max_length=254, unique=True)
    created_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "users"

    def to_dict(self) -> dict[str, object]:
        """The JSON representation served by the API.

        Keys in sorted order: an idempotent replay is served from JSON stored with sorted keys,
        so the first answer and every replay are byte-for-byte the same.
        """
        return {
            "created_at": self.created_at.isoformat() + "Z",
            "email": self.email,
            "id": self.id,
            "name": self.name,
        }
