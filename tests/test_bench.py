"""Smoke test of the benchmark command: every scenario runs with tiny counts and writes tables.

No timing is asserted: only that each section is there with a well-formed Markdown table, that
the burst markers survive, and that the plot is written.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from .conftest import GENERAL_BACKENDS, ROOT, TEST_DB

SCENARIOS = "warm,cold,freeze,server,profile"  # burst: bench/burst.py has its own tests


def _tables(text: str) -> list[list[str]]:
    tables, current = [], []
    for line in text.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    if current:
        tables.append(current)
    return tables


def test_every_scenario_writes_a_well_formed_table(tmp_path: Path) -> None:
    output = tmp_path / "benchmarks.md"
    zipcold = "<!-- zipcold:start -->\nzip table\n<!-- zipcold:end -->"
    localrt = "<!-- localrt:start -->\nlocal runtime\n<!-- localrt:end -->"
    output.write_text(
        "# Benchmarks\n\n<!-- burst:start -->\nkept as it was\n<!-- burst:end -->\n\n"
        f"{localrt}\n\n## 2. Cold start\n\nold\n\n{zipcold}\n"
    )
    engines = ",".join(GENERAL_BACKENDS)
    proc = subprocess.run(
        [
            sys.executable, "-m", "bench.run", "--smoke", "--only", SCENARIOS,
            "--engines", engines, "--database", f"{TEST_DB}_bench", "--output", str(output),
        ],
        cwd=str(ROOT), capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = output.read_text()
    for title in ("1. Warm", "2. Cold start", "5. Local server", "6. Profile", "## Machine"):
        assert title in text
    if set(engines.split(",")) & {"mariadb", "postgres"}:
        assert "3. After a freeze" in text
    assert "<!-- burst:start -->\nkept as it was\n<!-- burst:end -->" in text
    # Other scripts' sections are kept once each; zip_cold's stays inside section 2.
    assert text.count(zipcold) == 1 and text.count(localrt) == 1
    cold = text.index("## 2. Cold start")
    assert cold < text.index(zipcold) < text.index("\n## ", cold + 1)
    tables = _tables(text)
    assert len(tables) >= 6
    for t in tables:
        widths = {len(re.findall(r"(?<!\\)\|", row)) for row in t}
        assert len(widths) == 1, t  # every row has the header's number of columns
        assert re.fullmatch(r"\|(-{3}:?\|)+", t[1]), t[1]
        assert len(t) >= 3, t  # header, separator, at least one row
    assert "raw Peewee, persistent connection (baseline)" in text
    assert (tmp_path / "benchmarks.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
