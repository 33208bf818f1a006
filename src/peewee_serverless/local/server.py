"""A local HTTP server in front of a Lambda handler, standing in for API Gateway (no Docker).

``peewee-serverless serve examples.users.app:handler --port 3000`` loads the handler once (like a
Lambda cold start), then for every HTTP request builds an API Gateway proxy event (REST API v1 or
HTTP API v2), calls the handler with a fresh :class:`~.context.LambdaContext` and writes back the
response the way API Gateway would. Handler exceptions become ``502`` (API Gateway's answer for a
crashed function) with the traceback on stderr; bodies over ``max_body_bytes`` (6 MB, Lambda's
payload limit) are refused with ``413`` before the handler runs; an invocation running past
``timeout`` answers ``504`` (what API Gateway answers when the integration times out).

Concurrency model: HTTP connections are served by one thread each (HTTP/1.1 keep-alive), but
every handler invocation runs on ONE dedicated invocation thread, one at a time. That is what a
single Lambda execution environment does, and it matters for Peewee: connection state is
per thread, so a single invocation thread means one database connection reused across warm
invocations, exactly as in Lambda, instead of one connection per client socket.
"""

from __future__ import annotations

import socket
import socketserver
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from .context import DEFAULT_FUNCTION_NAME, DEFAULT_TIMEOUT_SECONDS, LambdaContext, log_stream_name
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

__all__ = ["DEFAULT_MAX_BODY_BYTES", "LocalServer", "add_command", "make_server", "serve"]

#: Lambda's synchronous invocation payload limit.
DEFAULT_MAX_BODY_BYTES = 6 * 1024 * 1024

_EVENT_LABELS = {"v1": "API Gateway v1 events", "v2": "API Gateway v2 events"}
# Framing headers are the server's business, whatever the handler put in its response.
_HOP_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})
_JSON = [("Content-Type", "application/json")]


def _error_body(error: str, message: str) -> bytes:
    import json

    return json.dumps({"error": error, "message": message}).encode("utf-8")


class _BodyTooLarge(Exception):
    pass


