"""Modules built on optional packages name the extra that installs them (extras.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: Imports a module as on an install without some packages: the blocked top-level packages are
#: not found, exactly as when they are not installed.
WITHOUT = r"""
import importlib, importlib.abc, json, sys

class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in sys.argv[2:]:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
try:
    importlib.import_module(sys.argv[1])
except ImportError as exc:
    print(json.dumps({"type": type(exc).__name__, "message": str(exc), "name": exc.name}))
else:
    print(json.dumps(None))
"""


def _import_without(module: str, *missing: str) -> dict[str, str] | None:
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT, module, *missing],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, str] | None = json.loads(done.stdout)
    return result


@pytest.mark.parametrize(
    ("module", "missing", "extra"),
    [
        ("peewee_serverless.http", "aws_lambda_powertools", "api"),
        ("peewee_serverless.http", "pydantic", "api"),
        ("peewee_serverless.idempotency", "aws_lambda_powertools", "api,aws"),
        # Powertools' idempotency package imports boto3 even for a SQL persistence layer.
        ("peewee_serverless.idempotency", "boto3", "api,aws"),
    ],
)
def test_a_missing_package_names_the_extra(module: str, missing: str, extra: str) -> None:
    error = _import_without(module, missing)
    assert error is not None, f"{module} imported without {missing}"
    assert error["type"] == "ModuleNotFoundError"  # still what `except ModuleNotFoundError` sees
    assert error["name"] == missing
    assert f"pip install 'peewee-serverless[{extra}]'" in error["message"]
    assert f"No module named {missing!r}" in error["message"]
    assert error["message"].startswith(module)


def test_an_unrelated_missing_module_is_not_renamed() -> None:
    # Only the packages an extra brings are reworded; anything else is the plain error.
    error = _import_without("peewee_serverless.http", "base64")
    assert error is not None
    assert error["name"] == "base64"
    assert "peewee-serverless[" not in error["message"]


def test_the_core_imports_without_any_extra() -> None:
    assert (
        _import_without("peewee_serverless", "aws_lambda_powertools", "pydantic", "boto3") is None
    )
