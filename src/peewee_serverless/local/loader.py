"""Load a Lambda handler from a ``module:function`` target, as the Lambda runtime does at init."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from importlib import import_module
from typing import Any

from ..errors import InvalidInput

__all__ = ["Handler", "TargetError", "load_handler"]

Handler = Callable[[Any, Any], Any]


class TargetError(InvalidInput):
    """The handler target is malformed, cannot be imported, or is not callable."""


def load_handler(target: str | Handler, search_path: str | None = None) -> Handler:
    """Import ``module:function`` (attribute may be dotted) and return the handler.

    ``search_path`` (default: the current directory) is put first on ``sys.path`` so a project's
    own modules import the way they would from the Lambda task root.
    """
    if callable(target):
        return target
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise TargetError(f"handler must look like 'package.module:function', got {target!r}")
    root = os.path.abspath(search_path or os.getcwd())
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        obj: Any = import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise TargetError(
                f"cannot import {module_name!r}: no module named {exc.name!r}"
            ) from exc
        raise TargetError(f"importing {module_name!r} failed: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - any init failure is reported as a bad target
        raise TargetError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise TargetError(f"{module_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise TargetError(f"{target!r} is not callable")
    return obj
