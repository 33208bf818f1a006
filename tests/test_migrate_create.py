"""`peewee-serverless migrate create NAME [--auto MODULE]`: numbered files, Peewee's generator."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from peewee_serverless.cli import main

from .conftest import Backend

MODELS_V1 = """
from peewee import CharField, Model
from peewee_serverless import database_from_env

db = database_from_env()


class Base(Model):
    class Meta:
        database = db


class Note(Base):
    text = CharField()
"""

MODELS_V2 = (
    MODELS_V1.replace(
        "from peewee import CharField,", "from peewee import CharField, ForeignKeyField,"
    )
    + """
    title = CharField(default="")


class Tag(Base):
    note = ForeignKeyField(Note, backref="tags")
    name = CharField(index=True)
"""
)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: Backend) -> Iterator[Path]:
    """A function folder as the current directory, configured for ``backend``."""
    folder = tmp_path / "fn"
    folder.mkdir()
    monkeypatch.chdir(folder)
    for key in ("DATABASE_URL", "DB_ENGINE", "DB_NAME", "DB_HOST", "DB_PORT", "DB_USER"):
        monkeypatch.delenv(key, raising=False)
    for key, value in backend.env.items():
        monkeypatch.setenv(key, value)
    yield folder
    sys.modules.pop("notes_models", None)
    if str(folder) in sys.path:
        sys.path.remove(str(folder))


def write_models(folder: Path, source: str) -> None:
    (folder / "notes_models.py").write_text(source)
    sys.modules.pop("notes_models", None)  # a fresh import, as a new process would do


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["migrate", *args])
    out, err = capsys.readouterr()
    return status, out, err


def test_empty_template_is_numbered(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = tmp_path / "migrations"
    status, out, _ = run(capsys, "create", "Add notes!", "--dir", str(directory))
    assert status == 0 and out == f"created {directory / '0001_add_notes'}.py\n"
    status, out, _ = run(capsys, "create", "second", "--dir", str(directory))
    assert out == f"created {directory / '0002_second'}.py\n"
    text = (directory / "0001_add_notes.py").read_text()
    assert "def up(migrator, db):" in text and '"""Add notes!"""' in text
    compile(text, "0001_add_notes.py", "exec")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create", "x", "--auto", "no_such_module_here"], "cannot import 'no_such_module_here'"),
        (["create", "--dir", "m"], "NAME is required by `create`"),
        (["up", "extra"], "NAME is required by `create`"),
        (["up", "--auto", "models"], "--auto applies to `create` only"),
    ],
)
def test_bad_create_arguments_are_one_line_errors(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    status, _, err = run(capsys, *args)
    assert status == 2
    assert message in err and len(err.strip().splitlines()) == 1


def test_auto_generates_the_whole_cycle_on_every_backend(
    project: Path, backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    write_models(project, MODELS_V1)
    status, out, err = run(capsys, "create", "initial", "--auto", "notes_models")
    assert (status, out) == (0, "created migrations/0001_initial.py\n"), err
    initial = (project / "migrations" / "0001_initial.py").read_text()
    assert "db.create_tables([Note])" in initial and "class Base" not in initial
    assert run(capsys, "up")[1] == "applied 0001_initial\n"

    write_models(project, MODELS_V2)
    status, out, err = run(capsys, "create", "tags", "--auto", "notes_models")
    assert (status, out) == (0, "created migrations/0002_tags.py\n"), err
    second = (project / "migrations" / "0002_tags.py").read_text()
    assert "db.create_tables([Tag])" in second
    assert "add_column('note', 'title'" in second
    # Not applied yet: a further diff would repeat it, so it is refused.
    status, _, err = run(capsys, "create", "again", "--auto", "notes_models")
    assert status == 2 and "0002_tags" in err and "migrate up" in err
    assert run(capsys, "up")[1] == "applied 0002_tags\n"
    status, _, err = run(capsys, "create", "again", "--auto", "notes_models")
    assert status == 2 and "already matches" in err

    tables = set(backend.make_db().get_tables())
    assert {"note", "tag", "schema_migration"} <= tables
    assert run(capsys, "down")[1] == "reverted 0002_tags\n"
    assert "tag" not in backend.make_db().get_tables()
