"""Smoke test of the benchmark command: every scenario runs with tiny counts and writes tables.

No timing is asserted: only that each section is there with a well-formed Markdown table, that
the burst markers survive, and that the plot is written. The burst report's floors are checked
as pure computations on made-up outcomes.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

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


def test_a_run_of_some_scenarios_keeps_the_others_sections_and_targets(tmp_path: Path) -> None:
    output = tmp_path / "benchmarks.md"
    zipcold = "<!-- zipcold:start -->\nzip table\n<!-- zipcold:end -->"
    output.write_text(
        "# Benchmarks\n\n## Targets\n\n| target | goal | measured | verdict |\n|---|---|---|---|\n"
        "| package import cost | <= 15 ms | +8.2 ms | met |\n"
        "| warm overhead, SQLite | old goal | old | old |\n\n"
        "<!-- warm:start -->\n## 1. Warm\n\nold warm\n<!-- warm:end -->\n\n"
        f"<!-- cold:start -->\n## 2. Cold start\n\nkept cold\n\n{zipcold}\n<!-- cold:end -->\n"
    )
    proc = subprocess.run(
        [
            sys.executable, "-m", "bench.run", "--smoke", "--only", "warm", "--engines", "sqlite",
            "--database", f"{TEST_DB}_bench", "--output", str(output),
        ],
        cwd=str(ROOT), capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = output.read_text()
    assert "old warm" not in text and "raw Peewee, persistent connection (baseline)" in text
    assert text.count("kept cold") == 1 and text.count(zipcold) == 1
    assert text.index("<!-- warm:start -->") < text.index("<!-- cold:start -->")
    assert "| package import cost | <= 15 ms | +8.2 ms | met |" in text  # not measured: kept
    sqlite_rows = [r for r in text.splitlines() if r.startswith("| warm overhead, SQLite |")]
    assert len(sqlite_rows) == 1 and "old goal" not in sqlite_rows[0]  # measured: replaced
    assert not (tmp_path / "benchmarks.png").exists()  # a partial run draws no plot


def test_the_1x_comparison_writes_its_section_and_verdicts(tmp_path: Path) -> None:
    engines = [e for e in GENERAL_BACKENDS if e in ("mariadb", "postgres")]
    if not engines:
        pytest.skip("bench.onex compares server engines; none is under test")
    output = tmp_path / "benchmarks.md"
    output.write_text("# Benchmarks\n\n<!-- burst:start -->\nkept\n<!-- burst:end -->\n")
    proc = subprocess.run(
        [
            sys.executable, "-m", "bench.onex", "--invocations", "20", "--engines",
            ",".join(engines), "--database", f"{TEST_DB}_bench", "--output", str(output),
        ],
        cwd=str(ROOT), capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = output.read_text()
    assert "<!-- burst:start -->\nkept\n<!-- burst:end -->" in text
    section = text[text.index("<!-- onex:start -->") : text.index("<!-- onex:end -->")]
    (table,) = _tables(section)
    assert len(table) == 2 + 2 * len(engines)
    assert all(row.rstrip("|").rstrip().endswith("| 0") for row in table[2:])  # every one a 201
    assert section.count(": met") + section.count(": **NOT met**") == len(engines)


# -- the burst report's floors (pure: outcomes made up, no servers) -------------------------------
def _outcome(wall_s: float, work_s: float | None, *, no_limit: bool = False) -> Any:
    from bench.burst import BurstOutcome

    return BurstOutcome(
        "peewee-serverless-defaults", 200, 10, 2000, 1.0, 10, 3.0, 900.0, {201: 2000},
        wall_s, 400, work_s, 7000 if work_s is not None else None, no_limit,
    )  # fmt: skip


def test_burst_measures_sum_the_answered_invocations_work_and_refusals() -> None:
    from bench.burst import burst_measures
    from peewee_serverless.local.containers import InvocationResult

    results = [
        InvocationResult(0, 0, 201, 5.0, body=json.dumps({"id": 1, "work_ms": 2.5, "refused": 3})),
        InvocationResult(0, 1, 201, 5.0, body=json.dumps({"id": 2, "work_ms": 1.5})),
        # A failure did no work: its body (if any) is not counted.
        InvocationResult(1, 0, 503, 5.0, body=json.dumps({"work_ms": 99.0, "refused": 40})),
        InvocationResult(1, 1, None, 5.0, error="OperationalError: too many clients"),
        InvocationResult(2, 0, 201, 5.0, body="not json"),
    ]
    work_s, refused = burst_measures(results)
    assert work_s == pytest.approx(0.004)
    assert refused == 3
    # A handler that does not measure (the users service): unknown, not zero.
    assert burst_measures([InvocationResult(0, 0, 201, 5.0, body='{"id": 1}')]) == (None, None)


def test_work_floor_is_the_bursts_own_work_over_the_slots() -> None:
    from bench.burst import work_floor_s

    assert work_floor_s(_outcome(20.0, 30.0)) == pytest.approx(3.0)  # 30 s of work, 10 slots
    assert work_floor_s(_outcome(20.0, None)) is None  # not measured (the npm anchors)
    assert work_floor_s(_outcome(4.0, 30.0, no_limit=True)) is None  # no slots to divide by


def test_goal_line_judges_the_wall_against_each_floor() -> None:
    from bench.burst import NO_LIMIT, EngineRun, _goal_status, markdown

    variant = "peewee-serverless-defaults"
    run = EngineRun("postgres", 10, [1.0], {})
    run.outcomes[(20, variant)] = [_outcome(12.0, 30.0), _outcome(16.0, 40.0)]
    run.outcomes[(20, variant + NO_LIMIT)] = [_outcome(3.0, 9.0, no_limit=True)] * 2
    assert run.no_limit_wall(20, variant) == pytest.approx(3.0)
    assert run.no_limit_wall(4, variant) is None
    line = _goal_status(run)
    # Lone floor: 2000 x 1 ms / 10 = 0.2 s, so 60-80x; work floors 3-4 s, so 4.0x each;
    # no limit: 12 and 16 s over 3 s, 4.0-5.3x.
    assert "60-80x the lone-container floor of 0.20 s (**NOT met**)" in line
    assert "4.0x the burst's own work floor of 3.00-4.00 s (met)" in line
    assert "4.0-5.3x the same burst without a connection limit (3.0 s; **NOT met**)" in line
    table = [row for row in markdown([run], "cmd", 2, "versions").splitlines() if "| 20x" in row]
    assert len(table) == 2
    limited, baseline = table
    assert "| 4.0 | 4.00-5.33 | 400 | 7000 |" in limited
    # The baseline's own row has no slots to divide its work by and no baseline of its own.
    assert "no connection limit" in baseline and "| — | — | — |" in baseline
