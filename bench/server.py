"""Scenario 5: throughput and latency of ``peewee-serverless serve`` on SQLite.

The real CLI (``peewee-serverless serve examples.users.app:handler --port 0``) runs in its own
process on a seeded SQLite file; readiness is its "Serving ... on URL" line; its stdout (the
Powertools log lines) is read and discarded by a thread. The load generator runs in a second
process: ``wrk`` when installed (Debian package ``wrk``), otherwise a small Python keep-alive
client (``python -m bench.server --child``). Each concurrency level runs for a fixed time on
``GET /users/{id}`` over the seeded ids.

Baseline: the same handler called in-process (event -> response, no HTTP) on the same database,
as invocations per second (1 / mean).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bench.common import (
    ROOT,
    Budget,
    Section,
    Stats,
    Target,
    child_environ,
    fmt_ms,
    fmt_ratio,
    get_user_event,
    prepare_database,
    ratio,
    run_child,
    scenario_main,
    table,
    user_ids,
    write_result,
)

RPS_TARGET = 1000.0
_READY = re.compile(r"on (http://\S+)")


@contextlib.contextmanager
def running_server(env: dict[str, str]) -> Iterator[str]:
    """Start ``peewee-serverless serve`` on a free port; yield its URL; stop it."""
    cli = Path(sys.executable).with_name("peewee-serverless")
    command = [str(cli)] if cli.exists() else [sys.executable, "-m", "peewee_serverless"]
    proc = subprocess.Popen(
        [*command, "serve", "examples.users.app:handler", "--port", "0"],
        env=child_environ(env),
        cwd=str(ROOT),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the ready line (blocks until the server listens)
        match = _READY.search(line)
        if not match:
            err = proc.stderr.read() if proc.poll() is not None and proc.stderr else ""
            raise RuntimeError(f"serve did not start: {line!r} {err[-2000:]}")
        stdout = proc.stdout

        def drain() -> None:  # the log lines: consumed so the pipe never fills, then dropped
            while stdout.read(65536):
                pass

        threading.Thread(target=drain, daemon=True).start()
        yield match.group(1)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


# -- load generators ------------------------------------------------------------------------------
_WRK_LUA = """
local ids = {%s}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", "/users/" .. ids[(i %% #ids) + 1])
end
"""


def _wrk_ms(text: str) -> float:
    number = re.match(r"[\d.]+", text)
    if number is None:  # wrk prints "-nan" when a (very short) run recorded no latency
        return float("nan")
    value = float(number.group(0))
    if text.endswith("us"):
        return value / 1000.0
    if text.endswith("ms"):
        return value
    if text.endswith("s"):
        return value * 1000.0
    return value


def load_wrk(url: str, ids: Sequence[int], seconds: float, concurrency: int) -> dict[str, Any]:
    """Drive the server with ``wrk`` (one thread, ``concurrency`` keep-alive connections)."""
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(_WRK_LUA % ",".join(str(i) for i in ids))
        script = f.name
    try:
        out = subprocess.run(
            [
                "wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s",
                "--latency", "-s", script, url,
            ],
            capture_output=True, text=True, timeout=seconds + 60, check=True,
        ).stdout  # fmt: skip
    finally:
        os.unlink(script)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"50%\s+(\S+)", out)
    p99 = re.search(r"99%\s+(\S+)", out)
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {
        "tool": "wrk",
        "rps": rps,
        "p50": _wrk_ms(p50.group(1)) if p50 else float("nan"),
        "p99": _wrk_ms(p99.group(1)) if p99 else float("nan"),
        "requests": total,
        "non_2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(0) if errors else "",
    }


def python_client(argv: Sequence[str]) -> int:
    """The fallback load generator: ``concurrency`` threads, one keep-alive connection each."""
    import http.client
    from urllib.parse import urlsplit

    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--ids", required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--result", required=True)
    args = parser.parse_args(argv)
    parts = urlsplit(args.url)
    ids = args.ids.split(",")
    latencies: list[list[float]] = [[] for _ in range(args.concurrency)]
    non_2xx = [0] * args.concurrency
    deadline = time.perf_counter() + args.seconds

    def worker(n: int) -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        k = n
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            conn.request("GET", f"/users/{ids[k % len(ids)]}")
            response = conn.getresponse()
            response.read()
            latencies[n].append(time.perf_counter() - started)
            non_2xx[n] += not 200 <= response.status < 400
            k += args.concurrency
        conn.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(args.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    flat = [x for lat in latencies for x in lat]
    stats = Stats.of(flat)
    write_result(
        args.result,
        {
            "tool": "python http.client",
            "rps": len(flat) / elapsed,
            "p50": stats.median,
            "p99": stats.p99,
            "requests": len(flat),
            "non_2xx": sum(non_2xx),
            "socket_errors": "",
        },
    )
    return 0


def load(url: str, ids: Sequence[int], seconds: float, concurrency: int) -> dict[str, Any]:
    """``wrk`` when installed, else the Python client, in a second process."""
    if shutil.which("wrk"):
        return load_wrk(url, ids, seconds, concurrency)
    args = ["--url", url, "--ids", ",".join(map(str, ids)), "--seconds", str(seconds)]
    result: dict[str, Any] = run_child(
        "bench.server", [*args, "--concurrency", str(concurrency)], timeout=seconds + 120
    )
    return result


# -- the in-process baseline ----------------------------------------------------------------------
def inprocess(argv: Sequence[str]) -> int:
    """Child: call the example handler in-process (event -> response) N times."""
    import examples.users.app as example
    from bench.warm import invoke_timed

    parser = argparse.ArgumentParser()
    parser.add_argument("--inprocess", action="store_true")
    parser.add_argument("--ids", required=True)
    parser.add_argument("--invocations", type=int, required=True)
    parser.add_argument("--result", required=True)
    args = parser.parse_args(argv)
    events = [get_user_event(int(i)) for i in args.ids.split(",")]
    for i in range(50):
        invoke_timed(example.handler, events[i % len(events)])
    samples, bad = [], 0
    for i in range(args.invocations):
        elapsed, status = invoke_timed(example.handler, events[i % len(events)])
        samples.append(elapsed)
        bad += status != 200
    write_result(args.result, {"stats": Stats.of(samples).as_dict(), "non_2xx": bad})
    return 0


def child(argv: Sequence[str]) -> int:
    """Dispatch the two kinds of child."""
    if "--inprocess" in argv:
        return inprocess(argv)
    return python_client(argv)


# -- the parent side ------------------------------------------------------------------------------
def collect(budget: Budget, database: str) -> dict[str, Any]:
    """In-process baseline, then the server under each concurrency level."""
    env = prepare_database("sqlite", database)
    ids = user_ids("sqlite", database)
    base = run_child(
        "bench.server",
        [
            "--inprocess",
            "--ids",
            ",".join(map(str, ids)),
            "--invocations",
            str(budget.inprocess_invocations),
        ],
        env,
    )
    levels = {}
    with running_server(env) as url:
        load(url, ids, min(1.0, budget.server_seconds), 1)  # warm-up: imports, first requests
        for c in budget.server_concurrency:
            levels[str(c)] = load(url, ids, budget.server_seconds, c)
    return {"inprocess": base, "levels": levels}


def report(result: dict[str, Any]) -> Section:
    """Table, plot data and the throughput target."""
    base = Stats.from_dict(result["inprocess"]["stats"])
    base_rps = 1000.0 / base.mean
    rows = [
        [
            "handler in-process, event -> response (baseline)",
            "—",
            f"{base_rps:.0f}",
            "1.00x",
            fmt_ms(base.median),
            fmt_ms(base.p99),
            base.n,
            result["inprocess"]["non_2xx"],
        ]
    ]
    best = 0.0
    tool = ""
    for c, r in result["levels"].items():
        tool = r["tool"]
        best = max(best, r["rps"])
        rows.append(
            [
                f"`peewee-serverless serve` over HTTP ({r['tool']})",
                c,
                f"{r['rps']:.0f}",
                fmt_ratio(ratio(r["rps"], base_rps)),
                fmt_ms(r["p50"]),
                fmt_ms(r["p99"]),
                r["requests"],
                r["non_2xx"],
            ]
        )
    body = (
        "`GET /users/{id}` on SQLite through the example handler. The server is the real CLI in "
        "its own process (one invocation thread, like one Lambda execution environment); the "
        f"load generator ({tool}) is a second process on the same 2 cores, keep-alive "
        "connections. Baseline: the same handler called in-process.\n\n"
        + table(
            [
                "what",
                "connections",
                "requests/s",
                "vs in-process",
                "p50 ms",
                "p99 ms",
                "requests",
                "non-2xx",
            ],
            rows,
            "lrrrrrrr",
        )
    )
    target = Target(
        "local server throughput (SQLite)",
        f">= {RPS_TARGET:.0f} requests/s for GET /users/{{id}}",
        f"{best:.0f} requests/s (best level; in-process {base_rps:.0f}/s)",
        best >= RPS_TARGET,
    )
    plot = {"inprocess": base_rps, "levels": {c: r["rps"] for c, r in result["levels"].items()}}
    return Section("server", "5. Local server throughput", body, plot, [target])


def run(budget: Budget, engines: Sequence[str], database: str) -> Section:
    """Scenario 5 end to end (SQLite only)."""
    return report(collect(budget, database))


if __name__ == "__main__":
    scenario_main(child)