class _RequestHandler(BaseHTTPRequestHandler):
    """Turns each HTTP request into one invocation; keeps connections alive between them."""

    protocol_version = "HTTP/1.1"
    server_version = "peewee-serverless"
    sys_version = ""
    disable_nagle_algorithm = True  # responses are written in one piece; don't delay them
    server: LocalServer

    def _read_chunked(self, limit: int) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            size_line = self.rfile.readline(65537)
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                # trailers end with an empty line
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            total += size
            if total > limit:
                raise _BodyTooLarge
            parts.append(self.rfile.read(size))
            self.rfile.readline(3)  # CRLF after each chunk

    def _read_body(self, limit: int) -> bytes:
        encoding = self.headers.get("Transfer-Encoding")
        if encoding and "chunked" in encoding.lower():
            return self._read_chunked(limit)
        length = self.headers.get("Content-Length")
        if not length:
            return b""
        size = int(length)
        if size < 0:
            raise ValueError(length)
        if size > limit:
            raise _BodyTooLarge
        return self.rfile.read(size)

    def _handle(self) -> None:
        server = self.server
        started = time.perf_counter() if server.verbose else 0.0
        try:
            body = self._read_body(server.max_body_bytes)
        except _BodyTooLarge:
            # The unread body is still on the socket: this connection cannot be reused.
            self.close_connection = True
            message = f"request body exceeds {server.max_body_bytes} bytes"
            self._write(HttpResponse(413, _JSON, _error_body("payload_too_large", message)))
            return
        except ValueError:
            self.close_connection = True
            message = "malformed Content-Length or chunked body"
            self._write(HttpResponse(400, _JSON, _error_body("bad_request", message)))
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
    """The HTTP server: one thread per connection, one invocation thread for the handler."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # bursts of new connections (benchmarks) must not be refused

    def __init__(
        self,
        address: tuple[str, int],
        handler: Handler,
        *,
        event_version: str = "v1",
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        verbose: bool = False,
        function_name: str = DEFAULT_FUNCTION_NAME,
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.lambda_handler = handler
        self.event_version = event_version
        self.build_event = event_builder(event_version)
        self.timeout_seconds = timeout
        self.max_body_bytes = max_body_bytes
        self.verbose = verbose
        self.function_name = function_name
        self.log_stream = log_stream_name()
        # The "execution environment": every invocation runs on this one thread (see module doc).
        self._invoker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lambda-invoke")
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

    def _invoke(self, event: dict[str, Any]) -> Any:
        context = LambdaContext(
            function_name=self.function_name,
            timeout=self.timeout_seconds,
            log_stream=self.log_stream,
        )
        return self.lambda_handler(event, context)

    def handle_request_event(self, request: HttpRequest) -> HttpResponse:
        """Invoke the handler for one HTTP request and return the HTTP response to send."""
        event = self.build_event(request)
        future = self._invoker.submit(self._invoke, event)
        try:
            result = future.result(timeout=self.timeout_seconds)
        except FutureTimeout:
            # Lambda would kill the environment; a local thread cannot be killed, so the late
            # invocation finishes in the background and the next request waits for it.
            message = f"Task timed out after {self.timeout_seconds:.2f} seconds"
            print(f"{request.method} {request.path}: {message}", file=sys.stderr, flush=True)
            return HttpResponse(504, list(_JSON), _error_body("timeout", message))
        except Exception as exc:  # noqa: BLE001 - a crashed function is API Gateway's 502
            print(
                f"handler error on {request.method} {request.path}:\n"
                + "".join(traceback.format_exception(exc)),
                file=sys.stderr,
                end="",
                flush=True,
            )
            message = f"{type(exc).__name__}: {exc}"
            return HttpResponse(502, list(_JSON), _error_body("handler_error", message))
        try:
            return parse_response(result, self.event_version)
        except MalformedResponseError as exc:
            print(f"malformed handler response: {exc}", file=sys.stderr, flush=True)
            return HttpResponse(502, list(_JSON), _error_body("malformed_response", str(exc)))

    def server_close(self) -> None:
        """Stop listening and let the invocation thread finish."""
        super().server_close()
        self._invoker.shutdown(wait=False)


def _target_name(target: str | Handler) -> str:
    if isinstance(target, str):
        return target
    return f"{getattr(target, '__module__', '?')}:{getattr(target, '__qualname__', '?')}"


def make_server(
    target: str | Handler,
    host: str = "127.0.0.1",
    port: int = 3000,
    event_version: str = "v1",
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    verbose: bool = False,
    function_name: str = DEFAULT_FUNCTION_NAME,
) -> LocalServer:
    """Load the handler (once) and bind the server; call ``serve_forever()`` on the result."""
    if event_version not in EVENT_VERSIONS:
        raise ValueError(f"event_version must be one of {EVENT_VERSIONS}, got {event_version!r}")
    handler = load_handler(target)
    return LocalServer(
        (host, port),
        handler,
        event_version=event_version,
        timeout=timeout,
        max_body_bytes=max_body_bytes,
        verbose=verbose,
        function_name=function_name,
    )


def serve(
    target: str | Handler,
    host: str = "127.0.0.1",
    port: int = 3000,
    event_version: str = "v1",
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    verbose: bool = False,
    function_name: str = DEFAULT_FUNCTION_NAME,
) -> None:
    """Serve ``target`` over HTTP until interrupted; prints one ready line on stdout."""
    server = make_server(
        target,
        host,
        port,
        event_version,
        timeout,
        max_body_bytes=max_body_bytes,
        verbose=verbose,
        function_name=function_name,
    )
    label = _EVENT_LABELS[event_version]
    print(f"Serving {_target_name(target)} on {server.url} ({label})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _run(args: argparse.Namespace) -> int:
    from ..cli import CommandError

    try:
        serve(
            args.handler,
            args.host,
            args.port,
            args.event_version,
            args.timeout,
            max_body_bytes=args.max_body_bytes,
            verbose=args.verbose,
            function_name=args.function_name,
        )
    except TargetError as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(
            f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}"
        ) from None
    return 0


def add_command(subparsers: Any) -> None:
    """Add ``serve HANDLER [--host --port --event-version --timeout ...]``."""
    parser = subparsers.add_parser(
        "serve",
        help="serve a handler over HTTP like API Gateway (no Docker)",
        description="Serve a Lambda handler over HTTP, turning requests into API Gateway events.",
    )
    parser.add_argument("handler", metavar="MODULE:HANDLER", help="e.g. examples.users.app:handler")
    parser.add_argument("--host", default="127.0.0.1", help="default: %(default)s")
    parser.add_argument(
        "--port", type=int, default=3000, help="0 picks a free port (default: 3000)"
    )
    parser.add_argument(
        "--event-version",
        choices=EVENT_VERSIONS,
        default="v1",
        help="v1: REST API payload 1.0; v2: HTTP API payload 2.0 (default: %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_SECONDS,
        help="simulated Lambda timeout in seconds, seen by get_remaining_time_in_millis()",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        help="larger request bodies get 413 (default: %(default)s, Lambda's payload limit)",
    )
    parser.add_argument(
        "--function-name",
        default=DEFAULT_FUNCTION_NAME,
        help="context.function_name (default: %(default)s)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request to stderr")
    parser.set_defaults(func=_run)
