"""The package's shape: one exception tree, no import circle, backend behaviour in hooks.

Read from the source (``ast``) and from the imported modules; nothing here needs a database.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import peewee_serverless
from peewee_serverless import errors

SRC = Path(peewee_serverless.__file__).resolve().parent
#: DB-API driver exceptions (PEP 249 wants ``Error(Exception)``); Peewee wraps them like PyMySQL's.
DRIVER_MODULES = ("peewee_serverless.data_api.driver",)
BACKEND_CLASSES = {
    "MySQLDatabase",
    "PostgresqlDatabase",
    "SqliteDatabase",
    "ServerlessMySQLDatabase",
    "ServerlessPostgresqlDatabase",
    "ServerlessSqliteDatabase",
}


def _modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages([str(SRC)], "peewee_serverless."):
        if not info.name.endswith("__main__"):
            names.append(info.name)
    return names


def test_every_public_exception_is_in_the_one_tree() -> None:
    stray = []
    for name in _modules():
        if name in DRIVER_MODULES:
            continue
        module = importlib.import_module(name)
        for public in getattr(module, "__all__", ()):
            obj = getattr(module, public, None)
            is_error = inspect.isclass(obj) and issubclass(obj, BaseException)
            if is_error and not issubclass(obj, errors.PeeweeServerlessError):
                stray.append(f"{name}.{public}")
    assert stray == []


def test_the_documented_tree_is_the_real_one() -> None:
    doc = errors.__doc__ or ""
    tree = doc[: doc.index("Driver errors")]
    for public in errors.__all__:
        obj = getattr(errors, public)
        if inspect.isclass(obj) and issubclass(obj, BaseException):
            assert public in tree, f"{public} is missing from the tree in errors.py"
            # Drawn under its real parent: the parent's name appears on an earlier line.
            parent = obj.__mro__[1].__name__
            if parent != "Exception":
                assert tree.index(parent) < tree.index(public), public


def test_old_import_names_still_work() -> None:
    from peewee_serverless.backoff import emit_event
    from peewee_serverless.cli import CommandError
    from peewee_serverless.config import JITTERS, ServerlessOptions, int_setting
    from peewee_serverless.database import ConnectionEvents
    from peewee_serverless.lifecycle import DEADLINE_MARGIN_SECONDS, deadline_from_context

    assert CommandError is errors.CommandError
    assert ServerlessOptions.__module__ == "peewee_serverless.options"
    assert ConnectionEvents.__module__ == "peewee_serverless.stats"
    assert emit_event.__module__ == "peewee_serverless.stats"
    assert JITTERS and int_setting and DEADLINE_MARGIN_SECONDS and deadline_from_context


def _imports(path: Path, package: str) -> set[str]:
    """Package modules ``path`` imports, at module level or inside functions (not for typing)."""
    tree = ast.parse(path.read_text())
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only.update(id(n) for n in ast.walk(node))
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only or not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = package.split(".")
            base = base[: len(base) - node.level + 1]
            target = ".".join([*base, node.module] if node.module else base)
        else:
            target = node.module or ""
        if target.startswith("peewee_serverless"):
            found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        parts = list(rel.parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        name = ".".join(parts)
        package = name if is_package else name.rsplit(".", 1)[0]
        graph[name] = _imports(path, package)
    return graph


def test_no_import_circle_among_the_modules() -> None:
    """``__init__`` modules (re-exporting) aside, no module reaches itself through imports."""
    graph = _graph()
    nodes = {n for n in graph if not n.endswith("__init__") and n not in _packages(graph)}

    def reach(start: str) -> set[str]:
        seen: set[str] = set()
        todo = [t for t in graph.get(start, ()) if t in nodes]
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            seen.add(current)
            todo.extend(t for t in graph.get(current, ()) if t in nodes)
        return seen

    circles = sorted(n for n in nodes if n in reach(n))
    assert circles == []


def _packages(graph: dict[str, set[str]]) -> set[str]:
    return {n for n in graph if any(other.startswith(n + ".") for other in graph)}


def test_no_isinstance_on_backend_classes_outside_the_factory() -> None:
    offenders = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "isinstance":
                names = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)}
                names |= {n.attr for n in ast.walk(node.args[1]) if isinstance(n, ast.Attribute)}
                if names & BACKEND_CLASSES:
                    offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []


def test_a_cli_user_error_is_one_line_and_exit_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DATABASE_URL"))}
    env["DB_ENGINE"] = "nope"
    done = subprocess.run(
        [sys.executable, "-m", "peewee_serverless", "idempotency-cleanup"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "DB_ENGINE" in done.stderr
