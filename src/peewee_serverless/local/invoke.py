"""Invoke a handler once with an event, like ``aws lambda invoke`` against a local function.

``peewee-serverless invoke app.module:handler --event event.json`` prints the handler's response
as JSON and exits 0. A handler exception prints Lambda's error shape
(``errorMessage``/``errorType``/``stackTrace``) and exits 1; a bad target or event file is a
one-line error and exit 2.
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

__all__ = ["add_command", "invoke", "read_event"]


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
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValueError(f"event file {path!r} is not valid JSON: {exc}") from None


def _run(args: argparse.Namespace) -> int:
    from ..cli import CommandError

    out = sys.stdout
    # What the function prints (its logs) goes to stderr, as Lambda sends it to CloudWatch and
    # not into the response: stdout carries only the response JSON, ready for a pipe.
    with contextlib.redirect_stdout(sys.stderr):
        try:
            event = read_event(args.event)
            handler = load_handler(args.handler)
        except (ValueError, TargetError) as exc:
            raise CommandError(str(exc)) from None
        try:
            response = invoke(handler, event, timeout=args.timeout)
        except Exception as exc:  # noqa: BLE001 - reported the way Lambda reports it
            traceback.print_exception(exc, file=sys.stderr)
            error = {
                "errorMessage": str(exc),
                "errorType": type(exc).__name__,
                "stackTrace": traceback.format_tb(exc.__traceback__),
            }
            print(json.dumps(error, indent=2), file=out)
            return 1
    print(json.dumps(response, indent=2, default=str), file=out)
    return 0


def add_command(subparsers: Any) -> None:
    """Add ``invoke HANDLER --event FILE [--timeout SECONDS]``."""
    parser = subparsers.add_parser(
        "invoke",
        help="call a handler once with an event and print its response",
        description="Call a Lambda handler once with a JSON event and print the response JSON.",
    )
    parser.add_argument("handler", metavar="MODULE:HANDLER", help="e.g. examples.users.app:handler")
    parser.add_argument(
        "--event", required=True, metavar="FILE", help="JSON event file, '-' for stdin"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_SECONDS,
        help="simulated Lambda timeout in seconds (default: %(default)s)",
    )
    parser.set_defaults(func=_run)
