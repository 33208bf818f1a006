"""Lambda execution environments as local processes running AWS's runtime client, and their pool.

A :class:`Container` is one execution environment: a fresh ``python -S -m awslambdaric HANDLER``
process (see :class:`~.function.FunctionSpec`) with its own Runtime API endpoint
(:class:`~.runtime_api.RuntimeApiServer`). Its first invocation is *cold* (the process imports
the handler, then asks for the event); later ones are *warm*. The container enforces Lambda's
limits the way Lambda does, by ending the process:

* init (import) longer than ``init_timeout`` or an invocation past the function ``timeout``:
  the process is killed, the invocation ends as ``Sandbox.Timedout``;
* an import failure ends as the error the runtime posted to ``/init/error``
  (``Runtime.ImportModuleError``...), a process that dies as ``Runtime.ExitError``;
  either way the container is gone and the next invocation starts a new one.

:class:`ContainerPool` scales them as Lambda does for one function: up to ``concurrency``
containers; an invocation takes an idle warm one (the most recently used first), starts a new
one (cold) when all are busy and fewer than ``concurrency`` exist, otherwise waits for one (or,
with ``queue=False``, is throttled like Lambda's ``429 TooManyRequestsException``). With
``freeze`` an idle container is stopped (``SIGSTOP``) and continued (``SIGCONT``) for its next
invocation, as Lambda freezes idle environments; ``idle_timeout`` retires idle containers. Each
container is a separate process, so each keeps its own database connection.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from .function import FunctionSpec
from .runtime_api import MAX_RESPONSE_BYTES, Invocation, RuntimeApiServer, lambda_error

__all__ = ["Container", "ContainerPool", "Outcome"]

OutcomeKind = Literal["ok", "error", "timeout", "throttled"]
Log = Callable[[str], None]
_UNSET: Any = object()


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Outcome:
    """How one invocation ended.

    ``kind``: ``ok`` (``payload`` is the function's response), ``error`` (a function error:
    handler exception, init error, crash; ``error`` is Lambda's error document), ``timeout``
    (``Sandbox.Timedout``), ``throttled`` (no container could take it).
    """

    kind: OutcomeKind
    request_id: str
    payload: bytes = b""
    error: dict[str, Any] | None = None
    container: str | None = None
    cold: bool = False
    duration_ms: float = 0.0
    init_ms: float | None = None
    #: The response already decoded (in-process invocations: no JSON round trip).
    value: Any = _UNSET
    #: The handler's exception (in-process invocations), for its traceback.
    exception: BaseException | None = None

    def json(self) -> Any:
        """The response as Lambda's ``Invoke`` returns it: the payload, or the error document.

        ``ValueError`` (or ``RecursionError``) when the function's payload is not JSON.
        """
        if self.kind != "ok":
            return self.error
        if self.value is not _UNSET:
            return self.value
        return json.loads(self.payload) if self.payload else None


class Container:
    """One execution environment: an awslambdaric process and its Runtime API."""

    def __init__(self, spec: FunctionSpec, name: str, *, log: Log = _stderr) -> None:
        self.spec = spec
        self.name = name
        self.log = log
        self.invocations = 0
        self.frozen = False
        self.last_used = time.monotonic()
        self.generation = 0
        self.started_at = time.monotonic()
        self.init_ms: float | None = None
        self._exit_lock = threading.Lock()
        self._current: Invocation | None = None
        self.api = RuntimeApiServer(
            function_arn=spec.function_arn,
            timeout=spec.timeout,
            max_response_bytes=spec.max_response_bytes or MAX_RESPONSE_BYTES,
        )
        self.api.start()
        try:
            self.process = subprocess.Popen(
                spec.command(),
                env=spec.environment(self.api.address),
                cwd=spec.task_root,  # Lambda's working directory is the task root
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # our Ctrl-C is not the function's
            )
        except OSError:
            self.api.close()
            raise
        self._reader = threading.Thread(target=self._pump, name=f"{name}-logs", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    @property
    def reusable(self) -> bool:
        """Alive and initialised without error (a failed init is retried in a new container)."""
        return self.api.init_error is None and self.alive

    def _pump(self) -> None:
        """Forward the function's output (its logs) line by line; notice when the process ends."""
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            # awslambdaric separates the lines of one multi-line record with "\r".
            text = raw.decode("utf-8", "replace").rstrip("\n").replace("\r", "\n  ")
            self.log(f"[{self.name}] {text}")
        code = self.process.wait()
        current = self._current
        if current is not None:
            what = f"signal: {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
            message = f"RequestId: {current.request_id} Error: Runtime exited with error: {what}"
            current.finish(error=lambda_error("Runtime.ExitError", message))

    def invoke(self, event: bytes, *, client_context: str | None = None) -> Outcome:
        """Run one invocation to its end (result, error or timeout); the caller owns it."""
        cold = self.invocations == 0
        self.invocations += 1
        invocation = Invocation(event, client_context=client_context)
        self._current = invocation
        self.thaw()
        started = time.monotonic()
        self.api.submit(invocation)
        if not self.alive and not invocation.done:
            # The process was already gone: _pump has finished and will not report it.
            code = self.process.returncode
            message = f"RequestId: {invocation.request_id} Error: Runtime exited with error: "
            invocation.finish(error=lambda_error("Runtime.ExitError", f"{message}exit {code}"))
        if cold and not invocation.wait_delivered(self.spec.init_timeout):
            message = (
                f"RequestId: {invocation.request_id} Error: "
                f"Init phase timed out after {self.spec.init_timeout:.2f} seconds"
            )
            # Recorded before the kill, so the process's death is not reported as a crash.
            invocation.finish(error=lambda_error("Sandbox.Timedout", message))
            self.kill()
        if cold and invocation.delivered_at is not None:
            self.init_ms = (invocation.delivered_at - self.started_at) * 1000.0
        if not invocation.done:
            begun = invocation.delivered_at or started
            left = self.spec.timeout - (time.monotonic() - begun)
            if not invocation.wait(max(left, 0.0)):
                message = (
                    f"RequestId: {invocation.request_id} Error: "
                    f"Task timed out after {self.spec.timeout:.2f} seconds"
                )
                invocation.finish(error=lambda_error("Sandbox.Timedout", message))
                self.kill()  # Lambda ends the environment of a timed-out invocation
        self._current = None
        self.last_used = time.monotonic()
        ended = invocation.delivered_at or started
        duration = (time.monotonic() - ended) * 1000.0
        kind: OutcomeKind = "ok"
        if invocation.error is not None:
            kind = "timeout" if invocation.error.get("errorType") == "Sandbox.Timedout" else "error"
        return Outcome(
            kind,
            invocation.request_id,
            invocation.result or b"",
            invocation.error,
            self.name,
            cold,
            duration,
            self.init_ms if cold else None,
        )

    def freeze(self) -> None:
        """Stop the process (``SIGSTOP``), as Lambda freezes an idle environment."""
        if self.alive and not self.frozen:
            os.kill(self.pid, signal.SIGSTOP)
            self.frozen = True
            self._wait_stopped()

    def _wait_stopped(self, bound: float = 2.0) -> None:
        # SIGSTOP is delivered asynchronously; Lambda's freeze is done when it returns, so wait
        # (bounded) until the kernel reports the process stopped. Linux: /proc/<pid>/stat.
        stat = f"/proc/{self.pid}/stat"
        deadline = time.monotonic() + bound
        while time.monotonic() < deadline:
            try:
                with open(stat) as fh:
                    state = fh.read().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                return  # no /proc (not Linux) or the process is gone
            if state in ("T", "t", "Z", "X"):
                return
            time.sleep(0.001)

    def thaw(self) -> None:
        """Continue a frozen process (``SIGCONT``)."""
        if self.frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)
            self.frozen = False

    def kill(self) -> None:
        """End the environment: kill the process (frozen or not) and close its Runtime API."""
        with self._exit_lock:
            if self.alive:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)
            self.frozen = False
            self.api.close()


