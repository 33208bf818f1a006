"""Rewriting parameter placeholders between the DB-API and the Data API.

Peewee writes ``%s`` placeholders (the ``format`` paramstyle of PyMySQL and psycopg2); the Data
API takes ``:name`` placeholders with a list of named parameters. The local endpoint does the
reverse for the real drivers (``%(name)s``). Both rewrites skip quoted text (string literals,
quoted identifiers) so that a ``%s`` or ``:x`` inside quotes is left alone, and PostgreSQL's
``::type`` casts are never taken for a parameter.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

__all__ = ["format_to_named", "named_to_pyformat"]

_QUOTES = "'\"`"


def _scan(sql: str, on_char: object) -> str:
    """Copy ``sql``, passing every character outside quotes to ``on_char(sql, i, out) -> i``."""
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in _QUOTES:
            end = i + 1
            while end < n:
                if sql[end] == "\\" and ch == "'":
                    end += 2
                    continue
                if sql[end] == ch:
                    if end + 1 < n and sql[end + 1] == ch:  # doubled quote inside the literal
                        end += 2
                        continue
                    break
                end += 1
            out.append(sql[i : end + 1])
            i = end + 1
            continue
        i = on_char(sql, i, out)  # type: ignore[operator]
    return "".join(out)


def format_to_named(sql: str, count: int) -> tuple[str, list[str]]:
    """``%s`` -> ``:p1``, ``:p2``...; ``%%`` -> ``%``. Returns the SQL and the parameter names."""
    names: list[str] = []

    def on_char(text: str, i: int, out: list[str]) -> int:
        if text[i] == "%" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "s":
                names.append(f"p{len(names) + 1}")
                out.append(":" + names[-1])
                return i + 2
            if nxt == "%":
                out.append("%")
                return i + 2
        out.append(text[i])
        return i + 1

    rewritten = _scan(sql, on_char)
    if len(names) != count:
        raise ValueError(f"the statement has {len(names)} placeholders but {count} parameters")
    return rewritten, names


def named_to_pyformat(
    sql: str, names: Collection[str], casts: Mapping[str, str] | None = None
) -> str:
    """``:name`` -> ``%(name)s`` for the parameters in ``names``; ``%`` -> ``%%`` elsewhere.

    ``casts`` maps a parameter to a PostgreSQL type it is cast to (``%(name)s::varchar``).
    """

    def on_char(text: str, i: int, out: list[str]) -> int:
        ch = text[i]
        if ch == "%":
            out.append("%%")
            return i + 1
        if ch == ":" and (i == 0 or text[i - 1] != ":") and i + 1 < len(text):
            end = i + 1
            while end < len(text) and (text[end].isalnum() or text[end] == "_"):
                end += 1
            name = text[i + 1 : end]
            if name and name in names:
                cast = (casts or {}).get(name)
                out.append(f"%({name})s::{cast}" if cast else f"%({name})s")
                return end
        out.append(ch)
        return i + 1

    return _scan(sql, on_char)
