"""The users service: ``POST /users``, ``GET /users`` (cursor-paginated), ``GET /users/{id}``.

One handler answers API Gateway REST (v1) and HTTP API (v2) events. Deployed with the handler
``users.app.handler`` (the zip stores this folder as the package ``users``); run locally with
``peewee-serverless serve examples.users.app:handler``.

The routes call a *users store* (``store.py``; ``USERS_STORE`` picks it, ``sql`` by default)
and translate its outcomes into HTTP. ``POST /users`` is idempotent and exactly-once: the key is
the ``Idempotency-Key`` header, or the parsed JSON body when there is none; the user and the
idempotency record commit in one transaction (``sql_store.py``). A retry gets the first
response; a duplicate while the first may still be running gets 409 ``request_in_progress``
with ``Retry-After``; a reused key with another body gets 422 ``idempotency_key_reused``.
Emails are normalised (``models.normalize_email``) before they are validated, keyed and stored.
The OpenAPI document is served at ``/openapi.json`` (``scripts/openapi`` writes
``docs/openapi.json``).

Settings: ``CORS_ALLOW_ORIGINS`` (comma-separated origins, ``*`` for any; unset: no CORS
headers), ``API_MAX_BODY_BYTES`` (default 65536), ``IDEMPOTENCY_EXPIRES_SECONDS`` (default 3600).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from typing import Annotated, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import CORSConfig, Response
from aws_lambda_powertools.event_handler.openapi.params import Header, Path, Query
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyInconsistentStateError,
    IdempotencyPersistenceLayerError,
    IdempotencyValidationError,
)
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from peewee_serverless import DatabaseUnavailable, RequestInProgress, database_lifecycle
from peewee_serverless.config import int_setting
from peewee_serverless.http import (
    DEFAULT_MAX_BODY_BYTES,
    ApiGatewayResolver,
    HTTPError,
    error_responses,
)

from .models import EMAIL_MAX_LENGTH, db, normalize_email
from .store import EmailTaken, ValueNotStorable, store_from_env

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "users"))


def _cors_from_env() -> CORSConfig | None:
    origins = [o.strip() for o in os.environ.get("CORS_ALLOW_ORIGINS", "").split(",") if o.strip()]
    if not origins:
        return None
    return CORSConfig(
        allow_origin=origins[0],
        extra_origins=origins[1:] or None,
        allow_headers=["Content-Type", "Idempotency-Key"],
        max_age=600,
    )


app = ApiGatewayResolver(
    enable_validation=True,
    cors=_cors_from_env(),
    max_body_bytes=int_setting("API_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES),
)

OPENAPI: dict[str, Any] = {"title": "Users service", "version": "1.0.0"}
store = store_from_env()
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,128}$"

MAX_PAGE = 100
# No control characters anywhere: PostgreSQL refuses NUL in text, and no name needs them.
NAME_PATTERN = r"^[^\x00-\x1f\x7f]+$"
EMAIL_PATTERN = r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s.\x00-\x1f\x7f]+$"
_EMAIL_FORM = re.compile(EMAIL_PATTERN)


def _normalized_email(value: str) -> str:
    # The stored form is what must fit the column and keep the form: lower-casing can lengthen
    # a string (U+0130 "İ" becomes two code points), so the checks run again on the result.
    email = normalize_email(value)
    if len(email) > EMAIL_MAX_LENGTH:
        raise ValueError(
            f"longer than {EMAIL_MAX_LENGTH} characters once lower-cased ({len(email)})"
        )
    if not _EMAIL_FORM.match(email):
        raise ValueError("not an email address once lower-cased")
    return email


class NewUser(BaseModel):
    """The body of ``POST /users``. Strict: ``"name": 123`` is an error, not ``"123"``."""

    model_config = ConfigDict(strict=True, extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=100, pattern=NAME_PATTERN)
    email: Annotated[
        str,
        Field(
            min_length=3,
            max_length=EMAIL_MAX_LENGTH,
            pattern=EMAIL_PATTERN,
            description="Stored and compared lower-cased (Unicode NFC); at most 254 characters "
            "after lower-casing",
        ),
        AfterValidator(_normalized_email),
    ]


class UserOut(BaseModel):
    """A user as the API returns it (documentation of the responses)."""

    id: int
    name: str
    email: str
    created_at: str = Field(description="UTC, ISO 8601 with Z")


class UserPage(BaseModel):
    """One page of users; ``next_cursor`` is null on the last page."""

    users: list[UserOut]
    next_cursor: str | None


def _ok(status: int, description: str, model: type[BaseModel]) -> dict[int, Any]:
    return {status: {"description": description, "content": {"application/json": {"model": model}}}}


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


@app.post(
    "/users",
    status_code=201,
    responses=_ok(201, "The created user (or, for a retry, the first answer)", UserOut)
    | error_responses(400, 409, 413, 415, 422, 503),
)
def create_user(
    user: NewUser,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            pattern=IDEMPOTENCY_KEY_PATTERN,
            description="Client-chosen key (1-128 printable ASCII); a retry with the same key "
            "and body returns the first response",
        ),
    ] = None,
) -> dict[str, Any]:
    """Create a user (idempotent); a taken email is a 409 and writes nothing."""
    request = {"key": idempotency_key, "body": user.model_dump(mode="json")}
    try:
        return store.create_user(request)
    except EmailTaken:
        raise HTTPError(409, "conflict", "Email already exists") from None
    except ValueNotStorable as exc:
        # Refused by the database as given: the client's value, so a 4xx naming the field.
        raise HTTPError(
            422,
            "validation_error",
            "Request is invalid",
            details=[{"field": exc.field, "message": str(exc), "type": "not_storable"}],
        ) from None
    except IdempotencyValidationError:
        raise HTTPError(
            422,
            "idempotency_key_reused",
            "This Idempotency-Key was already used with a different request body",
        ) from None
    except (IdempotencyAlreadyInProgressError, IdempotencyInconsistentStateError) as exc:
        # RequestInProgress knows when the running attempt's claim lapses (its Lambda timeout).
        retry_after = exc.retry_after if isinstance(exc, RequestInProgress) else 1
        raise HTTPError(
            409,
            "request_in_progress",
            "An identical request is still being processed; retry shortly",
            headers={"Retry-After": str(retry_after)},
        ) from None
    except IdempotencyPersistenceLayerError as exc:
        # Powertools wraps store failures; a database outage must still answer 503.
        if isinstance(exc.__cause__, DatabaseUnavailable):
            raise exc.__cause__ from None
        raise


@app.get(
    "/users",
    responses=_ok(200, "A page of users in id order", UserPage) | error_responses(400, 422, 503),
)
def list_users(
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    """Users in id order, ``limit`` at a time; ``next_cursor`` fetches the following page."""
    rows = store.list_users(_decode_cursor(cursor) if cursor else 0, limit + 1)
    page = rows[:limit]
    next_cursor = _encode_cursor(page[-1]["id"]) if len(rows) > limit else None
    return {"users": page, "next_cursor": next_cursor}


@app.get(
    "/users/<user_id>",
    responses=_ok(200, "The user", UserOut) | error_responses(404, 422, 503),
)
def get_user(user_id: Annotated[int, Path(ge=1, le=2**31 - 1)]) -> dict[str, Any]:
    """One user; 404 when there is none with this id."""
    user = store.get_user(user_id)
    if user is None:
        raise HTTPError(404, "not_found", "User not found")
    return user


@app.get("/openapi.json", include_in_schema=False)
def openapi_document() -> Any:  # not `Response`: Powertools would try to model it
    """The OpenAPI document of this service (Powertools' generation)."""
    return Response(200, "application/json", app.get_openapi_json_schema(**OPENAPI))


@logger.inject_lambda_context
@database_lifecycle(db, logger=logger)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The Lambda entry point."""
    # The in-progress idempotency claim lapses with this invocation's timeout.
    store.start_invocation(context)
    return app.resolve(event, context)
