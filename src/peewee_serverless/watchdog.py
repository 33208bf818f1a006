"""One thread per process that cuts a PostgreSQL connection's wait at the invocation's deadline.

psycopg2 waits in libpq (``poll``/``recv`` on the connection's socket) with the GIL released
and no timeout of its own. Instead of a wait callback per statement (libpq non-blocking, every
wait polled from Python: ~10 k instructions per statement, ~11 k per invocation to install
and remove it), the database *arms* this watchdog for the invocation with (connection,
deadline) and *disarms* it at the end: a few writes under a lock, and a ``notify`` only when
the new deadline is earlier than the one the thread sleeps towards (rare: a warm container's
next deadline is later than the last one). psycopg2 stays in blocking mode throughout.

When an armed deadline passes while the same arm is still in place, the thread shuts the
connection's socket down (``shutdown(SHUT_RDWR)`` on a duplicate of its descriptor: it acts
on the socket itself, so libpq's blocked ``poll``/``recv``/``send`` returns at once and the
statement fails). The database then sees its deadline passed and does what it does for any
wait cut at the deadline: cancel the statement on the server from a second, bounded
connection (``pg_cancel_backend``, not behind a proxy), discard the connection, raise
:class:`~peewee_serverless.errors.DeadlineExceeded`. (The cancel is not sent from this thread
with ``connection.cancel()``: libpq's ``PQcancel`` connects with no timeout, and a thread stuck
on an unreachable server could not be ended; the database's cancel path is bounded.)

Why it cannot hit the wrong thing:

* everything the thread does happens under the lock that arming and disarming take, with the
  arm as it is *then*: once :meth:`Arm.disarm` returns, nothing more happens to that
  connection; a thread thawed after a Lambda freeze (or woken late) looks at the current arm
  only, whose deadline a new invocation computed from its own context;
* a descriptor number can be reused once its socket is closed: the socket's identity (its
  inode) is read when the connection is attached (at connect), and the thread shuts a
  duplicate down only if it is that same socket (the duplicate keeps it from being reused
  meanwhile);
* an arm whose socket was cut says so at :meth:`Arm.disarm` (True): the owner drops the
  connection.

A forked child starts with no thread (started again at its first arm).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import weakref
from typing import Any

__all__ = ["WATCHDOG", "Arm", "Watchdog"]

_INF = float("inf")


class Arm:
    """One owner's (a database's) place in the watchdog: its connection and deadline.

    Made once per owner (:meth:`Watchdog.watch`); the owner :meth:`attach` gives it each
    connection it opens, and arms / disarms per invocation: nothing is allocated per invocation.
    """

    __slots__ = ("__weakref__", "_dog", "_lock", "conn", "cut", "deadline", "inode")

    def __init__(self, dog: Watchdog) -> None:
        self._dog = dog
        self._lock = dog._lock  # the watchdog's (read twice per invocation)
        self.conn: Any = None
        #: The socket's inode: what identifies it while it is open (None: nothing to cut).
        self.inode: int | None = None
        #: The armed deadline (``time.monotonic()``); None: disarmed, or already cut.
        self.deadline: float | None = None
        self.cut = False

    def attach(self, conn: Any) -> None:
        """``conn`` is the owner's connection from now on (a psycopg2 connection)."""
        inode = _inode_of(conn)
        lock = self._lock
        lock.acquire()
        try:
            self.conn = conn
            self.inode = inode
        finally:
            lock.release()

    def arm(self, deadline: float) -> None:
        """Cut the attached connection's socket if ``deadline`` passes before :meth:`disarm`."""
        lock = self._lock
        lock.acquire()
        try:
            self.deadline = deadline
            self.cut = False
            dog = self._dog
            if deadline < dog._until:  # rare: the thread sleeps towards a later instant
                dog._wake(deadline)
        finally:
            lock.release()

    def disarm(self) -> bool:
        """End the arm; True if the connection was cut meanwhile (the owner must drop it)."""
        lock = self._lock
        lock.acquire()
        try:
            self.deadline = None
            cut = self.cut
            self.cut = False
        finally:
            lock.release()
        return cut


