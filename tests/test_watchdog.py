"""The watchdog that ends PostgreSQL waits at the deadline (src/peewee_serverless/watchdog.py).

Its own edges: it cuts only the arm in place when the deadline passes (never one disarmed
before a freeze, never a socket that took over a closed one's descriptor number), and a
statement blocked on a row lock ends by the deadline with psycopg2 in blocking mode.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from peewee_serverless import DeadlineExceeded, database_from_env, database_lifecycle
from peewee_serverless.local.context import LambdaContext
from peewee_serverless.watchdog import WATCHDOG, Arm, Watchdog

from .servers import PrivateServer, private_server


class _Clock:
    """A monotonic clock the test moves by hand (a freeze is a jump)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _Conn:
    """What the watchdog uses of a psycopg2 connection: ``fileno()``."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def fileno(self) -> int:
        return self.fd


def _armed(dog: Watchdog, fd: int, deadline: float) -> Arm:
    """An owner's arm in ``dog``, its connection on ``fd``, armed with ``deadline``."""
    arm = dog.watch()
    arm.attach(_Conn(fd))
    arm.arm(deadline)
    return arm


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, server = socket.socketpair()
    try:
        yield ours, server
    finally:
        ours.close()
        server.close()


def _cut(ours: socket.socket, server: socket.socket) -> bool:
    """Whether ``ours`` was shut down: the peer then reads EOF (it never blocks here)."""
    try:
        ours.sendall(b"x")
    except OSError:
        return True
    server.settimeout(5)  # a bound, not a synchronisation: the byte is already there
    return server.recv(1) == b""


def test_an_arm_past_its_deadline_is_cut_and_says_so(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    clock = _Clock()
    dog = Watchdog(clock)
    ours, server = pair
    arm = _armed(dog, ours.fileno(), clock.now + 2.0)
    dog.sweep()
    assert not _cut(ours, server)  # not due yet
    clock.now += 2.0
    dog.sweep()
    assert arm.disarm()  # the owner learns its connection was cut
    assert _cut(ours, server)
    assert dog.cuts == 1


def test_a_stale_arm_after_a_freeze_is_not_acted_on(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """Invocation 1 armed and disarmed; the process froze past its deadline; invocation 2 (new
    deadline from its own context) is armed when the thread thaws: nothing may be cut."""
    clock = _Clock()
    dog = Watchdog(clock)
    ours, server = pair
    arm = _armed(dog, ours.fileno(), clock.now + 3.0)
    assert not arm.disarm()
    clock.now += 600.0  # frozen for ten minutes
    arm.arm(clock.now + 3.0)
    dog.sweep()  # the thawed thread's look
    assert not _cut(ours, server)
    assert not arm.disarm()
    clock.now += 10.0
    dog.sweep()  # nothing armed: nothing cut, whatever the time
    assert not _cut(ours, server)
    assert dog.cuts == 0


def test_a_reused_descriptor_number_is_never_cut(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """The armed connection's socket closed and its number went to another socket: the
    watchdog sees another socket (inode) behind the number and leaves it alone."""
    clock = _Clock()
    dog = Watchdog(clock)
    ours, server = pair
    gone, gone_peer = socket.socketpair()
    number = gone.fileno()
    arm = _armed(dog, number, clock.now + 1.0)
    gone_peer.close()
    os.dup2(ours.fileno(), number)  # ``gone`` is closed; its number now names ``ours``
    try:
        clock.now += 5.0
        dog.sweep()
        assert not _cut(ours, server)
        assert dog.cuts == 0
        assert not arm.disarm()  # nothing of the owner's was cut
    finally:
        gone.close()  # closes ``number`` (the duplicate of ``ours``), not ``ours`` itself


# -- PostgreSQL ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def postgres() -> Iterator[PrivateServer]:
    with private_server("postgres") as srv:
        yield srv


class _Quiet:
    def info(self, msg: str, extra: Any = None) -> None:
        pass


def test_a_row_lock_wait_ends_at_the_deadline_in_blocking_mode(postgres: PrivateServer) -> None:
    """The statement waits in libpq's blocking mode (no wait callback): the watchdog's cut
    ends it by the deadline; 503-worthy DeadlineExceeded, the connection replaced, the
    statement cancelled on the server (it never applies after the lock is released)."""
    import psycopg2.extensions

    holder = postgres.hold_row_lock("watched")
    db = database_from_env(postgres.env())
    # A safety net only: without the watchdog the wait ends here (a different error), not never.
    db.connect_params["options"] = "-c lock_timeout=20s"
    try:
        db.connect()  # warm: connected before the invocation, as in a warm container
        callbacks: list[Any] = []
        cuts = WATCHDOG.cuts

        @database_lifecycle(db, logger=_Quiet())
        def handler(event: Any, context: Any) -> Any:
            callbacks.append(psycopg2.extensions.get_wait_callback())
            db.execute_sql("UPDATE watched SET n = n + 10 WHERE id = 1")

        context = LambdaContext(timeout=1.5)
        with pytest.raises(DeadlineExceeded) as raised:
            handler({}, context)
        assert context.get_remaining_time_in_millis() > 0  # answered in time
        assert raised.value.retry_after >= 1
        assert callbacks == [None]  # psycopg2 in blocking mode during the statement
        assert WATCHDOG.cuts == cuts + 1
        assert WATCHDOG.armed() == 0
        assert db.is_closed()  # the cut connection was dropped
        with holder.cursor() as cur:
            cur.execute("ROLLBACK")
        ok = database_lifecycle(db, logger=_Quiet())(
            lambda e, c: db.execute_sql("UPDATE watched SET n = n + 10 WHERE id = 1")
        )
        ok({}, LambdaContext(timeout=3.0))  # a new connection serves the next invocation
        assert postgres.query("SELECT n FROM watched", database=postgres.test_db) == [(10,)]
    finally:
        holder.close()
        db.close()


def test_copy_runs_inside_an_invocation(postgres: PrivateServer) -> None:
    """psycopg2 refuses COPY under a wait callback; blocking mode under the watchdog runs it."""
    import io

    db = database_from_env(postgres.env())
    try:
        db.execute_sql("CREATE TABLE IF NOT EXISTS copied (n INT)")
        db.execute_sql("DELETE FROM copied")

        @database_lifecycle(db, logger=_Quiet())
        def handler(event: Any, context: Any) -> Any:
            db.cursor().copy_expert("COPY copied (n) FROM STDIN", io.StringIO("1\n2\n"))
            return db.execute_sql("SELECT count(*) FROM copied").fetchone()[0]

        assert handler({}, LambdaContext(timeout=3.0)) == 2
        assert not db.is_closed()  # nothing was cut: the connection stays warm
    finally:
        db.close()
