"""The users example under retries and attack: idempotent POST, OpenAPI, CORS, limits, fuzzing.

Every test runs on SQLite, MariaDB and PostgreSQL through the Lambda handler.
"""

from __future__ import annotations

import base64
import json
import multiprocessing
import os
from typing import Any
from urllib.parse import urlencode

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peewee_serverless.local.events import HttpRequest, build_event

from .conftest import ROOT, Backend, UsersService, load_users_service

DOC = json.loads((ROOT / "docs" / "openapi.json").read_text(encoding="utf-8"))
FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "40")),
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
WORKERS = 20


def call(
    service: UsersService,
    method: str,
    target: str,
    body: Any = None,
    *,
    headers: list[tuple[str, str]] | None = None,
    raw: bytes | None = None,
    version: str = "v1",
) -> tuple[int, Any, dict[str, Any]]:
    """One request through the handler: (status, parsed JSON body or None, raw result)."""
    data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
    all_headers = [("Content-Type", "application/json"), *(headers or [])]
    event = build_event(HttpRequest.from_target(method, target, all_headers, data), version)
    result = service.invoke(event)
    text = result.get("body") or ""
    if result.get("isBase64Encoded"):
        text = base64.b64decode(text).decode()
    return result["statusCode"], (json.loads(text) if text else None), result


def idempotency_rows(service: UsersService) -> list[tuple[Any, ...]]:
    return service.backend.query("SELECT id, status FROM idempotency_record")


def assert_error_shape(status: int, body: Any) -> None:
    assert status < 500, body
    if status >= 400:
        assert isinstance(body, dict) and isinstance(body.get("error"), str), body
        assert isinstance(body.get("message"), str), body


# -- idempotent POST /users -------------------------------------------------------------------
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_retry_with_same_key_returns_first_response(
    users_service: UsersService, version: str
) -> None:
    key = [("Idempotency-Key", "order-7f3a")]
    payload = {"name": "Ada", "email": "ada@example.com"}
    first = call(users_service, "POST", "/users", payload, headers=key, version=version)
    again = call(users_service, "POST", "/users", payload, headers=key, version=version)
    assert first[0] == again[0] == 201
    assert first[1] == again[1]
    assert first[2]["body"] == again[2]["body"]  # byte for byte, not only the same JSON
    assert users_service.user_rows() == [(1, "Ada", "ada@example.com")]
    assert [r[1] for r in idempotency_rows(users_service)] == ["COMPLETED"]


def test_same_key_different_body_is_422(users_service: UsersService) -> None:
    key = [("Idempotency-Key", "k1")]
    assert call(users_service, "POST", "/users", {"name": "A", "email": "a@x.io"}, headers=key)[0]
    status, body, _ = call(
        users_service, "POST", "/users", {"name": "B", "email": "b@x.io"}, headers=key
    )
    assert status == 422
    assert body["error"] == "idempotency_key_reused"
    assert len(users_service.user_rows()) == 1


def test_without_key_the_parsed_body_is_the_key(users_service: UsersService) -> None:
    first = call(users_service, "POST", "/users", raw=b'{"name": "Ada", "email": "a@x.io"}')
    # Same JSON, other key order and whitespace: the same request.
    again = call(users_service, "POST", "/users", raw=b'{ "email":"a@x.io",\n"name":"Ada" }')
    assert first[0] == again[0] == 201 and first[1] == again[1]
    other = call(users_service, "POST", "/users", {"name": "Eve", "email": "a@x.io"})
    assert other[0] == 409 and other[1]["message"] == "Email already exists"
    assert len(users_service.user_rows()) == 1


def test_invalid_idempotency_key_is_422(users_service: UsersService) -> None:
    for bad in ("", "x" * 129, "with space"):
        status, body, _ = call(
            users_service,
            "POST",
            "/users",
            {"name": "A", "email": "a@x.io"},
            headers=[("Idempotency-Key", bad)],
        )
        assert status in (400, 422), (bad, status)
        assert_error_shape(status, body)
    assert users_service.user_rows() == []


def test_failing_request_removes_record_and_retry_succeeds(
    users_service: UsersService, monkeypatch: pytest.MonkeyPatch
) -> None:
    import examples.users.models

    user_model = examples.users.models.User

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("disk on fire")

    with monkeypatch.context() as m:
        m.setattr(user_model, "create", boom)
        status, body, _ = call(users_service, "POST", "/users", {"name": "A", "email": "a@x.io"})
    assert (status, body["error"]) == (500, "internal_error")
    assert "fire" not in json.dumps(body)
    assert idempotency_rows(users_service) == []
    status, body, _ = call(users_service, "POST", "/users", {"name": "A", "email": "a@x.io"})
    assert status == 201 and body["id"] == 1


