"""Scenario 2: cold start: import time, and a cold invocation end to end.

**Import**: a fresh interpreter per run (``python -c``), timing ``import X`` with
``time.perf_counter()`` (wall) and ``time.process_time()`` (CPU) around it, for ``peewee``
(baseline), ``peewee_serverless``, ``peewee_serverless`` + ``database_from_env()`` (what a
function's module does at init) and the example app (``examples.users.app``: Powertools
resolver, models, database from ``DB_*``). Every module is imported from a bytecode cache, as
pip leaves an installed package (``__pycache__``): the runs use a private
``PYTHONPYCACHEPREFIX``, filled by one unmeasured run of each target first, so the figures do
not depend on whether the checkout was ever imported with bytecode writing on. The targets
alternate run by run. Each run also reports what the import left behind: which heavy modules got
imported and, for the example, whether its database is still unconnected and whether an AWS SDK
(boto3 / botocore) was loaded.

**Cold invocation end to end**: from process start to the first answer of ``GET /users/{id}``,
for the example's ``handler`` as deployed (peewee-serverless) and for plain Peewee written the
way the seed was (``bench/seed_app.py``: module-level connection made at import, no Powertools),
two ways:

* **in-process**: the parent notes ``time.monotonic()``, starts a fresh interpreter that imports
  the handler's module and invokes it once with the event and a Lambda-like context, and the
  child notes ``time.monotonic()`` when the import is done and when the answer is back
  (``CLOCK_MONOTONIC``, one clock for every process on Linux);
* **under awslambdaric** (AWS's runtime interface client, what Lambda's Python runtime runs):
  the project's local Lambda (``peewee_serverless.local.pool``) starts ``python -S -m awslambdaric
  HANDLER`` with its own Runtime API; timed from the container's creation to the response
  (and to the runtime's first ``next``: the init phase). Task root: the repository's
  ``examples`` and ``bench`` folders; ``src`` and the venv's site-packages as layers.

Both variants and both ways alternate run by run, per engine, after one unmeasured run each.
"""

from __future__ import annotations

import json
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
    run_python,
    table,
    user_ids,
)

#: Import targets: label -> the code that is timed (run in a fresh interpreter).
IMPORTS = {
    "peewee": "import peewee",
    "peewee_serverless": "import peewee_serverless",
    "peewee_serverless + database_from_env()": (
        "import peewee_serverless\n"
        "peewee_serverless.database_from_env("
        "{'DB_ENGINE': 'mysql', 'DB_HOST': '127.0.0.1', 'DB_NAME': 'bench'})"
    ),
    "examples.users.app": "import examples.users.app",
}
HEAVY = ("aws_lambda_powertools", "pydantic", "boto3", "botocore")
#: Issue 15 item 4: the database layer imports in <= 15 ms over ``import peewee``.
IMPORT_MS_TARGET = 15.0

_IMPORT_CODE = """
import time
_t0, _c0 = time.perf_counter(), time.process_time()
{code}
_t1, _c1 = time.perf_counter(), time.process_time()
import json, sys
out = {{"seconds": _t1 - _t0, "cpu": _c1 - _c0,
        "heavy": [m for m in {heavy!r} if m in sys.modules],
        "modules": len(sys.modules)}}
if "examples.users.app" in sys.modules:
    out["db_closed"] = sys.modules["examples.users.app"].db.is_closed()
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

#: The cold invocation in a fresh interpreter: import the handler's module, invoke it once.
_E2E_CODE = """
import json, sys, time

class Context:  # the attributes Lambda's context has (Powertools reads some), same for both
    function_name = "bench-cold"
    function_version = "$LATEST"
    memory_limit_in_mb = 128
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench-cold"
    aws_request_id = "00000000-0000-4000-8000-000000000000"
    log_group_name = "/aws/lambda/bench-cold"
    log_stream_name = "bench-cold"
    identity = client_context = tenant_id = None

    def __init__(self):
        self._deadline = time.monotonic() + 30.0

    def get_remaining_time_in_millis(self):
        return max(0, int((self._deadline - time.monotonic()) * 1000))

from {module} import {attr} as handler
imported = time.monotonic()
response = handler(json.loads(sys.argv[1]), Context())
answered = time.monotonic()
with open(sys.argv[2], "w") as out:
    out.write(json.dumps({{"imported": imported, "answered": answered,
                          "status": response["statusCode"]}}))