class Watchdog:
    """Cuts armed connections' sockets when their deadline passes (see the module docstring)."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._cond = threading.Condition(threading.Lock())
        self._lock = self._cond  # acquire/release: the Condition's own lock
        self._arms: weakref.WeakSet[Arm] = weakref.WeakSet()
        #: The deadline the thread sleeps towards (inf: none, it waits for a notify).
        self._until = _INF
        self._thread: threading.Thread | None = None
        #: How many times a socket was shut down (tests and logs read it).
        self.cuts = 0

    def watch(self) -> Arm:
        """A new :class:`Arm` (one per owner, kept for the owner's life)."""
        arm = Arm(self)
        with self._cond:
            self._arms.add(arm)
        return arm

    def armed(self) -> int:
        """How many arms are armed (tests)."""
        with self._cond:
            return sum(1 for arm in self._arms if arm.deadline is not None)

    # -- the thread ----------------------------------------------------------------------------
    def _wake(self, deadline: float) -> None:
        """Under the lock: the thread must wake by ``deadline`` (started at the first arm)."""
        self._until = deadline
        if self._thread is None:
            thread = threading.Thread(
                target=self._run, name="peewee-serverless-watchdog", daemon=True
            )
            thread.start()
            self._thread = thread
        self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while True:
                until = self._sweep(self._clock())
                self._cond.wait(None if until == _INF else max(0.0, until - self._clock()))

    def sweep(self) -> None:
        """Cut what is due now (what the thread does when it wakes; tests call it directly)."""
        with self._cond:
            self._sweep(self._clock())

    def _sweep(self, now: float) -> float:
        """Under the lock: cut the arms whose deadline is ``now`` or earlier; the next deadline."""
        until = _INF
        for arm in list(self._arms):
            deadline = arm.deadline
            if deadline is None:
                continue
            if deadline <= now:
                self._cut(arm)
            elif deadline < until:
                until = deadline
        self._until = until
        return until

    def _cut(self, arm: Arm) -> None:
        """Shut ``arm``'s socket down (under the lock); the arm is spent either way."""
        arm.deadline = None
        conn = arm.conn
        if conn is None or arm.inode is None:
            return
        try:
            fd = conn.fileno()  # psycopg2 raises once closed; -1: libpq dropped the socket
        except Exception:  # noqa: BLE001 - closed: nothing to cut
            return
        if fd < 0:
            return
        try:
            dup = os.dup(fd)
        except OSError:
            return
        try:
            if os.fstat(dup).st_ino != arm.inode:
                return  # the number now names another socket: never touch it
            with contextlib.suppress(OSError):
                sock = socket.socket(fileno=dup)
                dup = -1  # the socket object owns it now
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                    arm.cut = True  # the owner drops the connection at disarm
                    self.cuts += 1
                finally:
                    sock.close()
        finally:
            if dup >= 0:
                os.close(dup)

    def _after_fork(self) -> None:
        # The child has no thread, and a lock another thread held at the fork may look taken.
        self._cond = threading.Condition(threading.Lock())
        self._lock = self._cond
        self._until = _INF
        self._thread = None
        for arm in list(self._arms):
            arm._lock = self._lock
            arm.deadline = None


def _inode_of(conn: Any) -> int | None:
    """The inode of ``conn``'s socket (what identifies it while it is open), or None."""
    if conn is None:
        return None
    try:
        fd = conn.fileno()
        return os.fstat(fd).st_ino if fd >= 0 else None
    except Exception:  # noqa: BLE001 - closed or no socket: nothing to cut
        return None


#: The process's watchdog; its thread starts at the first arm.
WATCHDOG = Watchdog()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=WATCHDOG._after_fork)
