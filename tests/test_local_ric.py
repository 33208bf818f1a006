"""Lambda emulated locally: real awslambdaric processes against our Runtime API, many containers.

Every test here starts real ``python -S -m awslambdaric HANDLER`` processes (AWS's runtime
interface client from PyPI) with a task root that holds only the function's code (the example's
deployment zip, unpacked, or a few lines written by the test), and talks to them over real HTTP
through :class:`peewee_serverless.local.server.LocalServer`.
"""

from __future__ import annotations

import http.client
import json
import os
import platform
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from peewee_serverless.local.function import FunctionSpec, runtime_dir, unpack_zip
from peewee_serverless.local.pool import ContainerPool
from peewee_serverless.local.server import LocalServer, make_server
from peewee_serverless.migrate import run_migrations
from tests.conftest import EXAMPLE_MIGRATIONS, Backend

ROOT = Path(__file__).resolve().parent.parent
APP_DIR = ROOT / "examples" / "users"
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}.get(
    platform.machine().lower()
)

pytestmark = pytest.mark.skipif(
    ARCH is None or not sys.platform.startswith("linux"),
    reason="the zip holds Linux wheels; running it needs a Linux x86_64/arm64 machine",
)


# -- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def example_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example service's deployment zip, for this machine's Python (both drivers)."""
    from peewee_serverless.packaging import build_package

    out = tmp_path_factory.mktemp("dist") / "function.zip"
    build_package(
        APP_DIR,
        out,
        python_version=PYTHON,
        architecture=ARCH or "x86_64",
        extras=("api", "mysql", "postgres"),
    )
    return out


