"""`peewee-serverless models` (peewee_serverless.introspect): pwiz's models, importable as written.

The generated module is imported and queried in a fresh process, configured only by the
environment, on every backend: the proof that its header names nothing undefined.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from peewee import CharField, DateField, DecimalField, ForeignKeyField, Model

from peewee_serverless import database_from_env
from peewee_serverless.introspect import generate_models

from .conftest import Backend, make_backend

QUERY = """
import json
import gen_models as m

rows = m.Book.select(m.Book, m.Author).join(m.Author).order_by(m.Book.id)
out = [[b.title, str(b.price), b.author.name, str(b.published)] for b in rows]
m.Author.create(name="Grace")  # and a write through the generated module
extra = [b.meta for b in rows] if hasattr(m.Book, "meta") else None
print(json.dumps({"rows": out, "authors": m.Author.select().count(), "meta": extra}))
"""


def _env(backend_env: dict[str, str]) -> dict[str, str]:
    """This process's environment with only ``backend_env``'s database settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DATABASE_URL"))}
    env.update(backend_env)
    return env


def _python(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def _cli(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return _python(cwd, env, "-m", "peewee_serverless", "models", *args)


def _make_schema(backend: Backend) -> None:
    db = backend.make_db()

    class Author(Model):
        name = CharField(max_length=50, unique=True)

        class Meta:
            database = db

    class Book(Model):
        author = ForeignKeyField(Author, backref="books")
        title = CharField(max_length=100)
        price = DecimalField(max_digits=10, decimal_places=2, null=True)
        published = DateField(null=True)

        class Meta:
            database = db
            indexes = ((("title", "price"), False),)

    with db.connection_context():
        db.create_tables([Author, Book])
        ada = Author.create(name="Ada")
        Book.create(author=ada, title="Notes", price=Decimal("9.50"), published="1843-10-01")
        if backend.engine == "postgres":
            # A type only playhouse.postgres_ext maps: pwiz adds that import to the header.
            db.execute_sql("ALTER TABLE book ADD COLUMN meta jsonb DEFAULT '{\"n\": 1}'")


def test_generated_module_imports_and_queries_on_every_backend(
    backend: Backend, tmp_path: Path
) -> None:
    _make_schema(backend)
    env = _env(backend.env)
    done = _cli(tmp_path, env, "-o", str(tmp_path / "gen_models.py"))
    assert done.returncode == 0, done.stderr
    code = (tmp_path / "gen_models.py").read_text()
    assert "database = database_from_env()" in code
    assert "Serverless" not in code  # pwiz's own line would name our class: NameError
    # No connection setting is baked in (pwiz writes them as quoted literals): the module
    # connects the way the function does.
    for key in ("DB_HOST", "DB_NAME", "DB_USER"):
        if key in backend.env:
            assert repr(backend.env[key]) not in code, key
    if backend.engine == "postgres":
        assert "from playhouse.postgres_ext import *" in code

    ran = _python(tmp_path, env, "-c", QUERY)
    assert ran.returncode == 0, ran.stderr
    result = json.loads(ran.stdout)
    assert [row[0] for row in result["rows"]] == ["Notes"]
    assert Decimal(result["rows"][0][1]) == Decimal("9.5")
    assert result["rows"][0][2:] == ["Ada", "1843-10-01"]
    assert result["authors"] == 2
    assert backend.query("SELECT name FROM author ORDER BY id") == [("Ada",), ("Grace",)]
    assert result["meta"] == ([{"n": 1}] if backend.engine == "postgres" else None)


def test_tables_limits_the_module_to_them_and_their_references(
    backend: Backend, tmp_path: Path
) -> None:
    _make_schema(backend)
    done = _cli(tmp_path, _env(backend.env), "--tables", "author")
    assert done.returncode == 0, done.stderr
    assert "class Author(BaseModel):" in done.stdout
    assert "class Book(" not in done.stdout


def test_generate_models_leaves_an_open_connection_open(tmp_path: Path) -> None:
    db = database_from_env({"DB_ENGINE": "sqlite", "DB_NAME": str(tmp_path / "x.db")})
    db.connect()
    db.execute_sql("CREATE TABLE note (id INTEGER PRIMARY KEY, text TEXT)")
    code = generate_models(db)
    assert "class Note(BaseModel):" in code and not db.is_closed()
    db.close()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--tables", "note,nope"), "--tables: no such table: nope"),
        (("-o", "/nonexistent-dir/models.py"), "--output: directory of"),
    ],
)
def test_user_errors_are_one_line_exit_2(
    tmp_path: Path, args: tuple[str, ...], expected: str
) -> None:
    path = tmp_path / "x.db"
    db = database_from_env({"DB_ENGINE": "sqlite", "DB_NAME": str(path)})
    with db.connection_context():
        db.execute_sql("CREATE TABLE note (id INTEGER PRIMARY KEY)")
    done = _cli(tmp_path, _env({"DB_ENGINE": "sqlite", "DB_NAME": str(path)}), *args)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert expected in done.stderr


def test_a_database_without_tables_is_a_user_error(tmp_path: Path) -> None:
    env = _env({"DB_ENGINE": "sqlite", "DB_NAME": str(tmp_path / "empty.db")})
    done = _cli(tmp_path, env)
    assert done.returncode == 2 and "no tables in database" in done.stderr
    assert done.stderr.count("\n") == 1


def test_a_bad_setting_is_one_line_exit_2(tmp_path: Path) -> None:
    done = _cli(tmp_path, _env({"DB_ENGINE": "nope"}))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "DB_ENGINE" in done.stderr


def test_views_become_models_with_views(backend: Backend, tmp_path: Path) -> None:
    _make_schema(backend)
    backend.query("CREATE VIEW book_title AS SELECT id, title FROM book")
    try:
        without = _cli(tmp_path, _env(backend.env))
        assert without.returncode == 0, without.stderr
        assert "class BookTitle(" not in without.stdout
        done = _cli(tmp_path, _env(backend.env), "--views", "-o", str(tmp_path / "gen_views.py"))
        assert done.returncode == 0, done.stderr
        ran = _python(
            tmp_path,
            _env(backend.env),
            "-c",
            "import gen_views as m; print(m.BookTitle.get().title)",
        )
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout == "Notes\n"
    finally:
        backend.query("DROP VIEW book_title")


def test_schema_reads_another_postgres_schema(tmp_path: Path) -> None:
    backend = make_backend("postgres", tmp_path)  # schemas inside one database: PostgreSQL's
    backend.query("DROP SCHEMA IF EXISTS pst_reports CASCADE")
    backend.query("CREATE SCHEMA pst_reports")
    try:
        backend.query("CREATE TABLE pst_reports.total (id serial PRIMARY KEY, n integer)")
        backend.query("INSERT INTO pst_reports.total (n) VALUES (42)")
        env = _env(backend.env)
        done = _cli(tmp_path, env, "--schema", "pst_reports", "-o", str(tmp_path / "gen_rep.py"))
        assert done.returncode == 0, done.stderr
        assert "schema = 'pst_reports'" in (tmp_path / "gen_rep.py").read_text()
        ran = _python(tmp_path, env, "-c", "import gen_rep as m; print(m.Total.get().n)")
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout == "42\n"
        empty = _cli(tmp_path, env, "--schema", "pst_nothing_here")
        assert empty.returncode == 2 and "no tables in schema 'pst_nothing_here'" in empty.stderr
    finally:
        backend.query("DROP SCHEMA IF EXISTS pst_reports CASCADE")
        backend.close()
