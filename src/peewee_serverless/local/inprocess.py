"""The fast local mode: the handler runs inside this process, on one invocation thread.

One thread plays one Lambda execution environment: invocations run one at a time on it, so
Peewee's per-thread connection state gives one database connection reused across warm
invocations, as in Lambda. A thread cannot be killed, so an invocation past its timeout is
*abandoned*: the caller gets ``Sandbox.Timedout`` at the deadline, the stuck thread is left to
finish (or not) in the background, and the next invocation runs on a new thread, as Lambda
would start a new environment after a timeout. Its database connection is a new one too; the
stuck thread's stays open until that thread ends. For an exact emulation (the process is
killed, its connection closed by the server) use the containers of :mod:`.pool`.
"""

from __future__ import annotations

import queue
import threading
import traceback
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from .context import DEFAULT_FUNCTION_NAME, DEFAULT_TIMEOUT_SECONDS, LambdaContext, log_stream_name
from .loader import Handler
from .pool import Outcome
from .runtime_api import lambda_error

__all__ = ["InProcessInvoker", "error_document"]

_Job = tuple[Any, LambdaContext, "Future[Any]"]


def error_document(exc: BaseException) -> dict[str, Any]:
    """Lambda's error document for a handler exception (what awslambdaric would post)."""
    return lambda_error(
        type(exc).__name__, str(exc), traceback.format_list(traceback.extract_tb(exc.__traceback__))
    )


class _InvocationThread:
    """A daemon thread running jobs from a queue until it is abandoned."""

    def __init__(self, handler: Handler, name: str) -> None:
        self.handler = handler
        self.jobs: queue.Queue[_Job | None] = queue.Queue()
        # Daemon: an abandoned, stuck invocation must not keep the tool from exiting.
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            event, context, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(self.handler(event, context))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                future.set_exception(exc)

    def abandon(self) -> None:
        """Ask the thread to stop after its current job (it may never finish it)."""
        self.jobs.put(None)


class InProcessInvoker:
    """Invoke ``handler`` in this process, one invocation at a time, with Lambda's timeout."""

    def __init__(
        self,
        handler: Handler,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        function_name: str = DEFAULT_FUNCTION_NAME,
    ) -> None:
        self.handler = handler
        self.timeout = timeout
        self.function_name = function_name
        self.log_stream = log_stream_name()
        self.environments = 1
        self._lock = threading.Lock()
        self._thread = _InvocationThread(handler, "lambda-invoke-1")
        self._warm = False

    def invoke(self, event: Any) -> Outcome:
        """Run one invocation; its exception or timeout becomes an error :class:`Outcome`."""
        import time

        # One environment: invocations queue here, each bounded by the timeout, so a waiter
        # waits at most for the ones ahead of it.
        with self._lock:
            context = LambdaContext(
                function_name=self.function_name, timeout=self.timeout, log_stream=self.log_stream
            )
            future: Future[Any] = Future()
            cold, self._warm = not self._warm, True
            name = self._thread.thread.name
            started = time.monotonic()
            self._thread.jobs.put((event, context, future))
            try:
                value = future.result(timeout=self.timeout)
            except FutureTimeout:
                self._thread.abandon()
                self.environments += 1
                self._thread = _InvocationThread(self.handler, f"lambda-invoke-{self.environments}")
                self._warm = False
                message = (
                    f"RequestId: {context.aws_request_id} Error: "
                    f"Task timed out after {self.timeout:.2f} seconds"
                )
                return Outcome(
                    "timeout",
                    context.aws_request_id,
                    error=lambda_error("Sandbox.Timedout", message),
                    container=name,
                    cold=cold,
                    duration_ms=(time.monotonic() - started) * 1000.0,
                )
            except Exception as exc:  # noqa: BLE001 - reported the way Lambda reports it
                return Outcome(
                    "error",
                    context.aws_request_id,
                    error=error_document(exc),
                    container=name,
                    cold=cold,
                    duration_ms=(time.monotonic() - started) * 1000.0,
                    exception=exc,
                )
            return Outcome(
                "ok",
                context.aws_request_id,
                container=name,
                cold=cold,
                duration_ms=(time.monotonic() - started) * 1000.0,
                value=value,
            )

    def restart(self) -> None:
        """Nothing to restart in-process (the modules stay imported)."""

    def close(self) -> None:
        self._thread.abandon()
