"""Scenario 6: where the per-invocation time of the warm path goes (cProfile).

The warm ``GET /users/{id}`` of scenario 1 runs under ``cProfile`` twice in one process: the
``serverless`` variant (``@database_lifecycle``) and the ``raw`` baseline (same resolver, route
and query, plain persistent connection). Own time (``tottime``) is summed per component by the
file a function lives in, per invocation; the difference between the two columns is what the
lifecycle costs, and the top functions of the package show which lines of ours it is.
cProfile slows Python code more than C code, so read the shares, not the absolute microseconds.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
from collections.abc import Sequence
from typing import Any

from bench.common import (
    ENGINE_LABELS,
    Budget,
    Section,
    get_user_event,
    prepare_database,
    run_child,
    scenario_main,
    table,
    user_ids,
    write_result,
)

#: (component, substrings of the file path / builtin name), first match wins.
COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("peewee-serverless: lifecycle", ("peewee_serverless/lifecycle.py",)),
    (
        "peewee-serverless: deadline (PostgreSQL watchdog arm)",
        ("peewee_serverless/deadline.py", "peewee_serverless/watchdog.py"),
    ),
    ("peewee-serverless: usage watch (governor)", ("peewee_serverless/governor.py",)),
    ("peewee-serverless: connection handling", ("peewee_serverless/",)),
    ("Powertools Logger (the lifecycle's log line)", ("aws_lambda_powertools/logging/",)),
    ("Powertools resolver + validation", ("aws_lambda_powertools/",)),
    ("pydantic", ("pydantic",)),
    ("example route", ("examples/users/",)),
    ("Peewee (query building, model)", ("peewee.py", "playhouse/")),
    ("driver + socket", ("pymysql/", "psycopg2", "socket", "sqlite3", "selectors", "ssl")),
    ("stdlib logging", ("/logging/",)),
    ("stdlib json", ("/json/", "json")),
    ("stdlib other", ("/lib/python3", "<frozen")),
)
OTHER = "other (C built-ins, dataclasses, time...)"


def component(filename: str, name: str) -> str:
    """Which component a profiled function belongs to."""
    where = filename if filename != "~" else name
    for label, needles in COMPONENTS:
        if any(n in where for n in needles):
            return label
    return OTHER


def profile_handler(
    handler: Any, events: Sequence[dict[str, Any]], invocations: int
) -> pstats.Stats:
    """Profile ``invocations`` calls of ``handler`` (contexts made before profiling starts)."""
    from peewee_serverless.local.context import LambdaContext

    calls = [(events[i % len(events)], LambdaContext()) for i in range(invocations)]

    def loop() -> None:
        for event, context in calls:
            handler(event, context)

    profiler = cProfile.Profile()
    profiler.runcall(loop)
    return pstats.Stats(profiler)


def summarise(stats: pstats.Stats, invocations: int) -> dict[str, Any]:
    """Per-component and per-function own time, in microseconds per invocation."""
    per_component: dict[str, float] = {}
    functions = []
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for (filename, line, name), (_cc, ncalls, tottime, cumtime, _callers) in raw.items():
        comp = component(filename, name)
        per_component[comp] = per_component.get(comp, 0.0) + tottime
        short = filename.split("site-packages/")[-1].split("/work/main/")[-1]
        functions.append(
            {
                "function": f"{short}:{line}({name})" if filename != "~" else name,
                "component": comp,
                "calls": ncalls / invocations,
                "tottime_us": tottime / invocations * 1e6,
                "cumtime_us": cumtime / invocations * 1e6,
            }
        )
    functions.sort(key=lambda f: f["tottime_us"], reverse=True)
    return {
        "components": {k: v / invocations * 1e6 for k, v in per_component.items()},
        "total_us": sum(per_component.values()) / invocations * 1e6,
        "functions": functions[:400],
    }


def child(argv: Sequence[str]) -> int:
    """Profile the serverless and the raw variant in this (fresh) process."""
    import os

    from bench.warm import bind, build_handlers, invoke_timed

    parser = argparse.ArgumentParser()
    parser.add_argument("--ids", required=True)
    parser.add_argument("--invocations", type=int, required=True)
    parser.add_argument("--result", required=True)
    args = parser.parse_args(argv)
    handlers = build_handlers(dict(os.environ))
    events = [get_user_event(int(i)) for i in args.ids.split(",")]
    result = {}
    for name in ("raw", "serverless"):
        db, handler = handlers[name]
        bind(db)
        for i in range(50):  # warm: first-call costs are scenario 2's business
            invoke_timed(handler, events[i % len(events)])
        result[name] = summarise(
            profile_handler(handler, events, args.invocations), args.invocations
        )
    write_result(args.result, result)
    return 0


def collect(budget: Budget, engine: str, database: str) -> dict[str, Any]:
    """Profile on ``engine``."""
    env = prepare_database(engine, database)
    ids = ",".join(str(i) for i in user_ids(engine, database))
    return run_child(
        "bench.profile", ["--ids", ids, "--invocations", str(budget.profile_invocations)], env
    )


def report(result: dict[str, Any], engine: str) -> Section:
    """Component table and the package's own functions."""
    raw, ours = result["raw"], result["serverless"]
    names = sorted(
        set(raw["components"]) | set(ours["components"]),
        key=lambda c: ours["components"].get(c, 0.0),
        reverse=True,
    )
    rows = []
    for c in names:
        a, b = raw["components"].get(c, 0.0), ours["components"].get(c, 0.0)
        rows.append([c, f"{a:.1f}", f"{b:.1f}", f"{b - a:+.1f}", f"{b / ours['total_us']:.1%}"])
    rows.append(
        [
            "**total (under cProfile)**",
            f"{raw['total_us']:.1f}",
            f"{ours['total_us']:.1f}",
            f"{ours['total_us'] - raw['total_us']:+.1f}",
            "100%",
        ]
    )
    comp_table = table(
        ["component", "raw µs/inv", "peewee-serverless µs/inv", "difference", "share (ours)"], rows
    )
    mine = [
        f
        for f in ours["functions"]
        if f["component"].startswith("peewee-serverless") or "Logger" in f["component"]
    ][:12]
    fn_rows = [
        [
            f"`{f['function']}`",
            f"{f['calls']:.1f}",
            f"{f['tottime_us']:.1f}",
            f"{f['cumtime_us']:.1f}",
        ]
        for f in mine
    ]
    fn_table = table(["function", "calls/inv", "own µs/inv", "cumulative µs/inv"], fn_rows)
    top = [
        [f"`{f['function']}`", f["component"], f"{f['tottime_us']:.1f}"]
        for f in ours["functions"][:10]
    ]
    top_table = table(["function", "component", "own µs/inv"], top, "llr")
    body = (
        f"cProfile of the warm `GET /users/{{id}}` on {ENGINE_LABELS[engine]}, own time summed "
        "per component, per invocation, for the `raw` baseline and for `@database_lifecycle` "
        "(same resolver, route and query). cProfile inflates Python-level work, so compare the "
        "columns and shares rather than the absolute numbers (scenario 1 has the real times).\n\n"
        + comp_table
        + "\n\nThe package's functions (and the Powertools Logger they call), by own time:\n\n"
        + fn_table
        + "\n\nTop 10 functions overall (peewee-serverless variant):\n\n"
        + top_table
    )
    plot = {
        "components": {c: ours["components"].get(c, 0.0) for c in names},
        "raw_components": {c: raw["components"].get(c, 0.0) for c in names},
    }
    return Section("profile", "6. Profile of the warm path", body, plot)


def run(budget: Budget, engines: Sequence[str], database: str) -> Section:
    """Scenario 6 end to end (on MariaDB when available, else the first engine)."""
    engine = "mariadb" if "mariadb" in engines else engines[0]
    return report(collect(budget, engine, database), engine)


if __name__ == "__main__":
    scenario_main(child)
