"""A third-party style subcommand, to test that the CLI's COMMANDS table is pluggable."""

from __future__ import annotations

from typing import Any


def add_command(subparsers: Any) -> None:
    """Add ``hello --name NAME``: prints a greeting, exits 3 so the status is observable."""
    parser = subparsers.add_parser("hello", help="say hello (test plugin)")
    parser.add_argument("--name", required=True)
    parser.set_defaults(func=lambda args: print(f"hello {args.name}") or 3)
