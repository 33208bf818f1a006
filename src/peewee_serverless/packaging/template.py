"""What a SAM template says about a function: its environment, hence its database engine.

The file is read by :mod:`..sam_template` (shared with ``serve``/``invoke``): a ``!Ref`` to a
parameter resolves to the parameter's default, other intrinsics to nothing. Only what packaging
needs is interpreted: ``Globals.Function`` and the function's own ``Environment.Variables``,
``Runtime``, ``Architectures`` and ``CodeUri``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import sam_template as sam
from ..config import ENGINES
from ..errors import PackagingError
from ..sam_template import TemplateError

__all__ = ["ENGINE_EXTRAS", "TemplateFunction", "engine_from_environment", "read_template"]

#: Engine -> the library extra carrying its driver (None: the standard library has it).
ENGINE_EXTRAS: dict[str, str | None] = {"mysql": "mysql", "postgres": "postgres", "sqlite": None}


@dataclass(frozen=True)
class TemplateFunction:
    """The parts of a template that concern one function (or the Globals when none matched)."""

    path: Path
    environment: dict[str, str] = field(default_factory=dict)
    runtime: str | None = None
    architecture: str | None = None
    name: str | None = None


def _text(value: Any, defaults: dict[str, Any]) -> str | None:
    """A scalar setting as text; None for what only CloudFormation can evaluate."""
    value = sam.resolve(value, defaults)
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def _architecture(props: dict[str, Any], defaults: dict[str, Any]) -> str | None:
    value = sam.resolve(props.get("Architectures"), defaults)
    if isinstance(value, list) and value:
        return _text(value[0], defaults)
    return None


def read_template(path: str | os.PathLike[str], function_folder: Path) -> TemplateFunction:
    """The template's view of the function whose ``CodeUri`` is ``function_folder``.

    A function whose CodeUri is the folder or the folder's parent (a package-layout function)
    matches; with no match, the ``Globals`` apply alone.
    """
    template_path = Path(path).resolve()
    try:
        document = sam.load_template(template_path)
    except TemplateError as exc:
        raise PackagingError(str(exc)) from None
    defaults = sam.parameter_defaults(document)
    globals_ = sam.function_globals(document)
    environment = sam.environment_variables(globals_, defaults)
    runtime = _text(globals_.get("Runtime"), defaults)
    architecture = _architecture(globals_, defaults)
    name = None
    folder = function_folder.resolve()
    for logical_id, props in sam.functions(document):
        code_uri = _text(props.get("CodeUri", globals_.get("CodeUri")), defaults)
        if code_uri is None:
            continue
        where = (template_path.parent / code_uri).resolve()
        if where in (folder, folder.parent):
            environment = {**environment, **sam.environment_variables(props, defaults)}
            runtime = _text(props.get("Runtime"), defaults) or runtime
            architecture = _architecture(props, defaults) or architecture
            name = logical_id
            break
    return TemplateFunction(template_path, environment, runtime, architecture, name)


def engine_from_environment(environment: dict[str, str]) -> str | None:
    """The engine that ``database_from_env`` would pick from these variables (None: unknown)."""
    url = environment.get("DATABASE_URL", "")
    if url:
        scheme = url.split(":", 1)[0].split("+", 1)[0].lower()
        return ENGINES.get(scheme)
    engine = environment.get("DB_ENGINE", "").strip().lower()
    if engine:
        return ENGINES.get(engine)
    if environment.get("DB_HOST"):
        return "mysql"  # config's rule: a host without an engine is MySQL
    return None
