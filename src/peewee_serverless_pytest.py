"""The ``pytest11`` entry point of peewee-serverless: options only, fixtures on request.

pytest imports every installed plugin at start-up, in every project. This module is therefore
outside the ``peewee_serverless`` package (whose import would import Peewee) and imports
nothing: it registers the command-line and ini options and, only when ``peewee_serverless =
true`` is set in the ini file, loads :mod:`peewee_serverless.testing` (the fixtures). The other
ways to enable them, ``pytest_plugins = ["peewee_serverless.testing"]`` in a ``conftest.py`` or
``-p peewee_serverless.testing``, load that module directly.
"""

from __future__ import annotations

from typing import Any

PLUGIN = "peewee_serverless.testing"


def pytest_addoption(parser: Any) -> None:
    """Register the options of the fixtures (harmless while they are not enabled)."""
    group = parser.getgroup("peewee-serverless", "peewee-serverless test database")
    group.addoption(
        "--peewee-serverless-db",
        dest="peewee_serverless_db",
        metavar="URL",
        default=None,
        help="test database for the lambda_db fixture: 'sqlite' (default, a new file) or a "
        "mysql:// / postgresql:// URL whose database name contains 'test' "
        "(env: PEEWEE_SERVERLESS_TEST_DATABASE_URL)",
    )
    parser.addini(
        "peewee_serverless",
        type="bool",
        default=False,
        help="load the peewee-serverless fixtures (lambda_client, api_event, lambda_db, ...)",
    )
    parser.addini(
        "peewee_serverless_migrations",
        default="migrations",
        help="migrations folder applied to the test database, relative to the rootdir",
    )


def pytest_configure(config: Any) -> None:
    """Load the fixtures when the ini file asks for them."""
    if config.getini("peewee_serverless") and not config.pluginmanager.has_plugin(PLUGIN):
        config.pluginmanager.import_plugin(PLUGIN)
