"""The container simulator: real processes, handler loaded once, per-invocation outcomes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from peewee_serverless.local.containers import percentile, run_containers

TESTS = str(Path(__file__).resolve().parent)
ROOT = str(Path(__file__).resolve().parent.parent)

_loaded_pid = os.getpid()
_calls = {"n": 0}


def sim_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """A handler for the simulator: counts its calls (module state survives warm invocations)."""
    _calls["n"] += 1
    action = event.get("action", "ok")
    if action == "raise":
        raise RuntimeError("handler blew up")
    if action == "busy":
        return {"statusCode": 503, "headers": {"Retry-After": "2"}, "body": "{}"}
    body = {
        "pid": os.getpid(),
        "loaded_pid": _loaded_pid,
        "calls": _calls["n"],
        "marker": os.environ.get("SIM_MARKER"),
        "remaining_ms": context.get_remaining_time_in_millis(),
    }
    return {"statusCode": 200, "body": json.dumps(body)}


def sim_event(container: int, seq: int) -> dict[str, Any]:
    """Event factory: container 1 fails on its second invocation, container 2 is busy."""
    if container == 1 and seq == 1:
        return {"action": "raise"}
    if container == 2 and seq == 1:
        return {"action": "busy"}
    return {"action": "ok"}


def test_each_container_loads_once_and_is_invoked_repeatedly() -> None:
    report = run_containers(
        "test_containers:sim_handler",
        containers=3,
        invocations=3,
        event={"action": "ok"},
        env={"SIM_MARKER": "from-env"},
        sys_path=[TESTS, ROOT],
        timeout=7.0,
    )
    assert len(report.results) == 9
    assert report.failed == []
    assert report.success_rate == 1.0
    by_container: dict[int, list[dict[str, Any]]] = {}
    for r in sorted(report.results, key=lambda r: (r.container, r.seq)):
        body = json.loads(r.body)
        by_container.setdefault(r.container, []).append(body)
        assert r.cold == (r.seq == 0)
        assert body["marker"] == "from-env"
        assert 0 < body["remaining_ms"] <= 7000
        assert body["pid"] != os.getpid()
    assert sorted(by_container) == [0, 1, 2]
    pids = {bodies[0]["pid"] for bodies in by_container.values()}
    assert len(pids) == 3  # three separate processes
    for bodies in by_container.values():
        assert [b["calls"] for b in bodies] == [1, 2, 3]  # loaded once, kept warm
        assert {b["pid"] for b in bodies} == {bodies[0]["loaded_pid"]}


def test_failures_are_results_not_crashes() -> None:
    seen = []
    report = run_containers(
        "test_containers:sim_handler",
        containers=3,
        invocations=2,
        event="test_containers:sim_event",
        sys_path=[TESTS, ROOT],
        on_result=seen.append,
    )
    assert len(seen) == len(report.results) == 6
    failed = {(r.container, r.seq): r for r in report.failed}
    assert set(failed) == {(1, 1), (2, 1)}
    assert failed[(1, 1)].error == "RuntimeError: handler blew up"
    assert failed[(1, 1)].status is None
    assert failed[(2, 1)].status == 503
    assert failed[(2, 1)].retry_after == "2"
    assert report.statuses() == {200: 4, None: 1, 503: 1}


def test_frozen_containers_resume_warm() -> None:
    report = run_containers(
        "test_containers:sim_handler",
        containers=2,
        invocations=3,
        event={"action": "ok"},
        sys_path=[TESTS, ROOT],
        pause=0.05,
        freeze=True,
    )
    assert report.freezes == 4
    assert report.failed == []
    for r in report.results:
        assert json.loads(r.body)["calls"] == r.seq + 1


def test_a_handler_that_cannot_load_fails_the_simulation() -> None:
    with pytest.raises(RuntimeError, match="failed to load"):
        run_containers(
            "test_containers:no_such_handler",
            containers=2,
            invocations=1,
            event={},
            sys_path=[TESTS, ROOT],
        )


def test_a_start_that_is_not_simultaneous_fails_the_simulation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The start barrier timing out (containers that loaded too far apart, e.g. a starved fork
    # server) is an error, not a report without results.
    import threading

    from peewee_serverless.local import containers

    class TimedOut(threading.Barrier):
        def wait(self, timeout: float | None = None) -> int:
            self.abort()
            raise threading.BrokenBarrierError

    monkeypatch.setattr(containers.threading, "Barrier", TimedOut)
    with pytest.raises(RuntimeError, match="did not all load their handler"):
        run_containers(
            "test_containers:sim_handler",
            containers=2,
            invocations=1,
            event={},
            sys_path=[TESTS, ROOT],
        )


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([], 50) == 0.0