"""

#: Cold-start variants: label -> (module, handler attribute).
E2E_VARIANTS = {
    "seed": ("bench.seed_app", "handler"),
    "seed-serverless": ("bench.seed_serverless", "handler"),
    "serverless": ("examples.users.app", "handler"),
}
E2E_LABELS = {
    "seed": "plain Peewee, seed style (module-level connection at import; baseline)",
    "seed-serverless": "the same handler on the database layer (`database_from_env`, "
    "`@database_lifecycle`)",
    "serverless": "**peewee-serverless** example `handler` as deployed",
}


def bytecode_env(env: dict[str, str], pycache: str) -> dict[str, str]:
    """``child_environ(env)`` importing from (and writing) the bytecode cache under ``pycache``."""
    out = child_environ(env)
    out.pop("PYTHONDONTWRITEBYTECODE", None)
    out["PYTHONPYCACHEPREFIX"] = pycache
    return out


def _python(code: str, env: dict[str, str], *args: str) -> float:
    """Run ``code`` in a fresh interpreter (environment as given); the process wall time."""
    started = time.perf_counter()
    run_python(["-c", code, *args], env)
    return time.perf_counter() - started


# -- the parent side ------------------------------------------------------------------------------
def collect_imports(budget: Budget, pycache: str) -> dict[str, list[dict[str, Any]]]:
    """``budget.cold_runs`` fresh processes per import target, alternating (after a warm-up)."""
    env = bytecode_env(engine_env("sqlite", "peewee_serverless_bench_import"), pycache)
    runs: dict[str, list[dict[str, Any]]] = {t: [] for t in IMPORTS}
    with tempfile.TemporaryDirectory(prefix="bench-cold-") as tmp:
        out = str(Path(tmp) / "out.json")
        for n in range(budget.cold_runs + 1):
            for label, code in IMPORTS.items():
                text = _IMPORT_CODE.format(code=code, heavy=HEAVY, result=out)
                wall = _python(text, env)
                if n == 0:
                    continue  # fills the bytecode cache; not measured
                data = json.loads(Path(out).read_text())
                data["wall"] = wall
                runs[label].append(data)
    return runs


def _task_root(tmp: Path) -> Path:
    """A task root holding the example and the benchmark's seed handler (links)."""
    root = tmp / "task"
    root.mkdir()
    for name in ("examples", "bench"):
        (root / name).symlink_to(ROOT / name)
    return root


def _container_spec(
    tmp: Path, variant: str, env: dict[str, str], pycache: str
) -> Any:  # FunctionSpec, or None without awslambdaric
    import sysconfig

    from peewee_serverless.local.function import FunctionError, FunctionSpec, runtime_dir

    try:
        runtime = runtime_dir(tmp / "runtime")
    except FunctionError:
        return None
    task = tmp / "task" if (tmp / "task").exists() else _task_root(tmp)
    module, attr = E2E_VARIANTS[variant]
    return FunctionSpec(
        f"{module}.{attr}",
        task,
        runtime,
        env={**env, "POWERTOOLS_SERVICE_NAME": "users"},
        layers=[ROOT / "src", Path(sysconfig.get_paths()["purelib"])],
        pycache_prefix=Path(pycache),
    )


def cold_inprocess(variant: str, event: str, env: dict[str, str], out: Path) -> dict[str, float]:
    """Process start -> handler module imported -> first answer, in seconds."""
    module, attr = E2E_VARIANTS[variant]
    started = time.monotonic()
    _python(_E2E_CODE.format(module=module, attr=attr), env, event, str(out))
    data = json.loads(out.read_text())
    if data["status"] != 200:
        raise RuntimeError(f"{variant}: cold invocation answered {data['status']}")
    return {
        "imported": data["imported"] - started,
        "first": data["answered"] - data["imported"],
        "answered": data["answered"] - started,
    }


def cold_container(spec: Any, event: dict[str, Any]) -> dict[str, float]:
    """Container start -> runtime's first ``next`` (init) -> first answer, in seconds."""
    from peewee_serverless.local.pool import ContainerPool

    pool = ContainerPool(spec, log=lambda line: None)
    try:
        started = time.monotonic()
        outcome = pool.invoke(event)
        answered = time.monotonic() - started
    finally:
        pool.close()
    if outcome.kind != "ok" or json.loads(outcome.payload).get("statusCode") != 200:
        raise RuntimeError(f"cold container failed: {outcome.error or outcome.payload[:500]!r}")
    return {"init": (outcome.init_ms or 0.0) / 1000.0, "answered": answered}


