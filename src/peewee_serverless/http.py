"""Database outcomes as HTTP answers, on Powertools' API Gateway resolver.

Every error leaves as one JSON shape::

    {"error": "<stable machine code>", "message": "<for humans>", "details": [...optional...]}

=================================  ======  =====================================================
outcome                            status  error code
=================================  ======  =====================================================
:class:`HTTPError` raised by code  any     whatever the code said (``conflict``, ``bad_request``...)
``peewee.DoesNotExist``            404     ``not_found``
no route                           404     ``not_found``
malformed JSON body                400     ``invalid_json``
request validation (pydantic)      422     ``validation_error`` (``details`` name each field)
body over the size limit           413     ``payload_too_large``
``peewee.IntegrityError``          409     ``conflict`` (unique violations; others 400)
:class:`DatabaseUnavailable`       503     ``database_unavailable`` + ``Retry-After``
anything else                      500     ``internal_error`` (logged, never shown)
=================================  ======  =====================================================

This module imports Powertools; ``import peewee_serverless`` does not import it.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import peewee
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.api_gateway import ProxyEventType, ResponseBuilder
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.utilities.data_classes import (
    APIGatewayProxyEvent,
    APIGatewayProxyEventV2,
)
from aws_lambda_powertools.utilities.data_classes.common import BaseProxyEvent
from pydantic import BaseModel

from .errors import DatabaseUnavailable, ErrorKind, classify

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "ApiGatewayResolver",
    "ErrorBody",
    "HTTPError",
    "error_response",
    "error_responses",
    "install_error_handlers",
]

logger = logging.getLogger("peewee_serverless.http")

#: Default request body limit: far below Lambda's 6 MB, far above any sane JSON for a CRUD API.
DEFAULT_MAX_BODY_BYTES = 64 * 1024


class ErrorDetail(BaseModel):
    """One problem with a request: which field, what is wrong."""

    field: str
    message: str | None = None
    type: str | None = None


class ErrorBody(BaseModel):
    """The JSON body of every error answer (documented in OpenAPI by :func:`error_responses`)."""

    error: str
    message: str
    details: list[ErrorDetail] | None = None


_ERROR_DESCRIPTIONS = {
    400: "Malformed request (invalid JSON, base64 or parameter)",
    404: "Not found",
    409: "Conflict with existing data, or an identical request still in progress",
    413: "Request body too large",
    422: "Validation failed; `details` name the fields",
    500: "Internal error",
    503: "Database busy or unreachable; retry after `Retry-After` seconds",
}


def error_responses(*statuses: int) -> dict[int, Any]:
    """OpenAPI ``responses=`` for a route: each status with the :class:`ErrorBody` schema."""
    responses: dict[int, Any] = {}
    for status in statuses:
        doc: dict[str, Any] = {
            "description": _ERROR_DESCRIPTIONS.get(status, "Error"),
            "content": {"application/json": {"model": ErrorBody}},
        }
        if status == 503:
            doc["headers"] = {
                "Retry-After": {"description": "seconds", "schema": {"type": "integer"}}
            }
        responses[status] = doc
    return responses


class HTTPError(Exception):
    """Raise from a route to answer with ``status`` and the standard JSON error body."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        *,
        details: Sequence[Mapping[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        self.error = error
        self.message = message
        self.details = list(details) if details else None
        self.headers = dict(headers or {})
        super().__init__(message)


def error_response(
    status: int,
    error: str,
    message: str,
    *,
    details: Sequence[Mapping[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """The one JSON error shape as a Powertools ``Response``."""
    body: dict[str, Any] = {"error": error, "message": message}
    if details:
        body["details"] = list(details)
    return Response(
        status_code=status,
        content_type="application/json",
        body=json.dumps(body, ensure_ascii=False, separators=(",", ":")),
        headers=dict(headers or {}),
    )


def _field_name(loc: Sequence[Any]) -> str:
    # Powertools reports ("body", "email"); a missing body is ("body",).
    parts = [str(p) for p in loc]
    if len(parts) > 1 and parts[0] == "body":
        parts = parts[1:]
    return ".".join(parts) or "body"


def _validation_details(errors: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    details = []
    for err in errors:
        details.append(
            {
                "field": _field_name(err.get("loc", ())),
                "message": str(err.get("msg", "invalid value")),
                "type": str(err.get("type", "value_error")),
            }
        )
    return details


def install_error_handlers(app: Any) -> None:
    """Register the error mapping of this module on a resolver (or a ``Router``)."""

    @app.exception_handler(HTTPError)
    def _http_error(exc: HTTPError) -> Response:
        return error_response(
            exc.status, exc.error, exc.message, details=exc.details, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    def _validation(exc: RequestValidationError) -> Response:
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            detail = next(e for e in errors if e.get("type") == "json_invalid")
            reason = str((detail.get("ctx") or {}).get("error") or "malformed JSON")
            return error_response(
                400,
                "invalid_json",
                "Request body is not valid JSON",
                details=[{"field": "body", "message": reason, "type": "json_invalid"}],
            )
        return error_response(
            422, "validation_error", "Request is invalid", details=_validation_details(errors)
        )

    @app.exception_handler(peewee.DoesNotExist)
    def _not_found(exc: peewee.DoesNotExist) -> Response:
        name = type(exc).__name__.removesuffix("DoesNotExist") or "Resource"
        return error_response(404, "not_found", f"{name} not found")

    @app.exception_handler(peewee.IntegrityError)
    def _integrity(exc: peewee.IntegrityError) -> Response:
        if classify(exc) is ErrorKind.UNIQUE_VIOLATION:
            return error_response(409, "conflict", "Conflicts with an existing record")
        return error_response(400, "constraint_violation", "Request violates a data constraint")

    @app.exception_handler(DatabaseUnavailable)
    def _unavailable(exc: DatabaseUnavailable) -> Response:
        return error_response(
            503,
            "database_unavailable",
            "The database is busy or unreachable; retry later",
            headers={"Retry-After": str(max(1, int(exc.retry_after)))},
        )

    @app.exception_handler(Exception)
    def _internal(exc: Exception) -> Response:
        logger.exception("unhandled error in route")
        return error_response(500, "internal_error", "Internal server error")

    if hasattr(app, "not_found"):

        @app.not_found
        def _no_route(exc: Exception) -> Response:
            return error_response(404, "not_found", "No such route")


class ApiGatewayResolver(APIGatewayRestResolver):
    """One resolver for API Gateway REST (v1) *and* HTTP API (v2) events.

    The event's ``version`` picks the event class, so one handler serves both integrations
    (and the same Lambda can sit behind either). Routes are Powertools routes; errors use
    :func:`install_error_handlers`; bodies over ``max_body_bytes`` answer 413 before any route
    runs (API Gateway itself allows 10 MB and Lambda 6 MB: far too much for JSON).
    """

    def __init__(self, *args: Any, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.max_body_bytes = max_body_bytes
        install_error_handlers(self)

    def _to_proxy_event(self, event: dict) -> BaseProxyEvent:
        if event.get("version") == "2.0":
            self._proxy_type = ProxyEventType.APIGatewayProxyEventV2
            return APIGatewayProxyEventV2(event, self._json_body_deserializer)
        self._proxy_type = ProxyEventType.APIGatewayProxyEvent
        return APIGatewayProxyEvent(event, self._json_body_deserializer)

    def _get_base_path(self) -> str:
        event = self.current_event
        stage = event.request_context.stage
        if isinstance(event, APIGatewayProxyEventV2):
            path = event.request_context.http.path
        else:
            path = event.request_context.path or ""
        if stage and stage != "$default" and path.startswith(f"/{stage}"):
            return f"/{stage}"
        return ""

    def _resolve(self) -> ResponseBuilder:
        # Checked before routing, so that request validation never parses an oversize body.
        rejected = self._check_body(self.current_event)
        if rejected is not None:
            return ResponseBuilder(rejected, serializer=self._serializer)
        return super()._resolve()

    def _check_body(self, event: BaseProxyEvent) -> Response | None:
        body = event.body
        if not body:
            return None
        size = len(body)
        if event.is_base64_encoded:
            try:
                raw = base64.b64decode(body, validate=True)
            except (binascii.Error, ValueError):
                return error_response(
                    400,
                    "invalid_body",
                    "Body is not valid base64",
                    details=[{"field": "body", "message": "invalid base64", "type": "base64"}],
                )
            size = len(raw)
            # Powertools decodes a JSON body as UTF-8 and would fail with a 500 otherwise.
            content_type = (event.headers.get("content-type") or "").lower()
            if size <= self.max_body_bytes and (not content_type or "json" in content_type):
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError:
                    return error_response(
                        400,
                        "invalid_body",
                        "Body is not valid UTF-8",
                        details=[{"field": "body", "message": "invalid UTF-8", "type": "utf8"}],
                    )
        if size > self.max_body_bytes:
            return error_response(
                413,
                "payload_too_large",
                f"Request body exceeds {self.max_body_bytes} bytes",
                details=[{"field": "body", "message": f"{size} bytes", "type": "too_large"}],
            )
        return None
