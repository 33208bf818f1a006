"""docs/settings.md documents every environment variable the code reads, and nothing else.

The names come from the code itself (an AST walk): every upper-case string argument of
``environ.get``, ``env.get``, ``environ[...]`` and of any function whose name says ``env``
(``os.getenv``, ``_int_env("X", ...)``), plus every string constant shaped like one of our
variables (``DB_*``, ``DATABASE_URL``, ``POWERTOOLS_*``, ``AWS_*``, ``CORS_*``, ``API_*``,
``IDEMPOTENCY_*``), which catches names read through a loop or a constant. A setting added
without a row in the table fails here.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [*sorted((ROOT / "src").rglob("*.py")), *sorted((ROOT / "examples").rglob("*.py"))]
DOC = ROOT / "docs" / "settings.md"

VARIABLE = re.compile(
    r"^(?:DB|DATABASE|POWERTOOLS|AWS|PEEWEE_SERVERLESS|CORS|API|IDEMPOTENCY)_[A-Z0-9_]+$"
)
ENV_NAMES = {"environ", "env", "environment"}


def _is_env(node: ast.expr) -> bool:
    """``environ`` / ``env`` / ``os.environ`` (any object whose name says it is the environment)."""
    if isinstance(node, ast.Name):
        return node.id in ENV_NAMES
    return isinstance(node, ast.Attribute) and node.attr in ENV_NAMES


def _string(node: ast.expr | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def names_in_code() -> dict[str, set[str]]:
    """Environment variable name -> the files that read it."""
    found: dict[str, set[str]] = {}
    for path in SOURCES:
        if path.name == "packaging.py":
            continue  # names of *pip's* and the build's world, not settings of a function
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            names: list[str | None] = []
            if isinstance(node, ast.Call) and node.args:
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if (
                    isinstance(func, ast.Attribute) and func.attr == "get" and _is_env(func.value)
                ) or "env" in called.lower():  # os.getenv, _int_env("X", ...), from_env helpers
                    names.append(_string(node.args[0]))
            elif isinstance(node, ast.Subscript) and _is_env(node.value):
                names.append(_string(node.slice))
            elif (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and VARIABLE.match(node.value)
            ):
                names.append(node.value)
            for name in names:
                if name and re.fullmatch(r"[A-Z][A-Z0-9_]+", name):
                    found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


def documented_rows() -> set[str]:
    """Variable names in the first column of the settings tables."""
    return set(re.findall(r"^\|\s*`([A-Z][A-Z0-9_]+)`\s*\|", DOC.read_text(), flags=re.M))


def test_the_scan_finds_the_core_settings() -> None:
    names = names_in_code()
    for core in ("DATABASE_URL", "DB_ENGINE", "DB_HOST", "DB_PASSWORD", "DB_MODE"):
        assert core in names


def test_every_variable_read_by_the_code_has_a_row() -> None:
    missing = {
        name: sorted(files)
        for name, files in names_in_code().items()
        if name not in documented_rows()
    }
    assert not missing, f"add these to docs/settings.md: {missing}"


def test_every_row_is_a_variable_the_code_reads() -> None:
    stale = documented_rows() - set(names_in_code())
    assert not stale, f"docs/settings.md documents variables nothing reads: {sorted(stale)}"


def test_every_row_states_a_default_and_a_meaning() -> None:
    for line in DOC.read_text().splitlines():
        if re.match(r"^\|\s*`[A-Z][A-Z0-9_]+`\s*\|", line):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            assert len(cells) == 3 and all(cells), line
