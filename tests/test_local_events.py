"""HTTP request <-> API Gateway event translation (peewee_serverless.local.events)."""

from __future__ import annotations

import base64
import json

import pytest
from aws_lambda_powertools.utilities.data_classes import (
    APIGatewayProxyEvent,
    APIGatewayProxyEventV2,
)

from peewee_serverless.local.events import (
    HttpRequest,
    MalformedResponseError,
    build_event,
    parse_response,
)

HEADERS = [
    ("Host", "localhost:3000"),
    ("User-Agent", "tests"),
    ("Content-Type", "application/json"),
    ("X-Multi", "a"),
    ("X-Multi", "b"),
    ("Cookie", "session=abc; theme=dark"),
]
BODY = json.dumps({"name": "Ada", "email": "ada@example.com"}).encode()


def _request(**overrides: object) -> HttpRequest:
    values: dict[str, object] = {
        "method": "POST",
        "target": "/users/42?tag=a&tag=b%20c&empty=&plus=x+y",
        "headers": HEADERS,
        "body": BODY,
        "source_ip": "10.1.2.3",
    }
    values.update(overrides)
    return HttpRequest.from_target(**values)  # type: ignore[arg-type]


def test_v1_event_has_rest_api_shape() -> None:
    event = build_event(_request(), "v1")
    assert event["resource"] == "/{proxy+}"
    assert event["path"] == "/users/42"
    assert event["httpMethod"] == "POST"
    assert event["pathParameters"] == {"proxy": "users/42"}
    # last value wins in the single-value maps; every value in the multi-value maps
    assert event["headers"]["X-Multi"] == "b"
    assert event["multiValueHeaders"]["X-Multi"] == ["a", "b"]
    assert event["headers"]["Content-Type"] == "application/json"
    assert event["queryStringParameters"] == {"tag": "b c", "empty": "", "plus": "x+y"}
    assert event["multiValueQueryStringParameters"]["tag"] == ["a", "b c"]
    ctx = event["requestContext"]
    assert ctx["identity"]["sourceIp"] == "10.1.2.3"
    assert ctx["identity"]["userAgent"] == "tests"
    assert ctx["httpMethod"] == "POST"
    assert ctx["stage"] == "local"
    assert isinstance(ctx["requestTimeEpoch"], int)
    assert ctx["requestId"]
    assert event["body"] == BODY.decode()
    assert event["isBase64Encoded"] is False


def test_v1_event_without_query_or_body_uses_nulls() -> None:
    event = build_event(HttpRequest.from_target("GET", "/", [("Host", "h")]), "v1")
    assert event["resource"] == "/"
    assert event["pathParameters"] is None
    assert event["queryStringParameters"] is None
    assert event["multiValueQueryStringParameters"] is None
    assert event["body"] is None
    assert event["isBase64Encoded"] is False


def test_v1_event_reads_through_powertools_data_class() -> None:
    event = APIGatewayProxyEvent(build_event(_request(), "v1"))
    assert event.path == "/users/42"
    assert event.http_method == "POST"
    assert event.json_body == {"name": "Ada", "email": "ada@example.com"}
    assert event.get_multi_value_query_string_values("tag") == ["a", "b c"]
    assert event.request_context.identity.source_ip == "10.1.2.3"
    assert event.resolved_cookies_field == {"session": "abc", "theme": "dark"}


def test_v2_event_has_http_api_shape() -> None:
    event = build_event(_request(), "v2")
    assert event["version"] == "2.0"
    assert event["routeKey"] == "$default"
    assert event["rawPath"] == "/users/42"
    assert event["rawQueryString"] == "tag=a&tag=b%20c&empty=&plus=x+y"
    assert event["cookies"] == ["session=abc", "theme=dark"]
    assert "cookie" not in event["headers"]
    assert event["headers"]["x-multi"] == "a,b"
    assert event["headers"]["content-type"] == "application/json"
    assert all(name == name.lower() for name in event["headers"])
    assert event["queryStringParameters"] == {"tag": "a,b c", "empty": "", "plus": "x+y"}
    http = event["requestContext"]["http"]
    assert http == {
        "method": "POST",
        "path": "/users/42",
        "protocol": "HTTP/1.1",
        "sourceIp": "10.1.2.3",
        "userAgent": "tests",
    }
    assert event["requestContext"]["stage"] == "$default"
    assert event["body"] == BODY.decode()
    assert event["isBase64Encoded"] is False


