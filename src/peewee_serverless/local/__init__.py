"""Run Lambda handlers locally without Docker: a real HTTP server and one-shot invocations.

* :mod:`.events` - HTTP request <-> API Gateway proxy event (REST v1, HTTP API v2).
* :mod:`.context` - a Lambda-like context object.
* :mod:`.server` - ``serve()``: an HTTP server that calls the handler once per request.
* :mod:`.invoke` - ``invoke()``: call a handler with one event.

Nothing heavy is imported here; the handler's own imports happen when it is loaded.
"""

from __future__ import annotations

from .context import LambdaContext
from .events import HttpRequest, HttpResponse, build_event, parse_response
from .invoke import invoke
from .loader import TargetError, load_handler
from .server import LocalServer, make_server, serve

__all__ = [
    "HttpRequest",
    "HttpResponse",
    "LambdaContext",
    "LocalServer",
    "TargetError",
    "build_event",
    "invoke",
    "load_handler",
    "make_server",
    "parse_response",
    "serve",
]
