"""Scenario 2: cold start: import time, and the first invocation including the connect.

**Import**: a fresh interpreter per run (``python -c``), timing ``import X`` with
``time.perf_counter()`` around it, for ``peewee`` (baseline), ``peewee_serverless`` and the
example app (``examples.users.app``: Powertools resolver, models, database from ``DB_*``).
The targets alternate run by run. Each run also reports what the import left behind: which heavy
modules got imported and, for the example, whether its database is still unconnected and whether
an AWS SDK (boto3 / botocore) was loaded. The process wall time (interpreter start to exit) is
shown beside it.

**First invocation**: a fresh process imports the example, then calls ``GET /users/{id}``
three ways apart: the first call (connects), the second, and the median of 20 more. Two variants
with the same resolver, route and query: plain Peewee connecting on first use (``raw``) and
``@database_lifecycle`` (lazy connect in the first query).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import (
    ENGINE_LABELS,
    ROOT,
    Budget,
    Section,
    Stats,
    Target,
    child_environ,
    engine_env,
    fmt_ms,
    fmt_ratio,
    percentile,
    prepare_database,
    ratio,
    table,
    user_ids,
)

IMPORT_TARGETS = ("peewee", "peewee_serverless", "examples.users.app")
HEAVY = ("aws_lambda_powertools", "pydantic", "boto3", "botocore")
IMPORT_MS_TARGET = 30.0

_IMPORT_CODE = """
import time
_t0 = time.perf_counter()
import {module}
_t1 = time.perf_counter()
import json, sys
out = {{"seconds": _t1 - _t0,
        "heavy": [m for m in {heavy!r} if m in sys.modules],
        "modules": len(sys.modules)}}
if {module!r} == "examples.users.app":
    out["db_closed"] = examples.users.app.db.is_closed()
clients = 0
if "botocore.client" in sys.modules:
    import gc
    base = sys.modules["botocore.client"].BaseClient
    clients = sum(1 for o in gc.get_objects() if isinstance(o, base))
    boto3 = sys.modules.get("boto3")
    clients += int(boto3 is not None and boto3.DEFAULT_SESSION is not None)
out["aws_clients"] = clients
open({result!r}, "w").write(json.dumps(out))
"""

_FIRST_CODE = """
import time
_t0 = time.perf_counter()
import examples.users.app
_t1 = time.perf_counter()
from bench.cold import first_invocations
first_invocations({variant!r}, {user_id!r}, _t1 - _t0, {result!r})
"""


def _python(code: str, env: dict[str, str]) -> float:
    """Run ``code`` in a fresh interpreter; the process wall time in seconds."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=child_environ(env),
        cwd=str(ROOT),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=300,
        check=False,
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"child failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return wall


def first_invocations(variant: str, user_id: int, import_seconds: float, result: str) -> None:
    """In a fresh process (after the example is imported): time the first calls."""
    import examples.users.app as example
    from bench.common import get_user_event, write_result
    from bench.warm import bind, invoke_timed, plain_databases
    from peewee_serverless import database_lifecycle

    def resolve(event: dict[str, Any], context: Any) -> Any:
        return example.app.resolve(event, context)

    if variant == "raw":
        import os

        db, _ = plain_databases(dict(os.environ))
        bind(db)

        def handler(event: dict[str, Any], context: Any) -> Any:
            db.connect(reuse_if_open=True)  # the module-level connection, opened on first use
            return resolve(event, context)

    else:
        handler = database_lifecycle(example.db, logger=example.logger)(resolve)
    event = get_user_event(user_id)
    first, status = invoke_timed(handler, event)
    second, _ = invoke_timed(handler, event)
    warm = [invoke_timed(handler, event)[0] for _ in range(20)]
    write_result(
        result,
        {
            "import": import_seconds,
            "first": first,
            "second": second,
            "warm": percentile(warm, 50),
            "status": status,
        },
    )


