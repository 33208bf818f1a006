"""Scale-to-zero resume: the first connection to a paused Aurora Serverless cluster answers late.

A paused Aurora Serverless v2 instance accepts the TCP connection and starts resuming; the
server's first bytes (MySQL's greeting, PostgreSQL's answer to the startup packet) come only
once it is up, seconds later. :class:`tests.faultproxy.FaultProxy` in ``delayed_greeting`` mode
does exactly that in front of a PRIVATE server. The users service (a fresh container: no
connection yet) is invoked through it with a Lambda context:

* with enough time left (delay 6 s, ``DB_CONNECT_TIMEOUT=10``, a 15 s invocation) the
  invocation waits for the greeting, connects and answers from the database;
* with too little (delay 20 s, a 4 s invocation) it answers 503 with ``Retry-After`` before its
  deadline, and when it returns, no socket of its connect attempts is still open.

Nothing may hang: each invocation runs in a thread that must end within its Lambda timeout plus
a margin, or the test fails.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from peewee_serverless.local.context import LambdaContext
from peewee_serverless.local.events import HttpRequest, build_event

from .conftest import SELECTED, Backend, UsersService, load_users_service
from .faultproxy import FaultProxy
from .servers import PrivateServer, private_server

ENGINES = [e for e in ("mariadb", "postgres") if e in SELECTED]
#: How long past its Lambda timeout an invocation may run before the test calls it hung.
HANG_MARGIN = 30.0

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=ENGINES)
def server(request: pytest.FixtureRequest) -> Iterator[PrivateServer]:
    with private_server(request.param) as srv:
        yield srv


@pytest.fixture
def proxy(server: PrivateServer) -> Iterator[FaultProxy]:
    with FaultProxy(server.host, server.port) as fault_proxy:
        yield fault_proxy


def _service(
    server: PrivateServer,
    proxy: FaultProxy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    **settings: str,
) -> UsersService:
    """A fresh container of the users service whose database is behind ``proxy``."""
    env = {**server.env(), "DB_HOST": proxy.host, "DB_PORT": str(proxy.port), **settings}
    backend = Backend(server.engine, server.engine, env, tmp_path)
    service = load_users_service(backend, monkeypatch)  # migrates through the proxy ("pass")
    service.db.close()  # a new container: it has no connection yet
    return service


def _invoke(service: UsersService, timeout: float) -> tuple[dict[str, Any], LambdaContext]:
    """``GET /users/1`` in a thread with a ``timeout``-second Lambda context; fail if it hangs."""
    context = LambdaContext(timeout=timeout)
    event = build_event(HttpRequest.from_target("GET", "/users/1", [], b""), "v2")
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["response"] = service.invoke(event, context)
            outcome["remaining_ms"] = context.get_remaining_time_in_millis()
            # Peewee's connection state is per thread: ask in the invocation's thread.
            outcome["closed"] = service.db.is_closed()
        except BaseException as exc:  # noqa: BLE001 - reported below
            outcome["error"] = exc

    worker = threading.Thread(target=run, name="invocation", daemon=True)
    worker.start()
    worker.join(timeout + HANG_MARGIN)
    assert not worker.is_alive(), "the invocation hung past its Lambda timeout"
    assert "error" not in outcome, outcome.get("error")
    return outcome["response"], outcome


def _body(response: dict[str, Any]) -> Any:
    text = response.get("body") or "null"
    if response.get("isBase64Encoded"):
        text = base64.b64decode(text).decode()
    return json.loads(text)


def _sockets_to(port: int) -> list[str]:
    """This process's TCP sockets connected (or connecting) to 127.0.0.1:``port`` (from /proc)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote, state, inode = fields[2], fields[3], fields[9]
        # State 0A is LISTEN, 06 TIME_WAIT, 07 CLOSE: not an open connection of ours.
        if inode in inodes and int(remote.split(":")[1], 16) == port and state not in ("0A", "07"):
            found.append(line.strip())
    return found


def test_resuming_server_with_enough_time_connects_and_answers(
    server: PrivateServer, proxy: FaultProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = _service(server, proxy, tmp_path, monkeypatch, DB_CONNECT_TIMEOUT="10")
    proxy.set_mode("delayed_greeting", seconds=6.0)
    before = proxy.connections
    response, outcome = _invoke(service, timeout=15.0)
    # 404 "User not found" is an answer from the database (the table is empty).
    assert response["statusCode"] == 404, response
    assert _body(response)["message"] == "User not found"
    assert outcome["remaining_ms"] > 0  # answered before its deadline
    assert proxy.connections - before == 1  # one connect, which waited for the greeting
    assert outcome["closed"] is False  # kept for the next warm invocation


def test_resuming_server_with_too_little_time_answers_503_before_the_deadline(
    server: PrivateServer,
    proxy: FaultProxy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service = _service(server, proxy, tmp_path, monkeypatch)  # default DB_CONNECT_TIMEOUT (5 s)
    proxy.set_mode("delayed_greeting", seconds=20.0)
    response, outcome = _invoke(service, timeout=4.0)
    assert response["statusCode"] == 503, response
    headers = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
    assert int(headers["retry-after"]) >= 1
    assert _body(response)["error"] == "database_unavailable"
    assert outcome["remaining_ms"] > 0, "answered after the invocation's deadline"
    # No connect attempt outlives the invocation: none of its sockets is still open.
    assert _sockets_to(proxy.port) == []
    assert outcome["closed"] is True

    # The cluster is up again: the next invocation connects at once and answers.
    proxy.set_mode("pass")
    response, _ = _invoke(service, timeout=4.0)
    assert response["statusCode"] == 404, response


def test_the_socket_probe_sees_an_open_connection(proxy: FaultProxy) -> None:
    """The check above is real: a connection this process holds to the proxy is seen."""
    sock = socket.create_connection((proxy.host, proxy.port), timeout=5)
    try:
        assert len(_sockets_to(proxy.port)) == 1
    finally:
        sock.close()
    assert _sockets_to(proxy.port) == []
