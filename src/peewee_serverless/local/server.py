"""A local HTTP server in front of a Lambda function, standing in for API Gateway (no Docker).

``peewee-serverless serve examples.users.app:handler --port 3000`` turns every HTTP request into
an API Gateway proxy event (REST API v1 or HTTP API v2), invokes the function and writes back the
response the way API Gateway would: a function error (exception, failed init, crash) is ``502``,
an invocation past ``timeout`` is ``504`` (API Gateway's answers), a throttled one ``429``;
bodies over ``max_body_bytes`` (6 MB, Lambda's payload limit) are refused with ``413`` and
malformed bodies with ``400`` before anything is invoked. One line per invocation on stdout
says which environment ran it, cold or warm, how long it took and the status.

Who runs the function is an *invoker*:

* :class:`~.inprocess.InProcessInvoker` (default for a source folder): the handler is imported
  into this process and runs on one invocation thread, one at a time, as in a single Lambda
  execution environment (one database connection reused across warm invocations);
* :class:`~.pool.ContainerPool` (``--zip`` or ``--runtime ric``): up to ``--concurrency``
  processes running AWS's runtime client against a local Runtime API, as Lambda runs them.

HTTP connections are served by one thread each (HTTP/1.1 keep-alive) by the standard library's
``ThreadingHTTPServer``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import sys
import threading
import time
import traceback
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Protocol

from .body import BodyTooLarge, MalformedBody, read_body
from .context import DEFAULT_FUNCTION_NAME, DEFAULT_TIMEOUT_SECONDS
from .events import (
    EVENT_VERSIONS,
    HttpRequest,
    HttpResponse,
    MalformedResponseError,
    event_builder,
    parse_response,
)
from .loader import Handler, TargetError, load_handler

if TYPE_CHECKING:
    import argparse
    from typing import TypedDict, Unpack

    from .pool import Outcome

    class ServerOptions(TypedDict, total=False):
        """:func:`make_server`'s options, as :func:`serve` passes them on."""

        host: str
        port: int
        event_version: str
        timeout: float
        max_body_bytes: int
        verbose: bool
        function_name: str
        invoker: Invoker | None
        log: Callable[[str], None] | None


__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "Invoker",
    "LocalServer",
    "add_arguments",
    "make_server",
    "serve",
]

#: Lambda's synchronous invocation payload limit.
DEFAULT_MAX_BODY_BYTES = 6 * 1024 * 1024

_EVENT_LABELS = {"v1": "API Gateway v1 events", "v2": "API Gateway v2 events"}
# Framing headers are the server's business, whatever the handler put in its response.
_HOP_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})
_JSON = [("Content-Type", "application/json")]


class Invoker(Protocol):
    """Runs the function: in this process or in containers."""

    def invoke(self, event: Any) -> Outcome: ...

    def restart(self) -> None: ...

    def close(self) -> None: ...


def _error_body(error: str, message: str) -> bytes:
    return json.dumps({"error": error, "message": message}).encode("utf-8")


