"""DeadlineBoundClient: every boto3 call ends by the invocation's deadline.

The choice of timeouts is pure (property-tested); the calls go to moto's DynamoDB in server mode
(``moto_server``, real HTTP on a loopback port) and to a listener that accepts connections and
never answers (a partition: the kernel completes the TCP handshake, nothing reads). Nothing here
reaches AWS. "In time" is the deadline (``time.monotonic()``) not yet reached when the call
returned or raised, as tests/test_deadline.py checks the Lambda context's time left.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ReadTimeoutError
from hypothesis import given
from hypothesis import strategies as st

from peewee_serverless import DeadlineExceeded
from peewee_serverless.aws_deadline import BUDGETS, DeadlineBoundClient

AWS = {
    "region_name": "us-east-1",
    "aws_access_key_id": "testing",
    "aws_secret_access_key": "testing",
}


def _never(_: float | None = None) -> None:
    return None


def _deadline_in(seconds: float) -> tuple[float, Any]:
    deadline = time.monotonic() + seconds
    return deadline, lambda: deadline - time.monotonic()


@pytest.fixture
def silent_endpoint() -> Iterator[tuple[str, socket.socket]]:
    """An endpoint that takes connections (kernel backlog) and never reads or answers."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.setblocking(False)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", listener
    finally:
        listener.close()


def _counting_client(
    endpoint: str, time_left: Any, **settings: Any
) -> tuple[DeadlineBoundClient, list[str]]:
    """A client of ``endpoint`` whose boto3 clients record each attempt they send."""
    session = boto3.session.Session()
    sent: list[str] = []
    session.events.register("before-send.dynamodb", lambda **kw: sent.append("attempt"))
    client = DeadlineBoundClient(
        "dynamodb", time_left, session=session, endpoint_url=endpoint, **settings, **AWS
    )
    return client, sent


# -- choosing the timeouts ------------------------------------------------------------------
def test_without_a_deadline_or_with_time_enough_the_configured_timeouts() -> None:
    client = DeadlineBoundClient("dynamodb", _never, connect_timeout=1.0, read_timeout=5.0)
    assert client.timeouts_for(None) == (1.0, 5.0)
    assert client.timeouts_for(6.0) == (1.0, 5.0)
    assert client.timeouts_for(100.0) == (1.0, 5.0)


@given(
    left=st.floats(min_value=0.0, max_value=200.0),
    connect=st.floats(min_value=0.01, max_value=30.0),
    read=st.floats(min_value=0.01, max_value=120.0),
    min_budget=st.sampled_from(BUDGETS[:4]),
)
def test_a_call_never_waits_longer_than_the_time_left(
    left: float, connect: float, read: float, min_budget: float
) -> None:
    client = DeadlineBoundClient(
        "dynamodb", _never, connect_timeout=connect, read_timeout=read, min_budget=min_budget
    )
    if left < min_budget and left < connect + read:
        with pytest.raises(DeadlineExceeded):
            client.timeouts_for(left)
        return
    c, r = client.timeouts_for(left)
    assert 0 < c <= connect and 0 < r <= read
    assert c + r <= left + 1e-9  # float rounding of budget - connect + connect


def test_a_minimum_budget_sends_nothing_with_less_left() -> None:
    """The Data API driver's floor (1 s) on the one table: its steps, none below it."""
    floor = DeadlineBoundClient(
        "rds-data", _never, connect_timeout=5.0, read_timeout=60.0, min_budget=1.0
    )
    assert floor.timeouts_for(1.2) == (0.25, 0.75)
    with pytest.raises(DeadlineExceeded):
        floor.timeouts_for(0.9)
    default = DeadlineBoundClient("rds-data", _never, connect_timeout=5.0, read_timeout=60.0)
    assert default.timeouts_for(0.9) == (0.1875, 0.5625)


def test_a_shared_client_takes_each_callers_time_left() -> None:
    """One stand-in, callers with their own deadlines (the Data API driver's connections)."""
    client = DeadlineBoundClient("dynamodb", _never, endpoint_url="http://127.0.0.1:9", **AWS)
    short = client.client_now(lambda: 2.0)
    assert (short.meta.config.connect_timeout, short.meta.config.read_timeout) == (0.5, 1.5)
    configured = client.client_now()  # its own time left: no deadline
    assert configured is not short and configured.meta.config.read_timeout == 5.0
    with pytest.raises(DeadlineExceeded):
        client.client_now(lambda: 0.1)


