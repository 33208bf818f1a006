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
method not routed on a known path  405     ``method_not_allowed`` + ``Allow``
unsupported ``Content-Type``       415     ``unsupported_media_type`` (``details`` name ``body``)
request validation (pydantic)      422     ``validation_error`` (``details`` name each field)
body over the size limit           413     ``payload_too_large``
``peewee.IntegrityError``          409     ``conflict`` (unique violations; others 400)
:class:`DatabaseUnavailable`       503     ``database_unavailable`` + ``Retry-After``
anything else                      500     ``internal_error`` (logged, never shown)
a return value that is not JSON    500     ``internal_error`` (logged), with or without validation
=================================  ======  =====================================================

Request bodies: JSON when ``Content-Type`` is ``application/json`` or absent (Powertools' rule);
a form (``application/x-www-form-urlencoded``) or ``multipart/form-data`` for routes declaring
``Form`` / ``File`` parameters. A form-typed body that *is* a JSON object or array is read as
JSON: that is what ``curl -d '{...}'`` sends, and no form encoder produces it. Any other type
(``text/plain``, ``application/xml``...) answers 415.

This module imports Powertools; ``import peewee_serverless`` does not import it.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypedDict

import peewee

from .extras import needs_extra

# Without the `api` extra: a ModuleNotFoundError that names it (see extras.py).
with needs_extra("peewee_serverless.http", "api", "aws_lambda_powertools", "pydantic"):
    from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
    from aws_lambda_powertools.event_handler.api_gateway import (
        ProxyEventType,
        ResponseBuilder,
        Route,
    )
    from aws_lambda_powertools.event_handler.openapi.exceptions import (
        RequestUnsupportedContentType,
        RequestValidationError,
    )
    from aws_lambda_powertools.utilities.data_classes import (
        APIGatewayProxyEvent,
        APIGatewayProxyEventV2,
    )
    from aws_lambda_powertools.utilities.data_classes.common import BaseProxyEvent
    from pydantic import BaseModel

from .errors import DatabaseUnavailable, ErrorKind, PeeweeServerlessError, classify

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "ApiGatewayResolver",
    "ErrorBody",
    "ErrorOptions",
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
    405: "Method not allowed on this path; `Allow` lists the allowed ones",
    409: "Conflict with existing data, or an identical request still in progress",
    413: "Request body too large",
    415: "Unsupported Content-Type (send application/json)",
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


class ErrorOptions(TypedDict, total=False):
    """The optional keywords of :class:`HTTPError` and :func:`error_response`."""

    #: The body's ``details``: what is wrong with which field.
    details: Sequence[Mapping[str, Any]] | None
    #: Extra response headers (``Retry-After``, ``Allow``...).
    headers: Mapping[str, str] | None


class HTTPError(PeeweeServerlessError):
    """Raise from a route to answer with ``status`` and the standard JSON error body."""

    def __init__(
        self, status: int, error: str, message: str, **options: Unpack[ErrorOptions]
    ) -> None:
        self.status = status
        self.error = error
        self.message = message
        details = options.get("details")
        self.details = list(details) if details else None
        self.headers = dict(options.get("headers") or {})
        super().__init__(message)

    def as_response(self) -> Response:
        """This error as the one JSON error shape, a Powertools ``Response``."""
        body: dict[str, Any] = {"error": self.error, "message": self.message}
        if self.details:
            body["details"] = self.details
        return Response(
            status_code=self.status,
            content_type="application/json",
            body=json.dumps(body, ensure_ascii=False, separators=(",", ":")),
            headers=dict(self.headers),
        )


def error_response(
    status: int, error: str, message: str, **options: Unpack[ErrorOptions]
) -> Response:
    """The one JSON error shape as a Powertools ``Response``."""
    return HTTPError(status, error, message, **options).as_response()


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
        return exc.as_response()

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

    @app.exception_handler(RequestUnsupportedContentType)
    def _unsupported_type(exc: RequestUnsupportedContentType) -> Response:
        # Registered explicitly: the catch-all below would otherwise make it a 500.
        errors = list(exc.errors())
        reason = str(errors[0].get("msg")) if errors else "Unsupported content type"
        return error_response(
            415,
            "unsupported_media_type",
            "Request Content-Type is not supported; send application/json",
            details=[{"field": "body", "message": reason, "type": "unsupported_content_type"}],
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
        # A library that wraps what it calls (Powertools' idempotency wraps every store failure
        # in IdempotencyPersistenceLayerError) must not turn an outage into a 500.
        unavailable = _wrapped_unavailable(exc)
        if unavailable is not None:
            return _unavailable(unavailable)
        logger.exception("unhandled error in route")
        return error_response(500, "internal_error", "Internal server error")

    if hasattr(app, "not_found"):

        @app.not_found
        def _no_route(exc: Exception) -> Response:
            return error_response(404, "not_found", "No such route")


def _wrapped_unavailable(exc: BaseException) -> DatabaseUnavailable | None:
    """The :class:`DatabaseUnavailable` that ``exc`` was raised from or during, if any."""
    current: BaseException | None = exc
    for _ in range(16):  # a chain is short; the bound guards against a cycle
        if current is None:
            return None
        if isinstance(current, DatabaseUnavailable):
            return current
        current = current.__cause__ or current.__context__
    return None


class _GuardedResponseBuilder(ResponseBuilder[BaseProxyEvent]):
    """Powertools' response builder; a body its serializer refuses becomes the 500 JSON answer.

    The serializer runs after the route and outside its exception handlers, so a route returning
    (say) a ``datetime`` without validation would otherwise raise out of the handler.
    """

    def build(self, event: BaseProxyEvent, cors: Any = None) -> dict[str, Any]:
        try:
            return super().build(event, cors)
        except (TypeError, ValueError, OverflowError):
            logger.exception("route returned a value that cannot be serialized as JSON")
            self.response = error_response(500, "internal_error", "Internal server error")
            return super().build(event, cors)


_FORM = "application/x-www-form-urlencoded"


def _json_sent_as_form(event: dict[str, Any], limit: int) -> dict[str, Any]:
    """``event`` with a form-typed body that is a JSON object/array relabelled as JSON.

    ``curl -d '{"a": 1}'`` labels JSON as a form; parsed as a form it becomes one field named
    after the whole document. No form encoder writes a body starting with ``{`` or ``[``.
    """
    headers = event.get("headers") or {}
    name = next((k for k in headers if k.lower() == "content-type"), None)
    body = event.get("body")
    if name is None or not body or not str(headers[name]).lower().startswith(_FORM):
        return event
    if len(body) > limit * 2:  # base64 or not, far over the limit: the 413 check answers it
        return event
    try:
        raw = base64.b64decode(body, validate=True) if event.get("isBase64Encoded") else body
        if raw.lstrip()[:1] not in ("{", "[", b"{", b"["):
            return event
        json.loads(raw)
    except (binascii.Error, ValueError):
        return event
    relabelled = dict(headers)
    relabelled[name] = "application/json"
    multi = event.get("multiValueHeaders")
    changed = dict(event, headers=relabelled)
    if isinstance(multi, dict):
        changed["multiValueHeaders"] = {
            k: (["application/json"] if k.lower() == "content-type" else v)
            for k, v in multi.items()
        }
    return changed


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
        self._response_builder_class = _GuardedResponseBuilder
        install_error_handlers(self)

    def _to_proxy_event(self, event: dict) -> BaseProxyEvent:
        event = _json_sent_as_form(event, self.max_body_bytes)
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
            return self._response_builder_class(rejected, serializer=self._serializer)
        return super()._resolve()

    def _handle_not_found(self, method: str, path: str) -> ResponseBuilder:
        # A path some route serves, with another method: 405 + Allow (RFC 9110), not 404.
        # CORS preflights stay Powertools' business.
        allowed = sorted(
            {
                route.method
                for route in self._static_routes + self._dynamic_routes
                if route.rule.match(path)
            }
        )
        if not allowed or (method == "OPTIONS" and self._cors):
            return super()._handle_not_found(method, path)

        answer = error_response(
            405,
            "method_not_allowed",
            f"Method {method} is not allowed on this path",
            headers={"Allow": ", ".join(allowed)},
        )
        # Through a route like Powertools' own 404, so middlewares and CORS headers apply. A
        # lambda: validation would model an annotated return type (and cannot model Response).
        route = Route(
            rule=self._compile_regex(r".*"),
            method=method,
            path=path,
            func=lambda: answer,
            cors=self._cors_enabled,
            compress=False,
        )
        self.append_context(_route=route, _path=path)
        return self._call_route(route=route, route_arguments={})

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
