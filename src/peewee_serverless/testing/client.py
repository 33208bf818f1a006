"""A test client for a Lambda handler behind API Gateway, after ``chalice.test.Client``.

``client.post("/notes", json={...})`` builds the API Gateway proxy event that ``serve`` would
build for the same HTTP request (:mod:`peewee_serverless.local.events`), calls the handler with a
Lambda-like context (:mod:`peewee_serverless.local.context`) and turns its result into the HTTP
answer API Gateway would send (:func:`~peewee_serverless.local.events.parse_response`). No socket
and no thread: the handler runs in the test's own thread, so a failing route shows its traceback
(``raise_exceptions=False`` answers 502 instead, as ``serve`` and API Gateway do).

Nothing here imports pytest; the fixtures are in :mod:`peewee_serverless.testing`.
"""

from __future__ import annotations

import json as jsonlib
from collections.abc import Callable, Iterable, Mapping
from functools import partialmethod
from typing import Any
from urllib.parse import quote, urlencode

from ..local.context import DEFAULT_FUNCTION_NAME, DEFAULT_TIMEOUT_SECONDS, LambdaContext
from ..local.events import EVENT_VERSIONS, HttpRequest, event_builder, parse_response

__all__ = ["Handler", "LambdaClient", "LambdaResponse", "make_event"]

Handler = Callable[[Any, Any], Any]
Headers = Mapping[str, str] | Iterable[tuple[str, str]]
Query = Mapping[str, Any] | Iterable[tuple[str, Any]]


def _header_pairs(headers: Headers | None) -> list[tuple[str, str]]:
    if headers is None:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(str(k), str(v)) for k, v in items]


def make_event(
    method: str = "GET",
    path: str = "/",
    *,
    json: Any = None,
    body: bytes | str | None = None,
    headers: Headers | None = None,
    query: Query | None = None,
    path_params: Mapping[str, str] | None = None,
    version: str = "v1",
    source_ip: str = "127.0.0.1",
) -> dict[str, Any]:
    """The API Gateway proxy event (``"v1"`` REST or ``"v2"`` HTTP API) for one request.

    ``json`` is serialised as the body with ``Content-Type: application/json`` (unless
    ``headers`` name another type); ``body`` is sent as is. ``query`` values may be lists
    (repeated parameters). ``path`` may carry its own ``?query``. ``path_params`` sets the
    event's ``pathParameters`` (a proxy event has ``{"proxy": ...}``).
    """
    if version not in EVENT_VERSIONS:
        raise ValueError(f"version must be one of {EVENT_VERSIONS}, got {version!r}")
    if json is not None and body is not None:
        raise ValueError("pass json= or body=, not both")
    pairs = _header_pairs(headers)
    data = body.encode("utf-8") if isinstance(body, str) else (body or b"")
    if json is not None:
        data = jsonlib.dumps(json).encode("utf-8")
        if not any(name.lower() == "content-type" for name, _ in pairs):
            pairs.append(("Content-Type", "application/json"))
    target, _, raw_query = path.partition("?")
    if query:
        extra = urlencode(
            list(query.items()) if isinstance(query, Mapping) else list(query),
            doseq=True,
            quote_via=quote,
        )
        raw_query = f"{raw_query}&{extra}" if raw_query else extra
    request = HttpRequest(method.upper(), target or "/", raw_query, pairs, data, source_ip)
    event = event_builder(version)(request)
    if path_params is not None:
        event["pathParameters"] = dict(path_params)
    return event


class LambdaResponse:
    """The HTTP answer to one request: ``status_code``, ``headers``, ``text``, ``json()``."""

    def __init__(
        self, status_code: int, header_list: list[tuple[str, str]], body: bytes, raw: Any
    ) -> None:
        self.status_code = status_code
        #: Every header in order, repeats kept (``Set-Cookie``).
        self.header_list = header_list
        #: Case-insensitive view; repeated headers joined with ``", "`` as HTTP allows.
        self.headers = _CaseInsensitive(header_list)
        self.body = body
        #: What the handler returned (the proxy response dict).
        self.raw = raw

    @property
    def text(self) -> str:
        """The body decoded as UTF-8."""
        return self.body.decode("utf-8")

    def json(self) -> Any:
        """The body parsed as JSON."""
        return jsonlib.loads(self.body)

    def __repr__(self) -> str:
        return f"<LambdaResponse {self.status_code} {self.body[:80]!r}>"


class _CaseInsensitive(dict[str, str]):
    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        merged: dict[str, str] = {}
        for name, value in pairs:
            key = name.lower()
            merged[key] = f"{merged[key]}, {value}" if key in merged else value
        super().__init__(merged)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)


class LambdaClient:
    """Calls ``handler`` as API Gateway would for each request; see the module docstring.

    ``version`` picks the event format (``"v1"`` REST API, ``"v2"`` HTTP API); ``timeout`` is
    what ``context.get_remaining_time_in_millis()`` counts down from.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        version: str = "v1",
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        function_name: str = DEFAULT_FUNCTION_NAME,
        headers: Headers | None = None,
        raise_exceptions: bool = True,
    ) -> None:
        if version not in EVENT_VERSIONS:
            raise ValueError(f"version must be one of {EVENT_VERSIONS}, got {version!r}")
        self.handler = handler
        self.version = version
        self.timeout = timeout
        self.function_name = function_name
        self.default_headers = _header_pairs(headers)
        self.raise_exceptions = raise_exceptions
        #: The last event sent (for assertions on what the handler saw).
        self.last_event: dict[str, Any] | None = None

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        body: bytes | str | None = None,
        headers: Headers | None = None,
        query: Query | None = None,
        version: str | None = None,
        context: Any = None,
    ) -> LambdaResponse:
        """One request through the handler; returns the HTTP answer."""
        used = version or self.version
        event = make_event(
            method,
            path,
            json=json,
            body=body,
            headers=self.default_headers + _header_pairs(headers),
            query=query,
            version=used,
        )
        self.last_event = event
        if context is None:
            context = LambdaContext(function_name=self.function_name, timeout=self.timeout)
        try:
            result = self.handler(event, context)
        except Exception as exc:
            if self.raise_exceptions:
                raise
            # What `serve` and API Gateway answer for a function that crashed.
            error = {"error": "handler_error", "message": f"{type(exc).__name__}: {exc}"}
            payload = jsonlib.dumps(error).encode("utf-8")
            return LambdaResponse(502, [("Content-Type", "application/json")], payload, None)
        response = parse_response(result, used)
        # API Gateway (and `serve`) send no body with the answer to a HEAD.
        payload = b"" if method.upper() == "HEAD" else response.body
        return LambdaResponse(response.status, response.headers, payload, result)

    # ``client.get(path, **kwargs)`` and so on: :meth:`request` with the method filled in.
    get: partialmethod[LambdaResponse] = partialmethod(request, "GET")
    post: partialmethod[LambdaResponse] = partialmethod(request, "POST")
    put: partialmethod[LambdaResponse] = partialmethod(request, "PUT")
    patch: partialmethod[LambdaResponse] = partialmethod(request, "PATCH")
    delete: partialmethod[LambdaResponse] = partialmethod(request, "DELETE")
    head: partialmethod[LambdaResponse] = partialmethod(request, "HEAD")
    options: partialmethod[LambdaResponse] = partialmethod(request, "OPTIONS")
