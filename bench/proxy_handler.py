"""The handler of the PgBouncer burst (:mod:`bench.pgbouncer`): create a user, read it back.

A module of its own so that, as in a deployed function, the users service is imported when the
container loads the handler (its cold start), not inside the first invocation.
"""

from __future__ import annotations

import json
from typing import Any

from examples.users.app import handler as users_handler
from peewee_serverless.local.events import HttpRequest, build_v1_event


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """One invocation: the example's ``POST /users``, then ``GET /users/{id}`` of that user.

    Answers the GET's response; a 500 when the user read back differs from the one created
    (a write lost, or read on another server session before its COMMIT, would show here).
    """
    created = users_handler(event, context)
    if created["statusCode"] != 201:
        return created
    user = json.loads(created["body"])
    request = HttpRequest.from_target("GET", f"/users/{user['id']}", [], b"")
    got = users_handler(build_v1_event(request), context)
    if got["statusCode"] == 200 and json.loads(got["body"]) != user:
        return {"statusCode": 500, "body": json.dumps({"created": user, "read": got["body"]})}
    return got
