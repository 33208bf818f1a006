"""The Lambda Runtime API protocol (peewee_serverless.local.runtime_api), spoken over real HTTP.

The client here plays the runtime (awslambdaric does the same requests; test_local_ric runs it).
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator

import pytest

from peewee_serverless.local.runtime_api import Invocation, RuntimeApiServer

ARN = "arn:aws:lambda:us-east-1:123456789012:function:fn"
NEXT = "/2018-06-01/runtime/invocation/next"


@pytest.fixture
def api() -> Iterator[RuntimeApiServer]:
    server = RuntimeApiServer(function_arn=ARN, timeout=3.0, max_response_bytes=1000)
    server.start()
    yield server
    server.close()


def call(
    api: RuntimeApiServer,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    host, port = api.address.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_next_delivers_the_event_with_lambdas_headers(api: RuntimeApiServer) -> None:
    invocation = Invocation(
        b'{"hello": 1}',
        client_context='{"custom": {}}',
        cognito_identity='{"cognitoIdentityId": "i"}',
    )
    api.submit(invocation)
    before = time.time()
    status, headers, body = call(api, "GET", NEXT)
    assert status == 200
    assert body == b'{"hello": 1}'
    assert headers["Lambda-Runtime-Aws-Request-Id"] == invocation.request_id
    assert headers["Lambda-Runtime-Invoked-Function-Arn"] == ARN
    assert headers["Lambda-Runtime-Trace-Id"].startswith("Root=1-")
    assert headers["Lambda-Runtime-Client-Context"] == '{"custom": {}}'
    assert headers["Lambda-Runtime-Cognito-Identity"] == '{"cognitoIdentityId": "i"}'
    deadline = int(headers["Lambda-Runtime-Deadline-Ms"]) / 1000
    assert before + 2.5 <= deadline <= time.time() + 3.0  # the timeout counts from delivery
    assert api.initialized.is_set()

    path = f"/2018-06-01/runtime/invocation/{invocation.request_id}/response"
    status, _, body = call(api, "POST", path, b'{"statusCode": 200}')
    assert (status, json.loads(body)) == (202, {"status": "OK"})
    assert invocation.wait(5)
    assert invocation.result == b'{"statusCode": 200}'
    assert invocation.error is None


def test_optional_headers_are_left_out_when_not_given(api: RuntimeApiServer) -> None:
    api.submit(Invocation(b"{}"))
    _, headers, _ = call(api, "GET", NEXT)
    assert "Lambda-Runtime-Client-Context" not in headers
    assert "Lambda-Runtime-Cognito-Identity" not in headers


def test_next_blocks_until_an_event_is_submitted(api: RuntimeApiServer) -> None:
    got: list[bytes] = []
    poller = threading.Thread(target=lambda: got.append(call(api, "GET", NEXT)[2]), daemon=True)
    poller.start()
    assert api.initialized.wait(10)  # the runtime is waiting in next
    assert got == []
    api.submit(Invocation(b'"late"'))
    poller.join(10)
    assert got == [b'"late"']


def test_error_keeps_the_runtimes_document(api: RuntimeApiServer) -> None:
    invocation = Invocation(b"{}")
    api.submit(invocation)
    call(api, "GET", NEXT)
    doc = {"errorMessage": "boom", "errorType": "ValueError", "stackTrace": ["  File x"]}
    path = f"/2018-06-01/runtime/invocation/{invocation.request_id}/error"
    status, _, _ = call(
        api, "POST", path, json.dumps(doc).encode(), {"Lambda-Runtime-Function-Error-Type": "X"}
    )
    assert status == 202
    assert invocation.wait(5)
    assert invocation.error == doc


def test_error_that_is_not_json_takes_its_type_from_the_header(api: RuntimeApiServer) -> None:
    invocation = Invocation(b"{}")
    api.submit(invocation)
    call(api, "GET", NEXT)
    path = f"/2018-06-01/runtime/invocation/{invocation.request_id}/error"
    headers = {"Lambda-Runtime-Function-Error-Type": "Runtime.Custom"}
    assert call(api, "POST", path, b"[" * 50_000, headers)[0] == 202
    assert invocation.error is not None
    assert invocation.error["errorType"] == "Runtime.Custom"


def test_response_over_the_limit_is_413_and_ends_as_size_error(api: RuntimeApiServer) -> None:
    invocation = Invocation(b"{}")
    api.submit(invocation)
    call(api, "GET", NEXT)
    path = f"/2018-06-01/runtime/invocation/{invocation.request_id}/response"
    status, _, body = call(api, "POST", path, b"x" * 1001)
    assert status == 413
    assert json.loads(body)["errorType"] == "RequestEntityTooLarge"
    assert invocation.error is not None
    assert invocation.error["errorType"] == "Function.ResponseSizeTooLarge"
    assert "1000 bytes" in invocation.error["errorMessage"]


def test_response_for_another_request_id_is_400(api: RuntimeApiServer) -> None:
    invocation = Invocation(b"{}")
    api.submit(invocation)
    call(api, "GET", NEXT)
    status, _, body = call(api, "POST", "/2018-06-01/runtime/invocation/nope/response", b"{}")
    assert status == 400
    assert json.loads(body)["errorType"] == "InvalidRequestID"
    assert not invocation.done
    # ... and a second answer for a finished invocation too.
    path = f"/2018-06-01/runtime/invocation/{invocation.request_id}/response"
    assert call(api, "POST", path, b"1")[0] == 202
    assert call(api, "POST", path, b"2")[0] == 400
    assert invocation.result == b"1"


def test_init_error_ends_the_waiting_invocation_and_later_ones(api: RuntimeApiServer) -> None:
    invocation = Invocation(b"{}")
    api.submit(invocation)
    doc = {
        "errorMessage": "Unable to import module 'app'",
        "errorType": "Runtime.ImportModuleError",
    }
    status, _, _ = call(api, "POST", "/2018-06-01/runtime/init/error", json.dumps(doc).encode())
    assert status == 202
    assert invocation.wait(5)
    assert invocation.error == doc
    later = Invocation(b"{}")
    api.submit(later)
    assert later.error == doc


def test_init_error_after_init_is_403(api: RuntimeApiServer) -> None:
    api.submit(Invocation(b"{}"))
    call(api, "GET", NEXT)
    status, _, _ = call(api, "POST", "/2018-06-01/runtime/init/error", b"{}")
    assert status == 403


@pytest.mark.parametrize(("method", "path"), [("GET", "/2018-06-01/runtime/x"), ("POST", "/x")])
def test_unknown_endpoints_are_404(api: RuntimeApiServer, method: str, path: str) -> None:
    assert call(api, method, path, b"" if method == "POST" else None)[0] == 404


def test_malformed_chunked_response_is_400(api: RuntimeApiServer) -> None:
    import socket

    invocation = Invocation(b"{}")
    api.submit(invocation)
    call(api, "GET", NEXT)
    host, port = api.address.split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        path = f"/2018-06-01/runtime/invocation/{invocation.request_id}/response"
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n".encode()
        )
        data = sock.recv(65536)
    assert data.startswith(b"HTTP/1.0 400") or data.startswith(b"HTTP/1.1 400")
    assert not invocation.done
