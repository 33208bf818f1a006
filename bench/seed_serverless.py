"""The seed's handler on peewee-serverless's database layer alone (no ``api`` extra).

Same model and route as :mod:`bench.seed_app`, but the database comes from
``database_from_env()`` (lazy: the first query connects) and the handler is wrapped in
``@database_lifecycle`` with a standard-library logger (the default would load Powertools'
Logger). The cold-start benchmark puts it between the seed and the example: what the database
layer itself adds to a cold start.
"""

from __future__ import annotations

import logging
from typing import Any

from bench.seed_model import User, get_user
from peewee_serverless import database_from_env, database_lifecycle

db = database_from_env()
User.bind(db)


@database_lifecycle(db, logger=logging.getLogger("seed"))
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """``GET /users/{id}``."""
    return get_user(event)
