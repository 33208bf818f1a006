"""The model and route of the cold-start baselines (``seed_app``, ``seed_serverless``).

The example's ``users`` table and ``GET /users/{id}`` from an API Gateway proxy event, in plain
Peewee: no Powertools, no validation. Each baseline binds :class:`User` to its own database.
"""

from __future__ import annotations

import json
from typing import Any

import peewee


class User(peewee.Model):
    name = peewee.CharField()
    email = peewee.CharField()
    created_at = peewee.DateTimeField()

    class Meta:
        table_name = "users"


def get_user(event: dict[str, Any]) -> dict[str, Any]:
    """``GET /users/{id}`` (REST or HTTP API proxy event) -> proxy response."""
    path = event.get("rawPath") or event.get("path") or ""
    user = User.get_or_none(User.id == int(path.rstrip("/").rsplit("/", 1)[-1]))
    if user is None:
        return {"statusCode": 404, "body": json.dumps({"error": "not found"})}
    body = {"id": user.id, "name": user.name, "email": user.email}
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(body),
    }
