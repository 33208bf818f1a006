"""The users example's edges: email normalisation, exact uniqueness, 4-byte characters.

Every test runs on SQLite, MariaDB and PostgreSQL through the Lambda handler (one body, every
backend); character sets being a MySQL matter, the utf8mb3 test runs on MariaDB.
"""

from __future__ import annotations

import base64
import json
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from peewee_serverless.local.events import HttpRequest, build_event
from peewee_serverless.migrate import run_migrations

from .conftest import (
    EXAMPLE_MIGRATIONS,
    MYSQL_ADMIN,
    SELECTED,
    TEST_DB,
    UsersService,
    load_users_service,
    make_backend,
)


def post(
    service: UsersService, body: Any, key: str | None = None
) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """POST /users through the handler: (status, JSON body, raw result)."""
    headers = [("Content-Type", "application/json")]
    if key:
        headers.append(("Idempotency-Key", key))
    request = HttpRequest.from_target("POST", "/users", headers, json.dumps(body).encode())
    result = service.invoke(build_event(request, "v2"))
    text = result["body"]
    if result.get("isBase64Encoded"):
        text = base64.b64decode(text).decode()
    return result["statusCode"], json.loads(text), result


def test_email_too_long_once_lower_cased_is_422_naming_email(users_service: UsersService) -> None:
    email = "\u0130" * 142 + "@x.io"  # 147 characters; lower-cased: 142 x "i\u0307" = 289
    assert len(email) <= 254 < len(email.lower())
    status, body, _ = post(users_service, {"name": "Dotted", "email": email})
    assert status == 422, body
    assert body["error"] == "validation_error"
    assert [d["field"] for d in body["details"]] == ["email"]
    assert "lower-cased" in body["details"][0]["message"]
    assert users_service.user_rows() == []
    # The longest email that fits once lower-cased is stored whole and answered as stored.
    longest = "\u0130" * 124 + "@x.io"  # 124 * 2 + 5 = 253 characters
    status, body, _ = post(users_service, {"name": "Dotted", "email": longest})
    assert status == 201, body
    assert body["email"] == unicodedata.normalize("NFC", longest.lower())
    assert [r[2] for r in users_service.user_rows()] == [body["email"]]


def test_uniqueness_is_exact_after_normalisation_on_every_engine(
    users_service: UsersService,
) -> None:
    assert post(users_service, {"name": "J", "email": "jose@example.com"})[0] == 201
    # An accent makes another email (MySQL's default collation would call it a duplicate).
    status, body, _ = post(users_service, {"name": "J2", "email": "jos\u00e9@example.com"})
    assert status == 201, body
    # Case and the two Unicode spellings of "é" are normalised away: the same email.
    for same in ("JOS\u00c9@example.com", "jose\u0301@example.com", "JOSE\u0301@EXAMPLE.COM"):
        status, body, _ = post(users_service, {"name": "J3", "email": same})
        assert (status, body["message"]) == (409, "Email already exists"), same
    emails = sorted(r[2] for r in users_service.user_rows())
    assert emails == ["jose@example.com", "jos\u00e9@example.com"]


def test_201_is_what_was_stored_and_replays_byte_for_byte(users_service: UsersService) -> None:
    payload = {"name": "  Zo\u00eb \U0001f680  ", "email": " Zo\u00cb@Example.COM "}
    status, body, first = post(users_service, payload, key="stored-1")
    assert status == 201
    assert (body["name"], body["email"]) == ("Zo\u00eb \U0001f680", "zo\u00eb@example.com")
    (row,) = users_service.user_rows()
    assert row == (body["id"], body["name"], body["email"])
    status, _, again = post(users_service, payload, key="stored-1")
    assert status == 201 and again["body"] == first["body"]


@pytest.fixture(params=["migrated", "before_0003"])
def utf8mb3_service(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[UsersService]:
    """The example on a MariaDB database created with the 3-byte ``utf8mb3`` character set:
    fully migrated, or deployed before its migration 0003 was run."""
    server_backend = make_backend("mariadb", tmp_path)
    name = f"{TEST_DB}_mb3"
    admin = pymysql.connect(autocommit=True, **MYSQL_ADMIN)
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb3 COLLATE utf8mb3_general_ci")
    server_backend.env["DB_NAME"] = name
    if request.param == "before_0003":
        db = server_backend.make_db()
        run_migrations(db, EXAMPLE_MIGRATIONS, "up", "0002_idempotency")
        db.close()
        # load_users_service would apply every migration: this deployment has not run 0003.
        monkeypatch.setattr("peewee_serverless.migrate.run_migrations", lambda *a, **k: [])
    service = load_users_service(server_backend, monkeypatch)
    service.migrated = request.param == "migrated"  # type: ignore[attr-defined]
    yield service
    service.db.close()
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    admin.close()


@pytest.mark.skipif("mariadb" not in SELECTED, reason="MariaDB is not selected for this run")
def test_utf8mb3_database_stores_four_byte_characters_or_refuses_with_422(
    utf8mb3_service: UsersService,
) -> None:
    payload = {"name": "Rocket \U0001f680", "email": "\U0001f680@example.com"}
    status, body, _ = post(utf8mb3_service, payload)
    db_name = utf8mb3_service.backend.env["DB_NAME"]
    conn = pymysql.connect(database=db_name, charset="utf8mb4", **MYSQL_ADMIN)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT name, email FROM users")
            stored = cur.fetchall()
            cur.execute(
                "SELECT collation_name FROM information_schema.columns"
                " WHERE table_schema = %s AND table_name = 'users' AND column_name = 'email'",
                (db_name,),
            )
            collation = cur.fetchone()
    finally:
        conn.close()
    if utf8mb3_service.migrated:  # type: ignore[attr-defined]
        assert status == 201, body
        assert (body["name"], body["email"]) == (payload["name"], payload["email"])
        assert stored == ((payload["name"], payload["email"]),)
        assert collation == ("utf8mb4_bin",)
    else:  # never a 500, never "????" stored: refused, naming the field, nothing written
        assert status == 422, body
        assert body["details"][0]["field"] in ("name", "email")
        assert stored == ()
        assert collation != ("utf8mb4_bin",)
