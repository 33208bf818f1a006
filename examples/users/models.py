"""The database and the models of the users service.

The database is configured from the environment at import (``DB_*`` or ``DATABASE_URL``; SQLite
when nothing is set) and opens no connection until the first query.
"""

from __future__ import annotations

import datetime
import unicodedata

from peewee import AutoField, CharField, DateTimeField, Model

from peewee_serverless import database_from_env

db = database_from_env()


def utcnow() -> datetime.datetime:
    """Naive UTC now (stored without zone on every backend, served with ``Z``)."""
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None, microsecond=0)


#: Longest email stored (characters, after :func:`normalize_email`): the column's VARCHAR(254).
EMAIL_MAX_LENGTH = 254


def normalize_email(email: str) -> str:
    """The form an email is stored and compared in: NFC, lower-cased (full Unicode), NFC again.

    So ``Bo@Example.com`` and ``bo@example.COM`` are one user, and so are an ``é`` typed as one
    code point and as ``e`` + combining accent; ``jose@`` and ``josé@`` are two. The database
    then compares the stored strings exactly (``utf8mb4_bin`` on MySQL/MariaDB, see migration
    0003): every engine agrees on duplicates. Lower-casing can lengthen a string (``İ`` becomes
    ``i`` + combining dot), so lengths are checked on the result.
    """
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", email).lower())


class BaseModel(Model):
    class Meta:
        database = db


class User(BaseModel):
    """A user; ``email`` is unique, stored as :func:`normalize_email` returns it.

    The schema comes from ``migrations/`` (utf8mb4 with a binary email collation on MySQL).
    """

    id = AutoField()  # Peewee's implicit primary key, declared so that type checkers know it
    name = CharField(max_length=100)
    email = CharField(max_length=EMAIL_MAX_LENGTH, unique=True)
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
