"""The import check: the unpacked zip must import its handler before the zip is delivered.

Lambda imports the handler module at init with ``sys.path`` = the task root (the unpacked zip)
then the runtime's own packages (boto3 and its dependencies). The check does the same in a fresh
interpreter (``python -I -S``: no site-packages, no ``PYTHON*`` variables, nothing of this
tool's environment), with:

* the task root first, then a stand-in for the runtime: this machine's own boto3 and its
  dependencies linked into a folder (pure Python, so any interpreter can import them), or
  boto3 installed there by pip when this machine has none;
* the function's environment (from the template) with its database engine, pointed at a closed
  port so that nothing connects anywhere, and no secret ARN (nothing reaches AWS);
* the database driver of the engine imported too, so a PostgreSQL function without psycopg2
  fails here rather than at its first request.

The interpreter must match the target Python (``python3.X`` on ``PATH`` when this one is not:
:func:`python_for`, which the bytecode compile uses too) and architecture; otherwise the check
cannot load the zip's binary wheels and says to use ``--no-check`` (cross-builds).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ..errors import PackagingError
from .requirements import PipSource

__all__ = ["check_zip", "interpreter_for", "python_for", "runtime_stand_in"]

#: Lambda's runtime ships these (and their dependencies) on its own path.
RUNTIME_PACKAGES = ("boto3",)

#: Engine -> the driver module the database class imports at connect.
DRIVER_MODULES = {"mysql": "pymysql", "postgres": "psycopg2"}

_MACHINES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}

CHECK_TIMEOUT_SECONDS = 120

_CHECK = r"""
import importlib, json, sys, traceback
task, runtime, module_name, attr, driver = sys.argv[1:6]
sys.path[:0] = [task, runtime]
def fail(kind, message, where=None, name=None):
    print(json.dumps({"ok": False, "kind": kind, "message": message, "where": where, "name": name}))
    sys.exit(0)
def origin(exc):
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith(task)]
    if isinstance(exc, SyntaxError) and exc.filename and exc.filename.startswith(task):
        return f"{exc.filename[len(task) + 1:]}:{exc.lineno}"
    return f"{frames[-1].filename[len(task) + 1:]}:{frames[-1].lineno}" if frames else None
try:
    module = importlib.import_module(module_name)
except ModuleNotFoundError as exc:
    fail("missing", f"No module named {exc.name!r}", origin(exc), exc.name)
except BaseException as exc:
    fail("error", f"{type(exc).__name__}: {exc}", origin(exc))
obj = module
for part in attr.split("."):
    obj = getattr(obj, part, None)
if not callable(obj):
    fail("handler", f"module {module_name!r} has no callable {attr!r}")
if driver:
    try:
        importlib.import_module(driver)
    except BaseException as exc:
        fail("driver", f"{type(exc).__name__}: {exc}")
