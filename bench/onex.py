"""Issue 15's 1x: as many containers as connection slots, so nobody waits for a slot.

What is left to compare is each invocation's own latency: the burst's work (one INSERT in a
transaction, ``bench.burst``'s handlers, the same code the burst containers run) through
peewee-serverless with its defaults (``bench.burst:serverless_handler``: the lifecycle decorator
on ``database_from_env()``, with a Lambda context and so a deadline) against plain Peewee's
module-level connection (``bench.burst:plain_module_handler``, the seed's way), in one warm
process per engine, alternating in rounds as :mod:`bench.warm` does (its ``measure``). The
burst's 1x rows measure the same inside 10 processes on a loaded machine, where the ratio
moves by tens of per cent from run to run; this is the steady-state figure. Goal: within 1.1x.

    python -m bench.onex [--invocations 3000] [--engines mariadb,postgres]

writes its section of ``docs/benchmarks.md`` between the ``onex`` markers.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from bench.common import (
    ENGINE_LABELS,
    ROOT,
    SERVER_ENGINES,
    Stats,
    fmt_ms,
    fmt_ratio,
    prepare_database,
    publish,
    ratio,
    run_child,
    table,
    write_result,
)
from bench.run import load_average

GOAL = 1.1
PROSE = (
    "As many containers as connection slots: nobody waits for a slot, so what is left to "
    "compare is each invocation's own latency. The burst's work (one INSERT in a transaction: "
    "BEGIN, INSERT, COMMIT), in one warm process per engine, through the burst's own handlers: "
    "peewee-serverless with its defaults (`bench.burst:serverless_handler`, the lifecycle "
    "decorator on `database_from_env()`, a Lambda context and so a deadline; it also measures "
    "its work for the burst's floor, a few microseconds) against plain Peewee's module-level "
    "connection (`bench.burst:plain_module_handler`, the seed's way). The two alternate in "
    "rounds of 100 (order rotating) as in section 1; *paired* and *CPU* as there. The burst's "
    "1x rows measure the same in 10 processes on a loaded machine, where the ratio moves by "
    "tens of per cent from run to run; this is the steady-state figure."
)
MARK_START = "<!-- onex:start -->"
MARK_END = "<!-- onex:end -->"
LABELS = {
    "plain": "plain Peewee, module-level connection (baseline)",
    "serverless": "peewee-serverless, defaults (`@database_lifecycle`, deadline from the context)",
}


def child(argv: Sequence[str]) -> int:
    """Measure both handlers in this (fresh) process; write the JSON result."""
    from bench.burst import _plain_db, plain_module_handler, post_user_event, serverless_handler
    from bench.warm import measure

    parser = argparse.ArgumentParser()
    parser.add_argument("--invocations", type=int, required=True)
    parser.add_argument("--result", required=True)
    args = parser.parse_args(argv)
    db = _plain_db()  # bench.warm binds the model to it; both handlers bind their own database
    handlers: dict[str, Any] = {
        "plain": (db, plain_module_handler),
        "serverless": (db, serverless_handler),
    }
    events = [post_user_event(0, i) for i in range(args.invocations * 2 + 200)]
    result = measure(
        handlers, events, invocations=args.invocations, rounds=max(1, args.invocations // 100),
        warm_up=50, ok=201,
    )  # fmt: skip
    write_result(args.result, result)
    return 0


def section(results: dict[str, Any], invocations: int, load: Sequence[str]) -> str:
    """The Markdown section between the markers."""
    from bench.warm import paired_ratio

    rows, verdicts = [], []
    for engine, variants in results.items():
        base = Stats.from_dict(variants["plain"]["stats"])
        for name in ("plain", "serverless"):
            r = variants[name]
            stats = Stats.from_dict(r["stats"])
            rows.append([
                ENGINE_LABELS[engine], LABELS[name], fmt_ms(stats.median),
                fmt_ratio(ratio(stats.median, base.median)),
                fmt_ratio(paired_ratio(r, variants["plain"])),
                fmt_ratio(ratio(r["cpu_ms"], variants["plain"]["cpu_ms"])),
                fmt_ms(stats.p99), stats.n, r["errors"],
            ])  # fmt: skip
        median = ratio(Stats.from_dict(variants["serverless"]["stats"]).median, base.median)
        paired = paired_ratio(variants["serverless"], variants["plain"])
        met = "met" if median <= GOAL else "**NOT met**"
        verdicts.append(
            f"{ENGINE_LABELS[engine]} {fmt_ratio(median)} (paired {fmt_ratio(paired)}): {met}"
        )
    return "\n".join([
        MARK_START,
        "## 1x: the burst's work without contention",
        "",
        f"`python -m bench.onex --invocations {invocations}` (load average {load[0]} at the "
        f"start, {load[1]} at the end). " + PROSE,
        "",
        table(
            ["engine", "variant", "median ms", "median vs plain", "paired vs plain",
             "CPU vs plain", "p99 ms", "n", "not 201"],
            rows, "llrrrrrrr",
        ),
        "",
        f"Goal at 1x (issue 15: latency within {GOAL}x plain Peewee's): "
        + "; ".join(verdicts) + ".",
        MARK_END,
    ])  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.onex", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--invocations", type=int, default=3000)
    parser.add_argument("--engines", default=",".join(SERVER_ENGINES))
    parser.add_argument("--database", default="peewee_serverless_bench")
    parser.add_argument("--output", default=str(ROOT / "docs" / "benchmarks.md"))
    args = parser.parse_args(argv)
    engines = [e for e in args.engines.split(",") if e]
    if set(engines) - set(SERVER_ENGINES):
        parser.error(f"engines: choose from {', '.join(SERVER_ENGINES)}")
    load = [load_average()]
    results = {}
    for engine in engines:
        env = prepare_database(engine, args.database)
        results[engine] = run_child("bench.onex", ["--invocations", str(args.invocations)], env)
    load.append(load_average())
    return publish(section(results, args.invocations, load), args.output, MARK_START, MARK_END)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        raise SystemExit(child(sys.argv[2:]))
    raise SystemExit(main())
