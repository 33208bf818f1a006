"""The ``peewee-serverless`` command line.

Subcommands are pluggable: :data:`COMMANDS` maps a name to ``"module:add_command"`` where
``add_command(subparsers)`` adds its parser and ``set_defaults(func=...)``; ``func(args)`` returns
the exit status. Modules are imported only when needed (all of them for ``--help``), so one
command's dependencies never slow down or break another.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib import import_module
from typing import Any

from .errors import CommandError, ConfigurationError, InvalidInput, PeeweeServerlessError

__all__ = ["COMMANDS", "CommandError", "build_parser", "main"]

#: Subcommand name -> ``"module:function"`` of its ``add_command(subparsers)``.
COMMANDS: dict[str, str] = {
    "serve": "peewee_serverless.local.server:add_command",
    "invoke": "peewee_serverless.local.invoke:add_command",
    "generate-event": "peewee_serverless.local.generate_event:add_command",
    "idempotency-cleanup": "peewee_serverless.idempotency_table:add_command",
    "migrate": "peewee_serverless.migrate:add_command",
    "models": "peewee_serverless.introspect:add_command",
    "package": "peewee_serverless.packaging:add_command",
    "data-api": "peewee_serverless.data_api.endpoint:add_command",
}

PROG = "peewee-serverless"


def _resolve(ref: str) -> Callable[[Any], None]:
    module, _, attr = ref.partition(":")
    return getattr(import_module(module), attr)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser with every command (or just ``only``, to skip unrelated imports)."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog=PROG, description="Run and manage Peewee-backed serverless functions."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, ref in COMMANDS.items():
        if only is not None and name != only:
            continue
        try:
            add_command = _resolve(ref)
        except ImportError as exc:
            if only is not None:
                raise
            # Listing every command: one with a missing dependency must not hide the others.
            subparsers.add_parser(name, help=f"(unavailable: {exc})")
            continue
        add_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in args_list if not a.startswith("-")), None)
    try:
        parser = build_parser(first if first in COMMANDS else None)
    except ImportError as exc:
        print(f"{PROG}: error: command {first!r} is unavailable: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(args_list)
    try:
        status = args.func(args)
    except PeeweeServerlessError as exc:
        # One style for every command: one line on stderr, no traceback. A user error (a bad
        # setting, malformed input, a command's own CommandError) exits 2; the database being
        # unreachable and the like exit 1.
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        if isinstance(exc, CommandError):
            return exc.exit_code
        return 2 if isinstance(exc, (ConfigurationError, InvalidInput)) else 1
    except KeyboardInterrupt:
        return 130
    return int(status or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
