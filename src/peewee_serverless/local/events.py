"""HTTP request <-> API Gateway Lambda proxy event, the way API Gateway translates them.

Two payload formats:

* ``"v1"``: REST API proxy integration (payload format 1.0): ``headers`` keep their case and the
  last value of a repeated header, ``multiValueHeaders`` / ``multiValueQueryStringParameters``
  hold every value, empty maps are ``null``, the resource is the greedy ``/{proxy+}``.
* ``"v2"``: HTTP API (payload format 2.0): header names lower-cased and repeated values joined
  with commas, cookies moved out of the headers into ``cookies``, empty fields left out.

Query values and ``path`` are percent-decoded without turning ``+`` into a space (API Gateway
does not either); ``rawPath`` / ``rawQueryString`` are passed as received. Bodies that are valid
UTF-8 with a textual content type (or none) travel as strings, everything else base64-encoded.

The reverse direction, :func:`parse_response`, applies API Gateway's rules to what the handler
returned: merge ``headers`` and ``multiValueHeaders`` (v1), ``cookies`` become ``Set-Cookie``
(v2), base64 bodies are decoded, and a v2 result without ``statusCode`` is a 200 JSON response.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from ..errors import InvalidInput

__all__ = [
    "EVENT_VERSIONS",
    "HttpRequest",
    "HttpResponse",
    "MalformedResponseError",
    "build_event",
    "build_v1_event",
    "build_v2_event",
    "event_builder",
    "is_text_body",
    "parse_response",
]

#: Supported payload formats, in the spelling the CLI accepts.
EVENT_VERSIONS = ("v1", "v2")

ACCOUNT_ID = "123456789012"
API_ID = "local"
#: The stage a local REST API request pretends to come through (``requestContext.stage``).
V1_STAGE = "local"

_TEXT_TYPE_MARKERS = ("json", "xml", "javascript", "x-www-form-urlencoded", "yaml", "csv")


@dataclass(slots=True)
class HttpRequest:
    """One HTTP request as received: raw target parts, headers in order (repeats kept), body."""

    method: str
    path: str
    query_string: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    source_ip: str = "127.0.0.1"

    @classmethod
    def from_target(
        cls,
        method: str,
        target: str,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        source_ip: str = "127.0.0.1",
    ) -> HttpRequest:
        """Split a request target (``/path?query``) into path and raw query string."""
        path, _, query = target.partition("?")
        return cls(method.upper(), path or "/", query, list(headers), body, source_ip)


@dataclass(slots=True)
class HttpResponse:
    """The HTTP response API Gateway would send for a handler's result."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


class MalformedResponseError(InvalidInput):
    """The handler returned something API Gateway could not turn into a response (its 502)."""


def is_text_body(content_type: str | None, body: bytes) -> str | None:
    """The body as a string when it should travel unencoded, else None (base64 it)."""
    if content_type:
        ct = content_type.lower()
        if not ct.startswith("text/") and not any(m in ct for m in _TEXT_TYPE_MARKERS):
            return None
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _encode_body(content_type: str | None, body: bytes) -> tuple[str | None, bool]:
    if not body:
        return None, False
    text = is_text_body(content_type, body)
    if text is not None:
        return text, False
    return base64.b64encode(body).decode("ascii"), True


def _parse_query(query: str) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    if not query:
        return pairs
    for part in query.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        pairs.append((unquote(key), unquote(value)))
    return pairs


def _request_time(now: float) -> str:
    return time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now))


def build_v1_event(request: HttpRequest) -> dict[str, Any]:
    """A REST API (payload format 1.0) proxy event for ``request``."""
    headers: dict[str, str] = {}
    multi_headers: dict[str, list[str]] = {}
    content_type = host = user_agent = None
    for name, value in request.headers:
        headers[name] = value  # API Gateway keeps the last value of a repeated header here
        multi_headers.setdefault(name, []).append(value)
        lower = name.lower()
        if lower == "content-type":
            content_type = value
        elif lower == "host":
            host = value
        elif lower == "user-agent":
            user_agent = value

    query: dict[str, str] = {}
    multi_query: dict[str, list[str]] = {}
    for key, value in _parse_query(request.query_string):
        query[key] = value
        multi_query.setdefault(key, []).append(value)

    path = unquote(request.path)
    proxy = path.lstrip("/")
    body, is_b64 = _encode_body(content_type, request.body)
    now = time.time()
    request_id = str(uuid.uuid4())
    resource = "/{proxy+}" if proxy else "/"
    return {
        "resource": resource,
        "path": path,
        "httpMethod": request.method,
        "headers": headers or None,
        "multiValueHeaders": multi_headers or None,
        "queryStringParameters": query or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": {"proxy": proxy} if proxy else None,
        "stageVariables": None,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": API_ID,
            "domainName": host or "localhost",
            "domainPrefix": (host or "localhost").split(".", 1)[0].split(":", 1)[0],
            "extendedRequestId": request_id,
            "httpMethod": request.method,
            "identity": {
                "accessKey": None,
                "accountId": None,
                "caller": None,
                "cognitoAuthenticationProvider": None,
                "cognitoAuthenticationType": None,
                "cognitoIdentityId": None,
                "cognitoIdentityPoolId": None,
                "principalOrgId": None,
                "sourceIp": request.source_ip,
                "user": None,
                "userAgent": user_agent,
                "userArn": None,
            },
            "path": f"/{V1_STAGE}{path}",
            "protocol": "HTTP/1.1",
            "requestId": request_id,
            "requestTime": _request_time(now),
            "requestTimeEpoch": int(now * 1000),
            "resourceId": "local",
            "resourcePath": resource,
            "stage": V1_STAGE,
        },
        "body": body,
        "isBase64Encoded": is_b64,
    }


