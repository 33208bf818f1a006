"""The users example with a crash point, for tests only (never part of the example itself).

``PST_CRASH_AT`` names where the process kills itself with SIGKILL (no cleanup, no rollback, no
answer: as Lambda's kill at a timeout or an out-of-memory abort) while handling ``POST /users``:

``before_insert``   the idempotency claim is committed, the user not yet inserted
``after_insert``    the user is inserted inside the transaction, not committed
``after_commit``    the user and the completed record are committed, the answer not built
``before_response`` the handler has its answer and has not returned it

Unset or empty: the example unchanged. Run it as ``tests.apps.crashing_users:handler``.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from examples.users import app as users_app
from examples.users import models

CRASH_AT = os.environ.get("PST_CRASH_AT", "")
POINTS = ("before_insert", "after_insert", "after_commit", "before_response")
if CRASH_AT and CRASH_AT not in POINTS:
    raise ValueError(f"PST_CRASH_AT must be one of {POINTS}, got {CRASH_AT!r}")

_inserted = False


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


_create = models.User.create  # bound to the class


def _crashing_create(**fields: Any) -> Any:
    global _inserted
    if CRASH_AT == "before_insert":
        _die()
    user = _create(**fields)
    _inserted = True
    if CRASH_AT == "after_insert":
        _die()
    return user


_commit = models.db.commit


def _crashing_commit(*args: Any, **kwargs: Any) -> Any:
    result = _commit(*args, **kwargs)
    if CRASH_AT == "after_commit" and _inserted:
        _die()
    return result


models.User.create = _crashing_create  # type: ignore[method-assign]
models.db.commit = _crashing_commit  # type: ignore[method-assign]


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The example's handler, crashing at ``PST_CRASH_AT``."""
    response = users_app.handler(event, context)
    if CRASH_AT == "before_response":
        _die()
    return response