def test_in_progress_duplicate_is_409_and_expired_record_is_replaced(
    users_service: UsersService,
) -> None:
    key = [("Idempotency-Key", "slow")]
    payload = {"name": "A", "email": "a@x.io"}
    assert call(users_service, "POST", "/users", payload, headers=key)[0] == 201
    # As if another container were still running this request:
    users_service.backend.query(
        "UPDATE idempotency_record SET status = 'INPROGRESS', in_progress_expiration = NULL"
    )
    status, body, result = call(users_service, "POST", "/users", payload, headers=key)
    assert (status, body["error"]) == (409, "request_in_progress")
    assert "in progress" in body["message"] or "being processed" in body["message"]
    # Expired: the request runs again (and now meets its own user: 409 conflict).
    users_service.backend.query("UPDATE idempotency_record SET expiration = 1")
    status, body, _ = call(users_service, "POST", "/users", payload, headers=key)
    assert (status, body["message"]) == (409, "Email already exists")
    assert len(users_service.user_rows()) == 1


def _post_worker(env: dict[str, str], barrier: Any, results: Any) -> None:
    """One container of the example, posting the same keyed request as all the others."""
    os.environ.update(env)
    os.environ["POWERTOOLS_LOG_LEVEL"] = "ERROR"
    from examples.users.app import handler
    from peewee_serverless.local.context import LambdaContext

    headers = [("Content-Type", "application/json"), ("Idempotency-Key", "burst")]
    body = json.dumps({"name": "Ada", "email": "ada@example.com"}).encode()
    event = build_event(HttpRequest.from_target("POST", "/users", headers, body))
    try:
        barrier.wait(timeout=120)
        result = handler(event, LambdaContext())
        results.put((result["statusCode"], json.loads(result["body"])))
    except BaseException as exc:  # noqa: BLE001 - the parent reports it
        results.put((-1, repr(exc)))


