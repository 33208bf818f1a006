"""The package's public surface: complete, documented, and light to import."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import peewee_serverless

HEAVY = ("aws_lambda_powertools", "pydantic", "boto3", "botocore", "playhouse.migrations")


def test_import_pulls_in_nothing_heavy_and_opens_nothing() -> None:
    code = (
        "import json, sys, peewee_serverless;"
        f"print(json.dumps(sorted(m for m in sys.modules if m.startswith({HEAVY!r}))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(out.stdout) == []


def test_every_exported_name_resolves_and_has_a_docstring() -> None:
    assert len(set(peewee_serverless.__all__)) == len(peewee_serverless.__all__)
    for name in peewee_serverless.__all__:
        value = getattr(peewee_serverless, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), f"{name} has no docstring"


def test_every_exception_of_the_tree_is_exported() -> None:
    """The whole exception tree is importable from the package (one place to learn errors)."""
    import importlib

    exported = set(peewee_serverless.__all__)
    for module_name in ("config", "database", "errors", "lifecycle", "migrate"):
        module = importlib.import_module(f"peewee_serverless.{module_name}")
        for name in module.__all__:
            value = getattr(module, name)
            if inspect.isclass(value) and issubclass(value, Exception):
                assert name in exported, f"{module_name}.{name} is not re-exported"