class ContainerPool:
    """Up to ``concurrency`` containers of one function, scaled and retired like Lambda's."""

    def __init__(
        self,
        spec: FunctionSpec,
        *,
        concurrency: int = 1,
        queue: bool = True,
        freeze: bool = False,
        idle_timeout: float | None = None,
        log: Log = _stderr,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if idle_timeout is not None and idle_timeout <= 0:
            raise ValueError(f"idle_timeout must be positive, got {idle_timeout}")
        self.spec = spec
        self.concurrency = concurrency
        self.queue = queue
        self.freeze = freeze
        self.idle_timeout = idle_timeout
        self.log = log
        self.generation = 0
        self._idle: list[Container] = []  # most recently used last
        self._count = 0  # containers alive or starting
        self._cond = threading.Condition()
        self._names = itertools.count(1)
        self._closed = False
        self._containers: set[Container] = set()
        self._reaper: threading.Thread | None = None
        if idle_timeout is not None:
            self._reaper = threading.Thread(target=self._reap, name="idle-reaper", daemon=True)
            self._reaper.start()

    # -- taking and giving back containers -----------------------------------------------------
    def _acquire(self, wait: float) -> Container | None:
        deadline = time.monotonic() + wait
        with self._cond:
            while True:
                if self._closed:
                    return None
                while self._idle:
                    container = self._idle.pop()
                    if container.reusable:
                        return container
                    self._forget(container)
                    container.kill()  # already dead or failed: only its Runtime API is left
                if self._count < self.concurrency:
                    self._count += 1
                    break
                left = deadline - time.monotonic()
                if not self.queue or left <= 0:
                    return None
                self._cond.wait(left)
        try:
            container = Container(self.spec, f"c{next(self._names)}", log=self.log)
        except BaseException:
            with self._cond:
                self._count -= 1
                self._cond.notify_all()  # waiters and the reaper share the condition
            raise
        container.generation = self.generation
        with self._cond:
            self._containers.add(container)
        return container

    def _forget(self, container: Container) -> None:
        # Called with self._cond held.
        if container in self._containers:
            self._containers.discard(container)
            self._count -= 1
        self._cond.notify_all()  # waiters and the reaper share the condition

    def _release(self, container: Container) -> None:
        retire = False
        with self._cond:
            if not container.reusable or self._closed or container.generation != self.generation:
                retire = True
                self._forget(container)
            else:
                if self.freeze:
                    container.freeze()
                self._idle.append(container)
                self._cond.notify_all()  # waiters and the reaper share the condition
        if retire:
            container.kill()

    # -- invoking ------------------------------------------------------------------------------
    def invoke(self, event: Any, *, client_context: str | None = None) -> Outcome:
        """Invoke the function once with ``event`` (JSON-serialisable, or bytes)."""
        payload = event if isinstance(event, bytes) else json.dumps(event).encode("utf-8")
        # A request may wait for a container as long as one invocation may take to finish.
        container = self._acquire(self.spec.timeout + self.spec.init_timeout)
        if container is None:
            message = "Rate Exceeded."
            return Outcome("throttled", "", error=lambda_error("TooManyRequestsException", message))
        try:
            outcome = container.invoke(payload, client_context=client_context)
        finally:
            self._release(container)
        return outcome

    # -- retiring ------------------------------------------------------------------------------
    def _reap(self) -> None:
        assert self.idle_timeout is not None
        interval = min(max(self.idle_timeout / 4, 0.05), 5.0)
        while True:
            with self._cond:
                if self._closed:
                    return
                self._cond.wait(interval)
                now = time.monotonic()
                expired = [c for c in self._idle if now - c.last_used >= self.idle_timeout]
                for container in expired:
                    self._idle.remove(container)
                    self._forget(container)
            for container in expired:
                container.kill()
                self.log(f"[{container.name}] retired after {self.idle_timeout:g}s idle")

    def restart(self) -> None:
        """Retire every container (idle ones now, busy ones when they finish): new code."""
        with self._cond:
            self.generation += 1
            idle, self._idle = self._idle, []
            for container in idle:
                self._forget(container)
        for container in idle:
            container.kill()

    @property
    def size(self) -> int:
        """Containers alive or starting."""
        with self._cond:
            return self._count

    def pids(self) -> list[int]:
        """Process ids of the containers, for tests and tools."""
        with self._cond:
            return [c.pid for c in self._containers]

    def close(self) -> None:
        """Kill every container."""
        with self._cond:
            self._closed = True
            containers = list(self._containers)
            self._idle = []
            self._cond.notify_all()
        for container in containers:
            container.kill()
