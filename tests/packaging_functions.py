"""Small functions the packaging tests pack: a flat one with its own requirement, a package one.

Each is written into a temporary folder the way a user lays it out, and answers three events:
create (201), the same create again (409, the unique key), get (200).
"""

from __future__ import annotations

from pathlib import Path

#: Flat layout (as in the README): app.py + models.py side by side, absolute imports, and a
#: requirement of its own (python-slugify, a small pure-Python wheel) that app.py imports.
FLAT = {
    "models.py": """
from peewee import CharField, Model
from peewee_serverless import database_from_env

db = database_from_env()


class Note(Model):
    title = CharField(max_length=100, unique=True)
    slug = CharField(max_length=100)

    class Meta:
        database = db
        table_name = "notes"
""",
    "app.py": """
import json

from peewee import IntegrityError
from slugify import slugify

from models import Note, db
from peewee_serverless import database_lifecycle


def answer(status, body):
    return {"statusCode": status, "body": json.dumps(body, sort_keys=True)}


@database_lifecycle(db)
def handler(event, context):
    db.create_tables([Note])
    if event["action"] == "create":
        try:
            with db.atomic():
                note = Note.create(title=event["title"], slug=slugify(event["title"]))
        except IntegrityError:
            return answer(409, {"error": "conflict"})
        return answer(201, {"id": note.id, "slug": note.slug})
    note = Note.get_or_none(Note.id == event["id"])
    if note is None:
        return answer(404, {"error": "not_found"})
    return answer(200, {"id": note.id, "slug": note.slug, "title": note.title})
""",
    "requirements.txt": "python-slugify>=8\n",
}

#: Package layout: relative imports and a nested subpackage; stored as ``orders/`` in the zip.
PACKAGE = {
    "__init__.py": '"""The orders function."""\n',
    "models.py": """
from peewee import CharField, Model
from peewee_serverless import database_from_env

db = database_from_env()


class Order(Model):
    code = CharField(max_length=40, unique=True)

    class Meta:
        database = db
        table_name = "orders"
""",
    "codes/__init__.py": "",
    "codes/format.py": """
def order_code(raw):
    return "ORD-" + raw.upper()
""",
    "app.py": """
import json

from peewee import IntegrityError

from peewee_serverless import database_lifecycle

from .codes.format import order_code
from .models import Order, db


@database_lifecycle(db)
def handler(event, context):
    db.create_tables([Order])
    if event["action"] == "create":
        try:
            with db.atomic():
                order = Order.create(code=order_code(event["title"]))
        except IntegrityError:
            return {"statusCode": 409, "body": json.dumps({"error": "conflict"})}
        return {"statusCode": 201, "body": json.dumps({"id": order.id, "code": order.code})}
    order = Order.get_by_id(event["id"])
    return {"statusCode": 200, "body": json.dumps({"id": order.id, "code": order.code})}
""",
}

#: The events both answer: create, duplicate, get ("$ID" is the id the create returned).
EVENTS = [
    {"action": "create", "title": "Hello World"},
    {"action": "create", "title": "Hello World"},
    {"action": "get", "id": "$ID"},
]


def write_function(folder: Path, files: dict[str, str]) -> Path:
    """Write ``files`` (relative path -> text) under ``folder``; return it."""
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.lstrip("\n"), encoding="utf-8")
    return folder