def test_the_time_a_client_build_takes_is_not_counted_twice() -> None:
    """Building a client costs time (here 0.3 s of a fake clock per build): the client chosen
    is one whose timeouts fit in what is left after the builds, not before them."""
    clock = [0.0]

    class SlowSession:
        def __init__(self) -> None:
            self._session = boto3.session.Session()

        def client(self, *args: Any, **kwargs: Any) -> Any:
            clock[0] += 0.3
            return self._session.client(*args, **kwargs)

    client = DeadlineBoundClient(
        "dynamodb", lambda: 2.0 - clock[0], session=SlowSession(), endpoint_url="http://x", **AWS
    )
    chosen = client.client_now()
    config = chosen.meta.config
    assert config.connect_timeout + config.read_timeout <= 2.0 - clock[0]


def test_too_little_time_left_sends_nothing(silent_endpoint: tuple[str, socket.socket]) -> None:
    endpoint, listener = silent_endpoint
    client = DeadlineBoundClient("dynamodb", lambda: 0.3, endpoint_url=endpoint, **AWS)
    with pytest.raises(DeadlineExceeded):
        client.get_item(TableName="t", Key={"pk": {"S": "x"}})
    with pytest.raises(BlockingIOError):
        listener.accept()  # no connection was even opened


# -- against moto's server ------------------------------------------------------------------
def test_calls_and_exceptions_work_on_every_client(moto_server: str) -> None:
    """The configured client and a short-deadline one answer alike, and an error of either is
    the class ``client.exceptions`` names (one botocore session for all of them)."""
    left = [None]
    client = DeadlineBoundClient("dynamodb", lambda: left[0], endpoint_url=moto_server, **AWS)
    table = f"t-{time.time_ns()}"
    client.create_table(
        TableName=table,
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    client.put_item(TableName=table, Item={"pk": {"S": "a"}})
    left[0] = 2.0  # a short deadline: another client, with 0.5 s / 1.5 s timeouts
    assert client.timeouts_for(2.0) == (0.5, 1.5) != client.timeouts
    assert client.get_item(TableName=table, Key={"pk": {"S": "a"}})["Item"] == {"pk": {"S": "a"}}
    assert len(client._clients) == 2
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_item(TableName=f"{table}-missing", Key={"pk": {"S": "a"}})


class _SpySession(boto3.session.Session):
    """A boto3 session recording the (connect, read) timeouts of every client it builds."""

    def __init__(self) -> None:
        super().__init__()
        self.built: list[tuple[float, float]] = []

    def client(self, *args: Any, **kwargs: Any) -> Any:
        config = kwargs["config"]
        self.built.append((config.connect_timeout, config.read_timeout))
        return super().client(*args, **kwargs)


def test_a_call_builds_only_the_client_it_uses(moto_server: str) -> None:
    """Telling an API method from other attributes builds no client: with no time for any call
    none is built, near the deadline only the short client the call goes to (the configured one
    would be a build, tens of ms on a cold start, taken from the little time left). Attributes
    that are not calls (``exceptions``) are still the configured client's."""
    session = _SpySession()
    left = [0.1]
    client = DeadlineBoundClient(
        "dynamodb", lambda: left[0], session=session, endpoint_url=moto_server, **AWS
    )
    with pytest.raises(DeadlineExceeded):
        client.list_tables()
    assert session.built == []
    left[0] = 2.0
    assert "TableNames" in client.list_tables()
    assert session.built == [(0.5, 1.5)]
    assert "ListTables" in str(client.list_tables.__doc__)  # botocore's, from the client built
    assert issubclass(client.exceptions.ResourceNotFoundException, Exception)
    assert session.built == [(0.5, 1.5), (1.0, 5.0)]
    assert client.meta.config.read_timeout == 5.0


# -- a silent endpoint: retries and timeouts ------------------------------------------------
def test_without_a_deadline_timeouts_are_retried_as_botocore_standard_mode(
    silent_endpoint: tuple[str, socket.socket],
) -> None:
    client, sent = _counting_client(
        silent_endpoint[0], _never, connect_timeout=0.2, read_timeout=0.1, max_attempts=3
    )
    with pytest.raises(ReadTimeoutError):
        client.get_item(TableName="t", Key={"pk": {"S": "x"}})
    assert len(sent) == 3


def test_a_call_and_its_retries_end_by_the_deadline(
    silent_endpoint: tuple[str, socket.socket],
) -> None:
    """Configured: 5 s reads, ten attempts (over 50 s). With 1.5 s left, the call gets
    shorter timeouts and only the attempts that fit, and gives up before the deadline."""
    deadline, time_left = _deadline_in(1.5)
    client, sent = _counting_client(
        silent_endpoint[0], time_left, connect_timeout=1.0, read_timeout=5.0, max_attempts=10
    )
    with pytest.raises((ReadTimeoutError, DeadlineExceeded)):
        client.get_item(TableName="t", Key={"pk": {"S": "x"}})
    assert time.monotonic() < deadline
    assert 1 <= len(sent) < 10
