"""A loopback TCP proxy in front of a real database server, with faults injected on demand.

The network failures a Lambda function meets — a peer that vanished without a FIN, a NAT that
forgot the flow, a slow link, a reset, an Aurora Serverless cluster resuming from pause — cannot
be produced by the servers themselves. This proxy sits between the driver and a real server
(private or shared, it only forwards bytes) and misbehaves when told to::

    from faultproxy import FaultProxy

    with FaultProxy("127.0.0.1", server_port) as proxy:
        env = {**server_env, "DB_HOST": proxy.host, "DB_PORT": str(proxy.port)}
        ...                                   # normal traffic: "pass"
        proxy.set_mode("blackhole")           # nothing arrives any more, nothing is closed
        proxy.set_mode("latency", seconds=0.3)
        proxy.set_mode("delayed_greeting", seconds=2.0)
        proxy.set_mode("drop_commit_answer", after=(b"INSERT INTO",))
        proxy.reset()                         # RST every open connection now
        proxy.set_mode("pass")

Modes (``set_mode``; they apply at once to open connections unless said otherwise):

``pass``
    forward everything (the default).
``blackhole``
    bytes in both directions are swallowed; connections stay open on both sides and new ones
    are accepted but never reach the server: a partition, a host that vanished.
``half_open``
    the server side of every connection is closed (the server ends the session), the client
    side stays open and silent: a NAT or load balancer that forgot the flow. New connections
    are accepted and never answered.
``latency``
    every chunk is delayed by ``seconds`` in each direction (order kept).
``reset``
    new connections are accepted and reset (RST) at once; :meth:`reset` also resets the open
    ones.
``delayed_greeting``
    for connections opened from now on, the server's first bytes are held ``seconds`` (MySQL's
    greeting; PostgreSQL's answer to the startup packet): a server that accepts the TCP
    connection and answers late, like an Aurora Serverless cluster resuming.
``drop_commit_answer``
    one shot: the first ``COMMIT`` a client sends after a statement containing one of ``after``
    (byte strings; default: any ``INSERT``, ``UPDATE`` or ``DELETE``) reaches the server, then
    the client's connection is reset before the answer arrives and the answer is dropped (the
    server session ends). The transaction committed and the client cannot know it: the lost
    COMMIT answer of a network failure. The proxy then goes back to ``pass``; :attr:`cuts`
    counts the cuts.

The proxy runs an asyncio loop in a daemon thread; every public method is thread-safe and
returns once the change is in effect. :attr:`connections` counts accepted client connections.
Written by hand because no maintained Python library offers a scriptable fault proxy that
runs in-process (toxiproxy is a Go server).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from typing import Any

__all__ = ["MODES", "FaultProxy"]

MODES = (
    "pass",
    "blackhole",
    "half_open",
    "latency",
    "reset",
    "delayed_greeting",
    "drop_commit_answer",
)
#: ``drop_commit_answer``'s default ``after``: the statements that write.
WRITES = (b"INSERT", b"UPDATE", b"DELETE")
_CHUNK = 65536


def _rst(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST instead of a FIN (SO_LINGER 0), as a crashed peer or middlebox does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Link:
    """One client connection and its server connection."""

    def __init__(self, client: asyncio.StreamWriter, greeting_delay: float) -> None:
        self.client = client
        self.server: asyncio.StreamWriter | None = None
        self.greeting_delay = greeting_delay
        self.tasks: list[asyncio.Task[None]] = []
        #: drop_commit_answer: the client sent an ``after`` statement / its COMMIT was cut.
        self.wrote = False
        self.cut = False


class FaultProxy:
    """A TCP proxy from ``host:port`` (a free loopback port) to ``target_host:target_port``."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, int(target_port))
        self.host = "127.0.0.1"
        self.port = 0
        self.mode = "pass"
        self.seconds = 0.0
        self.after: tuple[bytes, ...] = WRITES
        self.connections = 0
        #: COMMIT answers dropped by ``drop_commit_answer``.
        self.cuts = 0
        self._links: set[_Link] = set()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        """Listen and forward (mode ``pass``); returns once the port accepts connections."""
        self._thread.start()
        self._call(self._listen())
        return self

    def stop(self) -> None:
        """Close every connection (RST) and the listener; stop the thread."""
        if not self._thread.is_alive():
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- faults --------------------------------------------------------------------------------
    def set_mode(
        self, mode: str, seconds: float = 0.0, *, after: tuple[bytes, ...] = WRITES
    ) -> None:
        """Switch to ``mode`` (see the module docstring); ``seconds`` for latency / greeting,
        ``after`` for drop_commit_answer."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if not after or not all(isinstance(a, bytes) and a for a in after):
            raise ValueError(f"after must be non-empty byte strings, got {after!r}")
        self._call(self._set_mode(mode, float(seconds), tuple(after)))

    def reset(self) -> None:
        """Reset (RST) every open connection now; the mode is unchanged."""
        self._call(self._reset_all())

    # -- inside the loop -----------------------------------------------------------------------
    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._reset_all()
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _set_mode(self, mode: str, seconds: float, after: tuple[bytes, ...]) -> None:
        self.mode, self.seconds, self.after = mode, seconds, after
        for link in self._links:
            link.wrote = False  # drop_commit_answer looks at what is sent from now on
        if mode == "half_open":
            for link in list(self._links):
                if link.server is not None:
                    link.server.close()  # FIN to the server: it ends the session
                    link.server = None

    async def _reset_all(self) -> None:
        for link in list(self._links):
            self._drop(link)

    def _drop(self, link: _Link) -> None:
        self._links.discard(link)
        for task in link.tasks:
            task.cancel()
        _rst(link.client)
        if link.server is not None:
            _rst(link.server)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.mode == "reset":
            _rst(writer)
            return
        link = _Link(writer, self.seconds if self.mode == "delayed_greeting" else 0.0)
        self._links.add(link)
        if self.mode in ("blackhole", "half_open"):
            # Accepted, never connected onwards: swallow what the client sends.
            link.tasks.append(asyncio.ensure_future(self._pump(reader, None, link, False)))
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self._drop(link)
            return
        link.server = up_writer
        link.tasks.append(asyncio.ensure_future(self._pump(reader, up_writer, link, False)))
        link.tasks.append(asyncio.ensure_future(self._pump(up_reader, writer, link, True)))

    def _cuts_here(self, link: _Link, data: bytes) -> bool:
        """drop_commit_answer: is ``data`` (client to server) the COMMIT to cut? One shot."""
        if self.mode != "drop_commit_answer":
            return False
        if any(statement in data for statement in self.after):
            link.wrote = True
            return False
        if not (link.wrote and b"COMMIT" in data):
            return False
        self.mode = "pass"
        self.cuts += 1
        link.cut = True
        return True

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter | None,
        link: _Link,
        from_server: bool,
    ) -> None:
        first = True
        try:
            while True:
                data = await reader.read(_CHUNK)
                if not data:
                    break
                if from_server and link.cut:
                    break  # the cut COMMIT's answer: dropped, and the session ends below
                if from_server and first and link.greeting_delay > 0:
                    await asyncio.sleep(link.greeting_delay)
                first = False
                if self.mode == "latency" and self.seconds > 0:
                    await asyncio.sleep(self.seconds)
                if self.mode in ("blackhole", "half_open") or writer is None:
                    continue  # swallowed
                if from_server and link.server is None:
                    continue  # half-open: the server side is gone
                cut = not from_server and self._cuts_here(link, data)
                writer.write(data)
                await writer.drain()
                if cut:
                    _rst(link.client)  # the COMMIT is on its way; its answer never returns
                    return
        except (ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            return
        # One side ended: end the other too, unless we are pretending nothing happened.
        if self.mode in ("blackhole", "half_open"):
            return
        if link in self._links:
            self._links.discard(link)
            for other in (link.client, link.server):
                if other is not None:
                    other.close()
