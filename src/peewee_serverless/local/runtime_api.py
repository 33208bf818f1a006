"""The AWS Lambda Runtime API (``2018-06-01``), served locally to one runtime process.

In Lambda every execution environment has its own Runtime API endpoint (``AWS_LAMBDA_RUNTIME_API``)
that the runtime client polls: ``GET /runtime/invocation/next`` blocks until there is an event,
the runtime answers with ``POST /runtime/invocation/{id}/response`` or ``/{id}/error``, and an
import failure before the first ``next`` is reported with ``POST /runtime/init/error``. This
module implements that protocol for one local container (see :mod:`.pool`), so AWS's own
runtime interface client (``awslambdaric``) runs unchanged against it.

What is emulated, as Lambda documents it:

* ``next`` delivers the event with ``Lambda-Runtime-Aws-Request-Id``, ``-Deadline-Ms`` (the
  function timeout counted from delivery), ``-Invoked-Function-Arn``, ``-Trace-Id`` and, when
  given, ``-Client-Context`` / ``-Cognito-Identity``;
* a response larger than 6 MB (Lambda's synchronous payload limit) is refused with ``413``
  before more than the limit is read, and the invocation ends as ``Function.ResponseSizeTooLarge``;
* a response or error for a request id that is not the one in flight is a ``400``;
* the error document the runtime posts (``errorMessage``, ``errorType``, ``stackTrace``) is
  kept as is; the ``Lambda-Runtime-Function-Error-Type`` header fills in a missing type.

Timeouts are not this module's business: the container that owns the process waits for the
invocation with a bound and ends the process when the deadline passes, as Lambda does.
The HTTP layer is the standard library's ``ThreadingHTTPServer`` (one thread per connection,
keep-alive), so no HTTP is parsed here.
"""

from __future__ import annotations

import json
import queue
import re
import secrets
import socketserver
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .body import BodyTooLarge, MalformedBody, read_body

__all__ = [
    "MAX_RESPONSE_BYTES",
    "Invocation",
    "RuntimeApiServer",
    "lambda_error",
    "trace_id",
]

API_PREFIX = "/2018-06-01/runtime"
#: Lambda's limit for a synchronous invocation's response (the figure its error message quotes).
MAX_RESPONSE_BYTES = 6_291_556
#: An error document larger than this is cut (the runtime's own errors are small).
MAX_ERROR_BYTES = 1024 * 1024
ERROR_TYPE_HEADER = "Lambda-Runtime-Function-Error-Type"

_INVOCATION_PATH = re.compile(rf"^{API_PREFIX}/invocation/([^/]+)/(response|error)$")


def lambda_error(error_type: str, message: str, stack: list[str] | None = None) -> dict[str, Any]:
    """An error document in the shape Lambda returns for a failed invocation."""
    doc: dict[str, Any] = {"errorType": error_type, "errorMessage": message}
    if stack is not None:
        doc["stackTrace"] = stack
    return doc


def trace_id() -> str:
    """An X-Ray trace header value shaped like Lambda's (``Root=1-<time>-<id>;...``)."""
    root = f"1-{int(time.time()):08x}-{secrets.token_hex(12)}"
    return f"Root={root};Parent={secrets.token_hex(8)};Sampled=0"


