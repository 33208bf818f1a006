"""A container simulator: N worker processes, each a warm Lambda container invoked repeatedly.

Each container is a real process. It applies the given environment (``DB_*``), loads the
handler once (its module-level database is created there, unconnected, as on a cold start),
reports ready, and then invokes the handler each time the simulator tells it to, with a fresh
Lambda-like context. The simulator starts all containers' first invocations together (a burst
of cold starts), pauses between a container's invocations (optionally *frozen* with ``SIGSTOP``
/ ``SIGCONT``, as Lambda freezes an idle execution environment), and collects one
:class:`InvocationResult` per invocation: status code, ``Retry-After``, latency, error::

    report = run_containers(
        "examples.users.app:handler",
        containers=40,
        invocations=5,
        event="bench.burst:post_user_event",   # factory(container, seq) -> event, or a dict
        env={"DB_ENGINE": "mysql", ...},
    )
    assert report.failed == []
    print(report.success_rate, report.percentile(50), report.percentile(99))

Workers are forked from a ``forkserver`` that has imported the heavy libraries (Peewee,
drivers, Powertools, pydantic) but not the handler's module, so 40 containers start in seconds
on two cores while each still runs its own handler module initialisation with its own
environment. ``start_method="spawn"`` gives fully cold interpreters instead.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import import_module
from typing import Any

__all__ = [
    "InvocationResult",
    "SimulationReport",
    "drive_containers",
    "percentile",
    "run_containers",
]

#: Imported once by the fork server so that every container does not pay for them again.
PRELOAD = (
    "peewee",
    "pymysql",
    "psycopg2",
    "pydantic",
    "aws_lambda_powertools",
    "aws_lambda_powertools.event_handler",
    # Powertools' idempotency package imports boto3 (about half of the users example's load):
    # 200 containers importing it each do not start on two cores within READY_TIMEOUT.
    "aws_lambda_powertools.utilities.idempotency",
    "peewee_serverless",
)

#: How long a container may take to load its handler, and one invocation to answer.
READY_TIMEOUT = 120.0
INVOKE_TIMEOUT = 120.0


@dataclass(frozen=True)
class InvocationResult:
    """The outcome of one invocation of one container."""

    container: int
    seq: int
    status: int | None
    latency_ms: float
    error: str | None = None
    retry_after: str | None = None
    cold: bool = False
    body: str = ""
    #: ``time.monotonic()`` when the invocation started (one clock for all processes on Linux).
    started: float = 0.0

    @property
    def ok(self) -> bool:
        """Answered without raising and without a 5xx."""
        return self.error is None and self.status is not None and self.status < 500


@dataclass
class SimulationReport:
    """All invocations of one simulation, in completion order."""

    results: list[InvocationResult] = field(default_factory=list)
    containers: int = 0
    wall_seconds: float = 0.0
    #: How many idle gaps were spent frozen (``SIGSTOP`` ... ``SIGCONT``).
    freezes: int = 0

    @property
    def failed(self) -> list[InvocationResult]:
        """Invocations that raised or answered 5xx."""
        return [r for r in self.results if not r.ok]

    @property
    def success_rate(self) -> float:
        """Share of invocations that were :attr:`InvocationResult.ok` (1.0 for none)."""
        if not self.results:
            return 1.0
        return (len(self.results) - len(self.failed)) / len(self.results)

    def percentile(self, p: float) -> float:
        """The ``p``-th percentile of the latencies in milliseconds (nearest rank)."""
        return percentile([r.latency_ms for r in self.results], p)

    def statuses(self) -> dict[int | None, int]:
        """How many invocations ended with each status (``None``: raised)."""
        counts: dict[int | None, int] = {}
        for r in self.results:
            counts[r.status] = counts.get(r.status, 0) + 1
        return counts


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of ``values`` (0.0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


# -- inside a container ---------------------------------------------------------------------------
def _load(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    obj: Any = import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _header(response: Mapping[str, Any], name: str) -> str | None:
    for key in ("headers", "multiValueHeaders"):
        for hname, value in (response.get(key) or {}).items():
            if hname.lower() == name.lower():
                return str(value[0] if isinstance(value, list) else value)
    return None


def _container_main(conn: Any, config: dict[str, Any]) -> None:
    """A container: load the handler once, then invoke it on each request from the simulator."""
    log_path = config.get("log_path")
    target_fd = os.open(log_path or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    # The handler's logs (Powertools writes to stdout) go to the log, never into the protocol.
    os.dup2(target_fd, 1)
    os.dup2(target_fd, 2)
    os.environ.update(config["env"])
    for path in reversed(config["sys_path"]):
        if path not in sys.path:
            sys.path.insert(0, path)
    from .context import LambdaContext

    try:
        handler = _load(config["handler"])
        event_spec = config["event"]
        factory = _load(event_spec) if isinstance(event_spec, str) else None
    except Exception as exc:  # noqa: BLE001 - reported to the simulator, which fails the run
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", os.getpid()))
    index = config["index"]
    while True:
        seq = conn.recv()
        if seq is None:
            return
        event = factory(index, seq) if factory is not None else dict(event_spec)
        context = LambdaContext(function_name=config["function_name"], timeout=config["timeout"])
        started_at = time.monotonic()
        started = time.perf_counter()
        status: int | None = None
        retry_after = error = None
        body = ""
        try:
            response = handler(event, context)
            status = int(response.get("statusCode", 200))
            retry_after = _header(response, "Retry-After")
            body = str(response.get("body") or "")[:500]
        except Exception as exc:  # noqa: BLE001 - a failed invocation is a result, not a crash
            error = f"{type(exc).__name__}: {str(exc)[:300]}"
        latency = (time.perf_counter() - started) * 1000.0
        result = InvocationResult(
            index, seq, status, latency, error, retry_after, seq == 0, body, started_at
        )
        conn.send(("result", asdict(result)))


# -- the simulator --------------------------------------------------------------------------------
def _context(start_method: str) -> Any:
    ctx = multiprocessing.get_context(start_method)
    if start_method == "forkserver":
        ctx.set_forkserver_preload(list(PRELOAD))
    return ctx


def _pause_length(pause: float | tuple[float, float], rng: random.Random) -> float:
    if isinstance(pause, tuple):
        return rng.uniform(pause[0], pause[1])
    return float(pause)


def run_containers(
    handler: str,
    *,
    containers: int,
    invocations: int,
    event: str | Mapping[str, Any],
    env: Mapping[str, str] | None = None,
    pause: float | tuple[float, float] = 0.0,
    freeze: bool = False,
    timeout: float = 30.0,
    function_name: str = "users",
    start_method: str = "forkserver",
    sys_path: Sequence[str] | None = None,
    log_path: str | None = None,
    on_result: Callable[[InvocationResult], None] | None = None,
    seed: int | None = None,
) -> SimulationReport:
    """Run ``containers`` processes, each invoking ``handler`` ``invocations`` times.

    ``event`` is a proxy event (dict) or a ``module:function`` factory ``f(container, seq)``.
    ``env`` is added to each container's environment. ``pause`` (seconds, or a ``(low, high)``
    range) separates a container's invocations; with ``freeze`` the container is stopped
    (``SIGSTOP``) for the pause and continued (``SIGCONT``) after it. ``timeout`` is the
    simulated Lambda timeout (``context.get_remaining_time_in_millis()``). ``on_result`` is
    called (in a simulator thread) for every result as it arrives.
    """
    if containers < 1 or invocations < 0:
        raise ValueError("need containers >= 1 and invocations >= 0")
    ctx = _context(start_method)
    paths = list(sys_path) if sys_path is not None else [os.getcwd()]
    report = SimulationReport(containers=containers)
    lock = threading.Lock()
    start_gate = threading.Barrier(containers)
    problems: list[str] = []

    def drive(index: int) -> None:
        parent, child = ctx.Pipe()
        config = {
            "index": index,
            "handler": handler,
            "event": event if isinstance(event, str) else dict(event),
            "env": dict(env or {}),
            "sys_path": paths,
            "log_path": log_path,
            "timeout": timeout,
            "function_name": function_name,
        }
        proc = ctx.Process(target=_container_main, args=(child, config), daemon=True)
        proc.start()
        child.close()
        rng = random.Random(None if seed is None else seed + index)
        try:
            if not parent.poll(READY_TIMEOUT):
                raise RuntimeError(f"container {index} did not load its handler in time")
            kind, payload = parent.recv()
            if kind != "ready":
                raise RuntimeError(f"container {index} failed to load the handler: {payload}")
            try:
                start_gate.wait(READY_TIMEOUT)
            except threading.BrokenBarrierError:
                with lock:
                    # Broken by another container's failure (already listed), or timed out:
                    # the containers did not all load in time. Never an empty, "clean" report.
                    if not problems:
                        problems.append(
                            f"the containers did not all load their handler within "
                            f"{READY_TIMEOUT:g} s of each other (simultaneous start not reached)"
                        )
                return
            for seq in range(invocations):
                if seq and pause:
                    gap = _pause_length(pause, rng)
                    if freeze and proc.pid is not None:
                        os.kill(proc.pid, signal.SIGSTOP)
                        with lock:
                            report.freezes += 1
                        try:
                            time.sleep(gap)  # the simulated idle gap of a frozen container
                        finally:
                            os.kill(proc.pid, signal.SIGCONT)
                    else:
                        time.sleep(gap)  # the simulated idle gap between invocations
                parent.send(seq)
                if not parent.poll(INVOKE_TIMEOUT):
                    raise RuntimeError(f"container {index} invocation {seq} did not answer")
                kind, payload = parent.recv()
                result = InvocationResult(**payload)
                with lock:
                    report.results.append(result)
                if on_result is not None:
                    on_result(result)
        except Exception as exc:  # noqa: BLE001 - collected and raised by the caller's thread
            with lock:
                problems.append(f"{type(exc).__name__}: {exc}")
            start_gate.abort()
        finally:
            with contextlib.suppress(OSError):
                parent.send(None)
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join(10)
            parent.close()

    return drive_containers(drive, report, problems)


def drive_containers(
    drive: Callable[[int], None],
    report: SimulationReport,
    problems: Sequence[str],
    what: str = "simulation",
) -> SimulationReport:
    """Run ``drive(index)`` for each of ``report.containers`` containers, each in its own thread,
    all at once; time the whole into ``report.wall_seconds``. ``drive`` lists what went wrong in
    ``problems``: the first of them is raised (``RuntimeError``, saying ``what`` failed).

    :func:`run_containers` drives Python workers this way; ``bench/anchors.py`` Node processes.
    """
    started = time.perf_counter()
    threads = [
        threading.Thread(target=drive, args=(i,), name=f"container-{i}", daemon=True)
        for i in range(report.containers)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report.wall_seconds = time.perf_counter() - started
    if problems:
        raise RuntimeError(f"{what} failed: {problems[0]} ({len(problems)} problems)")
    return report