def test_v2_event_leaves_out_empty_fields() -> None:
    event = build_event(HttpRequest.from_target("GET", "/", []), "v2")
    assert "cookies" not in event
    assert "queryStringParameters" not in event
    assert "body" not in event
    assert event["rawQueryString"] == ""


def test_v2_event_reads_through_powertools_data_class() -> None:
    event = APIGatewayProxyEventV2(build_event(_request(), "v2"))
    assert event.path == "/users/42"
    assert event.http_method == "POST"
    assert event.json_body["name"] == "Ada"
    assert event.resolved_cookies_field == {"session": "abc", "theme": "dark"}
    assert event.request_context.http.source_ip == "10.1.2.3"


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize(
    ("content_type", "body", "as_text"),
    [
        ("application/octet-stream", bytes(range(256)), False),
        ("image/png", b"plain ascii", False),
        ("text/plain; charset=utf-8", "héllo".encode(), True),
        ("text/plain", b"\xff\xfe not utf-8", False),
        ("application/x-www-form-urlencoded", b"a=1&b=2", True),
        (None, b"no content type", True),
    ],
)
def test_body_is_text_or_base64(
    version: str, content_type: str | None, body: bytes, as_text: bool
) -> None:
    headers = [("Content-Type", content_type)] if content_type else []
    event = build_event(HttpRequest.from_target("PUT", "/blob", headers, body), version)
    assert event["isBase64Encoded"] is (not as_text)
    decoded = event["body"].encode() if as_text else base64.b64decode(event["body"])
    assert decoded == body


def test_unknown_event_version_is_refused() -> None:
    with pytest.raises(ValueError, match="v1, v2"):
        build_event(_request(), "v3")


def test_v1_response_merges_headers_and_multi_value_headers() -> None:
    response = parse_response(
        {
            "statusCode": 201,
            "headers": {"Content-Type": "text/plain", "X-One": "1", "x-both": "single"},
            "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"], "X-Both": ["m1", "m2"]},
            "body": "created",
        },
        "v1",
    )
    assert response.status == 201
    assert response.body == b"created"
    assert ("Content-Type", "text/plain") in response.headers
    assert [v for n, v in response.headers if n == "Set-Cookie"] == ["a=1", "b=2"]
    # multiValueHeaders wins when both name the same header
    assert [v for n, v in response.headers if n.lower() == "x-both"] == ["m1", "m2"]


def test_response_base64_body_is_decoded() -> None:
    payload = bytes(range(256))
    result = {
        "statusCode": 200,
        "headers": {"Content-Type": "application/octet-stream"},
        "body": base64.b64encode(payload).decode(),
        "isBase64Encoded": True,
    }
    for version in ("v1", "v2"):
        assert parse_response(result, version).body == payload


def test_response_without_content_type_defaults_to_json() -> None:
    response = parse_response({"statusCode": 204}, "v1")
    assert response.body == b""
    assert ("Content-Type", "application/json") in response.headers


def test_v2_response_cookies_become_set_cookie() -> None:
    response = parse_response(
        {"statusCode": 200, "headers": {"x-a": "1,2"}, "cookies": ["s=1; HttpOnly", "t=2"]}, "v2"
    )
    assert [v for n, v in response.headers if n == "Set-Cookie"] == ["s=1; HttpOnly", "t=2"]
    assert ("x-a", "1,2") in response.headers


@pytest.mark.parametrize("result", [{"hello": "world"}, "just text", [1, 2], None])
def test_v2_response_without_status_code_is_json_200(result: object) -> None:
    response = parse_response(result, "v2")
    assert response.status == 200
    assert ("Content-Type", "application/json") in response.headers
    assert json.loads(response.body) == result


@pytest.mark.parametrize(
    "result",
    [
        {"hello": "world"},
        "text",
        {"statusCode": "abc"},
        {"statusCode": 200, "body": {"not": "a string"}},
        {"statusCode": 200, "body": "!!", "isBase64Encoded": True},
        {"statusCode": 200, "headers": ["not", "a", "map"]},
    ],
)
def test_v1_malformed_response_is_rejected(result: object) -> None:
    with pytest.raises(MalformedResponseError):
        parse_response(result, "v1")
