"""boto3 clients whose every call ends by the invocation's deadline.

A botocore client fixes its timeouts and retries when it is built (``Config(connect_timeout,
read_timeout, retries)``); an invocation's time left shrinks while it runs. A client of
DynamoDB with 2 s / 5 s timeouts and four attempts may wait over 20 s, whatever the invocation
has left: Lambda then kills it without an answer. :class:`DeadlineBoundClient` stands in for a
boto3 client and bounds every call by ``time_left()`` (typically the database's
:meth:`~peewee_serverless.ServerlessDatabaseMixin.time_left`, which the lifecycle sets from
``context.get_remaining_time_in_millis()`` minus the margin):

* **Timeouts, per call**: with enough time left for the configured connect + read timeouts, the
  call goes to the configured client; otherwise to a client whose connect + read timeouts add
  up to the largest step of :data:`BUDGETS` that fits in the time left. Steps, not the exact
  time left, so that a handful of clients (built once, cached, from one botocore session, so
  ``client.exceptions`` classes are the same for all) serve every deadline, and the usual call
  keeps the configured client and its warm connection pool. With less than the smallest step
  left, the call is not sent: :class:`~peewee_serverless.errors.DeadlineExceeded` (a 503 with
  ``Retry-After`` in the HTTP layer), as the SQL path answers. ``min_budget`` raises that floor
  for a service whose calls cannot usefully be cut shorter (the Data API driver's: 1 s, see
  :mod:`peewee_serverless.data_api.driver`); the steps above it are the same table.
* **Retries, per attempt**: botocore's own retries are off in every client's ``Config``; a
  ``needs-retry`` hook (botocore's documented event for this decision) is the retry policy
  instead: botocore's *standard* mode conditions and jittered back-off
  (``botocore.retries.standard``: the same errors retried after the same delays), plus one
  rule: no retry whose delay and whole attempt (connect + read timeout of the client in use)
  do not fit in the time left. The last error then stands (the caller maps it, e.g. to 503).

Why not botocore's per-request ``read_timeout`` (the request context override added in
botocore 1.43.72): Lambda's runtimes ship their own, often older, boto3 (``package`` leaves it
out of the zip), where the override is silently ignored, and it leaves the connect timeout
fixed. Why not a new client per call: building one costs milliseconds and a fresh connection.
Why a stand-in rather than a hook on one client: botocore applies a client's timeouts in its
HTTP session, which no event can change for one request on every botocore version.

A stand-in passes any other attribute (``meta``, ``exceptions``, ``get_waiter``, paginators) to
the configured client (building it then, if it is not yet). Telling an API method from those
builds nothing: the names come from any client already built, else from the service model in
the session's botocore loader (which the first build then reads from its cache), so a call near
the deadline builds only the short client it uses, and one with no time left builds none. A
stand-in can be given wherever a boto3 client is expected (Powertools'
``DynamoDBPersistenceLayer(boto3_client=...)``, ``SecretsProvider(boto3_client=...)``). Without a
deadline (``time_left()`` is None: scripts, tests, no Lambda context) every call goes to the
configured client with standard-mode retries: nothing changes.

One stand-in may serve callers whose deadlines differ: :meth:`DeadlineBoundClient.client_now`
takes their ``time_left``. The Data API driver keeps one per (region, timeouts, endpoint) for the
process, shared by its connections (a reconnect builds a new one), and takes the chosen client
from it for each call with the connection's deadline, botocore's retries off
(``max_attempts=1``: the driver's own back-off retries).

Not bounded: a response that keeps trickling bytes (the read timeout applies to each socket
read, as in botocore), and what a call does after its answer (parsing).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Container
from typing import Any

from .errors import DeadlineExceeded

__all__ = ["BUDGETS", "DeadlineBoundClient", "TimeLeft"]

#: Seconds until the deadline (None: no deadline; <= 0: it has passed).
TimeLeft = Callable[[], "float | None"]

#: Total wait (connect + read timeout, seconds) of the clients used near a deadline: a call gets
#: the largest that fits in the time left; none below the first (or below a client's
#: ``min_budget``): the call is not sent.
BUDGETS = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 48.0, 64.0)

#: An AWS endpoint accepts a connection in milliseconds: a quarter of a short budget is ample.
_CONNECT_SHARE = 0.25


class _RetryWithinDeadline:
    """The ``needs-retry`` handler: botocore's standard retry policy, within the time left."""

    def __init__(
        self, service: str, max_attempts: int, attempt_seconds: float, time_left: TimeLeft
    ) -> None:
        from botocore.retries import standard

        self._standard = standard
        self._conditions = standard.StandardRetryConditions(max_attempts=max_attempts)
        self._backoff = standard.ExponentialBackoff(service_name=service)
        self._attempt_seconds = attempt_seconds
        self._time_left = time_left

    def __call__(
        self,
        attempts: int,
        response: Any = None,
        caught_exception: Any = None,
        operation: Any = None,
        request_dict: Any = None,
        **_: Any,
    ) -> float | None:
        http_response, parsed = response if response is not None else (None, None)
        context = self._standard.RetryContext(
            attempt_number=attempts,
            operation_model=operation,
            parsed_response=parsed,
            http_response=http_response,
            caught_exception=caught_exception,
            request_context=(request_dict or {}).get("context"),
        )
        if not self._conditions.is_retryable(context):
            return None
        delay = float(self._backoff.delay_amount(context))
        left = self._time_left()
        if left is not None and delay + self._attempt_seconds > left:
            return None  # no time for another whole attempt: the last error stands
        return delay


