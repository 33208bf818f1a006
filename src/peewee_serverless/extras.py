"""Import errors that name the extra to install.

The core install depends on Peewee alone. A module built on Powertools, pydantic or boto3 wraps
its imports in :func:`needs_extra`, so that a missing package reads "peewee_serverless.http
needs the `api` extra ...: pip install 'peewee-serverless[api]'" rather than a bare
"No module named ...". The error stays a :class:`ModuleNotFoundError` carrying the missing
module's ``name``, for callers (and ``package``'s import check) that read it. Own code: this is
wording around an ``except``, which no library provides.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["needs_extra"]


@contextlib.contextmanager
def needs_extra(module: str, extra: str, *packages: str) -> Iterator[None]:
    """Re-raise a missing top-level package among ``packages`` with the extra that brings it.

    ``extra`` may name several, comma-separated (``"api,aws"``), as pip takes them."""
    try:
        yield
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in packages:
            raise
        raise ModuleNotFoundError(
            f"{module} needs the `{extra}` extra ({exc}): pip install 'peewee-serverless[{extra}]'",
            name=exc.name,
        ) from exc
