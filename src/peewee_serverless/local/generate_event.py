"""``peewee-serverless generate-event``: print an API Gateway event for ``invoke``.

Like ``sam local generate-event apigateway aws-proxy`` / ``http-api-proxy``, but the event is
built by the same code that ``serve`` uses for real requests (:mod:`.events`), so what
``invoke --event`` receives is exactly what the function would get over HTTP::

    peewee-serverless generate-event apigw-v2 --method POST --path /users \\
        --json '{"name": "Ada", "email": "ada@example.com"}' > event.json
    peewee-serverless invoke examples.users.app:handler --event event.json
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .events import HttpRequest, build_event

if TYPE_CHECKING:
    import argparse

__all__ = ["KINDS", "add_arguments", "generate_event"]

#: Command-line event kind -> payload format version.
KINDS = {"apigw-v1": "v1", "apigw-v2": "v2"}
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def generate_event(
    kind: str,
    *,
    method: str = "GET",
    path: str = "/",
    headers: list[tuple[str, str]] | None = None,
    query: list[tuple[str, str]] | None = None,
    body: bytes = b"",
) -> dict[str, Any]:
    """The event for one request; ``kind`` is ``apigw-v1`` or ``apigw-v2``."""
    if kind not in KINDS:
        raise ValueError(f"event kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if not path.startswith("/"):
        raise ValueError(f"--path must start with '/', got {path!r}")
    request = HttpRequest.from_target(method, path, [("Host", "localhost"), *(headers or [])], body)
    extra = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in query or [])
    if extra:
        request.query_string = f"{request.query_string}&{extra}" if request.query_string else extra
    return build_event(request, KINDS[kind])


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip() or any(c in name for c in " \t\r\n"):
        raise ValueError(f"--header must look like 'Name: value', got {text!r}")
    return name.strip(), value.strip()


def _query(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--query must look like 'key=value', got {text!r}")
    return key, value


def _run(args: argparse.Namespace) -> int:
    from ..cli import CommandError

    try:
        headers = [_header(h) for h in args.header]
        query = [_query(q) for q in args.query]
        body = b""
        if args.json is not None:
            try:
                parsed = json.loads(args.json)
            except RecursionError:
                raise ValueError("--json is nested too deeply") from None
            except ValueError as exc:
                raise ValueError(f"--json is not valid JSON: {exc}") from None
            body = json.dumps(parsed).encode("utf-8")
            if not any(name.lower() == "content-type" for name, _ in headers):
                headers.append(("Content-Type", "application/json"))
        elif args.body is not None:
            body = args.body.encode("utf-8")
        event = generate_event(
            args.kind, method=args.method.upper(), path=args.path, headers=headers, query=query,
            body=body,
        )  # fmt: skip
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    json.dump(event, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Print an API Gateway event (REST v1 or HTTP API v2) for invoke.

    Print an API Gateway proxy event, built as serve builds them.
    """
    parser.add_argument("kind", choices=tuple(KINDS), help="apigw-v1: REST API; apigw-v2: HTTP API")
    parser.add_argument("--method", default="GET", type=str.upper, choices=_METHODS)
    parser.add_argument("--path", default="/", help="request path, may carry ?query (default: /)")
    body = parser.add_mutually_exclusive_group()
    body.add_argument("--json", metavar="JSON", help="JSON body (sets Content-Type)")
    body.add_argument("--body", metavar="TEXT", help="raw text body")
    parser.add_argument(
        "--header", action="append", default=[], metavar="'NAME: VALUE'", help="repeatable"
    )
    parser.add_argument(
        "--query", action="append", default=[], metavar="KEY=VALUE", help="repeatable"
    )
    parser.set_defaults(func=_run)
