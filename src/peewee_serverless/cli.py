"""The ``peewee-serverless`` command line.

Subcommands are pluggable: :data:`COMMANDS` maps a name to ``"module:add_arguments"`` where
``add_arguments(parser)`` adds the command's arguments and ``set_defaults(func=...)``;
``func(args)`` returns the exit status. The function's docstring is the command's help: its
first line in the list of commands, the paragraphs after it at the top of the command's own
``--help``. Modules are imported only when needed (all of them for ``--help``), so one command's
dependencies never slow down or break another.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib import import_module

from .errors import CommandError, ConfigurationError, InvalidInput, PeeweeServerlessError

__all__ = ["COMMANDS", "CommandError", "build_parser", "main"]

#: Subcommand name -> ``"module:function"`` of its ``add_arguments(parser)``.
COMMANDS: dict[str, str] = {
    "serve": "peewee_serverless.local.server:add_arguments",
    "invoke": "peewee_serverless.local.invoke:add_arguments",
    "generate-event": "peewee_serverless.local.generate_event:add_arguments",
    "idempotency-cleanup": "peewee_serverless.idempotency_table:add_arguments",
    "migrate": "peewee_serverless.migrate:add_arguments",
    "models": "peewee_serverless.introspect:add_arguments",
    "package": "peewee_serverless.packaging:add_arguments",
    "data-api": "peewee_serverless.data_api.endpoint:add_arguments",
}

PROG = "peewee-serverless"


def _resolve(ref: str) -> Callable[[argparse.ArgumentParser], None]:
    module, _, attr = ref.partition(":")
    return getattr(import_module(module), attr)


def _add_command(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
) -> None:
    # Argparse folds the docstring's line breaks and indentation into one paragraph.
    summary, _, details = (add_arguments.__doc__ or "").strip().partition("\n\n")
    parser = subparsers.add_parser(name, help=summary, description=details or summary)
    add_arguments(parser)


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
            add_arguments = _resolve(ref)
        except ImportError as exc:
            if only is not None:
                raise
            # Listing every command: one with a missing dependency must not hide the others.
            subparsers.add_parser(name, help=f"(unavailable: {exc})")
            continue
        _add_command(subparsers, name, add_arguments)
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