def collect_e2e(
    budget: Budget, engines: Sequence[str], database: str, pycache: str
) -> dict[str, Any]:
    """engine -> variant -> {"in-process": [runs], "awslambdaric": [runs] or None}."""
    from bench.common import get_user_event

    results: dict[str, Any] = {}
    runs = budget.first_runs
    for engine in engines:
        db_env = prepare_database(engine, database)
        event = get_user_event(user_ids(engine, database, 1)[0])
        env = bytecode_env(db_env, pycache)
        per: dict[str, dict[str, Any]] = {
            v: {"in-process": [], "awslambdaric": []} for v in E2E_VARIANTS
        }
        with tempfile.TemporaryDirectory(prefix="bench-cold-") as tmp:
            specs = {v: _container_spec(Path(tmp), v, db_env, pycache) for v in E2E_VARIANTS}
            out = Path(tmp) / "out.json"
            # One unmeasured round first (bytecode cache, page cache) when there are several.
            for n in range(runs + (1 if runs > 1 else 0)):
                measured = n > 0 or runs == 1
                for variant in E2E_VARIANTS:
                    inproc = cold_inprocess(variant, json.dumps(event), env, out)
                    contained = None
                    if specs[variant] is not None:
                        contained = cold_container(specs[variant], event)
                    if measured:
                        per[variant]["in-process"].append(inproc)
                        if contained is None:
                            per[variant]["awslambdaric"] = None
                        else:
                            per[variant]["awslambdaric"].append(contained)
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


def collect_breakdown(runs: int, pycache: str) -> dict[str, float]:
    """Median cumulative import ms per package under ``import examples.users.app``."""
    env = bytecode_env(engine_env("sqlite", "peewee_serverless_bench_import"), pycache)
    samples: dict[str, list[float]] = {name: [] for name in BREAKDOWN}
    for _ in range(max(1, runs)):
        proc = run_python(["-X", "importtime", "-c", "import examples.users.app"], env)
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


