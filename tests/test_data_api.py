"""Peewee over Aurora's Data API, on both engines, through the local endpoint on real servers.

boto3's ``rds-data`` client talks HTTP to ``peewee_serverless.data_api.endpoint`` (started by the
``data_api_endpoint`` fixture), which executes on the shared MariaDB / PostgreSQL. What is read
back is checked through an independent driver connection (``backend.query``). Throttling and a
resuming cluster are the endpoint's injected answers in the Data API's own error shapes.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import peewee
import pytest
from peewee import (
    BlobField,
    BooleanField,
    CharField,
    DateField,
    DateTimeField,
    DecimalField,
    DoubleField,
    IntegerField,
    Model,
    TextField,
    TimeField,
)

from peewee_serverless import (
    ConfigurationError,
    ConnectionLost,
    DatabaseUnavailable,
    ErrorKind,
    classify,
    database_lifecycle,
)
from peewee_serverless.local.context import LambdaContext

from .conftest import DATA_API_BACKENDS, SELECTED, Backend, backend_env, make_backend

SELECTED_DATA_API = [b for b in DATA_API_BACKENDS if b in SELECTED]


@pytest.fixture(params=SELECTED_DATA_API)
def api(
    request: pytest.FixtureRequest, tmp_path: Path, data_api_endpoint: Any
) -> Iterator[tuple[Backend, Any]]:
    """A Data API backend (empty database) and the endpoint serving it."""
    data_api_endpoint.service.clear_faults()
    env = backend_env(request.param, tmp_path, data_api_endpoint.url)
    backend = make_backend(request.param, tmp_path, env)
    yield backend, data_api_endpoint
    data_api_endpoint.service.clear_faults()
    backend.close()


@pytest.fixture
def api_db(api: tuple[Backend, Any]) -> Iterator[Any]:
    backend, _ = api
    db = backend.make_db({"DB_BACKOFF_BASE_MS": "5", "DB_BACKOFF_CAP_MS": "20"})
    yield db
    if not db.is_closed():
        db.finish()
        db.close()


def _model(db: Any) -> Any:
    class Thing(Model):
        name = CharField(max_length=50, unique=True)
        note = TextField(null=True)
        when = DateTimeField(null=True)
        day = DateField(null=True)
        at = TimeField(null=True)
        amount = DecimalField(max_digits=12, decimal_places=4, null=True)
        ratio = DoubleField(null=True)
        count = IntegerField(null=True)
        blob = BlobField(null=True)
        flag = BooleanField(null=True)

        class Meta:
            database = db
            table_name = "things"

    db.create_tables([Thing])
    return Thing


# -- types -------------------------------------------------------------------------------------


def test_values_round_trip_both_ways(api: tuple[Backend, Any], api_db: Any) -> None:
    backend, _ = api
    thing = _model(api_db)
    values = {
        "name": "Zoë 你好",
        "note": 'it\'s 100% "quoted" :not_a_param %s',
        "when": datetime.datetime(2024, 2, 29, 23, 59, 58),
        "day": datetime.date(1999, 12, 31),
        "at": datetime.time(7, 8, 9),
        "amount": decimal.Decimal("-12345678.1234"),
        "ratio": 0.125,
        "count": -(2**31),
        "blob": bytes(range(256)),
        "flag": True,
    }
    created = thing.create(**values)
    assert created.id == 1  # generatedFields (MySQL) / RETURNING (PostgreSQL)
    got = thing.get_by_id(created.id)
    for key, value in values.items():
        read = getattr(got, key)
        assert (bytes(read) if key == "blob" else read) == value, key
    # NULLs and False both ways; the row as an independent connection sees it.
    empty = thing.create(name="nulls", flag=False)
    got = thing.get_by_id(empty.id)
    assert (got.note, got.when, got.amount, got.blob, got.flag) == (None, None, None, None, False)
    rows = backend.query("SELECT name, amount, day FROM things ORDER BY id")
    assert rows[0] == (values["name"], values["amount"], values["day"])
    # Parameters of every type in a WHERE clause find the row.
    assert thing.get(thing.when == values["when"], thing.day == values["day"]).id == 1
    assert thing.get(thing.amount == values["amount"], thing.flag == True).id == 1  # noqa: E712
    assert thing.select().where(thing.note.is_null()).count() == 1


def test_json_values_round_trip(api: tuple[Backend, Any], api_db: Any) -> None:
    backend, _ = api
    column = "JSON" if backend.engine == "mysql" else "JSONB"
    api_db.execute_sql(f"CREATE TABLE docs (id INTEGER PRIMARY KEY, doc {column})")
    doc = {"a": [1, 2.5, None, True], "b": {"c": "ü"}}
    api_db.execute_sql("INSERT INTO docs (id, doc) VALUES (%s, %s)", (1, doc))
    api_db.execute_sql("INSERT INTO docs (id, doc) VALUES (%s, %s)", (2, None))
    rows = api_db.execute_sql("SELECT doc FROM docs ORDER BY id").fetchall()
    read = rows[0][0]
    # PostgreSQL answers json decoded (as psycopg2 does), MySQL as text (as PyMySQL does).
    assert (json.loads(read) if isinstance(read, str) else read) == doc
    assert rows[1][0] is None


def test_postgres_types_strings_as_aurora_does(api: tuple[Backend, Any], api_db: Any) -> None:
    """A string without typeHint is a varchar on Aurora PostgreSQL: not a date (MySQL coerces)."""
    backend, _ = api
    api_db.execute_sql("CREATE TABLE days (day DATE)")
    if backend.engine == "postgres":
        with pytest.raises(peewee.ProgrammingError, match="SQLState: 42804"):
            api_db.execute_sql("INSERT INTO days (day) VALUES (%s)", ("2020-01-02",))
    else:
        api_db.execute_sql("INSERT INTO days (day) VALUES (%s)", ("2020-01-02",))
    api_db.execute_sql("INSERT INTO days (day) VALUES (%s)", (datetime.date(2020, 1, 3),))
    assert backend.query("SELECT MAX(day) FROM days") == [(datetime.date(2020, 1, 3),)]


def test_uuid_and_result_formats(api: tuple[Backend, Any], api_db: Any) -> None:
    backend, endpoint = api
    api_db.connect()
    value = uuid.uuid4()
    cursor = api_db.execute_sql("SELECT %s AS u, %s AS n", (str(value), None))
    assert cursor.fetchone() == (str(value), None)
    assert [d[0] for d in cursor.description] == ["u", "n"]
    # The endpoint speaks formatRecordsAs=JSON too (boto3 straight, as another client would).
    client = api_db._state.conn.client
    answer = client.execute_statement(
        resourceArn=api_db.connect_params["resource_arn"],
        secretArn=api_db.connect_params["secret_arn"],
        database=api_db.database,
        sql="SELECT 1 AS one, :b AS b",
        parameters=[{"name": "b", "value": {"blobValue": b"\x00\x01"}}],
        formatRecordsAs="JSON",
    )
    record = json.loads(answer["formattedRecords"])[0]
    assert record["one"] == 1 and base64.b64decode(record["b"]) == b"\x00\x01"


# -- transactions ------------------------------------------------------------------------------


def test_atomic_commits_and_rollback_discards(api: tuple[Backend, Any], api_db: Any) -> None:
    backend, endpoint = api
    thing = _model(api_db)
    before = dict(endpoint.service.calls)
    with api_db.atomic():
        thing.create(name="kept")
        with pytest.raises(peewee.IntegrityError), api_db.atomic():  # a savepoint
            thing.create(name="kept")
        thing.create(name="also kept")
    with pytest.raises(RuntimeError), api_db.atomic():
        thing.create(name="discarded")
        assert backend.query("SELECT COUNT(*) FROM things")[0][0] == 2  # not yet visible
        raise RuntimeError("boom")
    assert [r[0] for r in backend.query("SELECT name FROM things ORDER BY id")] == [
        "kept",
        "also kept",
    ]
    calls = endpoint.service.calls
    assert calls["BeginTransaction"] - before.get("BeginTransaction", 0) == 2
    assert calls["CommitTransaction"] - before.get("CommitTransaction", 0) == 1
    assert calls["RollbackTransaction"] - before.get("RollbackTransaction", 0) == 1


def test_insert_many_is_one_batch_and_all_or_nothing(api: tuple[Backend, Any], api_db: Any) -> None:
    backend, endpoint = api
    thing = _model(api_db)
    batches = endpoint.service.calls.get("BatchExecuteStatement", 0)
    rows = [{"name": f"n{i}", "count": i} for i in range(5)]
    assert thing.insert_many(rows).as_rowcount().execute() == 5
    assert endpoint.service.calls["BatchExecuteStatement"] == batches + 1
    # With the new ids wanted: MySQL's first id from generatedFields (the batch), PostgreSQL's
    # every id from RETURNING (one multi-row statement: a batch returns no records there).
    result = thing.insert_many([{"name": "r1"}, {"name": "r2"}]).execute()
    if backend.engine == "mysql":
        assert result == 6 and endpoint.service.calls["BatchExecuteStatement"] == batches + 2
    else:
        assert [row[0] for row in result] == [6, 7]
    thing.delete().where(thing.name.in_(["r1", "r2"])).execute()
    # A duplicate in the middle of a batch: nothing of the batch is written.
    bad = [{"name": "fresh1"}, {"name": "n3"}, {"name": "fresh2"}]
    with pytest.raises(peewee.IntegrityError) as caught:
        thing.insert_many(bad).as_rowcount().execute()
    assert classify(caught.value) is ErrorKind.UNIQUE_VIOLATION
    assert backend.query("SELECT COUNT(*) FROM things")[0][0] == 5


def test_lifecycle_rolls_back_what_a_handler_left_open(
    api: tuple[Backend, Any], api_db: Any
) -> None:
    backend, _ = api
    thing = _model(api_db)
    api_db.close()

    @database_lifecycle(api_db, logger=_Quiet())
    def handler(event: Any, context: Any) -> str:
        txn = api_db.atomic()
        txn.__enter__()  # left open on purpose, as a buggy handler would
        thing.create(name=event["name"])
        return "done"

    assert handler({"name": "half"}, LambdaContext()) == "done"
    assert backend.query("SELECT COUNT(*) FROM things")[0][0] == 0
    assert not api_db.in_transaction()
    # The next invocation reuses the (socket-less) connection: no call to check it.
    assert api_db.prepare() == "reused"


class _Quiet:
    def info(self, *args: Any, **kwargs: Any) -> None:
        pass

    debug = info


# -- errors ------------------------------------------------------------------------------------


def test_duplicate_key_is_an_integrity_error_as_aws_reports_it(
    api: tuple[Backend, Any], api_db: Any
) -> None:
    thing = _model(api_db)
    thing.create(name="one")
    with pytest.raises(peewee.IntegrityError) as caught:
        thing.create(name="one")
    assert classify(caught.value) is ErrorKind.UNIQUE_VIOLATION
    driver_error = caught.value.__context__
    assert getattr(driver_error, "aws_code", None) == "BadRequestException"
    assert getattr(driver_error, "code", None) in (1062, "23505")


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("ThrottlingException", "Rate exceeded"),
        ("DatabaseResumingException", "The Aurora DB instance is resuming after being auto-paused"),
        ("BadRequestException", "Communications link failure\n\nThe last packet sent ..."),
        ("StatementTimeoutException", "Request timed out"),
    ],
)
def test_not_now_answers_are_retried(
    api: tuple[Backend, Any], api_db: Any, code: str, message: str
) -> None:
    backend, endpoint = api
    thing = _model(api_db)
    endpoint.inject(code, message, operation="ExecuteStatement", times=2)
    api_db.events.reset()
    thing.create(name="after the retries")
    assert api_db.events.retries == 2
    assert backend.query("SELECT name FROM things") == [("after the retries",)]


def test_inside_a_transaction_only_calls_that_ran_nothing_are_retried(
    api: tuple[Backend, Any], api_db: Any
) -> None:
    backend, endpoint = api
    thing = _model(api_db)
    with api_db.atomic():
        endpoint.inject("ThrottlingException", operation="ExecuteStatement", times=1)
        thing.create(name="throttled once")
    assert backend.query("SELECT COUNT(*) FROM things")[0][0] == 1
    # A statement timeout inside a transaction: unknown outcome, not retried.
    with pytest.raises(DatabaseUnavailable), api_db.atomic():
        endpoint.inject("StatementTimeoutException", operation="ExecuteStatement", times=1)
        thing.create(name="timed out")
    # An expired transaction: what ran of it is gone.
    with pytest.raises(ConnectionLost), api_db.atomic():
        thing.create(name="lost")
        endpoint.inject("TransactionNotFoundException", operation="ExecuteStatement", times=1)
        thing.create(name="lost too")
    assert backend.query("SELECT name FROM things") == [("throttled once",)]


def test_a_rollback_the_data_api_refuses_keeps_the_statements_own_error(
    api: tuple[Backend, Any], api_db: Any
) -> None:
    """A ROLLBACK that cannot be sent (throttled, or no time left) must not hide why the
    transaction failed: the duplicate stays an IntegrityError (409, not 500), and the
    transaction is left to expire on the server with the connection dropped."""
    backend, endpoint = api
    thing = _model(api_db)
    thing.create(name="taken")
    with pytest.raises(peewee.IntegrityError), api_db.atomic():
        endpoint.inject("ThrottlingException", operation="RollbackTransaction", times=1)
        thing.create(name="taken")
    api_db.finish()
    assert backend.query("SELECT name FROM things") == [("taken",)]
    assert thing.create(name="next").name == "next"


def test_past_the_deadline_the_example_answers_503_with_retry_after(
    api: tuple[Backend, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from .conftest import load_users_service
    from .test_example_users import call

    backend, endpoint = api
    service = load_users_service(backend, monkeypatch)
    deadlines = _record_deadlines(service.db, monkeypatch)
    endpoint.inject("DatabaseResumingException", "resuming", times=None)
    context = LambdaContext(timeout=2.0)
    from peewee_serverless.local.events import HttpRequest, build_event

    payload = json.dumps({"name": "Ada", "email": "ada@example.com"}).encode()
    headers = [("Content-Type", "application/json")]
    event = build_event(HttpRequest.from_target("POST", "/users", headers, payload), "v1")
    waits = _record_waits(monkeypatch)
    response = service.invoke(event, context)
    # Retried, then given up: every call's connect + read timeouts ended by the deadline.
    assert len(waits) >= 2 and len(deadlines) == 1
    assert all(until <= deadlines[0] for until in waits)
    assert response["statusCode"] == 503
    assert int(response["multiValueHeaders"]["Retry-After"][0]) >= 1
    assert json.loads(response["body"])["error"] == "database_unavailable"
    assert service.db.events.retries >= 1 and service.db.events.gave_up >= 1
    endpoint.service.clear_faults()
    assert service.user_rows() == []
    assert call(service, "POST", "/users", {"name": "Ada", "email": "ada@example.com"})[0] == 201
    service.db.close()


def _record_waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """For each Data API call: the latest moment its client could still be waiting."""
    from peewee_serverless.data_api import driver

    untils: list[float] = []
    original = driver.Connection._client_for_deadline

    def recording(self: Any) -> Any:
        started = time.monotonic()
        client = original(self)
        config = client.meta.config
        untils.append(started + config.connect_timeout + config.read_timeout)
        return client

    monkeypatch.setattr(driver.Connection, "_client_for_deadline", recording)
    return untils


def _record_deadlines(db: Any, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The deadlines the lifecycle gives ``db`` (one per invocation)."""
    seen: list[float] = []
    original = db.set_deadline

    def recording(deadline: float | None) -> None:
        if deadline is not None:
            seen.append(deadline)
        original(deadline)

    monkeypatch.setattr(db, "set_deadline", recording)
    return seen


