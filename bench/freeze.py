"""Scenario 3: the first invocation after a freeze, against a warm one.

A Lambda container is frozen between invocations; after an idle gap of ``DB_IDLE_CHECK_SECONDS``
or more the lifecycle checks the connection before reusing it (MariaDB: a ping round trip;
PostgreSQL: the driver's state), and the governor re-reads the server's connection usage once
``DB_USAGE_CHECK_SECONDS`` have passed. To keep the run short, both thresholds are set to
0.1 s here and the process really sits idle for 0.15 s before each measured invocation: the same
code path as a freeze of minutes with the defaults (5 s).

Three cases, same handler (``@database_lifecycle`` around the example's resolver,
``GET /users/{id}``), in one process per engine:

* **warm**: back-to-back invocations (baseline);
* **plain Peewee after the same gap**: what waking up after idling costs without any
  lifecycle (caches, scheduler, the server's idle session);
* **after a freeze**: after the idle gap, connection alive (checked, then reused);
* **after a freeze, connection killed**: the server killed the session during the gap (as
  ``wait_timeout`` / a failover / zombie reaping does): detected and replaced, the request
  still answers 200.

For contrast, plain Peewee with a persistent connection is given the same killed connection.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

from bench.common import (
    ENGINE_LABELS,
    SERVER_ENGINES,
    Budget,
    Section,
    Stats,
    admin_connection,
    fmt_ms,
    fmt_ratio,
    get_user_event,
    prepare_database,
    ratio,
    run_child,
    scenario_main,
    table,
    user_ids,
    write_result,
)

THRESHOLD_SECONDS = 0.1
GAP_SECONDS = 0.15


def _kill(engine: str, database: str, session_id: int) -> None:
    conn = admin_connection(engine)
    try:
        with conn.cursor() as cur:
            if engine == "mariadb":
                cur.execute(f"KILL {int(session_id)}")
            else:
                cur.execute("SELECT pg_terminate_backend(%s)", (session_id,))
    finally:
        conn.close()


def child(argv: Sequence[str]) -> int:
    """Measure the three cases and the plain-Peewee contrast in this process."""
    import os

    import examples.users.app as example
    from bench.warm import bind, invoke_timed, plain_databases
    from peewee_serverless import database_lifecycle

    parser = argparse.ArgumentParser()
    parser.add_argument("--engine", required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--ids", required=True)
    parser.add_argument("--samples", type=int, required=True)
    parser.add_argument("--result", required=True)
    args = parser.parse_args(argv)
    events = [get_user_event(int(i)) for i in args.ids.split(",")]
    db = example.db

    def resolve(event: dict[str, Any], context: Any) -> Any:
        return example.app.resolve(event, context)

    handler = database_lifecycle(db, logger=example.logger)(resolve)
    bind(db)
    for i in range(20):
        invoke_timed(handler, events[i % len(events)])
    raw_db, _ = plain_databases(dict(os.environ))
    raw_db.connect()
    samples: dict[str, list[float]] = {"warm": [], "raw-frozen": [], "frozen": [], "killed": []}
    errors = dict.fromkeys(samples, 0)
    how: dict[str, dict[str, int]] = {k: {} for k in samples}

    def record(kind: str, elapsed: float, status: int) -> None:
        samples[kind].append(elapsed)
        errors[kind] += status != 200
        e = db.events
        what = "reconnected" if e.connects else ("checked" if e.checks else "reused")
        how[kind][what] = how[kind].get(what, 0) + 1

    k = 0
    for _ in range(args.samples):
        for _ in range(3):
            record("warm", *invoke_timed(handler, events[k % len(events)]))
            k += 1
        time.sleep(GAP_SECONDS)  # the idle gap being measured, not a synchronisation
        record("frozen", *invoke_timed(handler, events[k % len(events)]))
        k += 1
        bind(raw_db)  # the same gap without any lifecycle: what waking up costs anyway
        time.sleep(GAP_SECONDS)
        elapsed, status = invoke_timed(resolve, events[k % len(events)])
        samples["raw-frozen"].append(elapsed)
        errors["raw-frozen"] += status != 200
        how["raw-frozen"]["none"] = how["raw-frozen"].get("none", 0) + 1
        bind(db)
        k += 1
        session = db.server_connection_id()
        assert session is not None
        _kill(args.engine, args.database, session)
        time.sleep(GAP_SECONDS)
        record("killed", *invoke_timed(handler, events[k % len(events)]))
        k += 1
    # Plain Peewee, persistent connection, killed while idle: what users get without us.
    bind(raw_db)
    raw_statuses: dict[str, int] = {}
    for _ in range(min(3, args.samples)):
        invoke_timed(resolve, events[0])
        row = raw_db.execute_sql(
            "SELECT CONNECTION_ID()" if args.engine == "mariadb" else "SELECT pg_backend_pid()"
        ).fetchone()
        _kill(args.engine, args.database, int(row[0]))
        time.sleep(GAP_SECONDS)
        try:
            _, status = invoke_timed(resolve, events[0])
            label = str(status)
        except Exception as exc:  # noqa: BLE001 - the outcome is what we report
            label = type(exc).__name__
        raw_statuses[label] = raw_statuses.get(label, 0) + 1
        if raw_db.is_closed() is False:
            try:
                raw_db.close()
            except Exception:  # noqa: BLE001
                raw_db._state.reset()
        raw_db.connect()
    write_result(
        args.result,
        {
            "stats": {kind: Stats.of(v).as_dict() for kind, v in samples.items()},
            "errors": errors,
            "how": how,
            "raw_killed": raw_statuses,
        },
    )
    return 0


def collect(budget: Budget, engines: Sequence[str], database: str) -> dict[str, Any]:
    """One child per server engine."""
    results = {}
    for engine in engines:
        if engine not in SERVER_ENGINES:
            continue
        env = prepare_database(engine, database)
        env["DB_IDLE_CHECK_SECONDS"] = str(THRESHOLD_SECONDS)
        env["DB_USAGE_CHECK_SECONDS"] = str(THRESHOLD_SECONDS)
        ids = ",".join(str(i) for i in user_ids(engine, database))
        results[engine] = run_child(
            "bench.freeze",
            [
                "--engine", engine, "--database", database, "--ids", ids,
                "--samples", str(budget.freeze_samples),
            ],
            env,
        )  # fmt: skip
    return results


LABELS = {
    "warm": "warm, back to back (baseline)",
    "raw-frozen": "plain Peewee (no lifecycle) after the same idle gap",
    "frozen": "after a freeze (idle > threshold), connection alive",
    "killed": "after a freeze, connection killed by the server",
}


def report(results: dict[str, Any]) -> Section:
    """Table per engine."""
    parts = []
    plot: dict[str, Any] = {}
    for engine, r in results.items():
        stats = {k: Stats.from_dict(v) for k, v in r["stats"].items()}
        base = stats["warm"]
        rows = []
        for kind in ("warm", "raw-frozen", "frozen", "killed"):
            s = stats[kind]
            how = ", ".join(f"{n} {c}" for n, c in sorted(r["how"][kind].items()))
            rows.append(
                [
                    LABELS[kind],
                    fmt_ms(s.median),
                    fmt_ratio(ratio(s.median, base.median)),
                    fmt_ms(s.p99),
                    how,
                    r["errors"][kind],
                    s.n,
                ]
            )
        raw = ", ".join(f"{k} x{v}" for k, v in sorted(r["raw_killed"].items()))
        parts.append(
            f"### {ENGINE_LABELS[engine]}\n\n"
            + table(
                ["invocation", "median ms", "vs warm", "p99 ms", "connection", "non-200", "n"],
                rows,
                "lrrrlrr",
            )
            + f"\n\nPlain Peewee, persistent connection killed the same way: responses {raw}."
        )
        plot[engine] = {k: stats[k].median for k in ("warm", "raw-frozen", "frozen", "killed")}
    body = (
        f"Idle gap {GAP_SECONDS} s with `DB_IDLE_CHECK_SECONDS` and `DB_USAGE_CHECK_SECONDS` "
        f"set to {THRESHOLD_SECONDS} s (the code path of a long freeze with the 5 s defaults: "
        "connection check plus one connection-usage read). `connection` says what the "
        "lifecycle did.\n\n" + "\n\n".join(parts)
    )
    return Section("freeze", "3. After a freeze", body, plot)


def run(budget: Budget, engines: Sequence[str], database: str) -> Section:
    """Scenario 3 end to end."""
    return report(collect(budget, engines, database))


if __name__ == "__main__":
    scenario_main(child)