class _RequestHandler(BaseHTTPRequestHandler):
    """Turns each HTTP request into one invocation; keeps connections alive between them."""

    protocol_version = "HTTP/1.1"
    server_version = "peewee-serverless"
    sys_version = ""
    disable_nagle_algorithm = True  # responses are written in one piece; don't delay them
    server: LocalServer

    def _handle(self) -> None:
        server = self.server
        started = time.perf_counter() if server.verbose else 0.0
        try:
            body = read_body(
                self.rfile,  # type: ignore[arg-type]  # a BufferedReader is a binary file
                self.headers.get("Content-Length"),
                self.headers.get("Transfer-Encoding"),
                server.max_body_bytes,
            )
        except BodyTooLarge:
            # The unread body is still on the socket: this connection cannot be reused.
            self.close_connection = True
            message = f"request body exceeds {server.max_body_bytes} bytes"
            self._write(HttpResponse(413, _JSON, _error_body("payload_too_large", message)))
            return
        except MalformedBody as exc:
            self.close_connection = True
            self._write(HttpResponse(400, _JSON, _error_body("bad_request", str(exc))))
            return
        request = HttpRequest.from_target(
            self.command, self.path, self.headers.items(), body, self.client_address[0]
        )
        response = server.handle_request_event(request)
        self._write(response)
        if server.verbose:
            millis = (time.perf_counter() - started) * 1000
            self.log_message(
                '"%s" %d %d %.1fms', self.requestline, response.status, len(response.body), millis
            )

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle

    def _write(self, response: HttpResponse) -> None:
        reason = self.responses.get(response.status, ("",))[0]
        lines = [f"HTTP/1.1 {response.status} {reason}\r\n"]
        for name, value in response.headers:
            if name.lower() in _HOP_HEADERS:
                continue
            if "\r" in value or "\n" in value:  # no response splitting through a handler's header
                value = value.replace("\r", " ").replace("\n", " ")
            lines.append(f"{name}: {value}\r\n")
        lines.append(f"Content-Length: {len(response.body)}\r\n")
        if self.close_connection:
            lines.append("Connection: close\r\n")
        lines.append("\r\n")
        head = "".join(lines).encode("latin-1", "replace")
        # One write per response: with Nagle off, one packet instead of head + body.
        self.wfile.write(head if self.command == "HEAD" else head + response.body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base-class signature
        if self.server.verbose:
            super().log_message(format, *args)


class LocalServer(ThreadingHTTPServer):
    """The HTTP server: one thread per connection; invocations go to the invoker."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # bursts of new connections (benchmarks) must not be refused

    def __init__(
        self,
        address: tuple[str, int],
        invoker: Invoker,
        *,
        event_version: str = "v1",
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        verbose: bool = False,
        log: Callable[[str], None] | None = None,
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.invoker = invoker
        self.event_version = event_version
        self.build_event = event_builder(event_version)
        self.max_body_bytes = max_body_bytes
        self.verbose = verbose
        self.log = log or _stdout
        super().__init__(address, _RequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn) that can stall startup.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    @property
    def url(self) -> str:
        """``http://host:port`` the server listens on (the real port when bound to port 0)."""
        host = self.server_name
        return (
            f"http://[{host}]:{self.server_port}"
            if ":" in host
            else f"http://{host}:{self.server_port}"
        )

    def _response(self, request: HttpRequest, outcome: Outcome) -> HttpResponse:
        if outcome.kind == "throttled":
            message = "Rate Exceeded. (all containers busy and --queue off)"
            return HttpResponse(429, list(_JSON), _error_body("throttled", message))
        error = outcome.error or {}
        if outcome.kind == "timeout":
            message = str(error.get("errorMessage", "timed out"))
            # Lambda's message starts "RequestId: ... Error: "; the client needs only the end.
            message = message.rpartition("Error: ")[2]
            print(f"{request.method} {request.path}: {message}", file=sys.stderr, flush=True)
            return HttpResponse(504, list(_JSON), _error_body("timeout", message))
        if outcome.kind == "error":
            if outcome.exception is not None:
                trace = "".join(traceback.format_exception(outcome.exception))
            else:
                trace = json.dumps(error, indent=2) + "\n"
            print(
                f"function error on {request.method} {request.path}:\n{trace}",
                file=sys.stderr,
                end="",
                flush=True,
            )
            message = f"{error.get('errorType', 'Error')}: {error.get('errorMessage', '')}"
            return HttpResponse(502, list(_JSON), _error_body("handler_error", message))
        try:
            return parse_response(outcome.json(), self.event_version)
        except (MalformedResponseError, ValueError, RecursionError) as exc:
            message = str(exc) or type(exc).__name__
            print(f"malformed function response: {message}", file=sys.stderr, flush=True)
            return HttpResponse(502, list(_JSON), _error_body("malformed_response", message))

    def handle_request_event(self, request: HttpRequest) -> HttpResponse:
        """Invoke the function for one HTTP request and return the HTTP response to send."""
        event = self.build_event(request)
        outcome = self.invoker.invoke(event)
        response = self._response(request, outcome)
        state = "cold" if outcome.cold else "warm"
        init = f" init {outcome.init_ms:.1f} ms" if outcome.init_ms is not None else ""
        self.log(
            f"{request.method} {request.path} -> {response.status} "
            f"[{outcome.container or '-'} {state}{init}] {outcome.duration_ms:.1f} ms "
            f"{outcome.kind}"
        )
        return response

    def server_close(self) -> None:
        """Stop listening and end the function's environments."""
        super().server_close()
        self.invoker.close()


def _stdout(line: str) -> None:
    print(line, flush=True)


def _target_name(target: str | Handler) -> str:
    if isinstance(target, str):
        return target
    return f"{getattr(target, '__module__', '?')}:{getattr(target, '__qualname__', '?')}"


def make_server(
    target: str | Handler | None = None,
    host: str = "127.0.0.1",
    port: int = 3000,
    event_version: str = "v1",
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    verbose: bool = False,
    function_name: str = DEFAULT_FUNCTION_NAME,
    invoker: Invoker | None = None,
    log: Callable[[str], None] | None = None,
) -> LocalServer:
    """Bind the server; call ``serve_forever()`` on the result.

    Without ``invoker`` the handler ``target`` is loaded (once) into this process.
    """
    if event_version not in EVENT_VERSIONS:
        raise ValueError(f"event_version must be one of {EVENT_VERSIONS}, got {event_version!r}")
    if invoker is None:
        from .inprocess import InProcessInvoker

        if target is None:
            raise ValueError("make_server needs a target or an invoker")
        invoker = InProcessInvoker(
            load_handler(target), timeout=timeout, function_name=function_name
        )
    return LocalServer(
        (host, port),
        invoker,
        event_version=event_version,
        max_body_bytes=max_body_bytes,
        verbose=verbose,
        log=log,
    )


def serve(
    target: str | Handler | None = None,
    *,
    description: str | None = None,
    on_ready: Callable[[LocalServer], None] | None = None,
    **options: Unpack[ServerOptions],
) -> None:
    """Serve ``target`` (or ``invoker``) over HTTP until interrupted; one ready line on stdout.

    ``options`` are :func:`make_server`'s.
    """
    server = make_server(target, **options)
    label = _EVENT_LABELS[server.event_version]
    name = description or _target_name(target) if target is not None else description
    print(f"Serving {name} on {server.url} ({label})", flush=True)
    if on_ready is not None:
        on_ready(server)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _exit_on_sigterm(stack: contextlib.ExitStack) -> None:
    """SIGTERM ends the command like Ctrl-C: containers are killed, not left orphaned (frozen)."""
    import signal

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, stop)
        stack.callback(signal.signal, signal.SIGTERM, previous)