# -- the parent side ------------------------------------------------------------------------------
def collect_imports(budget: Budget) -> dict[str, list[dict[str, Any]]]:
    """``budget.cold_runs`` fresh processes per import target, alternating."""
    env = engine_env("sqlite", "peewee_serverless_bench_import")  # no server needed to import
    runs: dict[str, list[dict[str, Any]]] = {t: [] for t in IMPORT_TARGETS}
    with tempfile.TemporaryDirectory(prefix="bench-cold-") as tmp:
        out = str(Path(tmp) / "out.json")
        for _ in range(budget.cold_runs):
            for module in IMPORT_TARGETS:
                code = _IMPORT_CODE.format(module=module, heavy=HEAVY, result=out)
                wall = _python(code, env)
                data = json.loads(Path(out).read_text())
                data["wall"] = wall
                runs[module].append(data)
    return runs


def collect_first(budget: Budget, engines: Sequence[str], database: str) -> dict[str, Any]:
    """First invocation per engine and variant, ``budget.first_runs`` fresh processes each."""
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-cold-") as tmp:
        out = str(Path(tmp) / "out.json")
        for engine in engines:
            env = prepare_database(engine, database)
            user_id = user_ids(engine, database, 1)[0]
            per: dict[str, list[dict[str, Any]]] = {"raw": [], "serverless": []}
            for _ in range(budget.first_runs):
                for variant in per:
                    code = _FIRST_CODE.format(variant=variant, user_id=user_id, result=out)
                    _python(code, env)
                    per[variant].append(json.loads(Path(out).read_text()))
            results[engine] = per
    return results


#: Packages whose import cost the breakdown shows (cumulative: nested ones are inside others).
BREAKDOWN = (
    "peewee",
    "peewee_serverless",
    "pydantic",
    "aws_lambda_powertools.event_handler",
    "aws_lambda_powertools.logging",
    "aws_lambda_powertools.utilities.idempotency",
    "boto3",
    "examples.users.app",
)


def collect_breakdown(runs: int) -> dict[str, float]:
    """Median cumulative import ms per package under ``import examples.users.app``."""
    env = child_environ(engine_env("sqlite", "peewee_serverless_bench_import"))
    samples: dict[str, list[float]] = {name: [] for name in BREAKDOWN}
    for _ in range(max(1, runs)):
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import examples.users.app"],
            env=env,
            cwd=str(ROOT),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
            check=True,
        )
        for line in proc.stderr.splitlines():
            # "import time:  self [us] | cumulative | imported package"
            parts = line.split("|")
            if len(parts) != 3 or not line.startswith("import time:"):
                continue
            name = parts[2].strip()
            if name in samples and parts[1].strip().isdigit():
                samples[name].append(int(parts[1].strip()) / 1000.0)
    return {name: percentile(v, 50) for name, v in samples.items() if v}


def _median_ms(runs: Sequence[dict[str, Any]], key: str) -> float:
    return percentile([r[key] * 1000.0 for r in runs], 50)


