"""A third-party style subcommand, to test that the CLI's COMMANDS table is pluggable."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Say hello (test plugin).

    Prints a greeting and exits 3, so that the status is observable.
    """
    parser.add_argument("--name", required=True)
    parser.set_defaults(func=lambda args: print(f"hello {args.name}") or 3)
