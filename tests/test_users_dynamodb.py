"""The users service's DynamoDB store (``USERS_STORE=dynamodb``) beyond the shared route tests.

The shared body (tests/test_example_users.py) runs on the ``dynamodb`` backend too; here is what
is particular to DynamoDB: the atomic email uniqueness under concurrency, exactly-once across a
crash between the user's write and the idempotency record, the table's item layout (cursor =
``LastEvaluatedKey``), an unreachable endpoint answering 503, and a silent one answering 503 by
the invocation's deadline (tests/faultproxy.py in front of moto). DynamoDB is moto's server
(``ThreadedMotoServer``, real HTTP on a loopback port); nothing here reaches AWS.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from peewee_serverless.local.context import LambdaContext
from peewee_serverless.local.events import HttpRequest, build_event

from .conftest import (
    SELECTED,
    Backend,
    UsersService,
    _dynamodb_client,
    dynamodb_backend,
    load_users_service,
)
from .faultproxy import FaultProxy
from .servers import free_port

pytestmark = pytest.mark.skipif(
    "dynamodb" not in SELECTED, reason="dynamodb left out of PEEWEE_SERVERLESS_TEST_BACKENDS"
)


@pytest.fixture
def service(
    moto_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[UsersService]:
    """The users service on a fresh DynamoDB table of moto's server."""
    yield load_users_service(dynamodb_backend(moto_server, tmp_path), monkeypatch)


def post(service: UsersService, body: dict[str, Any], key: str | None = None) -> tuple[int, Any]:
    headers = [("Content-Type", "application/json")]
    if key:
        headers.append(("Idempotency-Key", key))
    event = build_event(
        HttpRequest.from_target("POST", "/users", headers, json.dumps(body).encode()), "v1"
    )
    response = service.invoke(event)
    return response["statusCode"], json.loads(response["body"])


def _header(response: dict[str, Any], name: str) -> str:
    # REST (v1) answers carry multiValueHeaders, HTTP API (v2) answers headers.
    single = response.get("headers") or {}
    multi = response.get("multiValueHeaders") or {}
    return str(single.get(name) or multi[name][0])


def items(backend: Backend) -> list[dict[str, Any]]:
    return _dynamodb_client(backend).scan(
        TableName=backend.env["USERS_TABLE"], ConsistentRead=True
    )["Items"]


def test_concurrent_creates_with_one_email_make_one_user(service: UsersService) -> None:
    """Eight different requests for one email written at once (threads sharing the store's
    boto3 client, which is thread-safe): one user, seven EmailTaken, one email item."""
    from examples.users.store import EmailTaken

    store = service.module.store
    outcomes: list[Any] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def create(i: int) -> None:
        start.wait(30)
        request = {"key": None, "body": {"name": f"N{i}", "email": "same@example.com"}}
        try:
            outcome: Any = store._create(request)  # the write itself, as each request runs it
        except EmailTaken:
            outcome = "taken"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    created = [o for o in outcomes if o != "taken"]
    assert len(created) == 1 and outcomes.count("taken") == 7, outcomes
    assert service.user_rows() == [(created[0]["id"], created[0]["name"], "same@example.com")]
    emails = [i for i in items(service.backend) if i["pk"]["S"].startswith("EMAIL#")]
    assert [e["pk"]["S"] for e in emails] == ["EMAIL#same@example.com"]
    # Through the route, a ninth request is refused the same way.
    status, body = post(service, {"name": "Late", "email": "SAME@example.com"})
    assert (status, body["message"]) == (409, "Email already exists")


def test_retry_after_a_crash_before_the_record_completed_gets_the_first_user(
    service: UsersService,
) -> None:
    """The user was written but the invocation died before Powertools completed its record:
    the retry answers that user (201), not "Email already exists"; another request still 409."""
    store = service.module.store
    request = {"key": "k-1", "body": {"name": "Ada", "email": "ada@example.com"}}
    first = store._create(request)  # the write, without the idempotency record: the "crash"
    status, body = post(service, {"name": "Ada", "email": "ada@example.com"}, key="k-1")
    assert (status, body) == (201, first)
    status, body = post(service, {"name": "Eve", "email": "ada@example.com"}, key="k-2")
    assert (status, body["message"]) == (409, "Email already exists")
    assert service.user_rows() == [(1, "Ada", "ada@example.com")]


