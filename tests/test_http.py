"""HTTP edges of ``peewee_serverless.http``: content types, 405 + Allow, unserialisable answers.

Pure routing logic (no database): a small resolver answered through the real event builder,
handler call and response parser of ``peewee_serverless.local``, for v1 and v2 events.
"""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any

import pytest
from pydantic import BaseModel

from peewee_serverless.http import ApiGatewayResolver
from peewee_serverless.local.context import LambdaContext
from peewee_serverless.local.events import HttpRequest, build_event, parse_response


class Note(BaseModel):
    text: str


def make_app(validation: bool) -> ApiGatewayResolver:
    app = ApiGatewayResolver(enable_validation=validation)

    if validation:

        @app.post("/notes")
        def create(note: Note) -> dict[str, Any]:
            return {"text": note.text}

    else:

        @app.post("/notes")
        def create_raw() -> dict[str, Any]:
            return {"text": app.current_event.json_body["text"]}

    @app.get("/notes/<note_id>")
    def get(note_id: str) -> Any:
        return {"id": note_id}

    @app.put("/notes/<note_id>")
    def put(note_id: str) -> Any:
        return {"id": note_id}

    @app.get("/when")
    def when() -> Any:
        return {"at": datetime.datetime(2026, 1, 1)} if not validation else {"at": object()}

    return app


def answer(
    app: ApiGatewayResolver,
    method: str,
    target: str,
    version: str,
    body: bytes = b"",
    content_type: str | None = None,
) -> tuple[int, dict[str, str], Any]:
    headers = [("Content-Type", content_type)] if content_type else []
    event = build_event(HttpRequest.from_target(method, target, headers, body), version)
    response = parse_response(app.resolve(event, LambdaContext()), version)
    return response.status, dict(response.headers), json.loads(response.body or b"null")


VERSIONS = pytest.mark.parametrize("version", ["v1", "v2"])
VALIDATION = pytest.mark.parametrize("validation", [True, False], ids=["validated", "plain"])


@VERSIONS
@pytest.mark.parametrize(
    "content_type", [None, "application/json", "application/json; charset=utf-8"]
)
def test_json_bodies_are_read(version: str, content_type: str | None) -> None:
    status, _, body = answer(
        make_app(True), "POST", "/notes", version, b'{"text": "hi"}', content_type
    )
    assert (status, body) == (200, {"text": "hi"})


@VERSIONS
def test_json_labelled_as_a_form_is_read_as_json(version: str) -> None:
    """What `curl -d '{...}'` sends: Content-Type application/x-www-form-urlencoded."""
    form = "application/x-www-form-urlencoded"
    status, _, body = answer(make_app(True), "POST", "/notes", version, b'{"text": "hi"}', form)
    assert (status, body) == (200, {"text": "hi"})
    # A real form body stays a form (and this route wants JSON fields): 422 naming the field.
    status, _, body = answer(make_app(True), "POST", "/notes", version, b"x=1", form)
    assert status == 422 and [d["field"] for d in body["details"]] == ["text"]


@VERSIONS
@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "image/png"])
def test_unsupported_content_type_is_415(version: str, content_type: str) -> None:
    status, _, body = answer(
        make_app(True), "POST", "/notes", version, b'{"text": "hi"}', content_type
    )
    assert status == 415
    assert body["error"] == "unsupported_media_type"
    assert body["details"][0]["field"] == "body"
    assert content_type in body["details"][0]["message"]


@VERSIONS
@VALIDATION
def test_method_not_allowed_on_a_known_path(version: str, validation: bool) -> None:
    app = make_app(validation)
    status, headers, body = answer(app, "DELETE", "/notes/7", version)
    assert status == 405
    assert headers["Allow"] == "GET, PUT"
    assert body == {
        "error": "method_not_allowed",
        "message": "Method DELETE is not allowed on this path",
    }
    status, _, body = answer(app, "DELETE", "/nowhere", version)
    assert (status, body["error"]) == (404, "not_found")


@VERSIONS
@VALIDATION
def test_unserialisable_return_value_is_a_logged_500(
    version: str, validation: bool, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="peewee_serverless.http"):
        status, _, body = answer(make_app(validation), "GET", "/when", version)
    assert (status, body) == (500, {"error": "internal_error", "message": "Internal server error"})
    assert caplog.records, "the failure is logged"


@VERSIONS
def test_an_outage_wrapped_by_another_library_is_still_503(version: str) -> None:
    """Powertools' idempotency wraps store failures (IdempotencyPersistenceLayerError): the
    DatabaseUnavailable inside must still answer 503 + Retry-After, not 500."""
    from peewee_serverless import ServerReadOnly

    app = ApiGatewayResolver()

    @app.get("/wrapped")
    def wrapped() -> Any:
        try:
            raise ServerReadOnly("read-only", retry_after=2)
        except ServerReadOnly as exc:
            raise RuntimeError("Failed to save in progress record to idempotency store") from exc

    status, headers, body = answer(app, "GET", "/wrapped", version)
    assert (status, body["error"]) == (503, "database_unavailable")
    assert headers["Retry-After"] == "2"
