"""Connect retry with jittered exponential back-off, bounded by the invocation's remaining time.

A burst of cold starts can find the server out of connection slots (MySQL 1040 / 1203 / 1226,
PostgreSQL 53300 "too many clients" / "too many connections for role") and a restarting server
refuses or resets connects for a few seconds. Both pass if the function waits a little, so
connecting is retried, with the waits spread out ("jitter") so that the containers refused
together do not all come back together:

* ``full`` jitter: the *n*-th wait is uniform in ``[0, min(cap, base * 2**n)]``;
* ``decorrelated`` jitter: each wait is uniform in ``[base, 3 * previous]``, capped at ``cap``
  (AWS Architecture Blog, "Exponential Backoff And Jitter"). The cap shrinks as the waits add
  up (``aging``): ``cap * aging / (aging + waited)``, never below ``base``. Plain decorrelated
  jitter serves the newest waiter first: a fresh invocation probes at 50, 150, 450 ms while one
  refused for ten seconds sleeps the full cap, so in a burst where slots change hands after
  every invocation the oldest waiters were the ones that ran into their deadline. With aging
  a waiter polls more often the longer it has waited (at most every ~0.2 s after 20 s with the
  defaults), which brings the order of service closer to first come, first served without a
  coordinator; the total rate of attempts stays bounded by the waiters' number.

Retrying stops before a wait that would end past the invocation's deadline (from
``context.get_remaining_time_in_millis()``, see
:func:`~peewee_serverless.lifecycle.deadline_from_context`) minus a margin kept for the work and
the answer (:meth:`ConnectRetryMixin.deadline_margin`), and after ``DB_CONNECT_RETRIES`` waits
when that is set. Unset, the time left is the budget, not a count: in a burst at 20 containers per
connection slot a fixed 10 retries gave up on ~10 % of invocations that would have found a slot a
few seconds later, long before their deadline. Without a deadline (no Lambda context) the count
is 10. Then one typed error is raised, :class:`~peewee_serverless.errors.ConnectionLimitReached`
or :class:`~peewee_serverless.errors.DatabaseUnavailable`, which the HTTP layer turns into a 503
with ``Retry-After``. Other errors (a wrong password, an unknown database) are never retried.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .errors import ErrorKind, classify
from .options import JITTERS
from .stats import emit_event

__all__ = [
    "JITTERS",
    "RETRYABLE_CONNECT_ERRORS",
    "Backoff",
    "ConnectRetryMixin",
    "emit_event",
    "retry_call",
]

logger = logging.getLogger("peewee_serverless.backoff")

#: Connect failures worth waiting for: no slot yet, or the server (re)starting. Nothing has run
#: on a connection that was never established, so a lost/dead socket is retryable here too.
RETRYABLE_CONNECT_ERRORS = frozenset(
    (
        ErrorKind.CONNECTION_LIMIT,
        ErrorKind.SERVER_UNAVAILABLE,
        ErrorKind.CONNECTION_DEAD,
        ErrorKind.CONNECTION_LOST,
    )
)


@dataclass(frozen=True)
class Backoff:
    """A back-off policy: waits in seconds between ``base`` and ``cap``, at most ``retries``."""

    base: float = 0.05
    cap: float = 2.0
    retries: int = 10
    jitter: str = "decorrelated"
    #: Decorrelated jitter's cap is halved once this many seconds were waited (0: no aging).
    aging: float = 2.0

    def __post_init__(self) -> None:
        if self.base <= 0 or self.cap < self.base:
            raise ValueError(f"need 0 < base <= cap, got base={self.base} cap={self.cap}")
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        if self.aging < 0:
            raise ValueError(f"aging must be >= 0, got {self.aging}")
        if self.jitter not in JITTERS:
            raise ValueError(f"jitter must be one of {', '.join(JITTERS)}, got {self.jitter!r}")

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """The successive waits (``retries`` of them), each within ``[0, cap]``."""
        draw = rng or random.Random()
        previous = self.base
        waited = 0.0
        for attempt in range(self.retries):
            if self.jitter == "full":
                yield draw.uniform(0.0, min(self.cap, self.base * 2.0**attempt))
            else:
                cap = self.cap
                if self.aging > 0:
                    cap = max(self.base, cap * self.aging / (self.aging + waited))
                previous = min(cap, draw.uniform(self.base, previous * 3.0))
                waited += previous
                yield previous

    def retry_after(self) -> int:
        """A ``Retry-After`` hint in whole seconds for a client once we gave up."""
        return max(1, round(self.cap))


def retry_call(
    func: Callable[[], Any],
    *,
    policy: Backoff,
    retryable: Callable[[BaseException], bool],
    deadline: float | None = None,
    on_retry: Callable[[int, float, BaseException], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> Any:
    """Call ``func`` until it returns, retrying ``retryable`` errors after jittered waits.

    The last error propagates when it is not retryable, when the retries are used up, or when
    the next wait would end after ``deadline`` (a ``clock()`` value). ``on_retry(n, wait, exc)``
    is called before the ``n``-th wait.
    """
    delays = policy.delays(rng)
    retried = 0
    while True:
        try:
            return func()
        except Exception as exc:
            if not retryable(exc):
                raise
            wait = next(delays, None)
            if wait is None:
                raise
            if deadline is not None and clock() + wait >= deadline:
                raise
            retried += 1
            if on_retry is not None:
                on_retry(retried, wait, exc)
            sleep(wait)


class ConnectRetryMixin:
    """Retries connecting with back-off; place it before ``ServerlessDatabaseMixin``.

    The policy comes from ``options`` (``DB_CONNECT_RETRIES``, ``DB_BACKOFF_BASE_MS``,
    ``DB_BACKOFF_CAP_MS``, ``DB_BACKOFF_JITTER``); the deadline from the lifecycle
    (``set_deadline``). ``events.retries`` counts the waits, ``events.gave_up`` the give-ups.
    """

    options: Any
    events: Any
    _deadline: float | None
    _attempt: dict[str, Any]

    #: ``time.monotonic()`` of this container's last connect refused for want of a slot.
    refused_at: float | None = None

    #: Replaceable for tests (a seeded ``random.Random``); ``None``: fresh randomness.
    backoff_rng: random.Random | None = None

    #: Retries when ``DB_CONNECT_RETRIES`` is unset and no deadline is known (no Lambda context).
    retries_without_deadline: int = 10
    #: With a deadline and no count, the deadline ends the retrying; this only bounds the loop.
    retries_until_deadline: int = 1_000_000

    def backoff_policy(self) -> Backoff:
        """The back-off policy from this database's options."""
        opts = self.options
        retries = opts.connect_retries
        if retries is None:
            has_deadline = getattr(self, "_deadline", None) is not None
            retries = self.retries_until_deadline if has_deadline else self.retries_without_deadline
        return Backoff(
            base=opts.backoff_base_ms / 1000.0,
            cap=opts.backoff_cap_ms / 1000.0,
            retries=retries,
            jitter=opts.backoff_jitter,
        )

    #: Time kept back from the deadline for the work and the answer: this share of what is left
    #: when connecting starts, within [min, max] seconds.
    deadline_margin_share: float = 0.1
    deadline_margin_min: float = 0.5
    deadline_margin_max: float = 3.0

    def deadline_margin(self, remaining: float) -> float:
        """Seconds of the ``remaining`` invocation time that retrying leaves for the rest."""
        share = remaining * self.deadline_margin_share
        return min(self.deadline_margin_max, max(self.deadline_margin_min, share))

    def _retry_deadline(self) -> float | None:
        deadline = getattr(self, "_deadline", None)
        if deadline is None:
            return None
        return float(deadline - self.deadline_margin(deadline - time.monotonic()))

    def _attempt_within_deadline(self) -> Any:
        """One connect attempt whose driver timeout ends by the deadline, not after it.

        ``DB_CONNECT_TIMEOUT`` bounds an attempt against a server that accepts the TCP connection
        but never answers; with little time left in the invocation the attempt gets only that
        little, so giving up (a 503) still happens before Lambda kills the invocation.
        """
        configured = self.connect_params.get("connect_timeout")  # type: ignore[attr-defined]
        attempt: dict[str, Any] = {}
        if self._deadline is not None and configured is not None:
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                from .errors import DeadlineExceeded

                raise DeadlineExceeded("the invocation's time ran out before connecting")
            if remaining < float(configured):
                # Per backend: PyMySQL takes a float; libpq whole seconds (never rounded up).
                within = self.connect_timeout_within  # type: ignore[attr-defined]
                attempt["connect_timeout"] = within(remaining, configured)
        # Built afresh for each attempt; connect_params itself is never changed here.
        self._attempt = attempt
        try:
            return self._driver_connect()  # type: ignore[attr-defined]
        finally:
            self._attempt = {}

    def _open_connection(self) -> Any:
        policy = self.backoff_policy()
        retried = 0

        def on_retry(n: int, wait: float, exc: BaseException) -> None:
            nonlocal retried
            retried = n
            self.events.retries += 1
            if classify(exc) is ErrorKind.CONNECTION_LIMIT:
                # Evidence for the governor that containers are queueing for slots.
                self.refused_at = time.monotonic()
            emit_event(
                self,
                "retry",
                attempt=n,
                wait_ms=round(wait * 1000, 1),
                reason=classify(exc).value,
            )

        started = time.perf_counter()
        try:
            conn = retry_call(
                self._attempt_within_deadline,
                policy=policy,
                retryable=lambda exc: classify(exc) in RETRYABLE_CONNECT_ERRORS,
                deadline=self._retry_deadline(),
                on_retry=on_retry,
                rng=self.backoff_rng,
            )
        except Exception as exc:
            failure = self._connect_failure(exc, retried)  # type: ignore[attr-defined]
            if failure is exc:
                raise
            if hasattr(failure, "retry_after"):
                failure.retry_after = max(failure.retry_after, policy.retry_after())
            emit_event(self, "give_up", retries=retried, reason=classify(exc).value)
            raise failure from exc
        ms = round((time.perf_counter() - started) * 1000, 1)
        emit_event(self, "connect", retries=retried, connect_ms=ms)
        return conn