def build_v2_event(request: HttpRequest) -> dict[str, Any]:
    """An HTTP API (payload format 2.0) event for ``request``."""
    headers: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in request.headers:
        lower = name.lower()
        if lower == "cookie":
            # HTTP APIs move cookies out of the headers into their own list
            cookies.extend(c.strip() for c in value.split(";") if c.strip())
            continue
        previous = headers.get(lower)
        headers[lower] = value if previous is None else f"{previous},{value}"

    query: dict[str, str] = {}
    for key, value in _parse_query(request.query_string):
        previous = query.get(key)
        query[key] = value if previous is None else f"{previous},{value}"

    body, is_b64 = _encode_body(headers.get("content-type"), request.body)
    now = time.time()
    host = headers.get("host") or "localhost"
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": request.path,
        "rawQueryString": request.query_string,
    }
    if cookies:
        event["cookies"] = cookies
    event["headers"] = headers
    if query:
        event["queryStringParameters"] = query
    event["requestContext"] = {
        "accountId": ACCOUNT_ID,
        "apiId": API_ID,
        "domainName": host,
        "domainPrefix": host.split(".", 1)[0].split(":", 1)[0],
        "http": {
            "method": request.method,
            "path": unquote(request.path),
            "protocol": "HTTP/1.1",
            "sourceIp": request.source_ip,
            "userAgent": headers.get("user-agent", ""),
        },
        "requestId": str(uuid.uuid4()),
        "routeKey": "$default",
        "stage": "$default",
        "time": _request_time(now),
        "timeEpoch": int(now * 1000),
    }
    if body is not None:
        event["body"] = body
    event["isBase64Encoded"] = is_b64
    return event


def event_builder(version: str) -> Callable[[HttpRequest], dict[str, Any]]:
    """The event-building function for ``version`` (``"v1"`` or ``"v2"``)."""
    if version == "v1":
        return build_v1_event
    if version == "v2":
        return build_v2_event
    raise ValueError(f"event version must be one of {', '.join(EVENT_VERSIONS)}, got {version!r}")


def build_event(request: HttpRequest, version: str = "v1") -> dict[str, Any]:
    """The API Gateway event for ``request`` in payload format ``version``."""
    return event_builder(version)(request)


def _decode_body(result: dict[str, Any]) -> bytes:
    body = result.get("body")
    if body is None:
        return b""
    if not isinstance(body, str):
        raise MalformedResponseError(f"'body' must be a string, got {type(body).__name__}")
    if result.get("isBase64Encoded"):
        try:
            return base64.b64decode(body, validate=True)
        except ValueError as exc:
            raise MalformedResponseError(f"'body' is not valid base64: {exc}") from None
    return body.encode("utf-8")


def _status(result: dict[str, Any]) -> int:
    try:
        status = int(result["statusCode"])
    except (TypeError, ValueError):
        raise MalformedResponseError(
            f"'statusCode' must be an integer, got {result['statusCode']!r}"
        ) from None
    if not 100 <= status <= 599:
        raise MalformedResponseError(f"'statusCode' out of range: {status}")
    return status


def _header_map(value: Any, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MalformedResponseError(f"'{key}' must be an object, got {type(value).__name__}")
    return value


def _has_content_type(headers: list[tuple[str, str]]) -> bool:
    return any(name.lower() == "content-type" for name, _ in headers)


def parse_response(result: Any, version: str = "v1") -> HttpResponse:
    """Turn a handler's return value into the HTTP response API Gateway would send.

    Raises :class:`MalformedResponseError` where API Gateway would answer 502.
    """
    if version == "v2" and not (isinstance(result, dict) and "statusCode" in result):
        # Payload format 2.0: a result without statusCode is the JSON body of a 200
        body = json.dumps(result).encode("utf-8")
        return HttpResponse(200, [("Content-Type", "application/json")], body)
    if not isinstance(result, dict):
        raise MalformedResponseError(
            f"the handler must return an object with 'statusCode', got {type(result).__name__}"
        )
    if "statusCode" not in result:
        raise MalformedResponseError("the handler's response has no 'statusCode'")

    status = _status(result)
    headers: list[tuple[str, str]] = []
    single = _header_map(result.get("headers"), "headers")
    if version == "v1":
        multi = _header_map(result.get("multiValueHeaders"), "multiValueHeaders")
        # Where a name appears in both, API Gateway keeps only the multiValueHeaders values
        overridden = {name.lower() for name in multi}
        for name, values in multi.items():
            if values is None:
                continue
            if not isinstance(values, list):
                values = [values]
            headers.extend((name, str(v)) for v in values)
        headers.extend(
            (name, str(v))
            for name, v in single.items()
            if v is not None and name.lower() not in overridden
        )
    else:
        headers.extend((name, str(v)) for name, v in single.items() if v is not None)
        cookies = result.get("cookies") or []
        if not isinstance(cookies, list):
            raise MalformedResponseError("'cookies' must be a list of strings")
        headers.extend(("Set-Cookie", str(c)) for c in cookies)
    if not _has_content_type(headers):
        headers.append(("Content-Type", "application/json"))
    return HttpResponse(status, headers, _decode_body(result))
