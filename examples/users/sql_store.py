"""The users store in the function's SQL database (``USERS_STORE=sql``, the default).

``create_user`` runs under :func:`peewee_serverless.idempotency.transactional_idempotent_function`:
the ``INSERT`` of the user, the read-back of what was stored and the completion of the
idempotency record commit in ONE transaction. A crash, a timeout or a lost ``COMMIT`` answer
therefore leaves either the user and the completed record (a retry with the same key gets the
stored first answer) or neither (a retry creates the user), never a user without its record,
which would make the retry answer "Email already exists" for the client's own user.
"""

from __future__ import annotations

import re
from typing import Any

from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig
from peewee import DataError, IntegrityError

from peewee_serverless import ErrorKind, classify
from peewee_serverless.config import int_setting
from peewee_serverless.idempotency import (
    PeeweePersistenceLayer,
    transactional_idempotent_function,
)

from .models import User, db
from .store import EmailTaken, ValueNotStorable

__all__ = ["SqlUsersStore", "idempotency_config", "idempotency_store"]

# MySQL ER_TRUNCATED_WRONG_VALUE_FOR_FIELD: "Incorrect string value: '\xF0\x9F...' for column
# `db`.`users`.`name` at row 1" (strict mode; a utf8mb3 column meeting a 4-byte character).
# The driver names the column only in the message text.
_MYSQL_WRONG_VALUE = 1366
_COLUMN = re.compile(r"for column [`'\w.]*?`?(\w+)`?'? at row")

idempotency_store = PeeweePersistenceLayer(db)
idempotency_config = IdempotencyConfig(
    # The client's key when it sent one, else the parsed (not raw) body: key order and
    # whitespace do not make a retry look new.
    event_key_jmespath="key || body",
    payload_validation_jmespath="body",
    expires_after_seconds=int_setting("IDEMPOTENCY_EXPIRES_SECONDS", 3600),
)


@transactional_idempotent_function(
    data_keyword_argument="request",
    persistence_store=idempotency_store,
    config=idempotency_config,
)
def _create_user_once(request: dict[str, Any]) -> dict[str, Any]:
    # Runs inside the transaction that also completes the idempotency record.
    body = request["body"]
    try:
        created = User.create(name=body["name"], email=body["email"])
    except IntegrityError as exc:
        if classify(exc) is ErrorKind.UNIQUE_VIOLATION:
            # Raising rolls back and removes the claim: a retry answers 409 again, from the table.
            raise EmailTaken(body["email"]) from None
        raise
    except DataError as exc:
        args = getattr(exc.__context__ or exc, "args", ())
        if args and args[0] == _MYSQL_WRONG_VALUE:
            found = _COLUMN.search(str(args[1]) if len(args) > 1 else "")
            field = found.group(1) if found and found.group(1) in body else "body"
            raise ValueNotStorable(field, "the database cannot store this text") from None
        raise
    # The answer is what the database holds (a column that silently altered a value would show
    # here, not be hidden behind an echo of the request).
    return User.get_by_id(created.id).to_dict()


class SqlUsersStore:
    """:class:`~examples.users.store.UsersStore` on the Peewee models of ``models.py``."""

    def start_invocation(self, context: Any) -> None:
        """The in-progress claim of this invocation lapses with its timeout."""
        idempotency_config.register_lambda_context(context)

    def create_user(self, request: dict[str, Any]) -> dict[str, Any]:
        """Create the user exactly once per request (see the module)."""
        return _create_user_once(request=request)

    def get_user(self, user_id: int) -> dict[str, Any] | None:
        """The user with ``user_id`` or ``None``."""
        user = User.get_or_none(User.id == user_id)
        return None if user is None else user.to_dict()

    def list_users(self, after: int, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` users with ids above ``after``, in id order."""
        query = User.select().where(User.id > after).order_by(User.id).limit(limit)
        return [u.to_dict() for u in query]
