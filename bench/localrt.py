"""Local Lambda benchmark: ``serve`` in-process and in awslambdaric containers, ``chalice local``.

Two measurements, every figure a ratio against a baseline of the same run:

1. **Throughput** (requests/s) of ``GET /users/{id}`` on a seeded SQLite file, for
   ``peewee-serverless serve`` in-process (the baseline), ``serve --zip --concurrency 2`` (the
   example's deployment zip in two awslambdaric containers) and ``chalice local`` serving a Chalice
   app that runs the same Peewee query (installed at bench time into a venv of its own under
   ``.bench/``, never into the dev environment). Each server is the real CLI in its own process;
   the client (``--clients`` threads, plain ``http.client``) runs ``--seconds`` per mode, with
   keep-alive (one connection per client) and with ``Connection: close`` (a connection per
   request). The Chalice app does less per request (no Powertools resolver, validation or
   lifecycle), so its figure is an upper bound for the server part alone.
2. **Cold start**: a container under awslambdaric from process start to the first response,
   beside the in-process cold start (a fresh ``python`` importing the handler module, then one
   invocation).

The section goes into ``docs/benchmarks.md`` between the ``localrt`` markers::

    python bench/localrt.py [--seconds 5] [--runs 5] [--output docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MARK_START = "<!-- localrt:start -->"
MARK_END = "<!-- localrt:end -->"
BENCH_DIR = ROOT / ".bench"
USERS = 50
#: Each row's load time is split into this many rounds, alternating between the rows.
ROUNDS = 5

CHALICE_APP = """
import os
import peewee
from chalice import Chalice, NotFoundError

app = Chalice(app_name="users")
db = peewee.SqliteDatabase(os.environ["BENCH_SQLITE"])


@app.route("/users/{user_id}")
def get_user(user_id):
    with db.connection_context():
        row = db.execute_sql(
            "SELECT id, name, email FROM users WHERE id = ?", (int(user_id),)
        ).fetchone()
    if row is None:
        raise NotFoundError("User not found")
    return {"id": row[0], "name": row[1], "email": row[2]}
"""


# -- set-up ------------------------------------------------------------------------------------
def seed_sqlite(path: Path) -> list[int]:
    """The example's schema (its migrations) and ``USERS`` users in a fresh SQLite file."""
    from peewee_serverless import database_from_env
    from peewee_serverless.migrate import run_migrations

    path.unlink(missing_ok=True)
    env = {"DB_ENGINE": "sqlite", "DB_NAME": str(path)}
    db = database_from_env(env)
    run_migrations(db, ROOT / "examples" / "users" / "migrations")
    with db.connection_context():
        for i in range(USERS):
            db.execute_sql(
                "INSERT INTO users (name, email, created_at) VALUES (?, ?, ?)",
                (f"User {i}", f"user{i}@example.com", "2026-01-01 00:00:00"),
            )
        ids = [r[0] for r in db.execute_sql("SELECT id FROM users").fetchall()]
    db.close()
    return ids


def build_zip(dest: Path) -> Path:
    """The example's deployment zip for this Python (the containers run it)."""
    from peewee_serverless.packaging import build_package

    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    out = dest / "function.zip"
    build_package(ROOT / "examples" / "users", out, python_version=version, extras=("api",))
    return out


def chalice_python() -> Path:
    """A venv of its own with chalice and peewee (created once under .bench/)."""
    venv = BENCH_DIR / "chalice-venv"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "chalice", "peewee"],
            check=True,
            timeout=900,
        )
    return python


def chalice_project(dest: Path) -> Path:
    project = dest / "chalice-users"
    (project / ".chalice").mkdir(parents=True, exist_ok=True)
    (project / "app.py").write_text(CHALICE_APP)
    (project / ".chalice" / "config.json").write_text(
        json.dumps({"version": "2.0", "app_name": "users", "stages": {"dev": {}}})
    )
    return project


# -- servers -----------------------------------------------------------------------------------
_URL = re.compile(r"http://(127\.0\.0\.1|localhost):(\d+)")


