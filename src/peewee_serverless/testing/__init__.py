"""pytest fixtures for testing your own Lambda function, after pytest-django and chalice.test.

Enable them in the function's ``conftest.py``::

    pytest_plugins = ["peewee_serverless.testing"]

(or ``peewee_serverless = true`` under ``[tool.pytest.ini_options]``, or ``-p
peewee_serverless.testing``). Without that, the package's ``pytest11`` entry point only
registers the options below and imports nothing else: other test suites pay nothing.

Fixtures:

``lambda_client``
    factory: ``client = lambda_client(handler, version="v1")``, then
    ``r = client.post("/notes", json={...})``; ``r.status_code``, ``r.headers``, ``r.text``,
    ``r.json()``. The request goes event -> handler -> response exactly as under ``serve``
    (:class:`~peewee_serverless.testing.client.LambdaClient`).
``api_event``
    factory for API Gateway proxy events: ``api_event("POST", "/notes", json=..., headers=...,
    query=..., path_params=..., version="v2")``.
``lambda_context``
    a fresh Lambda-like context (30 s to its deadline).
``lambda_db``
    the test database, migrated once per session and emptied before the test (see
    :mod:`.database`); use it in every test that touches the database.

Configuration:

``--peewee-serverless-db`` / ``PEEWEE_SERVERLESS_TEST_DATABASE_URL``
    ``sqlite`` (default: a new file per session) or a ``mysql://`` / ``postgresql://`` URL of
    a test database (name containing ``test``; created if missing, emptied at session start).
``peewee_serverless_migrations`` (ini)
    the migrations folder, relative to the rootdir (default ``migrations``).

At start-up the plugin points ``DATABASE_URL`` at the test database (and hides the other
``DB_*`` location and credential variables), so the function's own ``database_from_env()`` at
import uses it. Import your function in test modules or fixtures, not at the top of
``conftest.py``, which runs before the plugin.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ..database import ServerlessDatabase
from ..errors import ConfigurationError
from ..local.context import LambdaContext
from .client import Handler, LambdaClient, LambdaResponse, make_event
from .database import SETTING, TestDatabase

__all__ = [
    "LambdaClient",
    "LambdaResponse",
    "TestDatabase",
    "api_event",
    "lambda_client",
    "lambda_context",
    "lambda_db",
    "make_event",
]

#: Environment variables that locate or authenticate the function's database: replaced by
#: ``DATABASE_URL`` of the test database for the session, restored afterwards.
HIDDEN = (
    "DATABASE_URL",
    "DB_ENGINE",
    "DB_NAME",
    "DB_HOST",
    "DB_PORT",
    "DB_USER",
    "DB_PASSWORD",
    "DB_SECRET_ARN",
    "DB_IAM_AUTH",
)

_STATE = pytest.StashKey[dict[str, Any]]()


def _option(config: pytest.Config, name: str, default: Any) -> Any:
    # The options come from the entry point module; absent when plugin autoload is disabled.
    try:
        value = config.getoption(name)
    except ValueError:
        return default
    return default if value is None else value


def _ini(config: pytest.Config, name: str, default: str) -> str:
    try:
        value = config.getini(name)
    except ValueError:
        return default
    return str(value or default)


def pytest_configure(config: pytest.Config) -> None:
    """Choose the test database and export it before the function's modules are imported."""
    tmpdir = tempfile.mkdtemp(prefix="peewee-serverless-test-")
    value = _option(config, "peewee_serverless_db", os.environ.get(SETTING, "sqlite"))
    try:
        database = TestDatabase.from_url(value, tmpdir)
    except ConfigurationError as exc:
        shutil.rmtree(tmpdir, ignore_errors=True)
        raise pytest.UsageError(str(exc)) from None
    saved = {name: os.environ.pop(name) for name in HIDDEN if name in os.environ}
    os.environ["DATABASE_URL"] = database.url
    migrations = Path(
        str(config.rootpath), _ini(config, "peewee_serverless_migrations", "migrations")
    )
    config.stash[_STATE] = {
        "database": database,
        "saved": saved,
        "tmpdir": tmpdir,
        "migrations": migrations,
    }


def pytest_unconfigure(config: pytest.Config) -> None:
    """Restore the environment, close the test database, remove the SQLite file."""
    state = config.stash.get(_STATE, None)
    if state is None:
        return
    state["database"].close()
    os.environ.pop("DATABASE_URL", None)
    os.environ.update(state["saved"])
    shutil.rmtree(state["tmpdir"], ignore_errors=True)


def pytest_report_header(config: pytest.Config) -> str | None:
    """One header line: which test database the session uses (never a password)."""
    state = config.stash.get(_STATE, None)
    if state is None:
        return None
    return f"peewee-serverless test database: {state['database'].settings!r}"


@pytest.fixture(scope="session")
def _lambda_test_database(pytestconfig: pytest.Config) -> Iterator[TestDatabase]:
    state = pytestconfig.stash[_STATE]
    database: TestDatabase = state["database"]
    database.setup(state["migrations"])
    yield database
    database.close()


@pytest.fixture
def lambda_db(_lambda_test_database: TestDatabase) -> ServerlessDatabase:
    """The migrated test database, emptied before this test (rows of earlier tests gone)."""
    _lambda_test_database.empty()
    return _lambda_test_database.db


@pytest.fixture
def lambda_context() -> LambdaContext:
    """A fresh Lambda-like context for one invocation."""
    return LambdaContext()


@pytest.fixture
def api_event() -> Callable[..., dict[str, Any]]:
    """Factory for API Gateway proxy events (see :func:`.client.make_event`)."""
    return make_event


@pytest.fixture
def lambda_client() -> Callable[..., LambdaClient]:
    """Factory: ``lambda_client(handler, version="v1", **options)`` -> :class:`LambdaClient`."""

    def make(handler: Handler, **options: Any) -> LambdaClient:
        return LambdaClient(handler, **options)

    return make