def test_no_call_outlives_the_invocation(
    api: tuple[Backend, Any], api_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A statement slower than the time left is cut by the HTTP timeout, then 503, in time."""
    backend, _ = api
    slow = "SELECT SLEEP(3)" if backend.engine == "mysql" else "SELECT pg_sleep(3)"
    api_db.close()

    @database_lifecycle(api_db, logger=_Quiet())
    def handler(event: Any, context: Any) -> Any:
        return api_db.execute_sql(slow).fetchall()

    deadlines = _record_deadlines(api_db, monkeypatch)
    waits = _record_waits(monkeypatch)
    with pytest.raises(DatabaseUnavailable):
        handler({}, LambdaContext(timeout=2.0))
    # The slow call waited at most the time left: its answer was due by the deadline.
    assert waits and len(deadlines) == 1
    assert all(until <= deadlines[0] for until in waits)
    monkeypatch.undo()
    # With time enough the same database answers (a fresh invocation, no deadline issue).
    assert handler({}, LambdaContext(timeout=30)) is not None


def test_near_the_deadline_a_data_api_call_needs_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    """The driver's clients are aws_deadline's, with a 1 s floor: 1.2 s left gets the 1 s step's
    client, shared with another connection (a reconnect); 0.9 s (enough for a DynamoDB call)
    sends nothing: SERVER_UNAVAILABLE, executed=False. A client given by the caller is used as
    it is. The time left is set per connection: nothing here depends on the clock."""
    from peewee_serverless.data_api import driver

    arn = "arn:aws:rds:eu-west-1:123456789012:cluster:floor"
    url = "http://127.0.0.1:9"  # nothing is sent
    conns = [driver.connect(arn, "secret", connect_timeout=1.0, endpoint_url=url) for _ in "ab"]
    left: list[float | None] = [1.2]
    for conn in conns:
        monkeypatch.setattr(conn, "_time_left", lambda: left[0])
    short = conns[0]._client_for_deadline()
    assert (short.meta.config.connect_timeout, short.meta.config.read_timeout) == (0.25, 0.75)
    assert conns[1]._client_for_deadline() is short
    left[0] = 0.9
    with pytest.raises(driver.OperationalError) as caught:
        conns[0].call("execute_statement", sql="SELECT 1")
    assert caught.value.error_kind is ErrorKind.SERVER_UNAVAILABLE
    assert caught.value.executed is False and conns[0].calls == 0
    left[0] = None
    configured = conns[0]._client_for_deadline().meta.config
    assert (configured.connect_timeout, configured.read_timeout) == (1.0, 60.0)
    given = object()
    injected = driver.connect(arn, "secret", client=given)
    monkeypatch.setattr(injected, "_time_left", lambda: 0.1)
    assert injected._client_for_deadline() is given


# -- configuration -----------------------------------------------------------------------------

CLUSTER = "arn:aws:rds:eu-west-1:123456789012:cluster:prod"
SECRET = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod-db-AbCdEf"


def test_both_spellings_select_the_data_api_classes() -> None:
    from peewee_serverless import database_from_env
    from peewee_serverless.data_api import DataApiMySQLDatabase, DataApiPostgresqlDatabase

    db = database_from_env({"DATABASE_URL": f"mysql+data-api://{CLUSTER}/app?secret_arn={SECRET}"})
    assert isinstance(db, DataApiMySQLDatabase) and db.database == "app"
    assert db.connect_params["resource_arn"] == CLUSTER
    assert SECRET not in repr(db)
    env = {
        "DB_MODE": "data-api",
        "DB_ENGINE": "postgres",
        "DB_CLUSTER_ARN": CLUSTER,
        "DB_SECRET_ARN": SECRET,
        "DB_NAME": "app",
        "DB_DATA_API_TIMEOUT": "10",
    }
    db = database_from_env(env)
    assert isinstance(db, DataApiPostgresqlDatabase)
    assert db.connect_params["read_timeout"] == 10.0 and db.options.mode == "data-api"
    # No connection, no client, no boto3 call until the first statement.
    assert db.is_closed()


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"DATABASE_URL": f"mysql+data-api://{CLUSTER}/app"}, "DATABASE_URL"),
        ({"DATABASE_URL": f"mysql+data-api:///app?secret_arn={SECRET}"}, "DATABASE_URL"),
        ({"DATABASE_URL": f"mysql+data-api://not-an-arn/app?secret_arn={SECRET}"}, "DATABASE_URL"),
        ({"DB_MODE": "data-api", "DB_ENGINE": "mysql", "DB_SECRET_ARN": SECRET}, "DB_CLUSTER_ARN"),
        ({"DB_MODE": "data-api", "DB_ENGINE": "mysql", "DB_CLUSTER_ARN": CLUSTER}, "DB_SECRET_ARN"),
        ({"DB_MODE": "data-api", "DB_CLUSTER_ARN": CLUSTER, "DB_SECRET_ARN": SECRET}, "DB_ENGINE"),
        (
            {"DB_MODE": "data-api", "DB_ENGINE": "mysql", "DB_CLUSTER_ARN": SECRET},
            "DB_SECRET_ARN",
        ),
        (
            {
                "DB_MODE": "data-api",
                "DB_ENGINE": "mysql",
                "DB_CLUSTER_ARN": CLUSTER,
                "DB_SECRET_ARN": "secret",
            },
            "DB_SECRET_ARN",
        ),
        (
            {
                "DATABASE_URL": f"mysql+data-api://{CLUSTER}/app?secret_arn={SECRET}",
                "DB_HOST": "db.example.com",
            },
            "DB_HOST",
        ),
        (
            {
                "DATABASE_URL": f"mysql+data-api://{CLUSTER}/app?secret_arn={SECRET}",
                "DB_DATA_API_TIMEOUT": "soon",
            },
            "DB_DATA_API_TIMEOUT",
        ),
        ({"DB_MODE": "data-api", "DATABASE_URL": "mysql://u@h/db"}, "DATABASE_URL"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], setting: str) -> None:
    from peewee_serverless import database_from_env

    with pytest.raises(ConfigurationError) as caught:
        database_from_env(env)
    assert caught.value.setting == setting
    assert SECRET not in str(caught.value)