@pytest.fixture(scope="session")
def example_root(example_zip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return unpack_zip(example_zip, tmp_path_factory.mktemp("task"))


def example_handler(task_root: Path) -> str:
    """The example's handler in this zip layout (the example is a package: ``users/``)."""
    if (task_root / "users" / "app.py").exists():
        return "users.app.handler"
    return "app.handler"


@pytest.fixture(scope="session")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Lambda's /var/runtime: awslambdaric (and boto3)."""
    return runtime_dir(tmp_path_factory.mktemp("runtime"))


class Log:
    """The lines the pool and containers log, collected; wait for one with a bound."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()

    def __call__(self, line: str) -> None:
        with self._cond:
            self.lines.append(line)
            self._cond.notify_all()

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if text in line:
                        return line
                left = deadline - time.monotonic()
                assert left > 0, f"{text!r} not logged; got {self.lines[-20:]}"
                self._cond.wait(left)


Serve = Callable[..., tuple[LocalServer, ContainerPool, Log]]


@pytest.fixture
def serve(runtime: Path) -> Iterator[Serve]:
    """Start LocalServer + ContainerPool on a free port; everything is stopped afterwards."""
    running: list[tuple[LocalServer, threading.Thread]] = []

    def start(
        task_root: Path,
        handler: str,
        *,
        env: dict[str, str] | None = None,
        event_version: str = "v2",
        timeout: float = 30.0,
        **pool_options: Any,
    ) -> tuple[LocalServer, ContainerPool, Log]:
        log = Log()
        spec = FunctionSpec(
            handler, task_root, runtime, function_name="users", timeout=timeout, env=env or {}
        )
        pool = ContainerPool(spec, log=log, **pool_options)
        server = make_server(port=0, event_version=event_version, invoker=pool, log=log)
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        running.append((server, thread))
        return server, pool, log

    yield start
    for server, thread in running:
        server.shutdown()
        server.server_close()  # also kills the containers
        thread.join(timeout=10)


def request(
    server: LocalServer, method: str, path: str, body: Any = None
) -> tuple[int, Any, http.client.HTTPResponse]:
    conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=60)
    try:
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload else {}
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else None, response
    finally:
        conn.close()


def write_task(root: Path, source: str, name: str = "app.py") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(source)
    return root


PID_APP = """
import json, os, time

def handler(event, context):
    path = event.get("rawPath") or event.get("path")
    if path == "/slow":
        time.sleep(60)
    if path == "/busy":
        time.sleep(1)  # the workload: busy long enough for a second request to queue
    body = {"pid": os.getpid(), "remaining_ms": context.get_remaining_time_in_millis(),
            "function": os.environ["AWS_LAMBDA_FUNCTION_NAME"], "path": path}
    return {"statusCode": 200, "body": json.dumps(body)}
"""


def migrate(backend: Backend) -> None:
    db = backend.make_db()
    run_migrations(db, EXAMPLE_MIGRATIONS)
    db.close()


# -- the example's zip under awslambdaric ---------------------------------------------------------
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_example_zip_answers_create_duplicate_list_get(
    serve: Serve, example_root: Path, backend: Backend, version: str
) -> None:
    migrate(backend)
    env = {**backend.env, "POWERTOOLS_LOG_LEVEL": "WARNING"}
    server, pool, log = serve(example_root, example_handler(example_root), env=env,
                              event_version=version)  # fmt: skip
    status, created, _ = request(
        server, "POST", "/users", {"name": "Ada", "email": f"ada-{version}@example.com"}
    )
    assert status == 201, created
    status, duplicate, _ = request(
        server, "POST", "/users", {"name": "Ada again", "email": f"ada-{version}@example.com"}
    )
    assert status == 409, duplicate
    status, listed, _ = request(server, "GET", "/users")
    assert status == 200
    assert f"ada-{version}@example.com" in json.dumps(listed)
    status, got, _ = request(server, "GET", f"/users/{created['id']}")
    assert (status, got["name"]) == (200, "Ada")
    # One container served all four, cold then warm; each invocation logged.
    assert pool.size == 1
    assert log.wait_for("POST /users -> 201 [c1 cold")
    assert log.wait_for(f"GET /users/{created['id']} -> 200 [c1 warm")


def test_import_error_is_an_init_error_and_a_502(serve: Serve, tmp_path: Path) -> None:
    root = write_task(tmp_path / "task", "import module_that_is_not_in_the_zip\n")
    server, pool, log = serve(root, "app.handler")
    status, body, _ = request(server, "GET", "/users")
    assert status == 502
    assert body == {
        "error": "handler_error",
        "message": "Runtime.ImportModuleError: Unable to import module 'app': "
        "No module named 'module_that_is_not_in_the_zip'",
    }
    # awslambdaric's own log line, forwarded from the container, and our per-invocation line.
    assert log.wait_for("[ERROR] Runtime.ImportModuleError")
    assert log.wait_for("GET /users -> 502 [c1 cold")
    # Lambda retries the init in a new environment for the next invocation.
    status, _, _ = request(server, "GET", "/users")
    assert status == 502
    assert log.wait_for("GET /users -> 502 [c2 cold")


def test_invocation_past_timeout_is_504_and_next_request_gets_a_fresh_container(
    serve: Serve, tmp_path: Path
) -> None:
    root = write_task(tmp_path / "task", PID_APP)
    server, pool, log = serve(root, "app.handler", timeout=1.0)
    status, first, _ = request(server, "GET", "/fast")
    assert status == 200
    assert first["function"] == "users"
    assert 0 < first["remaining_ms"] <= 1000  # Lambda-Runtime-Deadline-Ms, read by awslambdaric
    status, body, _ = request(server, "GET", "/slow")
    assert status == 504
    assert body == {"error": "timeout", "message": "Task timed out after 1.00 seconds"}
    with pytest.raises(ProcessLookupError):
        os.kill(first["pid"], 0)  # the timed-out environment was ended
    status, second, _ = request(server, "GET", "/fast")
    assert status == 200
    assert second["pid"] != first["pid"]
    assert log.wait_for("GET /fast -> 200 [c2 cold")


def test_function_exception_is_lambdas_error_document(tmp_path: Path, runtime: Path) -> None:
    root = write_task(tmp_path / "task", "def handler(event, context):\n    raise KeyError('x')\n")
    pool = ContainerPool(FunctionSpec("app.handler", root, runtime), log=Log())
    try:
        outcome = pool.invoke({"any": "event"})
    finally:
        pool.close()
    assert outcome.kind == "error"
    assert outcome.error is not None
    assert outcome.error["errorType"] == "KeyError"
    assert outcome.error["errorMessage"] == "'x'"
    assert any("app.py" in line for line in outcome.error["stackTrace"])


def test_container_sees_lambdas_environment_and_not_this_tools_path(
    tmp_path: Path, runtime: Path
) -> None:
    source = (
        "import json, os, sys\n"
        "def handler(event, context):\n"
        "    try:\n        import peewee\n        found = peewee.__file__\n"
        "    except ImportError:\n        found = None\n"
        "    import boto3\n"
        "    return {'env': dict(os.environ), 'path': sys.path, 'peewee': found,\n"
        "            'boto3': boto3.__file__, 'arn': context.invoked_function_arn,\n"
        "            'client_context': context.client_context.custom}\n"
    )
    root = write_task(tmp_path / "task", source)
    spec = FunctionSpec(
        "app.handler", root, runtime, function_name="fn", memory=256, env={"MY_SETTING": "1"}
    )
    pool = ContainerPool(spec, log=Log())
    try:
        outcome = pool.invoke({}, client_context=json.dumps({"custom": {"k": "v"}}))
    finally:
        pool.close()
    assert outcome.kind == "ok", outcome.error
    seen = outcome.json()
    env = seen["env"]
    assert env["_HANDLER"] == "app.handler"
    assert env["LAMBDA_TASK_ROOT"] == str(root)
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "fn"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert env["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
    assert env["TZ"] == ":UTC"
    assert env["MY_SETTING"] == "1"
    assert env["AWS_LAMBDA_RUNTIME_API"].startswith("127.0.0.1:")
    assert seen["arn"] == "arn:aws:lambda:us-east-1:123456789012:function:fn"
    assert seen["client_context"] == {"k": "v"}
    # Peewee is installed here, but not in this task root: the function must not see it.
    assert seen["peewee"] is None
    assert seen["path"][0] == str(root)
    assert not any("site-packages" in p for p in seen["path"])
    assert Path(seen["boto3"]).is_relative_to(runtime)  # provided by the runtime, as in Lambda


# -- many containers ------------------------------------------------------------------------------
GATED_APP = """
import os, time
from {module} import handler as users_handler

def handler(event, context):
    # Hold every invocation until {count} are running at once (bounded): {count} containers.
    gate = os.environ["GATE_DIR"]
    open(os.path.join(gate, str(os.getpid())), "w").close()
    deadline = time.monotonic() + 20
    while len(os.listdir(gate)) < {count} and time.monotonic() < deadline:
        time.sleep(0.01)
    return users_handler(event, context)
"""


def _gated_root(example_root: Path, tmp_path: Path, count: int) -> Path:
    root = tmp_path / "task"
    root.mkdir()
    for entry in example_root.iterdir():
        (root / entry.name).symlink_to(entry)
    module = example_handler(example_root).rpartition(".")[0]
    (root / "gated.py").write_text(GATED_APP.format(module=module, count=count))
    (tmp_path / "gate").mkdir()
    return root


def _get_root(port: int) -> bytes:
    """The body of ``GET /`` from the server on ``port``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/")
    data = conn.getresponse().read()
    conn.close()
    return data


def _wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)  # polling a server-side condition, bounded by the deadline


