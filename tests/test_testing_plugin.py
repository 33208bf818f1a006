"""The pytest plugin for users' functions (``peewee_serverless.testing``), run as a user would:
a separate ``pytest`` process in a function folder of its own.

* an unrelated project with the package installed imports nothing of ours but the options module
  and sees none of the fixtures;
* the fixtures work on every backend: migrations applied once, every test starts empty;
* the test client's answers equal those of ``serve`` over real HTTP for the same requests.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from peewee_serverless import database_from_env
from peewee_serverless.migrate import run_migrations
from peewee_serverless.testing import LambdaClient, make_event

from .conftest import (
    EXAMPLE_MIGRATIONS,
    MYSQL_ADMIN,
    PG_ADMIN,
    ROOT,
    TEST_DB,
    Backend,
    load_users_service,
    make_backend,
)


def run_pytest(folder: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """``python -m pytest`` in ``folder``; returns its output; fails on a non-zero exit."""
    child = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DATABASE_URL"))}
    child.pop("PEEWEE_SERVERLESS_TEST_DATABASE_URL", None)
    child["POWERTOOLS_LOG_LEVEL"] = "WARNING"
    child.update(env or {})
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=folder,
        env=child,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


UNRELATED_TEST = """
import sys


def test_nothing_of_ours_is_imported(pytestconfig):
    assert pytestconfig.pluginmanager.has_plugin("peewee_serverless")  # the options module
    ours = ("peewee", "peewee_serverless", "playhouse")
    assert [m for m in sys.modules if m.split(".")[0] in ours] == []
"""


def test_unrelated_project_pays_nothing(tmp_path: Path) -> None:
    (tmp_path / "test_other.py").write_text(UNRELATED_TEST)
    assert "1 passed" in run_pytest(tmp_path, "-q")
    fixtures = run_pytest(tmp_path, "--fixtures")
    for name in ("lambda_client", "lambda_db", "api_event", "lambda_context"):
        assert name not in fixtures


#: The project's one model; its migration creates the table from the same class.
NOTE_MODEL = """class Note(Model):
    id = AutoField()
    text = CharField(max_length=200)

    class Meta:
        database = db
        table_name = "notes"
"""

NOTES_MODELS = f"""
from peewee import AutoField, CharField, Model

from peewee_serverless import database_from_env

db = database_from_env()


{NOTE_MODEL}"""

NOTES_MIGRATION = f"""
from peewee import AutoField, CharField, Model


def up(migrator, db):
{textwrap.indent(NOTE_MODEL, "    ")}
    db.create_tables([Note])
"""

NOTES_APP = """
from typing import Any

from models import Note, db
from peewee_serverless import database_lifecycle
from peewee_serverless.http import ApiGatewayResolver

app = ApiGatewayResolver()


@app.post("/notes")
def create_note() -> Any:
    with db.atomic():
        note = Note.create(text=app.current_event.json_body["text"])
    return {"id": note.id, "text": note.text}, 201


@app.get("/notes")
def list_notes() -> Any:
    return {"notes": [n.text for n in Note.select().order_by(Note.id)]}


@database_lifecycle(db)
def handler(event, context):
    return app.resolve(event, context)
"""

NOTES_TESTS = """
import os

from app import handler
from models import Note


def test_database_is_the_test_database(lambda_db):
    assert os.environ["DATABASE_URL"].startswith(EXPECTED_SCHEME)
    assert Note._meta.database.database == lambda_db.database
    assert lambda_db.table_exists("notes")


def test_first_writes(lambda_client, lambda_db):
    client = lambda_client(handler)
    assert client.post("/notes", json={"text": "a"}).json() == {"id": 1, "text": "a"}
    assert client.post("/notes", json={"text": "b"}).status_code == 201
    assert client.get("/notes").json() == {"notes": ["a", "b"]}


def test_next_test_starts_empty_with_ids_from_one(lambda_client, lambda_db):
    assert Note.select().count() == 0
    r = lambda_client(handler, version="v2").post("/notes", json={"text": "c"})
    assert (r.status_code, r.json()["id"]) == (201, 1)
    assert r.headers["content-type"] == "application/json"


def test_migrations_ran_once(lambda_db):
    rows = lambda_db.execute_sql("SELECT name FROM schema_migration").fetchall()
    assert [r[0] for r in rows] == ["0001_notes"]


