"""The example users service on every backend: through the handler, real HTTP and `invoke`."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from peewee_serverless.testing import LambdaClient

from .conftest import (
    ROOT,
    USERS_ROUTES_BACKENDS,
    Backend,
    UsersService,
    load_users_service,
    make_selected_backend,
)

JSON = [("Content-Type", "application/json")]


@pytest.fixture(params=USERS_ROUTES_BACKENDS)
def example_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Here every store of the users routes: the SQL backends, PgBouncer and DynamoDB."""
    b = make_selected_backend(request, tmp_path)
    yield b
    b.close()


@pytest.fixture
def backend(example_backend: Backend) -> Backend:
    """Here ``backend`` is every backend of the users routes, not only the SQL engines."""
    return example_backend


def call(
    service: UsersService,
    method: str,
    target: str,
    body: Any = None,
    version: str = "v1",
    raw: bytes | None = None,
) -> tuple[int, Any, dict[str, Any]]:
    """One request through the Lambda handler (the test client of peewee_serverless.testing):
    (status, parsed JSON body, the handler's response)."""
    client = LambdaClient(service.module.handler, version=version)
    data = raw if raw is not None else (None if body is None else json.dumps(body))
    response = client.request(method, target, body=data, headers=JSON)
    return response.status_code, json.loads(response.text or "null"), response.raw


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_seed_scenario_same_email_twice(users_service: UsersService, version: str) -> None:
    """The seed's scenario: 201, then 409 "Email already exists", and one row in the table."""
    payload = {"name": "Ada", "email": "ada@example.com"}
    status, body, _ = call(users_service, "POST", "/users", payload, version)
    assert status == 201
    assert body["name"] == "Ada" and body["email"] == "ada@example.com"
    assert body["id"] >= 1 and body["created_at"].endswith("Z")

    status, body, _ = call(users_service, "POST", "/users", dict(payload, name="Eve"), version)
    assert status == 409
    assert body == {"error": "conflict", "message": "Email already exists"}
    assert users_service.user_rows() == [(1, "Ada", "ada@example.com")]


def test_email_is_unique_regardless_of_case(users_service: UsersService) -> None:
    assert call(users_service, "POST", "/users", {"name": "A", "email": "Bo@Example.com"})[0] == 201
    status, body, _ = call(
        users_service, "POST", "/users", {"name": "B", "email": "bo@example.COM"}
    )
    assert status == 409
    assert [r[2] for r in users_service.user_rows()] == ["bo@example.com"]


def test_get_user_and_404(users_service: UsersService) -> None:
    _, created, _ = call(users_service, "POST", "/users", {"name": "Ann", "email": "ann@x.org"})
    status, body, _ = call(users_service, "GET", f"/users/{created['id']}", version="v2")
    assert status == 200 and body == created
    status, body, _ = call(users_service, "GET", "/users/999999")
    assert status == 404
    assert body == {"error": "not_found", "message": "User not found"}


def test_list_is_cursor_paginated_in_a_stable_order(users_service: UsersService) -> None:
    emails = [f"user{i}@example.com" for i in range(7)]
    for i, email in enumerate(emails):
        assert call(users_service, "POST", "/users", {"name": f"U{i}", "email": email})[0] == 201
    seen: list[str] = []
    target = "/users?limit=3"
    pages = 0
    while target and pages < 10:
        status, body, _ = call(users_service, "GET", target)
        assert status == 200
        assert len(body["users"]) <= 3
        seen += [u["email"] for u in body["users"]]
        pages += 1
        cursor = body["next_cursor"]
        target = f"/users?limit=3&cursor={cursor}" if cursor else ""
    assert pages == 3
    assert seen == emails


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "a@b.co"}, "name"),
        ({"name": "A"}, "email"),
        ({"name": "", "email": "a@b.co"}, "name"),
        ({"name": 123, "email": "a@b.co"}, "name"),
        ({"name": "A", "email": "not-an-email"}, "email"),
        ({"name": "A" * 101, "email": "a@b.co"}, "name"),
        ({"name": "A", "email": "a@b.co", "admin": True}, "admin"),
    ],
)
def test_invalid_bodies_are_422_naming_the_field(
    users_service: UsersService, body: dict[str, Any], field: str
) -> None:
    status, answer, _ = call(users_service, "POST", "/users", body)
    assert status == 422
    assert answer["error"] == "validation_error"
    assert field in [d["field"] for d in answer["details"]]
    assert users_service.user_rows() == []