def _run(args: argparse.Namespace) -> int:
    from ..cli import CommandError
    from .launch import LaunchError, launch

    with contextlib.ExitStack() as stack:
        _exit_on_sigterm(stack)
        try:
            launched = launch(args, stack, log=_stdout)
        except (LaunchError, TargetError) as exc:
            raise CommandError(str(exc)) from None
        for note in launched.notes:
            print(note, file=sys.stderr, flush=True)
        try:
            serve(
                host=args.host,
                port=args.port,
                event_version=launched.event_version,
                max_body_bytes=args.max_body_bytes,
                verbose=args.verbose,
                invoker=launched.invoker,
                description=launched.description,
                on_ready=launched.on_ready,
            )
        except OSError as exc:
            launched.invoker.close()
            raise CommandError(
                f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}"
            ) from None
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Serve a function over HTTP like API Gateway (no Docker).

    Serve a Lambda function over HTTP, turning requests into API Gateway events. In this process
    by default; with --zip or --runtime ric in containers running AWS's runtime client
    (awslambdaric) against a local Lambda Runtime API.
    """
    from .launch import add_function_arguments

    add_function_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="default: %(default)s")
    parser.add_argument(
        "--port", type=int, default=3000, help="0 picks a free port (default: 3000)"
    )
    parser.add_argument(
        "--event-version",
        choices=EVENT_VERSIONS,
        help=(
            "v1: REST API payload 1.0; v2: HTTP API payload 2.0 (default: from template.yaml's "
            "event type, Api -> v1, HttpApi -> v2; v2 without a template)"
        ),
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        help="larger request bodies get 413 (default: %(default)s, Lambda's payload limit)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        help="containers at most (--zip / --runtime ric; default 1); in-process is always 1",
    )
    parser.add_argument(
        "--no-queue",
        dest="queue",
        action="store_false",
        help="answer 429 (Lambda's throttle) when all containers are busy, instead of waiting",
    )
    parser.add_argument(
        "--freeze",
        action="store_true",
        help="SIGSTOP idle containers and SIGCONT them for their next invocation, like Lambda",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        metavar="SECONDS",
        help="retire containers idle this long (default: never)",
    )
    parser.add_argument(
        "--reload",
        action="store_true",
        help="restart the containers when a source file (or the zip) changes; implies ric",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request to stderr")
    parser.set_defaults(func=_run)
