"""What the routes need from storage: a *users store*, chosen by ``USERS_STORE``.

The routes in ``app.py`` call only the functions of :class:`UsersStore`; a store is the one
place that knows the database. ``USERS_STORE=sql`` (the default) is :mod:`.sql_store`: the
Peewee models in the function's SQL database, with exactly-once creation (the idempotency record
commits in the same transaction as the user). ``USERS_STORE=dynamodb`` is
:mod:`.dynamodb_store`: one DynamoDB table (``USERS_TABLE``), same answers.

A store's ``create_user`` is idempotent on ``request`` (``{"key": <Idempotency-Key or None>,
"body": <the validated, normalised body>}``) with Powertools' semantics: a retry gets the first
answer, a reused key with another body raises ``IdempotencyValidationError``, a call while the
first still runs raises :class:`~peewee_serverless.errors.RequestInProgress` (or Powertools'
``IdempotencyAlreadyInProgressError`` / ``IdempotencyInconsistentStateError``), a taken email
raises :class:`EmailTaken`, a value the database cannot store as given raises
:class:`ValueNotStorable` (nothing is written; the API answers 422 naming the field).
"""

from __future__ import annotations

import os
from typing import Any, Protocol

from peewee_serverless import ConfigurationError

__all__ = ["EmailTaken", "UsersStore", "ValueNotStorable", "store_from_env"]


class EmailTaken(Exception):
    """Another user has this (normalised) email; nothing was written."""


class ValueNotStorable(ValueError):
    """The database refused ``field``'s value as given (e.g. a 4-byte character in a 3-byte
    ``utf8mb3`` column before migration 0003); nothing was written."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


class UsersStore(Protocol):
    """The storage functions the routes use; every user is a dict as ``UserOut`` describes."""

    def start_invocation(self, context: Any) -> None:
        """Called once per invocation with the Lambda context (deadline of in-progress claims)."""

    def create_user(self, request: dict[str, Any]) -> dict[str, Any]:
        """Create the user of ``request["body"]`` exactly once per request (see the module)."""

    def get_user(self, user_id: int) -> dict[str, Any] | None:
        """The user with ``user_id``, ``None`` when there is none."""

    def list_users(self, after: int, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` users with ids above ``after``, in id order."""


def store_from_env(environ: Any = None) -> UsersStore:
    """The store named by ``USERS_STORE``: ``sql`` (the default) or ``dynamodb``."""
    env = os.environ if environ is None else environ
    name = (env.get("USERS_STORE") or "sql").strip().lower()
    if name == "sql":
        from .sql_store import SqlUsersStore

        return SqlUsersStore()
    if name == "dynamodb":
        from .dynamodb_store import DynamoDBUsersStore

        return DynamoDBUsersStore()
    raise ConfigurationError("USERS_STORE", f"unknown users store {name!r} (choose: sql, dynamodb)")