print(json.dumps({"ok": True, "file": getattr(module, "__file__", None)}))
"""


#: Prints the interpreter's major.minor: a candidate ``python3.X`` must say it is that version.
_VERSION_PROBE = "import sys; print('%d.%d' % sys.version_info[:2])"


def _run(
    command: list[str],
    *,
    timeout: float,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` for up to ``timeout`` s, output as text; a failing exit is not an error."""
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def python_for(python_version: str) -> str | None:
    """An executable of Python ``python_version`` (major.minor) on this machine, or None.

    This interpreter when it is that version; else the first ``python3.X`` on ``PATH`` that
    runs and reports that version. A candidate is run, not just found: a pyenv shim for a
    version that is installed but not selected is on ``PATH`` and only prints an error.
    """
    if f"{sys.version_info.major}.{sys.version_info.minor}" == python_version:
        return sys.executable
    name = f"python{python_version}"
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        found = shutil.which(name, path=folder) if folder else None
        if found is None:
            continue
        try:
            said = _run([found, "-I", "-c", _VERSION_PROBE], timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if said.returncode == 0 and said.stdout.strip() == python_version:
            return found
    return None


def interpreter_for(python_version: str, architecture: str) -> str:
    """A Python executable that can import a zip built for this target, or an error."""
    machine = _MACHINES.get(platform.machine().lower())
    if not sys.platform.startswith("linux") or machine != architecture:
        raise PackagingError(
            f"cannot run the import check of a Linux {architecture} zip on "
            f"{sys.platform} {platform.machine()}; build with --no-check (cross-build)"
        )
    found = python_for(python_version)
    if found is None:
        raise PackagingError(
            f"cannot run the import check of a python{python_version} zip: no "
            f"python{python_version} on PATH (this is python{sys.version_info.major}."
            f"{sys.version_info.minor}); install it, pass --python "
            f"{sys.version_info.major}.{sys.version_info.minor}, or build with --no-check"
        )
    return found


def _top_levels(dist: importlib.metadata.Distribution) -> set[str]:
    text = dist.read_text("top_level.txt")
    if text:
        return {line.strip() for line in text.splitlines() if line.strip()}
    names = set()
    for file in dist.files or ():
        first = file.parts[0]
        if first.endswith((".dist-info", ".data")) or first in ("..", "bin"):
            continue
        if len(file.parts) == 1 and not first.endswith(".py"):
            continue
        names.add(first.removesuffix(".py"))
    return names


def _closure(names: tuple[str, ...]) -> list[importlib.metadata.Distribution]:
    seen: dict[str, importlib.metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = re.split(r"[\s<>=!~\[;(]", todo.pop(), maxsplit=1)[0].lower()
        if name in seen:
            continue
        dist = importlib.metadata.distribution(name)
        seen[name] = dist
        for requirement in dist.requires or ():
            if "extra ==" not in requirement:
                todo.append(requirement)
    return list(seen.values())


def _installed_runtime(source: PipSource) -> Path:
    """boto3 installed once into the user's cache (this machine has none of its own)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    cache = base / "peewee-serverless" / "import-check-runtime"
    if (cache / "boto3" / "__init__.py").is_file():
        return cache
    partial = cache.with_name(cache.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    done = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "--quiet", "--target", str(partial)),
            *source.args(),
            *RUNTIME_PACKAGES,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise PackagingError(
            "cannot install boto3 for the import check (the runtime's stand-in); "
            "install boto3 here or build with --no-check"
        )
    shutil.rmtree(cache, ignore_errors=True)
    partial.rename(cache)
    return cache


def runtime_stand_in(dest: Path, source: PipSource) -> Path:
    """A folder with what Lambda's runtime provides (boto3 and its dependencies).

    This machine's own boto3 (pure Python) is linked into ``dest``; without one, boto3 is
    installed once into ``~/.cache/peewee-serverless/import-check-runtime`` and that is used.
    """
    dest.mkdir(parents=True, exist_ok=True)
    try:
        dists = _closure(RUNTIME_PACKAGES)
    except importlib.metadata.PackageNotFoundError:
        return _installed_runtime(source)
    for dist in dists:
        base = Path(str(dist.locate_file("")))
        for name in _top_levels(dist):
            for candidate in (base / name, base / f"{name}.py"):
                if candidate.exists() and not (dest / candidate.name).exists():
                    (dest / candidate.name).symlink_to(candidate)
    return dest


def _environment(function_env: dict[str, str], engine: str | None, scratch: Path) -> dict[str, str]:
    task = str(scratch / "task")
    # Paths into the deployed code (DB_SSL_CA=/var/task/global-bundle.pem) point at the unpacked
    # zip here, as /var/task is where Lambda unpacks it.
    env = {
        k: task + v[len("/var/task") :] if v == "/var/task" or v.startswith("/var/task/") else v
        for k, v in function_env.items()
        if v != ""
    }
    for name in ("DB_SECRET_ARN", "DB_IAM_AUTH", "DATABASE_URL"):
        env.pop(name, None)  # the check reaches no AWS service and no database
    if engine in ("mysql", "postgres"):
        env.update(
            DB_ENGINE=engine,
            DB_HOST="127.0.0.1",
            DB_PORT="9",  # discard: refused at once should the code connect at import
            DB_NAME=env.get("DB_NAME") or "import_check",
            DB_USER=env.get("DB_USER") or "import_check",
        )
    else:
        env.update(DB_ENGINE="sqlite", DB_NAME=str(scratch / "import-check.sqlite3"))
    env.update(
        PATH=os.environ.get("PATH", "/usr/bin:/bin"),
        HOME=str(scratch),
        LANG="C.UTF-8",
        TZ=":UTC",
        AWS_REGION="us-east-1",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="import-check",
        AWS_SECRET_ACCESS_KEY="import-check",
        AWS_LAMBDA_FUNCTION_NAME="import-check",
        AWS_LAMBDA_FUNCTION_MEMORY_SIZE="128",
        LAMBDA_TASK_ROOT=task,
    )
    return env


def check_zip(
    zip_path: Path,
    handler: str,
    *,
    python_version: str,
    architecture: str,
    engine: str | None,
    function_env: dict[str, str],
    source: PipSource,
) -> None:
    """Unpack ``zip_path`` and import ``handler`` as Lambda would; raise on any failure."""
    module_name, _, attr = handler.rpartition(".")
    interpreter = interpreter_for(python_version, architecture)
    with tempfile.TemporaryDirectory(prefix="peewee-serverless-check-") as tmp:
        scratch = Path(tmp)
        task = scratch / "task"
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(task)
        runtime = runtime_stand_in(scratch / "runtime", source)
        env = _environment(function_env, engine, scratch)
        env["_HANDLER"] = handler
        driver = DRIVER_MODULES.get(engine or "", "")
        try:
            done = _run(
                [interpreter, "-I", "-S", "-c", _CHECK, str(task), str(runtime)]
                + [module_name, attr, driver],
                timeout=CHECK_TIMEOUT_SECONDS,
                cwd=task,
                env=env,
            )
        except subprocess.TimeoutExpired:
            raise PackagingError(
                f"import check: importing {module_name} took over {CHECK_TIMEOUT_SECONDS} s "
                "(does it connect or call a service at import?)"
            ) from None
    lines = done.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1])
    except (IndexError, ValueError):
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise PackagingError(f"import check: importing {module_name} crashed: {last}") from None
    if result["ok"]:
        return
    where = f" (at {result['where']})" if result.get("where") else ""
    if result["kind"] == "driver":
        raise PackagingError(
            f"import check: the {engine} driver {driver} is not in the zip ({result['message']}); "
            f"add --extra {engine} or --engine {engine}"
        )
    missing = result.get("name") or ""
    if result["kind"] == "missing" and module_name.startswith(missing) and not result["where"]:
        raise PackagingError(
            f"import check: the handler module {module_name} is not in the zip; the handler "
            "string names the module by its path in the zip (see the layout), or pass --handler"
        )
    if result["kind"] == "missing":
        raise PackagingError(
            f"import check: cannot import {module_name}: {result['message']}{where}; it is not "
            "in the zip (add it to requirements.txt, or the module to the function folder)"
        )
    raise PackagingError(f"import check: cannot import {module_name}: {result['message']}{where}")