def test_items_cursor_and_idempotency_records_share_one_table(service: UsersService) -> None:
    for i in range(3):
        assert post(service, {"name": f"U{i}", "email": f"u{i}@example.com"})[0] == 201
    store = service.module.store
    kinds = sorted({i["pk"]["S"].split("#")[0] for i in items(service.backend)})
    assert kinds == ["COUNTER", "EMAIL", "USERS", "idempotency"]
    # The API's cursor is the page's LastEvaluatedKey: the next page starts after it.
    client = _dynamodb_client(service.backend)
    page = client.query(
        TableName=store.table_name,
        KeyConditionExpression="pk = :u",
        ExpressionAttributeValues={":u": {"S": "USERS"}},
        Limit=2,
    )
    assert page["LastEvaluatedKey"]["sk"] == {"S": "0000000002"}
    assert [u["id"] for u in store.list_users(2, 10)] == [3]
    assert [u["id"] for u in store.list_users(0, 2)] == [1, 2]


def test_unreachable_dynamodb_answers_503_with_retry_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing listens at the endpoint: reads and writes answer 503 + Retry-After, not 500."""
    backend = dynamodb_backend(f"http://127.0.0.1:{free_port()}", tmp_path)
    service = load_users_service(backend, monkeypatch, prepare=False)
    for event in (
        build_event(HttpRequest.from_target("GET", "/users/1", [], b""), "v2"),
        build_event(HttpRequest.from_target("GET", "/users?limit=2", [], b""), "v1"),
    ):
        response = service.invoke(event)
        assert response["statusCode"] == 503, response
        assert int(_header(response, "Retry-After")) >= 1
    status, body = post(service, {"name": "Ada", "email": "ada@example.com"})
    assert status == 503, body


ROUTES = {
    "get": ("GET", "/users/1", b""),
    "list": ("GET", "/users?limit=2", b""),
    "create": ("POST", "/users", json.dumps({"name": "Bo", "email": "bo@example.com"}).encode()),
}


def _event(route: str) -> dict[str, Any]:
    method, target, body = ROUTES[route]
    headers = [("Content-Type", "application/json")] if body else []
    return build_event(HttpRequest.from_target(method, target, headers, body), "v1")


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_a_silent_dynamodb_answers_503_by_the_deadline(
    route: str, moto_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DynamoDB stops answering (a partition: connections stay open, nothing comes back). With
    a 2 s Lambda timeout, each route answers 503 + Retry-After before the timeout, where the
    fixed client (5 s reads, four attempts) would have waited over 20 s; then it recovers."""
    host, port = moto_server.removeprefix("http://").split(":")
    with FaultProxy(host, int(port)) as proxy:
        backend = dynamodb_backend(f"http://{proxy.host}:{proxy.port}", tmp_path)
        service = load_users_service(backend, monkeypatch)
        assert post(service, {"name": "Ada", "email": "ada@example.com"})[0] == 201  # warm
        proxy.set_mode("blackhole")
        context = LambdaContext(timeout=2.0)
        response = service.invoke(_event(route), context)
        assert context.get_remaining_time_in_millis() > 0, ("answered after the timeout", response)
        assert response["statusCode"] == 503, response
        assert int(_header(response, "Retry-After")) >= 1
        proxy.set_mode("pass")
        answer = service.invoke(_event(route))
        assert answer["statusCode"] in (200, 201), answer


def test_with_too_little_time_left_nothing_is_sent(
    moto_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An invocation that starts with less time than the shortest call needs answers 503 at
    once (DeadlineExceeded), without a request to DynamoDB."""
    host, port = moto_server.removeprefix("http://").split(":")
    with FaultProxy(host, int(port)) as proxy:
        backend = dynamodb_backend(f"http://{proxy.host}:{proxy.port}", tmp_path)
        service = load_users_service(backend, monkeypatch)
        proxy.set_mode("reset")  # any request that went out would be refused: none may
        opened = proxy.connections
        response = service.invoke(_event("get"), LambdaContext(timeout=0.5))
        assert response["statusCode"] == 503, response
        assert int(_header(response, "Retry-After")) >= 1
        assert proxy.connections == opened
