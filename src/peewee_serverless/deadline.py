"""The invocation's deadline, and waiting on PostgreSQL without outliving it.

Lambda kills an invocation at its timeout without a word: no 503, no ``Retry-After``, the
client sees a gateway error. So every wait the library causes — connect, handshake, ping,
statement, lock wait, commit, back-off sleep — ends by :func:`deadline_from_context`'s instant
(``context.get_remaining_time_in_millis()`` minus :data:`DEADLINE_MARGIN_SECONDS`, the time left
to answer). Without a Lambda context (scripts, tests, the migrator run by hand) there is no
deadline and nothing changes.

How each driver is bounded (the hooks live on the database classes in :mod:`.database`):

* **PyMySQL**: its socket timeouts (``read_timeout`` and ``write_timeout``, applied by PyMySQL
  on each read and write), which our connection class ends by the deadline at each wait
  (``tls.pymysql_connect``): the handshake, every statement, COMMIT and the ping alike.
* **psycopg2** has no socket timeout: libpq waits in its own ``poll()``. Statements (and the
  ping, lock waits, COMMIT) run in psycopg2's plain blocking mode under the process's
  watchdog thread (:mod:`.watchdog`): the database arms it with the connection and the
  deadline per invocation, and when the deadline passes it shuts the connection's socket down,
  so the wait returns at once. A *connect* is bounded by psycopg2's documented hook, a *wait
  callback* (``psycopg2.extensions.set_wait_callback``; psycogreen uses it for gevent),
  installed for the connect only: libpq then runs non-blocking and :func:`pg_wait` does the
  waiting, with ``select`` bounded by the deadline (never over a callback the application
  installed itself). No session state is set (``DB_MODE=proxy`` safe). A cut connection is
  closed (psycopg2 cannot resume an interrupted exchange) and the cut statement cancelled on
  the server from a second connection (see ``_out_of_time`` in :mod:`.database`).

Running out raises :class:`~peewee_serverless.errors.DeadlineExceeded` (a 503 with
``Retry-After`` in the HTTP layer) and the cut connection is discarded.
"""

from __future__ import annotations

import contextlib
import select
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from .errors import DeadlineExceeded

__all__ = [
    "DEADLINE_MARGIN_SECONDS",
    "deadline_from_context",
    "pg_can_bound",
    "pg_wait",
    "pg_wait_for",
]

#: Database waits end this long before Lambda would kill the invocation, leaving time to answer.
DEADLINE_MARGIN_SECONDS = 0.25


