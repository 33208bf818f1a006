"""Back-off policies, the deadline bound, and connect retry on real connection limits."""

from __future__ import annotations

import contextlib
import random
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peewee_serverless.backoff import Backoff, retry_call
from peewee_serverless.config import ServerlessOptions
from peewee_serverless.errors import ConfigurationError, ConnectionLimitReached, DatabaseUnavailable
from peewee_serverless.lifecycle import deadline_from_context

policies = st.builds(
    Backoff,
    base=st.floats(min_value=0.001, max_value=1.0),
    cap=st.floats(min_value=1.0, max_value=30.0),
    retries=st.integers(min_value=0, max_value=30),
    jitter=st.sampled_from(["full", "decorrelated"]),
)


@given(policy=policies, seed=st.integers(min_value=0, max_value=2**32))
@settings(max_examples=200, deadline=None)
def test_jitter_stays_within_bounds(policy: Backoff, seed: int) -> None:
    waits = list(policy.delays(random.Random(seed)))
    assert len(waits) == policy.retries
    for n, wait in enumerate(waits):
        assert 0.0 <= wait <= policy.cap
        if policy.jitter == "full":
            assert wait <= policy.base * 2.0**n
        else:
            assert wait >= min(policy.base, policy.cap)


@given(policy=policies, seed=st.integers(min_value=0, max_value=2**32))
@settings(max_examples=200, deadline=None)
def test_decorrelated_waits_shorten_as_the_waiting_grows(policy: Backoff, seed: int) -> None:
    """Aging: the longer a connect has waited, the lower the cap of its next wait, so an old
    waiter polls at least as often as a fresh one (closer to first come, first served)."""
    policy = Backoff(policy.base, policy.cap, policy.retries, "decorrelated", aging=2.0)
    waited = 0.0
    for wait in policy.delays(random.Random(seed)):
        ceiling = max(policy.base, policy.cap * 2.0 / (2.0 + waited))
        assert policy.base <= wait <= ceiling + 1e-12
        waited += wait


@given(
    policy=policies,
    remaining_ms=st.integers(min_value=0, max_value=20_000),
    seed=st.integers(min_value=0, max_value=2**32),
)
@settings(max_examples=200, deadline=None)
def test_backoff_never_outlives_remaining_time(
    policy: Backoff, remaining_ms: int, seed: int
) -> None:
    """With a fake clock and a fake context, the waits end before the context's deadline."""
    now = [1000.0]

    class FakeContext:
        def get_remaining_time_in_millis(self) -> int:
            return remaining_ms

    class Refused(Exception):
        pass

    calls = []

    def connect() -> None:
        calls.append(now[0])
        raise Refused()

    def sleep(seconds: float) -> None:
        assert seconds >= 0
        now[0] += seconds

    real_deadline = deadline_from_context(FakeContext())
    assert real_deadline is not None
    deadline = 1000.0 + max(0.0, remaining_ms / 1000.0 - 0.25)
    with pytest.raises(Refused):
        retry_call(
            connect,
            policy=policy,
            retryable=lambda exc: isinstance(exc, Refused),
            deadline=deadline,
            clock=lambda: now[0],
            sleep=sleep,
            rng=random.Random(seed),
        )
    assert now[0] < deadline or now[0] == 1000.0
    assert 1 <= len(calls) <= policy.retries + 1


def test_non_retryable_errors_are_raised_at_once() -> None:
    calls = []

    def connect() -> None:
        calls.append(1)
        raise KeyError("not a connect problem")

    with pytest.raises(KeyError):
        retry_call(connect, policy=Backoff(), retryable=lambda e: False, sleep=lambda s: None)
    assert calls == [1]


def test_retry_returns_once_the_call_succeeds() -> None:
    attempts = iter([OSError(), OSError(), "ok"])

    def connect() -> str:
        item = next(attempts)
        if isinstance(item, Exception):
            raise item
        return item

    waits: list[float] = []
    assert (
        retry_call(connect, policy=Backoff(retries=5), retryable=lambda e: True, sleep=waits.append)
        == "ok"
    )
    assert len(waits) == 2


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"DB_BACKOFF_JITTER": "exponential"}, "DB_BACKOFF_JITTER"),
        ({"DB_CONNECT_RETRIES": "-1"}, "DB_CONNECT_RETRIES"),
        ({"DB_BACKOFF_BASE_MS": "500", "DB_BACKOFF_CAP_MS": "100"}, "DB_BACKOFF_CAP_MS"),
        ({"DB_USAGE_THRESHOLD": "high"}, "DB_USAGE_THRESHOLD"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        ServerlessOptions.from_env(env)
    assert err.value.setting == setting


def test_settings_from_env() -> None:
    opts = ServerlessOptions.from_env(
        {
            "DB_CONNECT_RETRIES": "3",
            "DB_BACKOFF_BASE_MS": "10",
            "DB_BACKOFF_CAP_MS": "80",
            "DB_BACKOFF_JITTER": "FULL",
        }
    )
    assert (opts.connect_retries, opts.backoff_base_ms, opts.backoff_cap_ms) == (3, 10.0, 80.0)
    assert opts.backoff_jitter == "full"


# -- real servers: a user / role limited to one connection ----------------------------------------
def _limited_account(backend: Any, limit: int) -> dict[str, str]:
    """A user (MariaDB) / role (PostgreSQL) allowed ``limit`` connections; its DB_* env."""
    name = f"pst_burst_{uuid.uuid4().hex[:8]}"
    if backend.engine == "mysql":
        backend.query(f"CREATE USER '{name}' IDENTIFIED BY 'pw' WITH MAX_USER_CONNECTIONS {limit}")
        backend.query(f"GRANT ALL ON `{backend.env['DB_NAME']}`.* TO '{name}'")
    else:
        backend.query(f"CREATE ROLE {name} LOGIN PASSWORD 'pw' CONNECTION LIMIT {limit}")
    return {"DB_USER": name, "DB_PASSWORD": "pw"}


def _drop_account(backend: Any, name: str) -> None:
    if backend.engine == "mysql":
        backend.query(f"DROP USER IF EXISTS '{name}'")
    else:
        backend.query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (name,)
        )
        backend.query(f"DROP ROLE IF EXISTS {name}")