class DeadlineBoundClient:
    """A boto3 client of ``service`` whose every call ends by ``time_left()`` (see the module).

    ``connect_timeout`` / ``read_timeout`` are the configured client's (each attempt's, when
    there is time for them); ``max_attempts`` counts every attempt, the first included.
    ``min_budget`` is the smallest connect + read wait worth a call near the deadline (with less
    left: :class:`~peewee_serverless.errors.DeadlineExceeded`); the default is the first step of
    :data:`BUDGETS`. ``client_kwargs`` (``region_name``, ``endpoint_url``, ...) go to every
    client built. The clients are built on first use: constructing this imports nothing and
    opens nothing.

    Do not use it for calls that must wait longer than an invocation can (long polls, waiters
    of minutes): they fail fast near the deadline, which is the point.
    """

    def __init__(
        self,
        service: str,
        time_left: TimeLeft,
        *,
        connect_timeout: float = 1.0,
        read_timeout: float = 5.0,
        max_attempts: int = 3,
        min_budget: float = BUDGETS[0],
        session: Any = None,
        **client_kwargs: Any,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts!r}")
        self.service = service
        self.time_left = time_left
        self.timeouts = (connect_timeout, read_timeout)
        self.max_attempts = max_attempts
        #: The steps of :data:`BUDGETS` this client may use near the deadline, largest first.
        self._budgets = tuple(b for b in reversed(BUDGETS) if b >= min_budget)
        self._session = session
        self._client_kwargs = client_kwargs
        #: (connect, read) timeouts -> client; the configured one first.
        self._clients: dict[tuple[float, float], Any] = {}
        #: The service's API method names (``get_item``...), once known.
        self._api_names: Container[str] | None = None
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"DeadlineBoundClient({self.service!r}, timeouts={self.timeouts!r})"

    # -- choosing the client -------------------------------------------------------------------
    def timeouts_for(self, left: float | None) -> tuple[float, float]:
        """The (connect, read) timeouts of a call starting with ``left`` seconds to go.

        Raises :class:`~peewee_serverless.errors.DeadlineExceeded` when not even the smallest
        budget fits.
        """
        connect, read = self.timeouts
        if left is None or left >= connect + read:
            return self.timeouts
        budget = next((b for b in self._budgets if b <= left), None)
        if budget is None:
            raise DeadlineExceeded(
                f"no time left before the invocation's deadline for a {self.service} call"
            )
        short_connect = min(connect, budget * _CONNECT_SHARE)
        return short_connect, min(read, budget - short_connect)

    def client_now(self, time_left: TimeLeft | None = None) -> Any:
        """The client for a call starting now (or DeadlineExceeded: no time for one).

        ``time_left`` is the caller's when it is not the one given at construction (a stand-in
        shared by callers with different deadlines; its retries, if ``max_attempts`` allows
        any, still stop by the one given at construction). Building a client takes
        milliseconds (tens on a cold start), taken from the time left: after a build the choice
        is made again, until it falls on a client already built.
        """
        time_left = time_left or self.time_left
        while True:
            timeouts = self.timeouts_for(time_left())
            client = self._clients.get(timeouts)
            if client is not None:
                return client
            self._client(timeouts)

    def _client(self, timeouts: tuple[float, float]) -> Any:
        client = self._clients.get(timeouts)
        if client is not None:
            return client
        with self._lock:
            client = self._clients.get(timeouts)
            if client is None:
                client = self._clients[timeouts] = self._build(*timeouts)
        return client

    def _boto3_session(self) -> Any:
        if self._session is None:
            with self._lock:
                if self._session is None:
                    import boto3

                    # One session for every client: their exception classes are the same.
                    self._session = boto3.session.Session()
        return self._session

    def _build(self, connect: float, read: float) -> Any:
        from botocore.config import Config

        session = self._boto3_session()
        config = Config(
            connect_timeout=connect,
            read_timeout=read,
            retries={"mode": "standard", "total_max_attempts": 1},  # ours: needs-retry below
        )
        client = session.client(self.service, config=config, **self._client_kwargs)
        name = client.meta.service_model.service_id.hyphenize()
        client.meta.events.register(
            f"needs-retry.{name}",
            _RetryWithinDeadline(name, self.max_attempts, connect + read, self.time_left),
            unique_id=f"peewee-serverless-deadline-retry-{name}",
        )
        return client

    # -- standing in for a boto3 client --------------------------------------------------------
    def _any_built(self) -> Any:
        """A client already built (any: they differ only in timeouts), or None."""
        # A copy: another thread may add a client while this looks.
        return next(iter(list(self._clients.values())), None)

    def _find_api_names(self) -> Container[str]:
        """The API method names, building no client for them (see the module)."""
        built = self._any_built()
        if built is not None:  # every client of the service has the same methods
            return built.meta.method_to_api_mapping
        botocore_session = getattr(self._boto3_session(), "_session", None)
        service_model = getattr(botocore_session, "get_service_model", None)
        if service_model is None:  # a session of another kind: ask the configured client
            return self._client(self.timeouts).meta.method_to_api_mapping
        from botocore import xform_name

        model = service_model(self.service, self._client_kwargs.get("api_version"))
        # Names as botocore gives a client's methods (botocore.client.ClientCreator).
        return frozenset(xform_name(operation) for operation in model.operation_names)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if self._api_names is None:
            self._api_names = self._find_api_names()
        if name not in self._api_names:
            # meta, exceptions, waiters, paginators: the configured client's
            return getattr(self._client(self.timeouts), name)

        # An API call: the client is chosen when it is called, not when it is looked up.
        def call(*args: Any, **kwargs: Any) -> Any:
            return getattr(self.client_now(), name)(*args, **kwargs)

        call.__name__ = name
        built = self._any_built()
        call.__doc__ = (  # botocore's, when a client is there to give it
            getattr(built, name).__doc__
            if built is not None
            else f"The {self.service} call {name}, on the client the time left allows."
        )
        return call