def deadline_from_context(context: Any, margin: float = DEADLINE_MARGIN_SECONDS) -> float | None:
    """``time.monotonic()`` by which database waits must end, from a Lambda context (or None)."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return None
    try:
        left = float(remaining()) / 1000.0 - margin
    except Exception:  # noqa: BLE001 - a foreign context object: no deadline rather than a crash
        return None
    return time.monotonic() + (left if left > 0.0 else 0.0)


# -- PostgreSQL: psycopg2's wait callback ----------------------------------------------------------
#: psycopg2.extensions' POLL_OK / POLL_READ / POLL_WRITE (documented values): compared as
#: constants, as the callback runs for every statement.
_POLL_OK, _POLL_READ, _POLL_WRITE = 0, 1, 2


class _Bound:
    """What :func:`pg_wait` needs for one registered connection, found by ``id(conn)``.

    ``deadline`` is the ``time.monotonic()`` by which each of its waits must end. ``poller``
    watches the socket for reading (the wait of nearly every statement): registered once, one
    ``poll`` system call per wait instead of ``select``'s fd sets.
    """

    __slots__ = ("deadline", "fd", "poller", "ref")

    def __init__(self, conn: Any, deadline: float) -> None:
        key = id(conn)

        def forget(ref: Any) -> None:  # the connection was collected: drop its entry
            if _BOUND.get(key) is self:
                del _BOUND[key]

        self.ref: Callable[[], Any] = weakref.ref(conn, forget)
        self.deadline = deadline
        self.poller = select.poll()
        try:
            self.fd = conn.fileno()
        except Exception:  # noqa: BLE001 - no socket (closed): every wait goes to select()
            self.fd = -1
        else:
            self.poller.register(self.fd, select.POLLIN)


#: ``id(connection)`` -> its :class:`_Bound` (a weak reference checks that the id is still
#: that connection's). A plain dict lookup: a ``WeakKeyDictionary`` made a weak reference and
#: ran a Python method on every wait.
_BOUND: dict[int, _Bound] = {}
#: The deadline of a connect in progress on this thread (the connection object is not ours yet).
_connecting = threading.local()
_active = 0
_lock = threading.Lock()
#: ``psycopg2.extensions``, bound by :func:`pg_bounded` when it first installs the callback:
#: psycopg2 is imported only by applications that use it.
_ext: Any = None


def pg_wait(conn: Any) -> None:
    """psycopg2 wait callback: ``psycopg2.extras.wait_select`` with the deadline as its bound.

    Installed for a connect and for the connection that cancels a cut statement (statements
    of the database's own connection wait in blocking mode under :mod:`.watchdog`); a
    connection registered by :func:`pg_wait_for` waits with one ``poll`` per read wait.
    """
    bound = _BOUND.get(id(conn))
    if bound is None or bound.ref() is not conn:
        return _wait_connecting(conn, getattr(_connecting, "deadline", None))
    deadline = bound.deadline
    poll = conn.poll
    while True:
        try:
            state = poll()
        except KeyboardInterrupt:
            conn.cancel()
            continue
        if state == _POLL_OK:
            return
        timeout = deadline - time.monotonic()
        if timeout <= 0:
            raise DeadlineExceeded("the invocation's time ran out waiting for PostgreSQL")
        if state == _POLL_READ and bound.fd == conn.fileno():
            # poll() takes whole milliseconds and rounds up: round down instead (never past
            # the deadline); the last millisecond goes to select(), which takes microseconds.
            millis = int(timeout * 1000)
            if millis > 0:
                bound.poller.poll(millis)
                continue
        _wait_once(conn, state, timeout)


def _wait_connecting(conn: Any, deadline: float | None) -> None:
    """:func:`pg_wait` for a connection not registered (a connect in progress, or bounded only
    by the thread's connect deadline): its socket may change while libpq tries addresses."""
    while True:
        try:
            state = conn.poll()
        except KeyboardInterrupt:
            conn.cancel()
            continue
        if state == _POLL_OK:
            return
        timeout = None
        if deadline is not None:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                # A half-made connection would keep its socket open for as long as this
                # exception's traceback holds ``conn``: close it. (Not during a statement:
                # psycopg2 holds the connection's lock then and closes it itself.)
                with contextlib.suppress(Exception):
                    conn.close()
                raise DeadlineExceeded("the invocation's time ran out waiting for PostgreSQL")
        _wait_once(conn, state, timeout)


def _wait_once(conn: Any, state: int, timeout: float | None) -> None:
    fd = conn.fileno()
    if state == _POLL_READ:
        select.select([fd], [], [], timeout)
    elif state == _POLL_WRITE:
        select.select([], [fd], [], timeout)
    else:  # pragma: no cover - psycopg2 documents only the three states
        raise _psycopg2_extensions().OperationalError(f"bad state from poll: {state}")


def _psycopg2_extensions() -> Any:
    global _ext
    import psycopg2.extensions

    _ext = psycopg2.extensions
    return _ext


def pg_wait_for(conn: Any, deadline: float | None) -> None:
    """Bound ``conn``'s waits by ``deadline`` (None: unbounded again)."""
    if deadline is None:
        _BOUND.pop(id(conn), None)
    else:
        _BOUND[id(conn)] = _Bound(conn, deadline)


def pg_can_bound() -> bool:
    """Whether :func:`pg_bounded` can install :func:`pg_wait` (no callback of the application's)."""
    ext = _ext if _ext is not None else _psycopg2_extensions()
    current = ext.get_wait_callback()
    return current is None or current is pg_wait


def pg_connecting(deadline: float | None) -> None:
    """Bound the connect this thread is about to make (None when it is done)."""
    _connecting.deadline = deadline


def pg_bounded(active: bool) -> bool:
    """Install (or remove, with the last user) :func:`pg_wait` as psycopg2's wait callback.

    Returns whether it is installed for this caller: False when the application installed a
    callback of its own (psycogreen), which is then left alone and waits are not bounded.
    """
    global _active
    ext = _ext if _ext is not None else _psycopg2_extensions()
    # Twice per invocation: acquire/release rather than ``with`` (its special-method lookups
    # cost more than the rest), no max().
    _lock.acquire()
    try:
        current = ext.get_wait_callback()
        if active:
            if current is not None and current is not pg_wait:
                return False
            _active += 1
            if current is None:
                ext.set_wait_callback(pg_wait)
            return True
        if _active > 0:
            _active -= 1
        if _active == 0 and current is pg_wait:
            ext.set_wait_callback(None)
        return False
    finally:
        _lock.release()
