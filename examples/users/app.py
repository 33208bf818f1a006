"""The users service: ``POST /users``, ``GET /users`` (cursor-paginated), ``GET /users/{id}``.

One handler answers API Gateway REST (v1) and HTTP API (v2) events. Deploy with the handler
``examples.users.app.handler``; run locally with
``peewee-serverless serve examples.users.app:handler``.
"""

from __future__ import annotations

import base64
import binascii
import os
from typing import Annotated, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from peewee import IntegrityError
from pydantic import BaseModel, ConfigDict, Field

from peewee_serverless import database_lifecycle
from peewee_serverless.http import ApiGatewayResolver, HTTPError

from .models import User, db

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "users"))
app = ApiGatewayResolver(enable_validation=True)

MAX_PAGE = 100
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s.]+$"


class NewUser(BaseModel):
    """The body of ``POST /users``. Strict: ``"name": 123`` is an error, not ``"123"``."""

    model_config = ConfigDict(strict=True, extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=100)
    email: str = Field(min_length=3, max_length=254, pattern=EMAIL_PATTERN)


def _encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(str(last_id).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = int(base64.urlsafe_b64decode(padded.encode()).decode())
    except (binascii.Error, ValueError, UnicodeError):
        raise HTTPError(
            400,
            "bad_request",
            "Invalid cursor",
            details=[{"field": "cursor", "message": "not a cursor from this API"}],
        ) from None
    if value < 0:
        raise HTTPError(400, "bad_request", "Invalid cursor", details=[{"field": "cursor"}])
    return value


@app.post("/users", status_code=201)
def create_user(user: NewUser) -> dict[str, Any]:
    """Create a user; a taken email is a 409 and writes nothing."""
    try:
        with db.atomic():
            created = User.create(name=user.name, email=user.email.lower())
    except IntegrityError:
        raise HTTPError(409, "conflict", "Email already exists") from None
    return created.to_dict()


@app.get("/users")
def list_users(
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    """Users in id order, ``limit`` at a time; ``next_cursor`` fetches the following page."""
    query = User.select().order_by(User.id).limit(limit + 1)
    if cursor:
        query = query.where(User.id > _decode_cursor(cursor))
    rows = list(query)
    page = rows[:limit]
    next_cursor = _encode_cursor(page[-1].id) if len(rows) > limit else None
    return {"users": [u.to_dict() for u in page], "next_cursor": next_cursor}


@app.get("/users/<user_id>")
def get_user(user_id: Annotated[int, Path(ge=1, le=2**31 - 1)]) -> dict[str, Any]:
    """One user; 404 when there is none with this id."""
    return User.get_by_id(user_id).to_dict()


@logger.inject_lambda_context
@database_lifecycle(db, logger=logger)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The Lambda entry point."""
    return app.resolve(event, context)