@pytest.mark.slow
def test_eight_concurrent_clients_get_eight_containers_and_connections(
    serve: Serve, example_root: Path, server_backend: Backend, tmp_path: Path
) -> None:
    migrate(server_backend)
    # Sessions other fixtures of this run keep on the test database (the Data API stand-in,
    # PgBouncer) are not the containers': count only the sessions that appear from here on.
    before = server_backend.connection_ids()
    root = _gated_root(example_root, tmp_path, 8)
    env = {
        **server_backend.env,
        "GATE_DIR": str(tmp_path / "gate"),
        "POWERTOOLS_LOG_LEVEL": "ERROR",
    }
    server, pool, log = serve(root, "gated.handler", env=env, concurrency=8, idle_timeout=4.0)
    with ThreadPoolExecutor(8) as clients:
        results = list(clients.map(lambda _: request(server, "GET", "/users")[0], range(8)))
    assert results == [200] * 8
    assert pool.size == 8
    assert len(set(pool.pids())) == 8
    # Each container keeps its own connection: 8 sessions on the server.
    assert len(server_backend.connection_ids() - before) == 8
    # Retired after --idle-timeout: the processes exit and the server sees their sessions end.
    _wait_until(lambda: pool.size == 0, 30, "the idle containers to retire")
    _wait_until(lambda: not server_backend.connection_ids() - before, 30, "the sessions to close")
    assert log.wait_for("retired after 4s idle")


def test_with_the_queue_a_request_waits_for_the_busy_container(
    serve: Serve, tmp_path: Path
) -> None:
    root = write_task(tmp_path / "task", PID_APP)
    server, pool, log = serve(root, "app.handler", timeout=10.0)
    results: list[tuple[int, Any]] = []
    busy = threading.Thread(
        target=lambda: results.append(request(server, "GET", "/busy")[:2]), daemon=True
    )
    busy.start()
    _wait_until(lambda: pool.size == 1 and not pool._idle, 30, "the busy invocation to start")
    status, second, _ = request(server, "GET", "/after")
    busy.join(timeout=30)
    assert status == 200
    assert results and results[0][0] == 200
    assert second["pid"] == results[0][1]["pid"]  # the same container, after it was free
    assert pool.size == 1
    assert log.wait_for("GET /after -> 200 [c1 warm")