def test_concurrent_duplicates_create_one_user(users_service: UsersService) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(WORKERS)
    results = ctx.Queue()
    env = dict(users_service.backend.env)
    procs = [ctx.Process(target=_post_worker, args=(env, barrier, results)) for _ in range(WORKERS)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    created = [b for s, b in outcomes if s == 201]
    busy = [b for s, b in outcomes if s == 409]
    assert len(created) + len(busy) == WORKERS, outcomes
    assert created and all(b == created[0] for b in created)
    assert all(b["error"] == "request_in_progress" for b in busy)
    assert users_service.user_rows() == [(1, "Ada", "ada@example.com")]


# -- OpenAPI, CORS, limits, strict types, unicode ---------------------------------------------
def test_openapi_document_is_served_and_committed(users_service: UsersService) -> None:
    status, body, result = call(users_service, "GET", "/openapi.json")
    assert status == 200
    assert result["multiValueHeaders"]["Content-Type"] == ["application/json"]
    assert body == DOC  # scripts/openapi --check keeps docs/openapi.json current
    assert {"/users", "/users/{user_id}"} <= set(body["paths"])
    params = body["paths"]["/users"]["post"]["parameters"]
    assert [p["name"].lower() for p in params] == ["idempotency-key"]


def test_cors_is_configured_from_the_environment(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CORS_ALLOW_ORIGINS", "https://app.example, https://admin.example")
    service = load_users_service(backend, monkeypatch)
    try:
        for origin in ("https://app.example", "https://admin.example"):
            _, _, result = call(service, "GET", "/users", headers=[("Origin", origin)])
            assert result["multiValueHeaders"]["Access-Control-Allow-Origin"] == [origin]
        _, _, result = call(service, "GET", "/users", headers=[("Origin", "https://evil.example")])
        assert "Access-Control-Allow-Origin" not in (result.get("multiValueHeaders") or {})
    finally:
        service.db.close()
    monkeypatch.delenv("CORS_ALLOW_ORIGINS")
    service = load_users_service(backend, monkeypatch)
    _, _, result = call(service, "GET", "/users", headers=[("Origin", "https://app.example")])
    assert "Access-Control-Allow-Origin" not in (result.get("multiValueHeaders") or {})
    service.db.close()


def test_body_size_limit_from_the_environment(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("API_MAX_BODY_BYTES", "64")
    service = load_users_service(backend, monkeypatch)
    status, body, _ = call(service, "POST", "/users", {"name": "A" * 80, "email": "a@x.io"})
    assert (status, body["error"]) == (413, "payload_too_large")
    assert service.user_rows() == []
    service.db.close()


def test_strict_types_and_unicode(users_service: UsersService) -> None:
    for bad in (
        {"name": 123, "email": "a@x.io"},
        {"name": "A", "email": ["a@x.io"]},
        {"name": "a\x00b", "email": "a@x.io"},  # PostgreSQL cannot store NUL: a 422, not a 500
    ):
        status, body, _ = call(users_service, "POST", "/users", bad)
        assert status == 422 and body["error"] == "validation_error"
    payload = {"name": "Zoë 李 🚀", "email": "zoë@exämple.com"}
    status, body, _ = call(users_service, "POST", "/users", payload)
    assert status == 201 and (body["name"], body["email"]) == (payload["name"], payload["email"])
    status, body, _ = call(users_service, "GET", f"/users/{body['id']}")
    assert body["name"] == payload["name"]
    assert users_service.user_rows() == [(1, payload["name"], payload["email"])]


# -- fuzzing ---------------------------------------------------------------------------------
def _fuzz_operation(
    service: UsersService, operation: Any, created: dict[int, tuple[str, str]]
) -> None:
    """Run schemathesis cases (valid and invalid) for one operation through the handler."""
    spec = DOC["paths"][operation.path][operation.method.lower()]
    documented = {int(code) for code in spec["responses"]}
    strategy = st.one_of(
        operation.as_strategy(generation_mode=schemathesis.GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=schemathesis.GenerationMode.NEGATIVE),
    )

    @FUZZ
    @given(case=strategy)
    def run(case: Any) -> None:
        query = urlencode(case.query or {}, doseq=True)
        target = case.formatted_path + (f"?{query}" if query else "")
        headers = [(str(k), str(v)) for k, v in (case.headers or {}).items()]
        body = getattr(case, "body", None)
        raw = b"" if not isinstance(body, (dict, list, str, int, float, bool)) else None
        status, answer, _ = call(
            service, case.method.upper(), target, body, headers=headers, raw=raw
        )
        assert_error_shape(status, answer)
        assert status in documented, (operation.method, operation.path, status, answer)
        if status == 201:
            created[answer["id"]] = (answer["name"], answer["email"])

    run()


def test_fuzz_from_openapi_document(users_service: UsersService) -> None:
    """Schemathesis cases for every operation: never a 5xx, every status one the document lists
    for that operation, and the table holds exactly what the 201s reported."""
    schema = schemathesis.openapi.from_dict(DOC)
    created: dict[int, tuple[str, str]] = {}
    for result in schema.get_all_operations():
        _fuzz_operation(users_service, result.ok(), created)
    rows = {r[0]: (r[1], r[2]) for r in users_service.user_rows()}
    assert rows == created


SQLI = [
    "'; DROP TABLE users; --",
    '" OR 1=1 --',
    "Robert'); DELETE FROM idempotency_record;--",
    "\\' UNION SELECT password FROM mysql.user --",
    "$$; DROP TABLE users; $$",
    "\x00",
]
json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(SQLI),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
user_like = st.fixed_dictionaries(
    {
        "name": st.one_of(st.text(max_size=120), st.sampled_from(SQLI), json_value),
        "email": st.one_of(st.emails(), st.sampled_from(SQLI), json_value),
    },
    optional={"extra": json_value},
)
raw_bodies = st.one_of(
    st.binary(max_size=200),  # mostly invalid UTF-8: travels base64-encoded
    st.sampled_from([b"{", b"[]", b"null", b'{"name": "a"', b"1e999999", b"\xff\xfe{}"]),
)


def test_fuzz_post_bodies(users_service: UsersService) -> None:
    """Hypothesis bodies: injection strings, huge numbers, nesting, bad bytes; never a 5xx."""
    created: dict[int, tuple[str, str]] = {}

    @FUZZ
    @given(
        body=st.one_of(user_like, json_value, raw_bodies),
        version=st.sampled_from(["v1", "v2"]),
        key=st.one_of(st.none(), st.text(max_size=20), st.sampled_from(SQLI)),
    )
    def run(body: Any, version: str, key: str | None) -> None:
        headers = [] if key is None else [("Idempotency-Key", key)]
        raw = body if isinstance(body, bytes) else None
        status, answer, _ = call(
            users_service, "POST", "/users", body, headers=headers, raw=raw, version=version
        )
        assert_error_shape(status, answer)
        if status == 201:
            created[answer["id"]] = (answer["name"], answer["email"])

    run()
    rows = {r[0]: (r[1], r[2]) for r in users_service.user_rows()}
    assert rows == created
    tables = set(users_service.db.get_tables())
    assert {"users", "idempotency_record"} <= tables
