"""A user's `mypy --strict` accepts the database of `database_from_env()` as a Peewee Database."""

from __future__ import annotations

from pathlib import Path

from mypy import api

from .conftest import ROOT

USER_CODE = """
from peewee import CharField, Database, Model
from peewee_serverless import (
    PeeweePersistenceLayer,
    ServerlessDatabase,
    database_from_env,
    run_migrations,
)

db = database_from_env()


class Note(Model):
    text = CharField()

    class Meta:
        database = db


def depth(database: Database) -> int:
    with database.connection_context():
        return database.transaction_depth()


def main() -> None:
    with db.atomic():
        db.create_tables([Note])
        Note.create(text="hi")
    depth(db)
    same: ServerlessDatabase = db
    same.finish()
    store: PeeweePersistenceLayer = PeeweePersistenceLayer(db)
    applied: list[str] = run_migrations(db, "migrations")
    print(store, applied)
    reveal_type(PeeweePersistenceLayer)
"""


def test_user_code_passes_mypy_strict(tmp_path: Path) -> None:
    (tmp_path / "user.py").write_text(USER_CODE)
    out, err, status = api.run(
        ["--strict", "--cache-dir", str(tmp_path / ".mypy_cache"), str(tmp_path / "user.py")]
    )
    assert status == 0, out + err
    # A lazily exported name has its real type, not Any.
    assert "peewee_serverless.idempotency.PeeweePersistenceLayer" in out


def test_examples_pass_mypy_strict(tmp_path: Path) -> None:
    out, err, status = api.run(
        [
            "--strict",
            "--cache-dir",
            str(tmp_path / ".mypy_cache"),
            "--config-file",
            str(ROOT / "pyproject.toml"),
            str(ROOT / "examples"),
        ]
    )
    assert status == 0, out + err
