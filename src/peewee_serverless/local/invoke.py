"""Invoke a function once with an event, like ``aws lambda invoke`` against a local function.

``peewee-serverless invoke app.module:handler --event event.json`` prints the handler's response
as JSON and exits 0. A function error (exception, failed init, timeout) prints Lambda's error
document (``errorMessage``/``errorType``/``stackTrace``) and exits 1; a bad target, zip or event
file is a one-line error and exit 2. ``--zip dist/function.zip`` runs the deployment zip in a
fresh ``awslambdaric`` process against a local Runtime API (see :mod:`.launch`).
"""

from __future__ import annotations

import contextlib
import json
import sys
import traceback
from typing import TYPE_CHECKING, Any

from .context import DEFAULT_TIMEOUT_SECONDS, LambdaContext
from .loader import Handler, TargetError, load_handler

if TYPE_CHECKING:
    import argparse

__all__ = ["add_arguments", "invoke", "read_event"]


def invoke(
    target: str | Handler,
    event: Any,
    *,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    context: Any = None,
) -> Any:
    """Call the handler ``target`` (``module:function`` or a callable) with ``event``.

    A fresh :class:`LambdaContext` is made unless ``context`` is given. Returns whatever the
    handler returns (a response dict for API Gateway handlers); its exceptions propagate.
    """
    handler = load_handler(target)
    return handler(event, context or LambdaContext(timeout=timeout))


def read_event(path: str) -> Any:
    """The JSON event in file ``path`` (``-`` for stdin); ValueError with a readable message."""
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
    except OSError as exc:
        raise ValueError(f"cannot read event file {path!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"event file {path!r} is not UTF-8: {exc.reason}") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError(f"event file {path!r} is nested too deeply") from None
    except ValueError as exc:
        raise ValueError(f"event file {path!r} is not valid JSON: {exc}") from None


def _print_json(value: Any, out: Any) -> None:
    try:
        text = json.dumps(value, indent=2, default=str)
    except RecursionError:
        error = {"errorType": "Runtime.MarshalError", "errorMessage": "nested too deeply"}
        text = json.dumps(error)
    print(text, file=out)


def _run(args: argparse.Namespace) -> int:
    from ..cli import CommandError
    from .launch import LaunchError, launch

    out = sys.stdout
    # What the function prints (its logs) goes to stderr, as Lambda sends it to CloudWatch and
    # not into the response: stdout carries only the response JSON, ready for a pipe.
    with contextlib.redirect_stdout(sys.stderr), contextlib.ExitStack() as stack:
        from .server import _exit_on_sigterm

        _exit_on_sigterm(stack)
        try:
            event = read_event(args.event)
            launched = launch(args, stack, log=lambda line: print(line, file=sys.stderr))
            if launched.runtime == "ric":
                # Serialised here, so an unserialisable event is the user's error, not a crash.
                event = json.dumps(event).encode("utf-8")
        except RecursionError:
            raise CommandError(f"event file {args.event!r} is nested too deeply") from None
        except (ValueError, TargetError, LaunchError) as exc:
            raise CommandError(str(exc)) from None
        outcome = launched.invoker.invoke(event)
        state = "cold" if outcome.cold else "warm"
        init = f" init {outcome.init_ms:.1f} ms" if outcome.init_ms is not None else ""
        print(
            f"REPORT RequestId: {outcome.request_id} [{outcome.container} {state}{init}] "
            f"Duration: {outcome.duration_ms:.1f} ms Status: {outcome.kind}",
            file=sys.stderr,
        )
        if outcome.kind == "ok":
            try:
                _print_json(outcome.json(), out)
            except (ValueError, RecursionError):
                print(outcome.payload.decode("utf-8", "replace"), file=out)
            return 0
        if outcome.exception is not None:
            traceback.print_exception(outcome.exception, file=sys.stderr)
        _print_json(outcome.error, out)
        return 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Call a function once with an event and print its response.

    Call a Lambda function once with a JSON event and print the response JSON (or Lambda's error
    document, exit 1). In this process by default; with --zip or --runtime ric in a fresh
    awslambdaric process, as Lambda runs it.
    """
    from .launch import add_function_arguments

    add_function_arguments(parser)
    parser.add_argument(
        "--event", required=True, metavar="FILE", help="JSON event file, '-' for stdin"
    )
    parser.set_defaults(func=_run)
