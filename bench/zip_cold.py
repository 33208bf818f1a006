"""Scenario 2, from the deployment zip: a cold import with and without bytecode in the zip.

Lambda unpacks the zip to a read-only ``/var/task``: the modules a cold start imports either
come with their ``__pycache__`` (what ``peewee-serverless package`` ships by default) or are
compiled from source on every cold start, the result thrown away. This measures that
difference for the example (``examples/users``, extras api, mysql, postgres):

* one zip built by ``build_package`` for this Python and machine (bytecode compiled); the
  *without* variant is the same zip unpacked without its ``.pyc`` entries, which is what
  ``--no-compile`` builds (the two zips differ by nothing else);
* each variant unpacked once into its own folder, made read-only; every run is a fresh
  ``python -S -B`` (``PYTHONDONTWRITEBYTECODE=1`` too: no bytecode can be written, as in
  Lambda) with ``PYTHONPATH`` = the task folder, then a stand-in for Lambda's ``/var/runtime``
  (this machine's boto3, as the import check uses), importing the handler's module
  ``users.app``: timed in-process around the import (``perf_counter``, ``process_time``) and
  by the parent from spawn to exit;
* the variants alternate run by run, after one unmeasured run each; medians.

``python -m bench.zip_cold [--runs N] [--output docs/benchmarks.md]`` writes its table between
the ``zipcold`` markers of the output (in section 2), leaving the rest of the file as it is.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

from bench.common import ROOT, fmt_ms, publish, run_python, table

MARK_START = "<!-- zipcold:start -->"
MARK_END = "<!-- zipcold:end -->"
HANDLER_MODULE = "users.app"

#: The child: import the handler's module and say how long it took and whether pycs were used.
CHILD = """
import json, sys, time
wall, cpu = time.perf_counter(), time.process_time()
import users.app
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
print(json.dumps({"wall": wall, "cpu": cpu, "modules": len(sys.modules)}))
"""


def build_zip(tmp: Path) -> Path:
    """The example's zip, with bytecode, for this Python and machine."""
    import platform

    from peewee_serverless.packaging import build_package

    arch = {"aarch64": "arm64", "arm64": "arm64"}.get(platform.machine().lower(), "x86_64")
    report = build_package(
        ROOT / "examples" / "users",
        tmp / "function.zip",
        extras=("api", "mysql", "postgres"),
        template=ROOT / "template.yaml",
        architecture=arch,
        python_version=f"{sys.version_info.major}.{sys.version_info.minor}",
    )
    return report.zip_path


def unpack(zip_path: Path, task: Path, bytecode: bool) -> dict[str, int]:
    """Unpack (with or without the pycs), make it read-only; return its size figures."""
    files = unzipped = 0
    with zipfile.ZipFile(zip_path) as zf:
        for info in zf.infolist():
            if not bytecode and info.filename.endswith(".pyc"):
                continue
            zf.extract(info, task)
            files += 1
            unzipped += info.file_size
    for path in sorted(task.rglob("*"), reverse=True):
        path.chmod(0o555 if path.is_dir() else 0o444)
    return {"files": files, "unzipped": unzipped}


def writable(task: Path) -> None:
    """Undo :func:`unpack`'s read-only modes so that the folder can be removed."""
    for path in task.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def zipped_bytes(zip_path: Path, bytecode: bool) -> int:
    """Compressed size of the entries a variant ships (what it adds to the upload)."""
    with zipfile.ZipFile(zip_path) as zf:
        return sum(
            i.compress_size for i in zf.infolist() if bytecode or not i.filename.endswith(".pyc")
        )


def one_run(task: Path, runtime: Path, env: dict[str, str]) -> dict[str, float]:
    """A fresh interpreter importing the handler's module from ``task``."""
    child_env = {**env, "PYTHONPATH": os.pathsep.join((str(task), str(runtime)))}
    started = time.perf_counter()
    done = run_python(
        ["-S", "-B", "-c", CHILD],
        child_env,
        what=f"import from {task}",
        cwd=task.parent,
        timeout=120,
        capture_stdout=True,
    )
    process = time.perf_counter() - started
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    result["process"] = process
    return result


def measure(runs: int) -> dict[str, Any]:
    """Build, unpack both variants, alternate ``runs`` imports of each; the raw figures."""
    from peewee_serverless.local.function import runtime_dir

    with tempfile.TemporaryDirectory(prefix="bench-zipcold-") as name:
        tmp = Path(name)
        zip_path = build_zip(tmp)
        runtime = runtime_dir(tmp / "runtime")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONDONTWRITEBYTECODE": "1",
            "DB_ENGINE": "sqlite",
            "DB_NAME": str(tmp / "bench.db"),
            "POWERTOOLS_SERVICE_NAME": "users",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        variants = {"with bytecode": True, "without bytecode": False}
        results: dict[str, Any] = {}
        tasks = {}
        for label, bytecode in variants.items():
            task = tmp / label.replace(" ", "-") / "task"
            results[label] = {
                **unpack(zip_path, task, bytecode),
                "zipped": zipped_bytes(zip_path, bytecode),
                "runs": [],
            }
            tasks[label] = task
        try:
            for label in variants:
                one_run(tasks[label], runtime, env)  # unmeasured: page cache, lazy OS state
            for _ in range(runs):
                for label in variants:
                    results[label]["runs"].append(one_run(tasks[label], runtime, env))
        finally:
            for task in tasks.values():
                writable(task)
        return results


def render(results: dict[str, Any]) -> str:
    """The marked Markdown section."""

    def median_ms(runs: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in runs) * 1000.0

    def mb(n: int) -> str:
        return f"{n / 2**20:.1f}"

    base = median_ms(results["without bytecode"]["runs"], "wall")
    rows = []
    for label, r in results.items():
        wall = median_ms(r["runs"], "wall")
        rows.append(
            [
                label,
                fmt_ms(wall),
                fmt_ms(median_ms(r["runs"], "cpu")),
                fmt_ms(median_ms(r["runs"], "process")),
                f"{wall / base:.2f}x",
                mb(r["zipped"]),
                mb(r["unzipped"]),
                len(r["runs"]),
            ]
        )
    headers = [
        "zip",
        "import `users.app` median ms",
        "CPU ms",
        "process wall ms",
        "vs without",
        "zipped MB",
        "unzipped MB",
        "runs",
    ]
    return "\n".join(
        [
            MARK_START,
            "### Cold import from the zip: with / without bytecode",
            "",
            "Written by `python -m bench.zip_cold`. The example's zip from `peewee-serverless "
            "package` (extras api, mysql, postgres; this Python), unpacked to a read-only "
            "folder as Lambda's `/var/task`: with its hash-checked `__pycache__` (the default), "
            "and without (what `--no-compile` ships). Every run a fresh `python -S -B` "
            "(`PYTHONDONTWRITEBYTECODE=1`: nothing can be cached between runs, as in Lambda) "
            "with the task folder and a boto3 stand-in for `/var/runtime` on its path, "
            "importing `users.app`; timed around the import and from spawn to exit. Variants "
            "alternate run by run after one unmeasured run each; medians. Sizes: what each "
            "variant ships.",
            "",
            table(headers, rows),
            MARK_END,
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Measure and write the section."""
    parser = argparse.ArgumentParser(prog="python -m bench.zip_cold", description=__doc__)
    parser.add_argument("--runs", type=int, default=15, help="runs per variant (15)")
    parser.add_argument("--output", default=str(ROOT / "docs" / "benchmarks.md"))
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return publish(render(measure(args.runs)), args.output, MARK_START, MARK_END)


if __name__ == "__main__":
    sys.exit(main())