@dataclass(eq=False)
class Invocation:
    """One event on its way through the Runtime API, and how it ended.

    Exactly one of :attr:`result` (the response bytes) or :attr:`error` (an error document) is
    set when :meth:`wait` returns True; the first :meth:`finish` wins.
    """

    event: bytes
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    trace_id: str = field(default_factory=trace_id)
    client_context: str | None = None
    cognito_identity: str | None = None
    #: Epoch milliseconds, set when the runtime receives the event.
    deadline_ms: int = 0
    result: bytes | None = None
    error: dict[str, Any] | None = None
    delivered_at: float | None = None
    _delivered: threading.Event = field(default_factory=threading.Event, repr=False)
    _done: threading.Event = field(default_factory=threading.Event, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def deliver(self, timeout: float) -> None:
        """The runtime took the event: the function's timeout starts now."""
        self.delivered_at = time.monotonic()
        self.deadline_ms = int((time.time() + timeout) * 1000)
        self._delivered.set()

    def finish(self, *, result: bytes | None = None, error: dict[str, Any] | None = None) -> bool:
        """Record the outcome unless one is already recorded; True when this call recorded it."""
        with self._lock:
            if self._done.is_set():
                return False
            self.result, self.error = result, error
            self._done.set()
            return True

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait_delivered(self, timeout: float) -> bool:
        """Wait until the runtime took the event or the invocation ended (init error, exit)."""
        deadline = time.monotonic() + timeout
        while not self._delivered.is_set() and not self._done.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._delivered.wait(min(left, 0.05))
        return True

    def wait(self, timeout: float) -> bool:
        """Wait for the outcome; False when ``timeout`` passed first."""
        return self._done.wait(timeout)


class _RuntimeApiHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "peewee-serverless-runtime-api"
    sys_version = ""
    disable_nagle_algorithm = True
    server: RuntimeApiServer

    def _send(self, status: int, doc: dict[str, Any]) -> None:
        body = json.dumps(doc).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _body(self, limit: int) -> bytes:
        return read_body(
            self.rfile,  # type: ignore[arg-type]  # a BufferedReader is a binary file
            self.headers.get("Content-Length"),
            self.headers.get("Transfer-Encoding"),
            limit,
        )

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path != f"{API_PREFIX}/invocation/next":
            self._send(404, lambda_error("NotFound", f"no such endpoint: GET {self.path}"))
            return
        invocation = self.server.next_invocation()
        if invocation is None:  # the container is shutting down
            self.close_connection = True
            self._send(500, lambda_error("ServiceException", "runtime API shutting down"))
            return
        headers = {
            "Lambda-Runtime-Aws-Request-Id": invocation.request_id,
            "Lambda-Runtime-Deadline-Ms": str(invocation.deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": self.server.function_arn,
            "Lambda-Runtime-Trace-Id": invocation.trace_id,
        }
        if invocation.client_context is not None:
            headers["Lambda-Runtime-Client-Context"] = invocation.client_context
        if invocation.cognito_identity is not None:
            headers["Lambda-Runtime-Cognito-Identity"] = invocation.cognito_identity
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(invocation.event)))
        self.end_headers()
        self.wfile.write(invocation.event)

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        if self.path == f"{API_PREFIX}/init/error":
            self._init_error()
            return
        match = _INVOCATION_PATH.match(self.path)
        if match is None:
            self.close_connection = True
            self._send(404, lambda_error("NotFound", f"no such endpoint: POST {self.path}"))
            return
        request_id, kind = match.groups()
        invocation = self.server.current
        if invocation is None or invocation.request_id != request_id or invocation.done:
            self.close_connection = True  # the body is left unread
            self._send(400, lambda_error("InvalidRequestID", f"unknown request id {request_id}"))
            return
        if kind == "response":
            self._response(invocation)
        else:
            self._error(invocation)

    def _response(self, invocation: Invocation) -> None:
        limit = self.server.max_response_bytes
        try:
            body = self._body(limit)
        except BodyTooLarge:
            self.close_connection = True
            message = (
                f"Response payload size exceeded maximum allowed payload size ({limit} bytes)."
            )
            invocation.finish(error=lambda_error("Function.ResponseSizeTooLarge", message))
            self._send(413, lambda_error("RequestEntityTooLarge", message))
            return
        except MalformedBody as exc:
            self.close_connection = True
            self._send(400, lambda_error("InvalidRequest", str(exc)))
            return
        invocation.finish(result=body)
        self._send(202, {"status": "OK"})

    def _read_error(self) -> dict[str, Any] | None:
        try:
            raw = self._body(MAX_ERROR_BYTES)
        except (BodyTooLarge, MalformedBody) as exc:
            self.close_connection = True
            self._send(400, lambda_error("InvalidRequest", f"error document: {exc or 'too large'}"))
            return None
        header_type = self.headers.get(ERROR_TYPE_HEADER) or "Unhandled"
        try:
            doc = json.loads(raw)
        except (ValueError, RecursionError):
            doc = None
        if not isinstance(doc, dict):
            return lambda_error(header_type, raw.decode("utf-8", "replace"))
        doc.setdefault("errorType", header_type)
        doc.setdefault("errorMessage", "")
        return doc

    def _error(self, invocation: Invocation) -> None:
        doc = self._read_error()
        if doc is None:
            return
        invocation.finish(error=doc)
        self._send(202, {"status": "OK"})

    def _init_error(self) -> None:
        doc = self._read_error()
        if doc is None:
            return
        if self.server.initialized.is_set():
            self._send(403, lambda_error("InvalidStateTransition", "init already completed"))
            return
        self.server.report_init_error(doc)
        self._send(202, {"status": "OK"})

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base-class signature
        pass  # the container logs each invocation; per-request lines here would be noise


class RuntimeApiServer(ThreadingHTTPServer):
    """The Runtime API of one execution environment, on ``127.0.0.1`` and a free port.

    :meth:`submit` queues an :class:`Invocation`; the runtime's ``next`` takes it. Events are
    delivered one at a time, as a Lambda execution environment handles one invocation at a time.
    """

    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        *,
        function_arn: str,
        timeout: float,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        host: str = "127.0.0.1",
    ) -> None:
        self.function_arn = function_arn
        self.timeout_seconds = timeout
        self.max_response_bytes = max_response_bytes
        #: Set by the runtime's first ``next``: initialisation (the handler's import) is done.
        self.initialized = threading.Event()
        self.init_error: dict[str, Any] | None = None
        self.current: Invocation | None = None
        self._pending: queue.Queue[Invocation | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        super().__init__((host, 0), _RuntimeApiHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn) that can stall startup.
        socketserver.TCPServer.server_bind(self)

    @property
    def address(self) -> str:
        """``host:port``, the value of ``AWS_LAMBDA_RUNTIME_API``."""
        host, port = self.server_address[:2]
        return f"{host!s}:{port}"

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread = threading.Thread(
            target=self.serve_forever, args=(0.1,), name=f"runtime-api-{self.address}", daemon=True
        )
        self._thread.start()

    def submit(self, invocation: Invocation) -> None:
        """Hand ``invocation`` to the runtime's next ``next`` call."""
        if self.init_error is not None:
            invocation.finish(error=self.init_error)
            return
        self.current = invocation
        self._pending.put(invocation)

    def next_invocation(self) -> Invocation | None:
        """Block until an event is submitted (None: shutting down); marks init complete."""
        self.initialized.set()
        invocation = self._pending.get()
        if invocation is not None:
            invocation.deliver(self.timeout_seconds)
        return invocation

    def report_init_error(self, doc: dict[str, Any]) -> None:
        """The runtime failed to initialise: the invocation waiting for it ends with ``doc``."""
        self.init_error = doc
        current = self.current
        if current is not None:
            current.finish(error=doc)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A runtime killed mid-request (timeout, retirement) resets its connection: expected.
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def close(self) -> None:
        """Stop serving; a runtime blocked in ``next`` gets an error and its connection closed."""
        self._pending.put(None)
        if self._thread is not None:
            self.shutdown()
        self.server_close()