def report(
    imports: dict[str, Any], first: dict[str, Any], breakdown: dict[str, float] | None = None
) -> Section:
    """Tables, plot data and targets."""
    base = Stats.of([r["seconds"] for r in imports["peewee"]])
    base_wall = _median_ms(imports["peewee"], "wall")
    rows = []
    plot_imports = {}
    for module in IMPORT_TARGETS:
        s = Stats.of([r["seconds"] for r in imports[module]])
        wall = _median_ms(imports[module], "wall")
        heavy = sorted({m for r in imports[module] for m in r["heavy"]})
        rows.append(
            [
                f"`import {module}`",
                fmt_ms(s.median),
                fmt_ratio(ratio(s.median, base.median)),
                f"{s.median - base.median:+.1f}",
                fmt_ms(s.p99),
                fmt_ms(wall),
                fmt_ratio(ratio(wall, base_wall)),
                ", ".join(heavy) or "none",
                s.n,
            ]
        )
        plot_imports[module] = s.median
    import_table = table(
        [
            "import",
            "median ms",
            "vs peewee",
            "added ms",
            "p99 ms",
            "process wall ms",
            "wall vs peewee",
            "heavy modules loaded",
            "runs",
        ],
        rows,
        "lrrrrrrlr",
    )
    pkg = Stats.of([r["seconds"] for r in imports["peewee_serverless"]])
    added = pkg.median - base.median
    pkg_heavy = sorted({m for r in imports["peewee_serverless"] for m in r["heavy"]})
    app_runs = imports["examples.users.app"]
    clients = max(r["aws_clients"] for r in app_runs + imports["peewee_serverless"])
    sdk = any(m in ("boto3", "botocore") for r in app_runs for m in r["heavy"])
    app_clean = all(r.get("db_closed") for r in app_runs) and clients == 0
    targets = [
        Target(
            "package import cost",
            f"adds <= {IMPORT_MS_TARGET:.0f} ms over `import peewee`",
            f"+{added:.1f} ms ({fmt_ms(pkg.median)} vs {fmt_ms(base.median)} ms)",
            added <= IMPORT_MS_TARGET,
        ),
        Target(
            "nothing created at import",
            "no connection, no AWS client",
            "package: heavy modules "
            + (", ".join(pkg_heavy) or "none")
            + "; example: database "
            + ("unconnected" if all(r.get("db_closed") for r in app_runs) else "CONNECTED")
            + f", AWS clients/sessions created: {clients}"
            + (" (boto3 is imported, by Powertools' idempotency package)" if sdk else ""),
            app_clean and not pkg_heavy,
        ),
    ]
    breakdown_table = table(
        ["package (first import, nested included)", "cumulative ms"],
        [[f"`{name}`", fmt_ms(ms)] for name, ms in (breakdown or {}).items()],
    )
    first_rows = []
    plot_first = {}
    for engine, per in first.items():
        raw_first = _median_ms(per["raw"], "first")
        for variant in ("raw", "serverless"):
            runs = per[variant]
            f, w = _median_ms(runs, "first"), _median_ms(runs, "warm")
            first_rows.append(
                [
                    ENGINE_LABELS[engine],
                    "plain Peewee, connect on first use (baseline)"
                    if variant == "raw"
                    else "**peewee-serverless** `@database_lifecycle`",
                    fmt_ms(_median_ms(runs, "import")),
                    fmt_ms(f),
                    fmt_ratio(ratio(f, raw_first)),
                    fmt_ms(_median_ms(runs, "second")),
                    fmt_ms(w),
                    fmt_ratio(ratio(f, w)),
                    len(runs),
                ]
            )
            plot_first[f"{engine}/{variant}"] = f
    first_table = table(
        [
            "engine",
            "variant",
            "import app ms",
            "1st invocation ms",
            "1st vs baseline",
            "2nd ms",
            "warm ms",
            "1st vs warm",
            "runs",
        ],
        first_rows,
        "llrrrrrrr",
    )
    body = (
        "Fresh interpreter per run; import timed in-process around the `import` statement "
        "(the process wall time, interpreter start-up included, beside it). Targets "
        "alternate run by run.\n\n"
        + import_table
        + "\n\nWhere `import examples.users.app` spends its time (`python -X importtime`, "
        "median of the runs; cumulative, so a package imported inside another counts in both):"
        "\n\n"
        + breakdown_table
        + "\n\nFirst invocation after the import, `GET /users/{id}` (connect included), in a "
        "fresh process per run; medians over runs. The first call also pays Powertools' "
        "first-request work (route compilation, validation models), equal in both variants.\n\n"
        + first_table
        + "\n\nOn the first invocation `@database_lifecycle` also reads the server's connection "
        "usage once (the governor; then at most every `DB_USAGE_CHECK_SECONDS`, default 5 s). "
        "In a new PostgreSQL session that first read of `pg_stat_activity`/`pg_roles` costs "
        "about 10 ms (catalog caches; ~1 ms afterwards), which is most of the PostgreSQL "
        "difference above."
    )
    return Section(
        "cold",
        "2. Cold start",
        body,
        {"imports": plot_imports, "first": plot_first},
        targets,
    )


def run(budget: Budget, engines: Sequence[str], database: str) -> Section:
    """Scenario 2 end to end."""
    return report(
        collect_imports(budget),
        collect_first(budget, engines, database),
        collect_breakdown(max(1, budget.cold_runs // 4)),
    )
