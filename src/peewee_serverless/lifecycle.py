"""The per-invocation lifecycle: one decorator around a Lambda handler ``(event, context)``.

::

    @logger.inject_lambda_context          # Powertools decorators compose outside or inside
    @database_lifecycle(db)
    def handler(event, context):
        return app.resolve(event, context)

Each invocation: the connection is made fit (lazy / reused / checked after an idle gap /
replaced when dead), the handler runs, whatever transaction it left open is rolled back (always
on an exception), and the connection is kept for the next warm invocation or closed
(``close_policy``). One structured log line says what the connection did and how long the
database work took (``DB_LOG_INVOCATIONS``: ``notable``, the default, logs at INFO every
invocation that connected, checked, reconnected, retried, rolled back, reaped, yielded or failed,
and routine warm reuse at DEBUG; ``all`` logs every invocation at INFO; ``off`` logs nothing).
Settings and credentials are never logged.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from .database import ServerlessDatabaseMixin
from .deadline import DEADLINE_MARGIN_SECONDS, deadline_from_context

__all__ = ["DEADLINE_MARGIN_SECONDS", "database_lifecycle", "deadline_from_context"]

F = TypeVar("F", bound=Callable[..., Any])

_perf_counter = time.perf_counter
_DEBUG = logging.DEBUG


def _default_logger() -> Any:
    # Powertools is imported on first use, not at package import: cold starts stay cheap.
    # Without the `api` extra it is not installed: the standard library's logger takes its
    # place (the record's `db` attribute carries the same fields).
    try:
        from aws_lambda_powertools import Logger
    except ImportError:
        return logging.getLogger("peewee_serverless.lifecycle")
    return Logger(service="peewee-serverless", child=False)


def _log_invocation(
    emit: Any,
    db: ServerlessDatabaseMixin,
    connection: str,
    outcome: str,
    rolled_back: bool,
    closed: bool,
    started: float,
) -> None:
    events = db.events
    emit(
        "database lifecycle",
        extra={
            "db": {
                "connection": connection,
                "outcome": outcome,
                "rolled_back": rolled_back,
                "closed": closed,
                "db_ms": round(events.db_seconds * 1000, 3),
                "total_ms": round((_perf_counter() - started) * 1000, 3),
                **{k: v for k, v in events.as_dict().items() if k != "db_seconds"},
            }
        },
    )


def database_lifecycle(
    db: ServerlessDatabaseMixin,
    *,
    close_policy: str | None = None,
    logger: Any = None,
) -> Callable[[F], F]:
    """Wrap a Lambda handler so every invocation starts and ends with a clean connection.

    ``close_policy`` overrides ``db.options.close_policy`` (``"keep"`` or ``"close"``).
    ``logger`` is any logger with ``info(msg, extra=...)``; a Powertools ``Logger`` by default.
    """
    policy = close_policy or db.options.close_policy
    if policy not in ("keep", "close"):
        from .errors import ConfigurationError

        raise ConfigurationError("close_policy", f"must be 'keep' or 'close', got {policy!r}")
    log_mode = db.options.log_invocations
    logging_on = log_mode != "off"
    notable_only = log_mode == "notable"
    close_each = policy == "close"
    events = db.events  # one object for the database's life: reset, never replaced
    # The logger (made on first use) and its ``isEnabledFor`` (None: the logger has none),
    # looked up once rather than on every invocation (Powertools' Logger delegates each
    # attribute through ``__getattr__``).
    found: tuple[Any, Any] | None = None

    def loggers() -> tuple[Any, Any]:
        nonlocal found, logger
        if logger is None:
            logger = _default_logger()
        found = (logger, getattr(logger, "isEnabledFor", None))
        return found

    def decorate(handler: F) -> F:
        # Every warm invocation runs this wrapper: it is kept flat (what it calls is cheap in
        # the usual case; see bench/warm.py and bench/profile.py).
        @functools.wraps(handler)
        def wrapper(event: Any, context: Any, *args: Any, **kwargs: Any) -> Any:
            started = _perf_counter()
            events.reset()
            db.set_deadline(deadline_from_context(context))
            connection = "lazy"
            outcome = "error"
            rolled_back = False
            try:
                connection = db.prepare()
                result = handler(event, context, *args, **kwargs)
                outcome = "ok"
                return result
            finally:
                try:
                    rolled_back = db.finish()
                finally:
                    closed = False
                    if close_each and not db.is_closed():
                        db.close()
                        closed = True
                    db.set_deadline(None)
                    if logging_on:
                        log, enabled = found or loggers()
                        # A warm invocation that merely reused the connection has nothing to
                        # report; formatting a JSON log line costs more than the lifecycle
                        # itself, so it is logged at DEBUG only.
                        if (
                            notable_only
                            and connection == "reused"
                            and outcome == "ok"
                            and not (rolled_back or closed)
                            and not (
                                events.connects
                                or events.reconnects
                                or events.retries
                                or events.reaped
                                or events.yielded
                                or events.gave_up
                            )
                        ):
                            debug = enabled is not None and enabled(_DEBUG)
                            emit = log.debug if debug else None
                        else:
                            emit = log.info
                        if emit is not None:
                            _log_invocation(
                                emit, db, connection, outcome, rolled_back, closed, started
                            )

        return wrapper  # type: ignore[return-value]

    return decorate
