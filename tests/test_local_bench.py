"""Smoke test of bench/localrt.py: it runs with tiny counts and writes its section in place.

No timing is asserted: only that both tables are there, that no request failed, and that the
rest of docs/benchmarks.md is kept.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_localrt_bench_writes_its_section_between_markers(tmp_path: Path) -> None:
    output = tmp_path / "benchmarks.md"
    output.write_text("# Benchmarks\n\nkept\n\n<!-- localrt:start -->\nold\n<!-- localrt:end -->\n")
    done = subprocess.run(
        [sys.executable, "bench/localrt.py", "--seconds", "0.3", "--runs", "1", "--no-chalice",
         "--output", str(output)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    text = output.read_text()
    assert text.startswith("# Benchmarks\n\nkept\n")
    assert "\nold\n" not in text and text.count("<!-- localrt:start -->") == 1
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    servers = {r.split("|")[1].strip(): r for r in rows}
    assert "in-process" in servers and "--zip --concurrency 2" in servers
    for name in ("in-process", "--zip --concurrency 2"):
        assert servers[name].rstrip(" |").endswith("| 0"), servers[name]  # no failed request
    assert any("awslambdaric container: start to first response" in r for r in rows)
