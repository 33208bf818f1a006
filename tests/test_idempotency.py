"""PeeweePersistenceLayer: Powertools idempotency in the SQL database, on every backend."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.utilities.idempotency import (
    IdempotencyConfig,
    idempotent,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyValidationError,
)
from peewee import CharField, Model

from peewee_serverless import RequestInProgress, database_from_env
from peewee_serverless.cli import main as cli_main
from peewee_serverless.idempotency import (
    PeeweePersistenceLayer,
    transactional_idempotent_function,
)
from peewee_serverless.idempotency_table import (
    DEFAULT_TABLE,
    create_table,
    delete_expired,
    idempotency_model,
)
from peewee_serverless.migrate import run_migrations

MIGRATIONS = Path(__file__).resolve().parent.parent / "examples" / "users" / "migrations"
WORKERS = 20


class FakeContext:
    """The part of a Lambda context Powertools reads."""

    function_name = "idem-test"
    aws_request_id = "req-1"

    def __init__(self, remaining_ms: int = 30_000) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def _effect_model(db: Any) -> Any:
    """A side-effect table: one row per real execution of the idempotent function."""

    class Effect(Model):
        label = CharField()

        class Meta:
            database = db
            table_name = "effect"

    return Effect


@pytest.fixture
def store(db: Any) -> Any:
    create_table(db)
    _effect_model(db).create_table()
    return db


def _rows(db: Any) -> list[Any]:
    model = idempotency_model(db)
    return list(model.select().order_by(model.id))


def _make(db: Any, config: IdempotencyConfig, **kwargs: Any) -> tuple[Any, list[int]]:
    """An idempotent ``create(order=...)`` that inserts one Effect row per real execution."""
    layer = PeeweePersistenceLayer(db)
    effect = _effect_model(db)
    calls: list[int] = []
    config.register_lambda_context(FakeContext())

    @idempotent_function(
        data_keyword_argument="order", persistence_store=layer, config=config, **kwargs
    )
    def create(order: dict[str, Any]) -> dict[str, Any]:
        calls.append(1)
        if order.get("fail"):
            raise RuntimeError("handler failed")
        row = effect.create(label=str(order["id"]))
        return {"effect_id": row.id, "order": order["id"]}

    return create, calls


def test_same_payload_twice_runs_once_one_row_same_response(store: Any) -> None:
    create, calls = _make(store, IdempotencyConfig())
    first = create(order={"id": 1, "name": "Zoë"})
    second = create(order={"id": 1, "name": "Zoë"})
    assert first == second
    assert len(calls) == 1
    rows = _rows(store)
    assert len(rows) == 1
    assert rows[0].status == "COMPLETED"
    assert rows[0].expiration > time.time()
    assert _effect_model(store).select().count() == 1
    # A different payload is a different key.
    assert create(order={"id": 2})["order"] == 2
    assert len(_rows(store)) == 2


def test_handler_with_context_records_in_progress_expiry_and_replays(store: Any) -> None:
    layer = PeeweePersistenceLayer(store)
    seen: list[dict[str, Any]] = []

    @idempotent(persistence_store=layer, config=IdempotencyConfig(event_key_jmespath="body"))
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        # While running, the record is INPROGRESS with the invocation's timeout as its expiry.
        (row,) = _rows(store)
        seen.append({"status": row.status, "ipe": row.in_progress_expiration})
        return {"statusCode": 201, "body": event["body"]}

    before_ms = int(time.time() * 1000)
    event = {"body": '{"a": 1}'}
    assert handler(event, FakeContext(30_000)) == handler(event, FakeContext(30_000))
    assert len(seen) == 1
    assert seen[0]["status"] == "INPROGRESS"
    assert before_ms + 29_000 <= seen[0]["ipe"] <= int(time.time() * 1000) + 30_000


def test_raising_handler_removes_record_and_retry_succeeds(store: Any) -> None:
    create, calls = _make(store, IdempotencyConfig(event_key_jmespath="id"))
    with pytest.raises(RuntimeError, match="handler failed"):
        create(order={"id": 7, "fail": True})
    assert _rows(store) == []
    assert create(order={"id": 7})["order"] == 7
    assert len(calls) == 2
    assert [r.status for r in _rows(store)] == ["COMPLETED"]


def test_expired_record_is_replaced(store: Any) -> None:
    create, calls = _make(store, IdempotencyConfig(expires_after_seconds=3600))
    first = create(order={"id": 3})
    model = idempotency_model(store)
    model.update(expiration=int(time.time()) - 5).execute()
    second = create(order={"id": 3})
    assert len(calls) == 2
    assert second["effect_id"] != first["effect_id"]
    (row,) = _rows(store)
    assert row.status == "COMPLETED"
    assert row.expiration > time.time()


def test_in_progress_expiry_is_honoured(store: Any) -> None:
    create, calls = _make(store, IdempotencyConfig(event_key_jmespath="id"))
    create(order={"id": 4})  # creates the row; we then rewrite it as a running invocation
    model = idempotency_model(store)
    live = int(time.time()) + 3600
    now_ms = int(time.time() * 1000)

    model.update(
        status="INPROGRESS", expiration=live, in_progress_expiration=now_ms + 60_000
    ).execute()
    with pytest.raises(IdempotencyAlreadyInProgressError):
        create(order={"id": 4})
    # Without an in-progress expiry an INPROGRESS record counts until `expiration`.
    model.update(in_progress_expiration=None).execute()
    with pytest.raises(IdempotencyAlreadyInProgressError):
        create(order={"id": 4})
    assert len(calls) == 1

    # The invocation that wrote it timed out: the next call takes the key over.
    model.update(in_progress_expiration=now_ms - 1_000).execute()
    assert create(order={"id": 4})["order"] == 4
    assert len(calls) == 2
    (row,) = _rows(store)
    assert row.status == "COMPLETED"


def test_payload_validation_rejects_same_key_other_payload(store: Any) -> None:
    config = IdempotencyConfig(event_key_jmespath="id", payload_validation_jmespath="amount")
    create, calls = _make(store, config)
    create(order={"id": 5, "amount": 10})
    assert _rows(store)[0].validation
    with pytest.raises(IdempotencyValidationError):
        create(order={"id": 5, "amount": 11})
    assert create(order={"id": 5, "amount": 10})["order"] == 5
    assert len(calls) == 1


def test_local_cache_answers_without_the_table(store: Any) -> None:
    create, calls = _make(store, IdempotencyConfig(use_local_cache=True))
    first = create(order={"id": 6})
    idempotency_model(store).delete().execute()  # only the cache can answer now
    assert create(order={"id": 6}) == first
    assert len(calls) == 1


def test_keys_differing_in_case_or_too_long_are_distinct_rows(store: Any) -> None:
    results = []
    for prefix in ("Orders", "orders", "x" * 300, "x" * 300 + "y", "naïve"):
        create, calls = _make(store, IdempotencyConfig(), key_prefix=prefix)
        results.append(create(order={"id": 1}))
        assert create(order={"id": 1}) == results[-1]
        assert len(calls) == 1
    rows = _rows(store)
    assert len(rows) == 5
    assert all(len(r.id) <= 255 and r.id.isascii() for r in rows)


def test_delete_expired_removes_only_expired_rows_in_bounded_batches(store: Any) -> None:
    model = idempotency_model(store)
    now = int(time.time())
    for i in range(5):
        model.create(id=f"old#{i}", status="COMPLETED", expiration=now - 10 - i)
    for i in range(3):
        model.create(id=f"live#{i}", status="INPROGRESS", expiration=now + 100)
    assert delete_expired(store, batch_size=2, max_batches=2) == 4
    assert delete_expired(store, batch_size=2, max_batches=None) == 1
    assert delete_expired(store) == 0
    assert sorted(r.id for r in _rows(store)) == ["live#0", "live#1", "live#2"]


def test_cleanup_command(
    store: Any, backend: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    model = idempotency_model(store)
    model.create(id="old", status="COMPLETED", expiration=int(time.time()) - 1)
    model.create(id="live", status="COMPLETED", expiration=int(time.time()) + 100)
    store.close()
    monkeypatch.delenv("DATABASE_URL", raising=False)
    for key, value in backend.env.items():
        monkeypatch.setenv(key, value)
    assert cli_main(["idempotency-cleanup", "--batch-size", "1"]) == 0
    assert '"deleted": 1' in capsys.readouterr().out
    assert [r.id for r in _rows(store)] == ["live"]


def test_migration_creates_the_table(db: Any) -> None:
    applied = run_migrations(db, MIGRATIONS)
    assert "0002_idempotency" in applied
    with db.connection_context():
        assert DEFAULT_TABLE in db.get_tables()
    reverted = run_migrations(db, MIGRATIONS, "down", "0002_idempotency")
    assert reverted[-1] == "0002_idempotency"
    with db.connection_context():
        assert DEFAULT_TABLE not in db.get_tables()


# -- concurrency: real processes ---------------------------------------------------------------
def _concurrent_worker(env: dict[str, str], barrier: Any, results: Any) -> None:
    """One 'Lambda container': same key as all the others, released together by the barrier."""
    db = database_from_env(env)
    layer = PeeweePersistenceLayer(db)
    effect = _effect_model(db)
    config = IdempotencyConfig(event_key_jmespath="id")
    config.register_lambda_context(FakeContext(60_000))

    @idempotent_function(data_keyword_argument="order", persistence_store=layer, config=config)
    def create(order: dict[str, Any]) -> dict[str, Any]:
        return {"effect_id": effect.create(label="concurrent").id}

    try:
        db.connect()  # connect before the barrier so the race is on the statements
        barrier.wait(timeout=120)
        results.put(("ok", create(order={"id": "same"})))
    except IdempotencyAlreadyInProgressError:
        results.put(("in_progress", None))
    except BaseException as exc:  # noqa: BLE001 - report everything to the parent
        results.put(("error", repr(exc)))
    finally:
        db.close()


def test_concurrent_processes_same_key_exactly_one_executes(store: Any, backend: Any) -> None:
    store.close()
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(WORKERS)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_concurrent_worker, args=(backend.env, barrier, results))
        for _ in range(WORKERS)
    ]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert [o for o in outcomes if o[0] == "error"] == []
    ok = [o[1] for o in outcomes if o[0] == "ok"]
    assert ok, outcomes
    effects = list(_effect_model(store).select())
    assert len(effects) == 1, outcomes
    assert all(r == {"effect_id": effects[0].id} for r in ok)
    (row,) = _rows(store)
    assert row.status == "COMPLETED"


# -- transactional_idempotent_function: the work and the record commit together ---------------
def _make_transactional(db: Any, fail_after_write: bool = False) -> tuple[Any, Any, list[int]]:
    layer = PeeweePersistenceLayer(db)
    effect = _effect_model(db)
    calls: list[int] = []
    config = IdempotencyConfig(event_key_jmespath="id")
    config.register_lambda_context(FakeContext())

    @transactional_idempotent_function(
        data_keyword_argument="order", persistence_store=layer, config=config
    )
    def create(order: dict[str, Any]) -> dict[str, Any]:
        calls.append(1)
        assert db.in_transaction()  # the work runs in the record's transaction
        row = effect.create(label=str(order["id"]))
        if fail_after_write:
            raise RuntimeError("failed after writing")
        return {"effect_id": row.id}

    return create, layer, calls


def test_transactional_work_and_record_commit_together_and_replay(store: Any) -> None:
    create, _, calls = _make_transactional(store)
    first = create(order={"id": 1})
    assert create(order={"id": 1}) == first
    assert len(calls) == 1
    assert [e.id for e in _effect_model(store).select()] == [first["effect_id"]]
    (row,) = _rows(store)
    assert row.status == "COMPLETED" and '"effect_id"' in row.data


def test_transactional_failure_rolls_back_the_work_and_frees_the_key(store: Any) -> None:
    create, _, calls = _make_transactional(store, fail_after_write=True)
    with pytest.raises(RuntimeError, match="failed after writing"):
        create(order={"id": 2})
    # Powertools alone would keep the written row and delete the record: a retry writes again.
    assert _effect_model(store).select().count() == 0
    assert _rows(store) == []
    ok, _, _ = _make_transactional(store)
    assert ok(order={"id": 2})["effect_id"] >= 1
    assert _effect_model(store).select().count() == 1
    assert len(calls) == 1


def test_transactional_lapsed_claim_taken_over_runs_nothing(store: Any) -> None:
    """Our claim lapsed and another invocation took the key over before our transaction: we
    write nothing, leave its record alone, and answer "in progress" with its expiry."""
    create, layer, calls = _make_transactional(store)
    model = idempotency_model(store)
    other_ipe = int(time.time() * 1000) + 60_000
    real_put = layer._put_record
    taken_over: list[int] = []

    def put_then_lose_it(data_record: Any) -> None:
        real_put(data_record)
        if not taken_over:  # another invocation's takeover, committed at once
            taken_over.append(model.update(in_progress_expiration=other_ipe).execute())

    layer._put_record = put_then_lose_it  # type: ignore[method-assign]
    with pytest.raises(RequestInProgress) as caught:
        create(order={"id": 3})
    assert isinstance(caught.value, IdempotencyAlreadyInProgressError)  # Powertools' type too
    assert 55 <= (caught.value.expires_in or 0) <= 60
    assert taken_over == [1] and calls == []
    assert _effect_model(store).select().count() == 0
    (row,) = _rows(store)
    assert (row.status, row.in_progress_expiration) == ("INPROGRESS", other_ipe)