def test_queue_off_throttles_with_429_when_all_containers_are_busy(
    serve: Serve, tmp_path: Path
) -> None:
    root = write_task(tmp_path / "task", PID_APP)
    server, pool, _ = serve(root, "app.handler", timeout=3.0, queue=False)
    slow = threading.Thread(target=request, args=(server, "GET", "/slow"), daemon=True)
    slow.start()
    _wait_until(lambda: pool.size == 1 and not pool._idle, 30, "the slow invocation to start")
    status, body, _ = request(server, "GET", "/fast")
    assert status == 429
    assert body["error"] == "throttled"
    slow.join(timeout=30)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["mariadb", "postgres"])
def test_frozen_container_whose_connection_was_killed_answers_200(
    serve: Serve, example_root: Path, engine: str
) -> None:
    from tests.servers import private_server

    with private_server(engine) as srv:
        env = {**srv.env(), "POWERTOOLS_LOG_LEVEL": "ERROR"}
        from peewee_serverless import database_from_env

        db = database_from_env(env)
        run_migrations(db, EXAMPLE_MIGRATIONS)
        db.close()
        server, pool, _ = serve(example_root, example_handler(example_root), env=env, freeze=True)
        status, created, _ = request(server, "POST", "/users", {"name": "F", "email": "f@x.io"})
        assert status == 201, created
        (pid,) = pool.pids()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        assert state == "T"  # stopped (SIGSTOP) while idle
        if engine == "mariadb":
            sql = "SELECT id FROM information_schema.processlist WHERE db = %s"
            sessions = [r[0] for r in srv.query(sql, (srv.test_db,))]
            for session in sessions:
                srv.query(f"KILL {int(session)}")
        else:
            sql = "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
            sessions = [r[0] for r in srv.query(sql, (srv.test_db,))]
            for session in sessions:
                srv.query("SELECT pg_terminate_backend(%s)", (session,))
        assert sessions, "the frozen container held a connection"
        status, got, _ = request(server, "GET", f"/users/{created['id']}")
        assert (status, got["email"]) == (200, "f@x.io")
        assert pool.pids() == [pid]  # the same (thawed) container answered


# -- reload ----------------------------------------------------------------------------------------
def _zip_app(path: Path, message: str) -> None:
    source = (
        "import json\n"
        f"def handler(event, context):\n    return {{'statusCode': 200, 'body': {message!r}}}\n"
    )
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w") as zf:
        zf.writestr("app.py", source)
    os.replace(tmp, path)  # atomically, as a build tool writing a new zip would


def test_serve_reload_restarts_containers_when_the_zip_changes(tmp_path: Path) -> None:
    import subprocess

    zip_path = tmp_path / "function.zip"
    _zip_app(zip_path, "one")
    proc = subprocess.Popen(
        [sys.executable, "-m", "peewee_serverless", "serve", "app.handler", "--zip",
         str(zip_path), "--reload", "--port", "0"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline()
        assert " on http://127.0.0.1:" in line, line + proc.stderr.read()
        port = int(line.split("http://127.0.0.1:")[1].split()[0])
        err = ""
        while "reload: watching" not in err:  # the watcher runs from here on
            err += proc.stderr.readline()

        assert _get_root(port) == b"one"
        _zip_app(zip_path, "two")
        _wait_until(lambda: _get_root(port) == b"two", 30, "the new code to be served")
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_serve_reload_of_a_source_folder_ignores_its_own_log_file(tmp_path: Path) -> None:
    import subprocess

    (tmp_path / "app.py").write_text(
        "def handler(event, context):\n    return {'statusCode': 200, 'body': 'one'}\n"
    )
    log_path = tmp_path / "serve-log.txt"  # in the watched folder, written on every request
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "peewee_serverless", "serve", "app.handler", "--reload",
             "--port", "0"],
            cwd=tmp_path, stdout=log, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
    try:
        assert proc.stderr is not None
        err = ""
        while "reload: watching" not in err:
            line = proc.stderr.readline()
            assert line, "serve exited"
            err += line
        _wait_until(lambda: "http://127.0.0.1:" in log_path.read_text(), 30, "the ready line")
        port = int(log_path.read_text().split("http://127.0.0.1:")[1].split()[0])

        assert _get_root(port) == b"one"
        app = tmp_path / "app.py"
        before = app.stat()
        app.write_text(
            "def handler(event, context):\n    return {'statusCode': 200, 'body': 'two'}\n"
        )
        # Same size and mtime as the source the first container compiled: Python would take
        # its __pycache__ entry for this edit unless each reload gets a fresh bytecode cache.
        os.utime(app, ns=(before.st_atime_ns, before.st_mtime_ns))
        _wait_until(lambda: _get_root(port) == b"two", 30, "the new code to be served")
        _get_root(port)
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    restarts = log_path.read_text().count("restarting containers")
    assert 1 <= restarts <= 2, log_path.read_text()[-2000:]  # not one per log line written