def test_event_and_context(api_event, lambda_context):
    event = api_event("PUT", "/notes/3", json={"x": 1}, query={"a": ["1", "2"]},
                      headers={"X-Id": "7"}, path_params={"note_id": "3"}, version="v2")
    assert event["requestContext"]["http"]["method"] == "PUT"
    assert event["rawQueryString"] == "a=1&a=2" and event["headers"]["x-id"] == "7"
    assert event["pathParameters"] == {"note_id": "3"} and event["body"] == '{"x": 1}'
    assert 0 < lambda_context.get_remaining_time_in_millis() <= 30_000
"""


def write_notes_function(folder: Path, scheme: str, enable: str = "conftest") -> None:
    (folder / "migrations").mkdir(parents=True)
    (folder / "tests").mkdir()
    (folder / "models.py").write_text(NOTES_MODELS)
    (folder / "app.py").write_text(NOTES_APP)
    (folder / "migrations" / "0001_notes.py").write_text(NOTES_MIGRATION)
    (folder / "tests" / "test_notes.py").write_text(f"EXPECTED_SCHEME = {scheme!r}\n" + NOTES_TESTS)
    if enable == "conftest":
        (folder / "conftest.py").write_text('pytest_plugins = ["peewee_serverless.testing"]\n')
    else:
        (folder / "conftest.py").write_text("")
        (folder / "pytest.ini").write_text("[pytest]\npeewee_serverless = true\n")


def server_url(backend: Backend) -> str:
    name = f"{TEST_DB}_fixture_test"
    if backend.engine == "mysql":
        auth = MYSQL_ADMIN["user"] + (
            f":{MYSQL_ADMIN['password']}" if MYSQL_ADMIN["password"] else ""
        )
        return f"mysql://{auth}@{MYSQL_ADMIN['host']}:{MYSQL_ADMIN['port']}/{name}"
    auth = PG_ADMIN["user"] + (f":{PG_ADMIN['password']}" if PG_ADMIN["password"] else "")
    return f"postgresql://{auth}@{PG_ADMIN['host']}:{PG_ADMIN['port']}/{name}"


def test_fixtures_on_every_backend(tmp_path: Path, backend: Backend) -> None:
    folder = tmp_path / "notes"
    if backend.engine == "sqlite":
        write_notes_function(folder, "sqlite:")
        out = run_pytest(folder, "-q")
    else:
        url = server_url(backend)
        write_notes_function(folder, url.split(":", 1)[0] + ":")
        # The second run finds the database already there, with rows: it starts fresh anyway.
        run_pytest(folder, "-q", env={"PEEWEE_SERVERLESS_TEST_DATABASE_URL": url})
        out = run_pytest(folder, "-q", f"--peewee-serverless-db={url}")
    assert "5 passed" in out


def test_enabled_from_the_ini_file(tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    write_notes_function(folder, "sqlite:", enable="ini")
    assert "5 passed" in run_pytest(folder, "-q")


def test_production_database_name_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    write_notes_function(folder, "mysql:")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "--peewee-serverless-db=mysql://root@127.0.0.1/shop",
        ],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 4  # pytest's usage error
    assert "must contain 'test'" in out.stderr


# -- the client answers as `serve` does -------------------------------------------------------
REQUESTS: list[dict[str, Any]] = [
    {"method": "GET", "path": "/users"},
    {"method": "POST", "path": "/users", "json": {"name": "Ada", "email": "ada@example.com"}},
    {"method": "POST", "path": "/users", "json": {"name": 5, "email": "x@example.com"}},
    {
        "method": "POST",
        "path": "/users",
        "body": "{not json",
        "headers": {"Content-Type": "application/json"},
    },
    {
        "method": "POST",
        "path": "/users",
        "body": '{"name": "B", "email": "b@example.com"}',
        "headers": {"Content-Type": "application/x-www-form-urlencoded"},
    },
    {
        "method": "POST",
        "path": "/users",
        "body": "hello",
        "headers": {"Content-Type": "text/plain"},
    },
    {"method": "DELETE", "path": "/users"},
    {"method": "GET", "path": "/users/999"},
    {"method": "GET", "path": "/users", "query": {"limit": "0"}},
    {"method": "GET", "path": "/users", "query": {"limit": "1"}},
    {"method": "HEAD", "path": "/users/1"},
]


def _normal(status: int, headers: list[tuple[str, str]], body: bytes) -> tuple[Any, ...]:
    skip = {"content-length", "connection"}
    shown = sorted((k.lower(), v) for k, v in headers if k.lower() not in skip)
    data = json.loads(body) if body else None
    if isinstance(data, dict):  # timestamps differ between two runs
        data.pop("created_at", None)
        for user in data.get("users", []):
            user.pop("created_at", None)
    return status, shown, data


def _over_http(host: str, port: int, request: dict[str, Any]) -> tuple[Any, ...]:
    event_for_target = make_event(
        request["method"], request["path"], query=request.get("query"), version="v2"
    )
    query = event_for_target["rawQueryString"]
    target = request["path"] + (f"?{query}" if query else "")
    headers = dict(request.get("headers") or {})
    body = request.get("body")
    if "json" in request:
        body = json.dumps(request["json"])
        headers.setdefault("Content-Type", "application/json")
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request(request["method"], target, body=body, headers=headers)
        response = conn.getresponse()
        return _normal(response.status, response.getheaders(), response.read())
    finally:
        conn.close()


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_client_answers_equal_serve_over_http(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str
) -> None:
    # Two SQLite databases, each migrated: the client's (in this process) and serve's.
    (tmp_path / "client").mkdir()
    service = load_users_service(make_backend("sqlite", tmp_path / "client"), monkeypatch)
    served = tmp_path / "served.sqlite3"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DATABASE_URL"))}
    env.update({"DB_ENGINE": "sqlite", "DB_NAME": str(served), "POWERTOOLS_LOG_LEVEL": "WARNING"})
    env["PYTHONPATH"] = str(ROOT)
    migrator = database_from_env(env)
    run_migrations(migrator, EXAMPLE_MIGRATIONS)
    migrator.close()
    proc = subprocess.Popen(
        [sys.executable, "-m", "peewee_serverless", "serve", "examples.users.app:handler"]
        + ["--port", "0", "--event-version", version],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert " on http://" in line, line
        url = urlparse(line.split(" on ", 1)[1].split()[0])
        client = LambdaClient(service.module.handler, version=version)
        statuses = []
        for request in REQUESTS:
            kwargs = {k: v for k, v in request.items() if k not in ("method", "path")}
            mine = client.request(request["method"], request["path"], **kwargs)
            local = _normal(mine.status_code, mine.header_list, mine.body)
            remote = _over_http(url.hostname or "127.0.0.1", url.port or 0, request)
            assert local == remote, request
            statuses.append(mine.status_code)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert statuses == [200, 201, 422, 400, 201, 415, 405, 404, 422, 200, 405]


# -- the client and the event factory in-process (pure translation, no database) -------------
def test_client_reports_a_crash_like_serve_or_raises() -> None:
    from tests.apps import echo

    with pytest.raises(RuntimeError, match="boom"):
        LambdaClient(echo.raising).get("/")
    answer = LambdaClient(echo.raising, raise_exceptions=False).get("/")
    assert answer.status_code == 502
    assert answer.json() == {"error": "handler_error", "message": "RuntimeError: boom from handler"}


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_client_headers_query_and_head(version: str) -> None:
    from tests.apps import echo

    client = LambdaClient(echo.handler, version=version, headers={"X-Default": "d"})
    answer = client.post("/a%20b?x=1", query=[("y", "2"), ("y", "3")], json={"k": 1})
    assert answer.headers["x-echo"] == answer.headers["X-ECHO"] == "yes"
    if version == "v1":  # payload 2.0 has no multiValueHeaders: API Gateway drops them
        assert answer.headers["X-Multi"] == "one, two"  # repeats joined, as HTTP allows
        assert ("X-Multi", "one") in answer.header_list
    else:
        assert "X-Multi" not in answer.headers
    event = answer.json()["event"]
    assert event == client.last_event
    query = event["queryStringParameters"]
    assert query["x"] == "1" and query["y"] in ("3", "2,3")  # v1 keeps the last, v2 joins
    headers = {k.lower(): v for k, v in event["headers"].items()}
    assert headers["x-default"] == "d" and headers["content-type"] == "application/json"
    assert json.loads(event["body"]) == {"k": 1}
    head = client.head("/?status=204")
    assert (head.status_code, head.body) == (204, b"")


def test_make_event_rejects_ambiguous_bodies() -> None:
    with pytest.raises(ValueError, match="json= or body="):
        make_event("POST", "/", json={}, body="x")
    with pytest.raises(ValueError, match="version"):
        make_event(version="v3")
