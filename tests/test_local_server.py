"""The local API Gateway stand-in over real HTTP (peewee_serverless.local.server)."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from peewee_serverless.local.server import LocalServer, make_server

ROOT = Path(__file__).resolve().parent.parent
StartServer = Callable[..., LocalServer]


@pytest.fixture
def start_server() -> Iterator[StartServer]:
    """Start servers in background threads on free ports; shut them all down afterwards."""
    running: list[tuple[LocalServer, threading.Thread]] = []

    def start(target: str, **options: Any) -> LocalServer:
        server = make_server(target, port=0, **options)
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        running.append((server, thread))
        return server

    yield start
    for server, thread in running:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _request(
    server: LocalServer,
    method: str,
    target: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[http.client.HTTPResponse, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=30)
    try:
        conn.request(method, target, body=body, headers=headers or {})
        response = conn.getresponse()
        return response, response.read()
    finally:
        conn.close()


def test_get_builds_v1_event_and_returns_handler_response(start_server: StartServer) -> None:
    server = start_server("tests.apps.echo:handler")
    response, body = _request(server, "GET", "/users/7?tag=a&tag=b", headers={"X-Test": "1"})
    assert response.status == 200
    assert response.getheader("Content-Type") == "application/json"
    assert response.getheader("X-Echo") == "yes"
    assert response.getheader("X-Multi") == "one, two"  # two header lines, joined by http.client
    echoed = json.loads(body)
    event = echoed["event"]
    assert event["httpMethod"] == "GET"
    assert event["path"] == "/users/7"
    assert event["multiValueQueryStringParameters"] == {"tag": ["a", "b"]}
    assert event["headers"]["X-Test"] == "1"
    assert event["requestContext"]["identity"]["sourceIp"] == "127.0.0.1"
    assert event["body"] is None
    assert echoed["context"]["aws_request_id"]
    assert 0 < echoed["context"]["remaining_ms"] <= 30_000


def test_post_body_reaches_handler(start_server: StartServer) -> None:
    server = start_server("tests.apps.echo:handler", event_version="v2", timeout=5)
    payload = json.dumps({"name": "Ada"}).encode()
    response, body = _request(
        server, "POST", "/users?x=1", payload, {"Content-Type": "application/json"}
    )
    assert response.status == 200
    echoed = json.loads(body)
    event = echoed["event"]
    assert event["version"] == "2.0"
    assert event["requestContext"]["http"]["method"] == "POST"
    assert json.loads(event["body"]) == {"name": "Ada"}
    assert event["queryStringParameters"] == {"x": "1"}
    assert echoed["context"]["remaining_ms"] <= 5000


def test_status_code_from_handler_is_passed_through(start_server: StartServer) -> None:
    server = start_server("tests.apps.echo:handler")
    response, _ = _request(server, "GET", "/missing?status=404")
    assert response.status == 404


def test_binary_response_body_is_decoded(start_server: StartServer) -> None:
    server = start_server("tests.apps.echo:binary")
    response, body = _request(server, "GET", "/blob")
    assert response.status == 200
    assert body == bytes(range(256))
    assert response.getheader("Content-Type") == "application/octet-stream"


def test_head_response_has_no_body(start_server: StartServer) -> None:
    server = start_server("tests.apps.echo:binary")
    response, body = _request(server, "HEAD", "/blob")
    assert response.status == 200
    assert body == b""
    assert response.getheader("Content-Length") == "256"


def test_handler_exception_is_502_with_traceback_on_stderr(
    start_server: StartServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server = start_server("tests.apps.echo:raising")
    response, body = _request(server, "GET", "/")
    assert response.status == 502
    assert json.loads(body) == {
        "error": "handler_error",
        "message": "RuntimeError: boom from handler",
    }
    err = capsys.readouterr().err
    assert "Traceback" in err and "boom from handler" in err


def test_invocation_past_the_timeout_is_504_and_a_stuck_one_does_not_block_the_next(
    start_server: StartServer, capsys: pytest.CaptureFixture[str]
) -> None:
    release = threading.Event()
    calls: list[tuple[str, int]] = []

    def slow(event: dict[str, Any], context: Any) -> dict[str, Any]:
        calls.append((event["path"], threading.get_ident()))
        if event["path"] == "/slow":
            release.wait(timeout=60)  # stuck until the test is over
        return {"statusCode": 200, "body": event["path"]}

    server = start_server(slow, timeout=1.0)
    try:
        response, body = _request(server, "GET", "/slow")
        assert response.status == 504
        assert json.loads(body) == {
            "error": "timeout",
            "message": "Task timed out after 1.00 seconds",
        }
        assert "Task timed out" in capsys.readouterr().err
        # The stuck invocation is abandoned, as Lambda ends a timed-out environment: the next
        # request runs at once, on a new invocation thread (a new environment).
        response, body = _request(server, "GET", "/fast")
        assert (response.status, body) == (200, b"/fast")
        assert [path for path, _ in calls] == ["/slow", "/fast"]
        assert calls[0][1] != calls[1][1]
    finally:
        release.set()


@pytest.mark.parametrize("size", [b"-1", b"+5", b"0x5", b"1_0", b"zz", b""])
def test_malformed_chunk_size_is_400_without_reading_further(
    start_server: StartServer, size: bytes
) -> None:
    calls: list[Any] = []

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        calls.append(event)
        return {"statusCode": 200, "body": "called"}

    server = start_server(handler)
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=30) as sock:
        head = b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        # The body is never sent and the connection stays open: a server that tried to read
        # on (the old bug: read(-1), i.e. to the end of the connection) would never answer.
        sock.sendall(head + size + b"\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status_line = data.split(b"\r\n", 1)[0]
    assert status_line == b"HTTP/1.1 400 Bad Request"
    assert data.count(b"HTTP/1.1 ") == 1  # one answer, then the connection is closed
    assert json.loads(data.split(b"\r\n\r\n", 1)[1])["error"] == "bad_request"
    assert calls == []


def test_malformed_content_length_is_400(start_server: StartServer) -> None:
    server = start_server("tests.apps.echo:raising")
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=30) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n")
        data = sock.recv(65536)
    assert data.startswith(b"HTTP/1.1 400 ")


def test_v1_response_without_status_code_is_502(start_server: StartServer) -> None:
    server = start_server("tests.apps.echo:plain", event_version="v1")
    response, body = _request(server, "GET", "/")
    assert response.status == 502
    assert json.loads(body)["error"] == "malformed_response"


def test_v2_response_without_status_code_is_json_200(start_server: StartServer) -> None:
    server = start_server("tests.apps.echo:plain", event_version="v2")
    response, body = _request(server, "GET", "/hi")
    assert response.status == 200
    assert json.loads(body) == {"hello": "world", "path": "/hi"}


def test_oversized_body_is_413_without_calling_handler(start_server: StartServer) -> None:
    # The raising handler would answer 502 if it were called.
    server = start_server("tests.apps.echo:raising")
    conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=30)
    try:
        # Announce 6 MB + 1 without sending it: the server must refuse on the header alone.
        conn.putrequest("POST", "/upload")
        conn.putheader("Content-Length", str(6 * 1024 * 1024 + 1))
        conn.endheaders()
        response = conn.getresponse()
        body = json.loads(response.read())
    finally:
        conn.close()
    assert response.status == 413
    assert body["error"] == "payload_too_large"
    assert response.getheader("Connection") == "close"


def test_body_limit_is_configurable_and_applies_to_chunked_bodies(
    start_server: StartServer,
) -> None:
    server = start_server("tests.apps.echo:handler", max_body_bytes=10)
    response, _ = _request(server, "POST", "/", b"x" * 10)
    assert response.status == 200
    response, _ = _request(server, "POST", "/", b"x" * 11)
    assert response.status == 413
    response, _ = _request(server, "POST", "/", iter([b"x" * 6, b"y" * 6]))  # type: ignore[arg-type]
    assert response.status == 413


def test_chunked_body_reaches_handler(start_server: StartServer) -> None:
    server = start_server("tests.apps.echo:handler")
    chunks = iter([b"hello ", b"world"])
    response, body = _request(server, "POST", "/", chunks, {"Content-Type": "text/plain"})  # type: ignore[arg-type]
    assert response.status == 200
    assert json.loads(body)["event"]["body"] == "hello world"


def test_keep_alive_reuses_the_connection(start_server: StartServer) -> None:
    server = start_server("tests.apps.echo:handler")
    conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=30)
    try:
        conn.request("GET", "/one")
        first = conn.getresponse()
        first.read()
        sock = conn.sock
        assert sock is not None
        for path in ("/two", "/three?status=404"):
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            assert response.getheader("Connection") != "close"
            # http.client reconnects (new socket) if the server had closed the connection
            assert conn.sock is sock
        assert response.status == 404
    finally:
        conn.close()


def test_invocations_run_on_one_thread_across_connections(start_server: StartServer) -> None:
    # One Lambda execution environment: Peewee's per-thread connection is reused by all requests.
    server = start_server("tests.apps.echo:handler")
    threads = {json.loads(_request(server, "GET", "/")[1])["thread"] for _ in range(3)}
    assert len(threads) == 1
    assert threads != {threading.get_ident()}


@pytest.mark.parametrize(("version", "handler"), [("v1", "handler"), ("v2", "http_handler")])
def test_powertools_resolver_app(start_server: StartServer, version: str, handler: str) -> None:
    server = start_server(f"tests.apps.powertools_app:{handler}", event_version=version)
    response, body = _request(server, "GET", "/items/1")
    assert response.status == 200
    assert json.loads(body) == {"id": "1", "name": "first"}

    response, body = _request(server, "GET", "/items/999")
    assert response.status == 404
    assert "item 999 not found" in body.decode()

    payload = json.dumps({"name": "second"}).encode()
    response, body = _request(
        server, "POST", "/items?a=1", payload, {"Content-Type": "application/json"}
    )
    assert response.status == 201
    assert json.loads(body) == {"received": {"name": "second"}, "query": {"a": "1"}}


def _spawn_serve(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "peewee_serverless", "serve", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_cli_serve_prints_ready_line_and_serves() -> None:
    proc = _spawn_serve("tests.apps.echo:handler", "--port", "0", "--event-version", "v2")
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        prefix = "Serving tests.apps.echo:handler on http://127.0.0.1:"
        assert line.startswith(prefix), line
        assert line.rstrip().endswith("(API Gateway v2 events)")
        port = int(line[len(prefix) :].split()[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/ping")
        response = conn.getresponse()
        assert response.status == 200
        assert json.loads(response.read())["event"]["rawPath"] == "/ping"
        conn.close()
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_cli_serve_with_bad_target_exits_2_with_one_line() -> None:
    proc = _spawn_serve("tests.apps.does_not_exist:handler", "--port", "0")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert out == ""
    assert err.count("\n") == 1
    assert "does_not_exist" in err