@contextlib.contextmanager
def running(command: list[str], env: dict[str, str], cwd: Path, port: int | None) -> Iterator[int]:
    """Start a server; yield its port once it answers; stop it. Output is drained and dropped."""
    proc = subprocess.Popen(
        command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert proc.stdout is not None
        found = port
        lines: list[str] = []
        deadline = time.monotonic() + 120
        while found is None or not _answers(found):
            if found is None:
                line = proc.stdout.readline()
                lines.append(line)
                match = _URL.search(line)
                if match:
                    found = int(match.group(2))
                elif not line and proc.poll() is not None:
                    raise RuntimeError(f"server exited: {''.join(lines)[-2000:]}")
            elif proc.poll() is not None:
                raise RuntimeError(f"server exited: {''.join(lines)[-2000:]}")
            else:
                time.sleep(0.1)  # waiting for the server to listen, bounded below
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {''.join(lines)[-2000:]}")
        stdout = proc.stdout
        threading.Thread(target=lambda: [None for _ in stdout], daemon=True).start()
        yield found
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def _answers(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/users/1")
        conn.getresponse().read()
        conn.close()
        return True
    except OSError:
        return False


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- load ----------------------------------------------------------------------------------------
def load(
    port: int, ids: list[int], seconds: float, clients: int, keep_alive: bool
) -> dict[str, Any]:
    """``clients`` threads sending GET /users/{id} for ``seconds``; requests/s and errors."""
    stop = time.monotonic() + seconds
    counts = [0] * clients
    errors = [0] * clients

    def worker(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        i = n
        while time.monotonic() < stop:
            i += 1
            headers = {} if keep_alive else {"Connection": "close"}
            try:
                conn.request("GET", f"/users/{ids[i % len(ids)]}", headers=headers)
                response = conn.getresponse()
                response.read()
                if response.status == 200:
                    counts[n] += 1
                else:
                    errors[n] += 1
            except OSError:
                errors[n] += 1
            if not keep_alive:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.close()

    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    return {
        "rps": sum(counts) / elapsed,
        "errors": sum(errors),
        "requests": sum(counts),
        "seconds": elapsed,
    }


# -- cold start ------------------------------------------------------------------------------------
INPROCESS_COLD = """
import json, sys, time
t0 = time.perf_counter()
from examples.users.app import handler
t1 = time.perf_counter()
from peewee_serverless.local.context import LambdaContext
from peewee_serverless.local.generate_event import generate_event
response = handler(generate_event("apigw-v2", path="/users/" + sys.argv[1]), LambdaContext())
t2 = time.perf_counter()
assert response["statusCode"] == 200, response
print(json.dumps({"import_ms": (t1 - t0) * 1000, "first_ms": (t2 - t0) * 1000}))
"""


def cold_inprocess(env: dict[str, str], user_id: int) -> dict[str, float]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", INPROCESS_COLD, str(user_id)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    total = (time.perf_counter() - started) * 1000
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_ms"] = total
    return result


def cold_container(spec: Any, user_id: int) -> dict[str, float]:
    from peewee_serverless.local.generate_event import generate_event
    from peewee_serverless.local.pool import ContainerPool

    pool = ContainerPool(spec, log=lambda line: None)
    try:
        started = time.perf_counter()
        outcome = pool.invoke(generate_event("apigw-v2", path=f"/users/{user_id}"))
        total = (time.perf_counter() - started) * 1000
    finally:
        pool.close()
    if outcome.kind != "ok":
        raise RuntimeError(f"cold container failed: {outcome.error}")
    return {"process_ms": total, "init_ms": outcome.init_ms or 0.0}


# -- the report ------------------------------------------------------------------------------------
def _median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def markdown(result: dict[str, Any], command: str) -> str:
    from bench.common import table

    base = {
        mode: result["throughput"]["in-process"][mode]["rps"] for mode in ("keep-alive", "close")
    }
    rows = []
    for name, modes in result["throughput"].items():
        cells = [name]
        for mode in ("keep-alive", "close"):
            r = modes.get(mode)
            if r is None:
                cells += ["n/a", ""]
            else:
                cells += [f"{r['rps']:,.0f}", f"{r['rps'] / base[mode]:.2f}x"]
        cells.append(str(sum(m["errors"] for m in modes.values())))
        rows.append(cells)
    cold = result["cold"]
    inproc_first = _median(cold["in-process"], "first_ms")

    def row(label: str, kind: str, key: str, ratio: bool = True) -> list[str]:
        ms = _median(cold[kind], key)
        return [label, f"{ms:.0f}", f"{ms / inproc_first:.2f}x" if ratio else ""]

    cold_rows = [
        row("in-process: fresh python, import handler module", "in-process", "import_ms", False),
        row("in-process: import + first invocation", "in-process", "first_ms"),
        row("in-process: whole process (interpreter start included)", "in-process", "process_ms"),
        row("awslambdaric container: start to `next` (init)", "container", "init_ms"),
        row("awslambdaric container: start to first response", "container", "process_ms"),
    ]
    chalice_note = result.get("chalice_note", "")
    lines = [
        MARK_START,
        "## 7. Local Lambda: `serve` in-process, in awslambdaric containers, and `chalice local`",
        "",
        f"Generated by `{command}`. `GET /users/{{id}}` on SQLite ({USERS} users), "
        f"{result['clients']} client threads for {result['seconds']:g} s per row and mode in "
        f"{ROUNDS} alternating rounds (Python `http.client`, on the same cores as the servers, "
        "which other work shares: expect run-to-run noise); ratios against in-process "
        "`serve` in the same mode. `--zip --concurrency 2`: the example's deployment zip in two "
        "awslambdaric processes behind the local Runtime API (one extra HTTP round trip per "
        "invocation: `next` + `response`). `chalice local`: a Chalice app with the same query "
        "but no Powertools resolver, validation or lifecycle, installed into `.bench/`'s own "
        "venv; its handler (`chalice/local.py`) writes headers and body in two writes with "
        "Nagle's algorithm on, so on a kept-alive connection the body waits for the client's "
        f"delayed ACK: hence its low keep-alive figure. {chalice_note}",
        "",
        table(
            ["server", "keep-alive req/s", "ratio", "Connection: close req/s", "ratio", "errors"],
            rows,
            "lrrrrr",
        ),
        "",
        f"Cold start, median of {result['runs']} (ms; ratio against the in-process import + first "
        "invocation). The in-process figures are a fresh `python` of the dev venv importing "
        "from the source tree; a container runs `python -S` on the unpacked zip (no scan of the "
        "dev venv's site-packages and `.pth` hooks), and its time includes the Runtime API "
        "round trips:",
        "",
        table(["what", "ms", "ratio"], cold_rows, "lrr"),
        "",
        MARK_END,
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from bench.common import write_marked_section

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="load per row and mode")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--runs", type=int, default=5, help="cold starts of each kind")
    parser.add_argument("--no-chalice", action="store_true", help="skip chalice local")
    parser.add_argument("--output", default=str(ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)

    from peewee_serverless.local.function import FunctionSpec, runtime_dir, unpack_zip

    work = Path(tempfile.mkdtemp(prefix="bench-localrt-"))
    try:
        sqlite = work / "users.sqlite3"
        ids = seed_sqlite(sqlite)
        zip_path = build_zip(work)
        env_file = work / "local.env"
        env_file.write_text(f"DB_ENGINE=sqlite\nDB_NAME={sqlite}\nPOWERTOOLS_LOG_LEVEL=WARNING\n")
        base_env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DATABASE_"))}
        base_env["PYTHONPATH"] = str(ROOT)
        app_env = {**base_env, "DB_ENGINE": "sqlite", "DB_NAME": str(sqlite)}
        app_env["POWERTOOLS_LOG_LEVEL"] = "WARNING"
        cli = [sys.executable, "-m", "peewee_serverless", "serve", "--port", "0"]
        servers: dict[str, tuple[list[str], dict[str, str], Path, int | None]] = {
            "in-process": ([*cli, "examples.users.app:handler"], app_env, ROOT, None),
            "--zip --concurrency 2": (
                [*cli, "--zip", str(zip_path), "--env-file", str(env_file), "--concurrency", "2"],
                base_env, ROOT, None,
            ),
        }  # fmt: skip
        result: dict[str, Any] = {"throughput": {}, "seconds": args.seconds}
        result["clients"], result["runs"] = args.clients, args.runs
        if not args.no_chalice:
            try:
                python = chalice_python()
                chalice_port = _free_port()
                chalice_env = {**base_env, "BENCH_SQLITE": str(sqlite)}
                chalice_env.pop("PYTHONPATH")
                chalice = python.with_name("chalice")
                command = [str(chalice), "local", "--port", str(chalice_port)]
                project = chalice_project(work)
                servers["chalice local"] = (command, chalice_env, project, chalice_port)
            except (subprocess.SubprocessError, OSError) as exc:
                result["chalice_note"] = f"(chalice could not be installed: {exc})"
        with contextlib.ExitStack() as stack:
            ports = {}
            for name, (command, env, cwd, port) in servers.items():
                print(f"[localrt] starting {name} ...", flush=True)
                ports[name] = stack.enter_context(running(command, env, cwd, port))
                load(ports[name], ids, min(1.0, args.seconds), args.clients, True)  # warm-up
            # All servers run at once and the rows alternate in short rounds, so the drift of a
            # shared machine (other work on the same cores) is spread over every row alike.
            totals: dict[tuple[str, str], list[dict[str, Any]]] = {}
            for _ in range(ROUNDS):
                for name, port in ports.items():
                    for mode in ("keep-alive", "close"):
                        part = load(
                            port, ids, args.seconds / ROUNDS, args.clients, mode == "keep-alive"
                        )
                        totals.setdefault((name, mode), []).append(part)
            for (name, mode), parts in totals.items():
                seconds = sum(p["seconds"] for p in parts)
                result["throughput"].setdefault(name, {})[mode] = {
                    "rps": sum(p["requests"] for p in parts) / seconds,
                    "errors": sum(p["errors"] for p in parts),
                }
        print("[localrt] cold starts ...", flush=True)
        task = unpack_zip(zip_path, work / "task")
        runtime = runtime_dir(work / "runtime")
        spec = FunctionSpec(
            "users.app.handler",
            task,
            runtime,
            env={"DB_ENGINE": "sqlite", "DB_NAME": str(sqlite), "POWERTOOLS_LOG_LEVEL": "WARNING"},
        )
        result["cold"] = {"in-process": [], "container": []}
        for _ in range(args.runs):  # alternated, so drift on a shared machine hits both
            result["cold"]["in-process"].append(cold_inprocess(app_env, ids[0]))
            result["cold"]["container"].append(cold_container(spec, ids[0]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    shown = "python bench/localrt.py " + " ".join(argv if argv is not None else sys.argv[1:])
    section = markdown(result, shown.strip())
    print(section)
    if not args.no_write:
        write_marked_section(Path(args.output), section, MARK_START, MARK_END)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