@contextlib.contextmanager
def _holder_and_waiter(backend: Any, **env: str) -> Iterator[tuple[Any, Any]]:
    """Two databases of one account limited to one connection, backing off 1-5 ms (``env`` adds
    settings); closed at the end and the account dropped."""
    account = _limited_account(backend, 1)
    settings = {**account, "DB_BACKOFF_BASE_MS": "1", "DB_BACKOFF_CAP_MS": "5", **env}
    holder = backend.make_db(settings)
    waiter = backend.make_db(settings)
    try:
        yield holder, waiter
    finally:
        # A deadline arms the process-wide watchdog (PostgreSQL): it must not outlive a test.
        waiter.set_deadline(None)
        holder.close()
        waiter.close()
        _drop_account(backend, account["DB_USER"])


def test_limit_reached_gives_up_typed_and_counted(server_backend: Any) -> None:
    """A full account: connect retries, then one typed error (never a driver traceback)."""
    with _holder_and_waiter(server_backend, DB_CONNECT_RETRIES="3") as (holder, waiter):
        holder.connect()
        with pytest.raises(ConnectionLimitReached) as err:
            waiter.connect()
        assert err.value.retry_after >= 1
        assert waiter.events.retries == 3
        assert waiter.events.gave_up == 1
        assert "pw" not in str(err.value)
        holder.close()
        waiter.connect()  # a slot is free again: the same database object connects
        assert not waiter.is_closed()


def test_retry_waits_for_a_slot_to_free(server_backend: Any) -> None:
    """A slot freed while we back off is taken: the connect succeeds after retries."""
    with _holder_and_waiter(server_backend, DB_CONNECT_RETRIES="50") as (holder, waiter):
        holder.connect()

        def free_on_first_retry(name: str, fields: dict[str, Any]) -> None:
            if name == "retry":
                holder.close()

        waiter.event_hooks = [free_on_first_retry]
        waiter.connect()
        assert waiter.events.retries >= 1
        assert waiter.events.gave_up == 0


def test_a_silent_server_cannot_hold_the_connect_past_the_deadline(server_backend: Any) -> None:
    """A server that accepts TCP but never answers: the attempt ends by the invocation's deadline
    (a typed 503 error), not after DB_CONNECT_TIMEOUT."""
    import socket
    import time

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel completes the handshake; nobody ever speaks
    db = server_backend.make_db(
        {"DB_PORT": str(silent.getsockname()[1]), "DB_CONNECT_TIMEOUT": "60"}
    )
    try:
        db.set_deadline(time.monotonic() + 1.0)
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable):
            db.connect()
        # 60 s configured; the deadline (plus libpq's whole-second rounding) ends it far sooner.
        assert time.monotonic() - started < 30
        assert db.connect_params["connect_timeout"] in (60, 60.0)  # restored for the next one
    finally:
        # As the lifecycle does at the end of an invocation: on PostgreSQL a deadline arms
        # the process-wide watchdog, which must not outlive this test.
        db.set_deadline(None)
        silent.close()


def test_unset_retries_mean_until_the_deadline_minus_a_margin(tmp_path: Any) -> None:
    """No DB_CONNECT_RETRIES: time is the budget with a deadline, 10 retries without one."""
    import time

    from peewee_serverless import database_from_env

    db = database_from_env({"DB_ENGINE": "sqlite", "DB_NAME": str(tmp_path / "x.sqlite3")})
    assert db.options.connect_retries is None
    assert db.backoff_policy().retries == 10
    db.set_deadline(time.monotonic() + 30)
    assert db.backoff_policy().retries == db.retries_until_deadline
    # 10 % of the time left is kept for the work and the answer, within 0.5-3 s.
    assert (db.deadline_margin(30), db.deadline_margin(10), db.deadline_margin(2)) == (3, 1, 0.5)
    explicit = database_from_env(
        {"DB_ENGINE": "sqlite", "DB_NAME": str(tmp_path / "y.sqlite3"), "DB_CONNECT_RETRIES": "3"}
    )
    explicit.set_deadline(time.monotonic() + 30)
    assert explicit.backoff_policy().retries == 3


def test_a_full_account_is_retried_past_the_old_count(server_backend: Any) -> None:
    """With a deadline and no count, a refused connect keeps trying (here: a slot is freed only
    after the 12th retry, beyond the former fixed 10) and records the refusal for the governor."""
    import time

    with _holder_and_waiter(server_backend) as (holder, waiter):
        holder.connect()

        def free_after_twelve(name: str, fields: dict[str, Any]) -> None:
            if name == "retry" and fields["attempt"] == 12:
                holder.close()

        waiter.event_hooks = [free_after_twelve]
        waiter.set_deadline(time.monotonic() + 120)  # generous: a loaded machine is slow
        waiter.connect()
        assert waiter.events.retries >= 12
        assert waiter.events.gave_up == 0
        assert waiter.refused_at is not None
