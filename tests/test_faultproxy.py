"""The fault proxy itself: each mode does what its docstring says, on a private server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg2
import psycopg2.extras
import pymysql
import pytest

from .conftest import SERVER_BACKENDS
from .faultproxy import FaultProxy
from .servers import PrivateServer, private_server


@pytest.fixture(scope="module", params=SERVER_BACKENDS)
def server(request: pytest.FixtureRequest) -> Iterator[PrivateServer]:
    with private_server(request.param) as srv:
        yield srv


def _connect(
    server: PrivateServer, proxy: FaultProxy, timeout: float = 1.0, database: str | None = None
) -> Any:
    """A driver connection through the proxy whose every wait is bounded by ``timeout``."""
    if server.engine == "mysql":
        return pymysql.connect(
            host=proxy.host,
            port=proxy.port,
            user="root",
            database=database,
            connect_timeout=timeout,
            read_timeout=timeout,
            write_timeout=timeout,
            autocommit=True,
        )
    return psycopg2.connect(
        host=proxy.host,
        port=proxy.port,
        user="postgres",
        dbname=database or "postgres",
        connect_timeout=max(2, int(timeout)),
        options=f"-c statement_timeout={int(timeout * 1000)}",
        keepalives=1,
    )


def _select(conn: Any, value: int = 1) -> Any:
    with conn.cursor() as cur:
        cur.execute(f"SELECT {value}")
        return cur.fetchone()[0]


def _poll_readable(conn: Any) -> bool:
    import select

    fd = conn.fileno() if hasattr(conn, "fileno") else conn._sock.fileno()
    return bool(select.select([fd], [], [], 0)[0])


def test_pass_forwards(server: PrivateServer) -> None:
    with FaultProxy(server.host, server.port) as proxy:
        conn = _connect(server, proxy)
        assert _select(conn, 7) == 7
        assert proxy.connections == 1
        conn.close()


def test_blackhole_swallows_without_closing(server: PrivateServer) -> None:
    import select

    with FaultProxy(server.host, server.port) as proxy:
        conn = _connect(server, proxy)
        proxy.set_mode("blackhole")
        if server.engine == "mysql":
            with pytest.raises(pymysql.err.OperationalError) as raised:
                _select(conn)  # read_timeout ends the wait
            assert raised.value.args[0] == 2013
        else:
            # libpq has no read timeout; send asynchronously and look for an answer, bounded.
            aconn = psycopg2.connect(
                host=proxy.host, port=proxy.port, user="postgres", dbname="postgres", async_=1
            )
            proxy.set_mode("pass")
            psycopg2.extras.wait_select(aconn)
            proxy.set_mode("blackhole")
            cur = aconn.cursor()
            cur.execute("SELECT 1")
            assert select.select([aconn.fileno()], [], [], 0.5)[0] == []
            aconn.close()
        proxy.set_mode("pass")
        fresh = _connect(server, proxy)
        assert _select(fresh) == 1
        fresh.close()


def test_reset_and_half_open_look_different_to_the_client(server: PrivateServer) -> None:
    with FaultProxy(server.host, server.port) as proxy:
        reset = _connect(server, proxy)
        half = _connect(server, proxy)
        proxy.set_mode("half_open")
        assert not _poll_readable(half)  # nothing tells the client: that is the point
        proxy.set_mode("pass")
        proxy.reset()
        with pytest.raises((pymysql.err.OperationalError, psycopg2.Error)):
            _select(reset)
        proxy.set_mode("reset")
        with pytest.raises((pymysql.err.OperationalError, psycopg2.OperationalError)):
            _connect(server, proxy)


def test_delayed_greeting_outlasts_a_short_handshake_timeout(server: PrivateServer) -> None:
    with FaultProxy(server.host, server.port) as proxy:
        proxy.set_mode("delayed_greeting", seconds=3.0)
        with pytest.raises((pymysql.err.OperationalError, psycopg2.OperationalError)):
            _connect(server, proxy, timeout=0.5)
        proxy.set_mode("pass")
        conn = _connect(server, proxy)
        assert _select(conn) == 1
        conn.close()


def test_latency_delays_but_delivers(server: PrivateServer) -> None:
    with FaultProxy(server.host, server.port) as proxy:
        conn = _connect(server, proxy, timeout=5.0)
        proxy.set_mode("latency", seconds=0.05)
        assert _select(conn, 3) == 3
        conn.close()


def _insert_and_commit(server: PrivateServer, conn: Any, value: int) -> None:
    """One transaction writing ``value`` (the PyMySQL connection above autocommits: not here)."""
    if server.engine == "mysql":
        conn.autocommit(False)
    with conn.cursor() as cur:
        cur.execute(f"INSERT INTO fp_cut (id) VALUES ({value})")
    conn.commit()


def test_drop_commit_answer_commits_but_the_client_never_hears_it(server: PrivateServer) -> None:
    server.query("DROP TABLE IF EXISTS fp_cut", database=server.test_db)
    server.query("CREATE TABLE fp_cut (id INTEGER PRIMARY KEY)", database=server.test_db)

    def committed() -> list[tuple[Any, ...]]:
        return server.query("SELECT id FROM fp_cut ORDER BY id", database=server.test_db)

    with FaultProxy(server.host, server.port) as proxy:
        conn = _connect(server, proxy, timeout=5.0, database=server.test_db)
        proxy.set_mode("drop_commit_answer", after=(b"INSERT INTO fp_cut",))
        _select(conn)
        conn.commit()  # a COMMIT after no matching write: forwarded and answered
        assert proxy.cuts == 0
        with pytest.raises((pymysql.err.OperationalError, psycopg2.Error)):
            _insert_and_commit(server, conn, 1)
        assert (proxy.cuts, proxy.mode) == (1, "pass")
        # The server got the COMMIT: the row appears (the server may still be writing it).
        deadline = time.monotonic() + 10
        while committed() != [(1,)]:
            assert time.monotonic() < deadline, committed()
            time.sleep(0.05)  # polling the server's state, bounded by the deadline
        # One shot: the next transaction goes through untouched.
        again = _connect(server, proxy, timeout=5.0, database=server.test_db)
        _insert_and_commit(server, again, 2)
        again.close()
        assert committed() == [(1,), (2,)]
        assert proxy.cuts == 1


def test_drop_commit_answer_refuses_an_empty_pattern() -> None:
    proxy = FaultProxy("127.0.0.1", 9)  # never started: the argument check comes first
    with pytest.raises(ValueError, match="after"):
        proxy.set_mode("drop_commit_answer", after=(b"",))