def _import_report(imports: dict[str, Any]) -> tuple[str, list[Target], dict[str, float]]:
    base = Stats.of([r["seconds"] for r in imports["peewee"]])
    base_cpu = _median_ms(imports["peewee"], "cpu")
    base_wall = _median_ms(imports["peewee"], "wall")
    rows = []
    plot_imports = {}
    for label in IMPORTS:
        s = Stats.of([r["seconds"] for r in imports[label]])
        cpu = _median_ms(imports[label], "cpu")
        wall = _median_ms(imports[label], "wall")
        heavy = sorted({m for r in imports[label] for m in r["heavy"]})
        rows.append(
            [
                f"`{label}`" if label != IMPORTS[label] else f"`{IMPORTS[label]}`",
                fmt_ms(s.median),
                f"{s.median - base.median:+.1f}",
                fmt_ms(cpu),
                f"{cpu - base_cpu:+.1f}",
                fmt_ms(s.p99),
                fmt_ms(wall),
                fmt_ratio(ratio(wall, base_wall)),
                ", ".join(heavy) or "none",
                s.n,
            ]
        )
        plot_imports[label] = s.median
    import_table = table(
        [
            "import",
            "median ms",
            "added ms",
            "CPU ms",
            "added CPU ms",
            "p99 ms",
            "process wall ms",
            "wall vs peewee",
            "heavy modules loaded",
            "runs",
        ],
        rows,
        "lrrrrrrrlr",
    )
    pkg = Stats.of([r["seconds"] for r in imports["peewee_serverless"]])
    added = pkg.median - base.median
    added_cpu = _median_ms(imports["peewee_serverless"], "cpu") - base_cpu
    pkg_heavy = sorted({m for r in imports["peewee_serverless"] for m in r["heavy"]})
    app_runs = imports["examples.users.app"]
    clients = max(r["aws_clients"] for r in app_runs + imports["peewee_serverless"])
    sdk = any(m in ("boto3", "botocore") for r in app_runs for m in r["heavy"])
    app_clean = all(r.get("db_closed") for r in app_runs) and clients == 0
    targets = [
        Target(
            "package import cost",
            f"`import peewee_serverless` adds <= {IMPORT_MS_TARGET:.0f} ms over `import peewee` "
            "(median wall)",
            f"{added:+.1f} ms ({fmt_ms(pkg.median)} vs {fmt_ms(base.median)} ms; "
            f"CPU {added_cpu:+.1f} ms)",
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
    return import_table, targets, plot_imports


def _e2e_report(e2e: dict[str, Any]) -> tuple[str, dict[str, float]]:
    rows = []
    plot: dict[str, float] = {}
    for engine, per in e2e.items():
        seed_in = _median_ms(per["seed"]["in-process"], "answered")
        seed_rt = per["seed"]["awslambdaric"]
        seed_ct = _median_ms(seed_rt, "answered") if seed_rt else float("nan")
        for variant in E2E_VARIANTS:
            inproc = per[variant]["in-process"]
            contained = per[variant]["awslambdaric"]
            answered = _median_ms(inproc, "answered")
            row = [
                ENGINE_LABELS[engine],
                E2E_LABELS[variant],
                fmt_ms(_median_ms(inproc, "imported")),
                fmt_ms(_median_ms(inproc, "first")),
                fmt_ms(answered),
                fmt_ratio(ratio(answered, seed_in)),
            ]
            if contained:
                ct = _median_ms(contained, "answered")
                row += [
                    fmt_ms(_median_ms(contained, "init")),
                    fmt_ms(ct),
                    fmt_ratio(ratio(ct, seed_ct)),
                ]
            else:
                row += ["—", "not run (no awslambdaric)", "—"]
            row.append(len(inproc))
            rows.append(row)
            plot[f"{engine}/{variant}"] = answered
    headers = [
        "engine",
        "variant",
        "in-process: start -> imported ms",
        "1st invocation ms",
        "start -> answer ms",
        "vs seed",
        "awslambdaric: start -> init done ms",
        "start -> answer ms",
        "vs seed",
        "runs",
    ]
    return table(headers, rows, "llrrrrrrrr"), plot


def report(
    imports: dict[str, Any], e2e: dict[str, Any], breakdown: dict[str, float] | None = None
) -> Section:
    """Tables, plot data and targets."""
    import_table, targets, plot_imports = _import_report(imports)
    e2e_table, plot_e2e = _e2e_report(e2e)
    breakdown_table = table(
        ["package (first import, nested included)", "cumulative ms"],
        [[f"`{name}`", fmt_ms(ms)] for name, ms in (breakdown or {}).items()],
    )
    body = (
        "Fresh interpreter per run, every module imported from its bytecode cache (as after "
        "`pip install`; a private `PYTHONPYCACHEPREFIX` filled by one unmeasured run of each "
        "target). The import is timed in-process around the statement, wall (`perf_counter`) "
        "and CPU (`process_time`: what this process itself spent, less sensitive to other work "
        "on the shared cores); the process wall time, interpreter start-up included, beside "
        "it. Targets alternate run by run. `database_from_env()` builds the database object "
        "(MySQL settings here) without connecting.\n\n"
        + import_table
        + "\n\nWhere `import examples.users.app` spends its time (`python -X importtime`, "
        "median of the runs; cumulative, so a package imported inside another counts in both):"
        "\n\n" + breakdown_table + "\n\n### Cold invocation end to end\n\n"
        "`GET /users/{id}` from process start to the first answer. Baseline: plain Peewee in the "
        "seed's style (`bench/seed_app.py`: a module-level connection opened at import, a model, "
        "a bare handler: no Powertools, no validation, no lifecycle). Then the same handler on "
        "the database layer alone (`bench/seed_serverless.py`: `database_from_env()`, "
        "`@database_lifecycle`, a standard-library logger; no `api` extra). The example: the "
        "example's `handler` as deployed (Powertools resolver with validation, "
        "`inject_lambda_context`, idempotency registration, `@database_lifecycle`; its "
        "connection is opened lazily by the first query). *In-process*: a fresh `python` "
        "imports the module and invokes the handler once (start -> imported includes the "
        "interpreter start). *awslambdaric*: `python -S -m awslambdaric HANDLER` under the "
        "project's local Runtime API (`peewee_serverless.local.pool`), from the container's "
        "creation to the response; *init done* is its first `next` (the handler's module "
        "imported). Medians over runs; variants and ways alternate run by run.\n\n"
        + e2e_table
        + "\n\nThe database layer's own share is the middle row against the first; the rest of "
        "the example's figure is its API stack: Powertools' resolver and idempotency utilities, "
        "pydantic and boto3 make up most of `import examples.users.app` (table above), and its "
        "first request builds the route's validation models. Every variant connects once (the "
        "seed at import, the others in their first query); on MariaDB the seed's PyMySQL "
        "builds a new TLS context for its connect (issue 15: ~20 ms of the MariaDB connect), "
        "which the database layer's connect does not (`tls.py`), so there the layer starts "
        "faster than the seed. The layer's first invocation also reads the server's connection "
        "usage once (the governor; then at most every `DB_USAGE_CHECK_SECONDS`, default 5 s): "
        "in a new PostgreSQL session that first read of `pg_stat_activity` costs about 10 ms "
        "(catalog caches), most of its first-invocation time there."
        # Where `python -m bench.zip_cold` writes its table; bench.run keeps the last one here.
        "\n\n<!-- zipcold:start -->\n<!-- zipcold:end -->"
    )
    return Section(
        "cold",
        "2. Cold start",
        body,
        {"imports": plot_imports, "first": plot_e2e},
        targets,
    )


def run(budget: Budget, engines: Sequence[str], database: str) -> Section:
    """Scenario 2 end to end."""
    with tempfile.TemporaryDirectory(prefix="bench-pycache-") as pycache:
        return report(
            collect_imports(budget, pycache),
            collect_e2e(budget, engines, database, pycache),
            collect_breakdown(max(1, budget.cold_runs // 4), pycache),
        )
