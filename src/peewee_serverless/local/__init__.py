"""Run Lambda handlers locally without Docker: a real HTTP server and one-shot invocations.

* :mod:`.events` - HTTP request <-> API Gateway proxy event (REST v1, HTTP API v2).
* :mod:`.context` - a Lambda-like context object.
* :mod:`.server` - ``serve()``: an HTTP server that calls the handler once per request.
* :mod:`.invoke` - ``invoke()``: call a handler with one event.
* :mod:`.runtime_api` - the Lambda Runtime API, served to one runtime process.
* :mod:`.pool` - containers running AWS's ``awslambdaric`` against it, and their pool.
* :mod:`.function` - a function as Lambda runs it: task root, environment, runtime directory.
* :mod:`.generate_event` - API Gateway events for ``invoke``.

Nothing heavy is imported here; the handler's own imports happen when it is loaded.
"""

from __future__ import annotations

from .context import LambdaContext
from .events import HttpRequest, HttpResponse, build_event, parse_response
from .function import FunctionSpec
from .generate_event import generate_event
from .invoke import invoke
from .loader import TargetError, load_handler
from .pool import ContainerPool, Outcome
from .runtime_api import RuntimeApiServer
from .server import LocalServer, make_server, serve

__all__ = [
    "ContainerPool",
    "FunctionSpec",
    "HttpRequest",
    "HttpResponse",
    "LambdaContext",
    "LocalServer",
    "Outcome",
    "RuntimeApiServer",
    "TargetError",
    "build_event",
    "generate_event",
    "invoke",
    "load_handler",
    "make_server",
    "parse_response",
    "serve",
]
