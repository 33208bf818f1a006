"""Burst through PgBouncer against the same burst straight to PostgreSQL.

``--containers`` simulated Lambda containers each invoke the users service ``--invocations``
times; each invocation creates a user and reads it back (``POST /users`` then
``GET /users/{id}``, two requests of one invocation). The application's role may hold ``--limit``
server sessions (its ``CONNECTION LIMIT``, on a private server with ``max_connections`` =
``--limit`` + 3 superuser slots for the sampler and set-up):

(a) **direct**: peewee-serverless with ``DB_MODE=direct`` straight to the server: every container
    keeps its own session; connect retry with back-off, usage watch, reaping and yielding share
    the slots;
(b) **pgbouncer**: the same handler with ``DB_MODE=proxy`` through PgBouncer in transaction
    pooling mode with ``--limit`` server connections: containers keep their client connection to
    PgBouncer, which lends a server session per transaction.

Each run reports success rate, peak server sessions of the role (sampled by an admin
connection), p50/p99 invocation latency and wall time, and writes the table to
``docs/benchmarks.md`` between the ``pgbouncer`` markers, ratios against (a) of the same run::

    python bench/pgbouncer.py --containers 200 --invocations 20 --limit 7

The handler is :func:`bench.proxy_handler.handler`; the tests (``tests/test_pgbouncer.py``)
use :func:`run_proxy_burst` from here.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.burst import (  # noqa: E402
    ConnectionSampler,
    create_limited_account,
    create_users_table,
    drop_account,
    serverless_env,
)
from bench.common import command_line, publish  # noqa: E402

MARK_START = "<!-- pgbouncer:start -->"
MARK_END = "<!-- pgbouncer:end -->"
VARIANTS = ("direct", "pgbouncer")
#: Superuser slots PostgreSQL keeps free (``superuser_reserved_connections``' default).
RESERVED = 3


# -- one burst ------------------------------------------------------------------------------------
@dataclass
class ProxyBurstOutcome:
    """One variant's numbers."""

    variant: str
    containers: int
    limit: int
    invocations: int
    success_rate: float
    peak_sessions: int
    p50_ms: float
    p99_ms: float
    wall_seconds: float
    statuses: dict[Any, int]
    created: list[str]
    #: The (dropped) role the burst ran as: its statements in the server log carry this name.
    role: str


@contextlib.contextmanager
def limited_postgres(limit: int, log_statements: bool = False) -> Iterator[Any]:
    """A private PostgreSQL with ``max_connections = limit + RESERVED`` (optionally logging SQL)."""
    from tests.servers import private_server

    options: dict[str, Any] = {"max_connections": limit + RESERVED}
    if log_statements:
        # Every statement, prefixed with the role that sent it (tests.pgbouncer reads them).
        options["log_statement"] = "all"
        options["log_line_prefix"] = "%u|"
    with private_server("postgres", options=options) as server:
        yield server


def run_proxy_burst(
    server: Any,
    variant: str,
    *,
    containers: int,
    invocations: int,
    limit: int,
    pause: float | tuple[float, float] = (0.0, 0.02),
    timeout: float = 30.0,
    log_path: str | None = None,
) -> ProxyBurstOutcome:
    """Run ``variant`` (``direct`` / ``pgbouncer``) with a fresh role limited to ``limit``."""
    from peewee_serverless.local.containers import run_containers
    from tests.pgbouncer import pgbouncer

    account = create_limited_account(server, limit, prefix=f"pgb_{variant}")
    try:
        env = {**account.env, **serverless_env(limit)}
        with contextlib.ExitStack() as stack:
            if variant == "pgbouncer":
                bouncer = stack.enter_context(
                    pgbouncer(server.host, server.port, pool_size=limit, users=[account.name])
                )
                env.update(bouncer.env(server.test_db, account.name))
                env["DB_PASSWORD"] = account.password
            # The service's migrations go the same way as its traffic (through the proxy too).
            create_users_table(env)
            sampler = stack.enter_context(ConnectionSampler(server, account.name))
            report = run_containers(
                "bench.proxy_handler:handler",
                containers=containers,
                invocations=invocations,
                event="bench.burst:post_user_event",
                env=env,
                pause=pause,
                timeout=timeout,
                sys_path=[str(ROOT)],
                log_path=log_path,
                seed=3,
            )
        if len(report.results) != containers * invocations:
            # The simulator gives up quietly when containers cannot all start (an overloaded
            # machine); a table of nothing must not look like a result.
            raise RuntimeError(
                f"only {len(report.results)} of {containers * invocations} invocations ran"
            )
        created = [json.loads(r.body)["email"] for r in report.results if r.status == 200]
        return ProxyBurstOutcome(
            variant,
            containers,
            limit,
            len(report.results),
            report.success_rate,
            sampler.peak,
            report.percentile(50),
            report.percentile(99),
            report.wall_seconds,
            report.statuses(),
            created,
            account.name,
        )
    finally:
        drop_account(server, account.name)