@pytest.mark.parametrize(
    ("raw", "status", "error"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"x" * 70_000, 413, "payload_too_large"),
        (b"[1, 2]", 422, "validation_error"),
    ],
)
def test_malformed_bodies(users_service: UsersService, raw: bytes, status: int, error: str) -> None:
    got, answer, _ = call(users_service, "POST", "/users", raw=raw)
    assert (got, answer["error"]) == (status, error)
    assert [d["field"] for d in answer["details"]] == ["body"]
    assert users_service.user_rows() == []


def test_bad_query_parameters(users_service: UsersService) -> None:
    status, body, _ = call(users_service, "GET", "/users?limit=0")
    assert status == 422 and "query.limit" in [d["field"] for d in body["details"]]
    status, body, _ = call(users_service, "GET", "/users?cursor=@@@")
    assert status == 400 and body["details"][0]["field"] == "cursor"
    status, body, _ = call(users_service, "GET", "/users/abc")
    assert status == 422


def test_unicode_names_round_trip(users_service: UsersService) -> None:
    status, body, _ = call(
        users_service, "POST", "/users", {"name": "Zoë Ωmega 你好", "email": "z@x.io"}
    )
    assert status == 201 and body["name"] == "Zoë Ωmega 你好"
    assert users_service.user_rows()[0][1] == "Zoë Ωmega 你好"


# -- the same service over real HTTP and through `peewee-serverless invoke` --------------------


def _child_env(backend: Backend) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DATABASE_URL"))}
    env.update(backend.env)
    env["POWERTOOLS_LOG_LEVEL"] = "WARNING"  # keep stdout for the answers
    env["PYTHONPATH"] = str(ROOT)
    return env


@pytest.fixture(params=["v1", "v2"])
def http_server(
    request: pytest.FixtureRequest, backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, int, UsersService]]:
    """`peewee-serverless serve` in a real process, on a free port, for every backend."""
    service = load_users_service(backend, monkeypatch)  # migrates the schema
    proc = subprocess.Popen(
        [sys.executable, "-m", "peewee_serverless", "serve", "examples.users.app:handler"]
        + ["--port", "0", "--event-version", request.param],
        stdout=subprocess.PIPE,
        text=True,
        env=_child_env(backend),
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("Serving examples.users.app:handler on http://"), line
        url = urlparse(line.split(" on ", 1)[1].split()[0])
        yield url.hostname or "127.0.0.1", url.port or 0, service
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _request(
    conn: http.client.HTTPConnection, method: str, path: str, body: Any = None
) -> tuple[int, dict[str, str], Any]:
    data = None if body is None else json.dumps(body).encode()
    conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    payload = response.read()
    return response.status, dict(response.getheaders()), json.loads(payload)


def test_users_api_over_real_http(http_server: tuple[str, int, UsersService]) -> None:
    host, port, service = http_server
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        payload = {"name": "Ada", "email": "ada@example.com"}
        status, headers, body = _request(conn, "POST", "/users", payload)
        assert status == 201 and body["email"] == "ada@example.com"
        assert headers["Content-Type"].startswith("application/json")
        # Same keep-alive connection: the identical retry is replayed, another body conflicts.
        status, _, body = _request(conn, "POST", "/users", payload)
        assert (status, body["id"]) == (201, 1)
        status, _, body = _request(conn, "POST", "/users", dict(payload, name="Eve"))
        assert (status, body["message"]) == (409, "Email already exists")
        status, _, body = _request(conn, "GET", "/users")
        assert status == 200 and [u["name"] for u in body["users"]] == ["Ada"]
        status, _, body = _request(conn, "GET", "/users/42")
        assert status == 404
        status, _, body = _request(conn, "POST", "/users", {"name": 5, "email": "x@y.z"})
        assert status == 422 and body["details"][0]["field"] == "name"
    finally:
        conn.close()
    assert service.user_rows() == [(1, "Ada", "ada@example.com")]


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_invoke_command_with_example_events(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, version: str
) -> None:
    service = load_users_service(backend, monkeypatch)
    events = ROOT / "examples" / "users" / "events"

    def invoke(name: str) -> dict[str, Any]:
        out = subprocess.run(
            [sys.executable, "-m", "peewee_serverless", "invoke", "examples.users.app:handler"]
            + ["--event", str(events / f"{name}_{version}.json")],
            capture_output=True,
            text=True,
            env=_child_env(backend),
            cwd=ROOT,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    created = invoke("create_user")
    assert created["statusCode"] == 201
    # The same request again is a retry (idempotency keyed on the body): the first response.
    duplicate = invoke("create_user")
    assert duplicate["statusCode"] == 201
    assert json.loads(duplicate["body"]) == json.loads(created["body"])
    listed = invoke("list_users")
    assert listed["statusCode"] == 200
    assert [u["id"] for u in json.loads(listed["body"])["users"]] == [1]
    assert len(service.user_rows()) == 1
