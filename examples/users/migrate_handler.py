"""The users service's migration function: deploy it next to the API, invoke it once per deploy.

Handler: ``users.migrate_handler.handler`` (in the zip). It applies the pending migrations in
``examples/users/migrations`` to the database configured by the same environment as the API
(``DATABASE_URL`` or ``DB_*``) and returns ``{"action": "up", "applied": [...], "pending": []}``.
Invoke it with ``{"action": "status"}`` to list without changing anything. Two copies started at
once are safe (advisory lock); a re-run applies nothing.
"""

from __future__ import annotations

from pathlib import Path

from peewee_serverless.migrate import migration_handler

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

handler = migration_handler(MIGRATIONS)