# -- the report -----------------------------------------------------------------------------------
def markdown(outcomes: list[ProxyBurstOutcome], command: str, versions: str) -> str:
    """The benchmark section (between the markers) for ``docs/benchmarks.md``."""
    base = next((o for o in outcomes if o.variant == "direct"), outcomes[0])
    load = os.getloadavg()[0]

    def ratio(value: float, baseline: float) -> str:
        return f"{value / baseline:.2f}x" if baseline > 0 else "n/a"

    lines = [
        MARK_START,
        "## Behind PgBouncer (transaction pooling) vs direct",
        "",
        f"`{command}` ({versions}): each container is a real process; each invocation is "
        "`POST /users` then `GET /users/{id}` of the users service. The application role may "
        "hold `limit` server sessions (`CONNECTION LIMIT`; the server's `max_connections` is "
        f"`limit` + {RESERVED} superuser slots). *direct*: `DB_MODE=direct` straight to "
        "PostgreSQL (connect retry, usage watch, reaping, yielding); *pgbouncer*: "
        "`DB_MODE=proxy` through PgBouncer with `pool_mode = transaction` and `limit` server "
        "connections. success = answered without raising and without a 5xx; peak = most "
        "sessions of the role seen on the server (sampled every 10 ms). Ratios are against "
        f"*direct* in the same run. Machine: 2 shared cores, load average {load:.0f} (1 min) "
        "at the end of the run, so latencies are indicative; the success column is the point.",
        "",
        "| variant | containers | limit | invocations | success | peak sessions | p50 ms "
        "| p50 vs direct | p99 ms | p99 vs direct | wall s | wall vs direct |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for o in outcomes:
        lines.append(
            f"| {o.variant} | {o.containers} | {o.limit} | {o.invocations} | "
            f"{o.success_rate:.1%} | {o.peak_sessions} | {o.p50_ms:.1f} | "
            f"{ratio(o.p50_ms, base.p50_ms)} | {o.p99_ms:.1f} | {ratio(o.p99_ms, base.p99_ms)} | "
            f"{o.wall_seconds:.1f} | {ratio(o.wall_seconds, base.wall_seconds)} |"
        )
    lines += ["", MARK_END]
    return "\n".join(lines)


def _versions() -> str:
    import subprocess

    from tests.servers import _find

    out = subprocess.run([_find("pgbouncer"), "--version"], capture_output=True, text=True)
    bouncer = out.stdout.splitlines()[0] if out.stdout else "PgBouncer"
    pg = subprocess.run([_find("postgres"), "--version"], capture_output=True, text=True)
    return f"{bouncer}, {pg.stdout.strip()}"


def main(argv: list[str] | None = None) -> int:
    """Run both variants on one private server and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--containers", type=int, default=200)
    parser.add_argument("--invocations", type=int, default=20)
    parser.add_argument("--limit", type=int, default=7)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--output", default=str(ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    outcomes: list[ProxyBurstOutcome] = []
    with limited_postgres(args.limit) as server:
        for variant in args.variants.split(","):
            outcome = run_proxy_burst(
                server,
                variant,
                containers=args.containers,
                invocations=args.invocations,
                limit=args.limit,
            )
            print(
                f"{variant:10} success {outcome.success_rate:7.1%}  peak {outcome.peak_sessions:3}"
                f"  p50 {outcome.p50_ms:8.1f} ms  p99 {outcome.p99_ms:8.1f} ms  "
                f"wall {outcome.wall_seconds:6.1f} s  {outcome.statuses}",
                flush=True,
            )
            outcomes.append(outcome)
    command = command_line("bench/pgbouncer.py", argv, args.output)
    section = markdown(outcomes, command, _versions())
    return publish(section, args.output, MARK_START, MARK_END, write=not args.no_write)


if __name__ == "__main__":
    raise SystemExit(main())
