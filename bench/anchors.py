"""The anchors: ``serverless-mysql`` and ``serverless-postgres`` (npm) in our own bursts.

These two Node.js packages are what serverless teams use today for the problem peewee-serverless
solves (connection limits under Lambda bursts), so ``bench/burst.py`` runs them in the same burst,
against the same private server and limit, as plain Peewee and peewee-serverless.

* The packages are installed by the bench into ``bench/node/node_modules`` (``npm ci`` with the
  pinned ``bench/node/package-lock.json``), using the machine's ``node`` and ``npm``; nothing
  is installed globally and the tests never need them.
* Each container is one ``node bench/node/container.js`` process, driven exactly as
  :func:`peewee_serverless.local.containers.run_containers` drives a Python container: every
  process loads its module-level client first (cold start), all start their first invocation
  together, then each runs its invocations one after the other with the same pauses, and every
  invocation becomes an :class:`~peewee_serverless.local.containers.InvocationResult`. The work
  is the users service's ``POST /users`` (one ``INSERT`` in a transaction).
* An invocation that took longer than the function timeout counts as failed; one that has not
  answered by then is killed with its process and the container starts cold again for its next
  invocation, as Lambda does. An invocation that raised (retries exhausted) is failed too.

Why our own driver rather than ``run_containers``: that one forks Python workers; Node needs its
own process and a line protocol, the rest (timing, barrier, pauses) is the same.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import random
import shutil
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from peewee_serverless.local.containers import (
    InvocationResult,
    SimulationReport,
    drive_containers,
)

__all__ = ["ANCHORS", "NODE_DIR", "ensure_installed", "node_available", "run_node_containers"]

NODE_DIR = Path(__file__).resolve().parent / "node"
#: Anchor system -> the engine it talks to.
ANCHORS = {"serverless-mysql": "mysql", "serverless-postgres": "postgres"}
READY_TIMEOUT = 120.0
INVOKE_TIMEOUT = 120.0


def node_available() -> bool:
    """Whether ``node`` and ``npm`` are on PATH."""
    return shutil.which("node") is not None and shutil.which("npm") is not None


def ensure_installed() -> Path:
    """Install the pinned anchors into ``bench/node/node_modules`` once; the folder."""
    marker = NODE_DIR / "node_modules" / ".package-lock.json"
    if not marker.exists():
        if not node_available():
            raise RuntimeError(
                "node and npm are needed for the anchors (apt-get install nodejs npm)"
            )
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=NODE_DIR,
            check=True,
            timeout=600,
        )
    return NODE_DIR


def run_node_containers(
    system: str,
    *,
    containers: int,
    invocations: int,
    env: Mapping[str, str],
    limit: int,
    pause: float | tuple[float, float] = 0.0,
    timeout: float = 30.0,
    seed: int | None = None,
) -> SimulationReport:
    """Run ``containers`` Node processes of ``system``, each invoked ``invocations`` times."""
    if system not in ANCHORS:
        raise ValueError(f"unknown anchor {system!r}")
    ensure_installed()
    report = SimulationReport(containers=containers)
    lock = threading.Lock()
    gate = threading.Barrier(containers)
    problems: list[str] = []

    child_env = {**os.environ, **env, "ANCHOR_SYSTEM": system, "ANCHOR_LIMIT": str(limit)}

    def spawn(index: int) -> tuple[subprocess.Popen[str], queue.Queue[str]]:
        proc = subprocess.Popen(
            ["node", str(NODE_DIR / "container.js")],
            cwd=NODE_DIR,
            env={**child_env, "ANCHOR_INDEX": str(index)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        lines: queue.Queue[str] = queue.Queue()

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.put(line)
            lines.put("")  # end of output

        threading.Thread(target=pump, daemon=True).start()
        ready = lines.get(timeout=READY_TIMEOUT)
        if "ready" not in (json.loads(ready) if ready else {}):
            raise RuntimeError(f"node container {index} did not start")
        return proc, lines

    def stop(proc: subprocess.Popen[str]) -> None:
        with contextlib.suppress(OSError, ValueError):
            assert proc.stdin is not None
            proc.stdin.write("\n")
            proc.stdin.close()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()  # SIGKILL: it ends

    def drive(index: int) -> None:
        rng = random.Random(None if seed is None else seed + index)
        proc: subprocess.Popen[str] | None = None
        try:
            proc, lines = spawn(index)
            try:
                gate.wait(READY_TIMEOUT)
            except threading.BrokenBarrierError:
                return
            cold = True
            for seq in range(invocations):
                if seq and pause:
                    low, high = pause if isinstance(pause, tuple) else (pause, pause)
                    time.sleep(rng.uniform(low, high))  # the idle gap between invocations
                if proc is None:
                    # Lambda replaces an environment whose invocation timed out: a cold start.
                    proc, lines = spawn(index)
                    cold = True
                assert proc.stdin is not None
                sent = time.monotonic()
                proc.stdin.write(f"{seq}\n")
                proc.stdin.flush()
                try:
                    line = lines.get(timeout=timeout)
                except queue.Empty:
                    line = ""
                if line:
                    data = json.loads(line)
                    error = data["error"]
                    latency, started_at = data["latency_ms"], data["started"]
                    if error is None and latency > timeout * 1000:
                        error = f"Task timed out after {timeout:.0f} s"
                else:
                    error = f"Task timed out after {timeout:.0f} s"
                    latency, started_at = (time.monotonic() - sent) * 1000, sent
                    proc.kill()
                    proc.wait()  # SIGKILL: it ends
                    proc = None
                result = InvocationResult(
                    index, seq, None if error else 200, latency, error, None, cold, "", started_at
                )
                cold = False
                with lock:
                    report.results.append(result)
        except Exception as exc:  # noqa: BLE001 - collected and raised by the caller's thread
            with lock:
                problems.append(f"{type(exc).__name__}: {exc}")
            gate.abort()
        finally:
            if proc is not None:
                stop(proc)

    return drive_containers(drive, report, problems, "node simulation")


def describe(env: Mapping[str, Any] | None = None) -> str:
    """Versions of node and the anchors (for the report)."""
    versions = []
    with contextlib.suppress(Exception):
        node = subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=10)
        versions.append(f"Node.js {node.stdout.strip()}")
    for name in ANCHORS:
        with contextlib.suppress(Exception):
            data = json.loads((NODE_DIR / "node_modules" / name / "package.json").read_text())
            versions.append(f"{name} {data['version']}")
    return ", ".join(versions)
