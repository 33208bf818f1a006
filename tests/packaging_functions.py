"""Small functions the packaging tests pack: a flat one with its own requirement, a package one.

Each is written into a temporary folder the way a user lays it out, and answers three events:
create (201), the same create again (409, the unique key), get (200).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

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


# -- running an unpacked zip (or a `sam build` artifact) as Lambda would --------------------------
RUNNER = r"""
import importlib, json, sys

class Context:
    function_name = "fn"
    memory_limit_in_mb = 128
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:fn"
    aws_request_id = "req-1"
    def get_remaining_time_in_millis(self):
        return 10_000

prelude, handler_name, events = sys.argv[1], sys.argv[2], json.load(open(sys.argv[3]))
if prelude:
    module, _, attr = prelude.rpartition(".")
    getattr(importlib.import_module(module), attr)({}, Context())  # the migration function
module, _, attr = handler_name.rpartition(".")
handler = getattr(importlib.import_module(module), attr)
answers, last_id = [], None
for event in events:
    text = json.dumps(event).replace("$ID", str(last_id))
    answer = handler(json.loads(text), Context())
    answers.append(answer)
    if answer.get("statusCode") == 201 and last_id is None:
        last_id = json.loads(answer["body"])["id"]
import peewee_serverless, boto3
where = {"library": peewee_serverless.__file__, "boto3": boto3.__file__}
print(json.dumps({"answers": answers, **where}))
"""


def run_task(
    task: Path,
    handler: str,
    events: list[dict[str, Any]],
    env: dict[str, str],
    clean_python: Path,
    runtime: Path,
    prelude: str = "",
) -> list[dict[str, Any]]:
    """Answer ``events`` with ``handler`` from ``task`` in a clean interpreter; the answers.

    ``sys.path`` is the task root then ``runtime`` (Lambda's /var/task, /var/runtime); the
    interpreter is a virtualenv with nothing installed. ``prelude`` is a handler invoked once
    first (the migration function).
    """
    events_file = task.parent / f"{task.name}-events.json"
    events_file.write_text(json.dumps(events))
    done = subprocess.run(
        [str(clean_python), "-s", "-c", RUNNER, prelude, handler, str(events_file)],
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": os.pathsep.join((str(task), str(runtime))),
            "POWERTOOLS_LOG_LEVEL": "WARNING",
            "AWS_DEFAULT_REGION": "eu-west-1",
            **env,
        },
        cwd=task.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(result["library"]).is_relative_to(task)
    assert Path(result["boto3"]).is_relative_to(runtime)  # not shipped: the runtime's
    return list(result["answers"])


def assert_create_duplicate_get(answers: list[dict[str, Any]]) -> None:
    """201, then 409 for the same unique value, then 200 for the created id."""
    assert [a["statusCode"] for a in answers] == [201, 409, 200], answers
    created, got = json.loads(answers[0]["body"]), json.loads(answers[2]["body"])
    assert got["id"] == created["id"]


def example_events(example: Path) -> list[dict[str, Any]]:
    """The example's own v2 events: create, the same email again (409), get the created id."""
    events = example / "events"
    create = json.loads((events / "create_user_v2.json").read_text())
    duplicate = json.loads(json.dumps(create))  # another name, same email: a new request
    duplicate["body"] = json.dumps({"name": "Grace B. Hopper", "email": "GRACE@example.com"})
    get = json.loads((events / "get_user_v2.json").read_text())
    get["rawPath"] = get["requestContext"]["http"]["path"] = "/users/$ID"
    return [create, duplicate, get]


def source_tree(root: Path, dest: Path) -> Path:
    """A copy of what building the distribution reads (pyproject, README, LICENSE, src).

    Building from a copy keeps setuptools' ``build/`` and ``*.egg-info`` out of the checkout,
    and stale files of an earlier build out of the wheel.
    """
    import shutil

    dest.mkdir(parents=True, exist_ok=True)
    for name in ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in"):
        shutil.copy2(root / name, dest / name)
    shutil.copytree(
        root / "src",
        dest / "src",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"),
    )
    return dest
