"""Server faults under load, with the users service in real container processes: a PostgreSQL
killed with ``kill -9`` (durable commits, crash recovery) and a server turned read-only (what a
failover does to the old writer). Every invocation answers 201 or 503 + Retry-After, never a
500; every 201 is in the table, none twice; once the server is back, everything is 201.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from peewee_serverless.local.containers import InvocationResult, run_containers

from .conftest import SERVER_BACKENDS
from .servers import PrivateServer, private_server

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.burst import create_limited_account, create_users_table, drop_account  # noqa: E402

pytestmark = pytest.mark.slow


def _load(
    server: PrivateServer, fault: Callable[[], None], recover: Callable[[], None], tmp: Path
) -> list[InvocationResult]:
    """4 containers x 15 POSTs; ``fault`` after 10 answers, ``recover`` after 10 more."""
    account = create_limited_account(server, 50, prefix="fault")
    results: list[InvocationResult] = []
    lock = threading.Lock()
    faulted, recovered = threading.Event(), threading.Event()
    try:
        create_users_table(account.env)
        env = {
            **account.env,
            "DB_CONNECT_RETRIES": "20",
            "DB_BACKOFF_BASE_MS": "20",
            "DB_BACKOFF_CAP_MS": "300",
            "POWERTOOLS_LOG_LEVEL": "WARNING",
        }

        def collect(result: InvocationResult) -> None:
            with lock:
                results.append(result)
                count = len(results)
            if count == 10:
                faulted.set()
            elif count == 25:
                recovered.set()

        outcome: dict[str, Any] = {}

        def simulate() -> None:
            try:
                run_containers(
                    "examples.users.app:handler",
                    containers=4,
                    invocations=15,
                    event="bench.burst:post_user_event",
                    env=env,
                    pause=(0.0, 0.1),
                    timeout=6.0,
                    sys_path=[str(ROOT)],
                    on_result=collect,
                    seed=16,
                    log_path=str(tmp / "containers.log"),
                )
            except Exception as exc:  # noqa: BLE001 - re-raised below
                outcome["error"] = exc

        runner = threading.Thread(target=simulate)
        runner.start()
        assert faulted.wait(120), "the load never got going"
        fault()
        assert recovered.wait(180), "no answers after the fault"
        recover()
        runner.join(300)
        assert "error" not in outcome, outcome.get("error")
        rows = server.query("SELECT email FROM users", database=server.test_db)
    finally:
        drop_account(server, account.name)
    for r in results:
        assert r.error is None and r.status in (201, 503), r
        if r.status == 503:
            assert r.retry_after is not None and int(r.retry_after) >= 1
    stored = [row[0] for row in rows]
    assert len(stored) == len(set(stored))  # none twice
    created = [json.loads(r.body)["email"] for r in results if r.status == 201]
    assert set(created) <= set(stored)  # every 201 is durable
    assert results[-1].status == 201
    return results


@pytest.mark.skipif("postgres" not in SERVER_BACKENDS, reason="postgres not selected")
def test_postgres_killed_with_sigkill_mid_load(tmp_path: Path) -> None:
    options = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
    with private_server("postgres", options=options) as server:
        results = _load(server, server.kill, server.start, tmp_path)
        assert any(r.status == 503 for r in results) or len(results) == 60


@pytest.mark.parametrize("engine", SERVER_BACKENDS)
def test_a_server_turned_read_only_mid_load(engine: str, tmp_path: Path) -> None:
    with private_server(engine) as server:
        if server.engine == "mysql":

            def fault() -> None:
                server.query("SET GLOBAL read_only = 1")  # the account has no SUPER

            def recover() -> None:
                server.query("SET GLOBAL read_only = 0")
        else:

            def fault() -> None:
                server.query("ALTER SYSTEM SET default_transaction_read_only = on")
                server.query("SELECT pg_reload_conf()")

            def recover() -> None:
                server.query("ALTER SYSTEM RESET default_transaction_read_only")
                server.query("SELECT pg_reload_conf()")

        results = _load(server, fault, recover, tmp_path)
        assert any(r.status == 503 for r in results), "the read-only server refused nothing"
