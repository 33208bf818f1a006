"""What a SAM template says about a function: its environment, hence its database engine.

CloudFormation's short tags (``!Ref``, ``!If``, ``!Sub``...) are read as ``{"Fn::...": ...}``
with PyYAML, as cfn-lint does; a ``!Ref`` to a parameter resolves to the parameter's default.
Only what packaging needs is interpreted: ``Globals.Function`` and the function's own
``Environment.Variables``, ``Runtime``, ``Architectures`` and ``CodeUri``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ENGINES
from ..errors import PackagingError

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


def _loader() -> Any:
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def short_tag(loader: Any, suffix: str, node: Any) -> Any:
        key = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {key: value}

    Loader.add_multi_constructor("!", short_tag)
    return Loader


def _resolve(value: Any, parameters: dict[str, Any]) -> str | None:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, dict) and set(value) == {"Ref"}:
        default = parameters.get(str(value["Ref"]), {}).get("Default")
        return None if default is None else str(default)
    return None  # an expression only CloudFormation can evaluate


def _environment(props: dict[str, Any], parameters: dict[str, Any]) -> dict[str, str]:
    variables = ((props.get("Environment") or {}).get("Variables")) or {}
    out: dict[str, str] = {}
    for name, value in variables.items():
        resolved = _resolve(value, parameters)
        if resolved is not None:
            out[str(name)] = resolved
    return out


def _architecture(props: dict[str, Any], parameters: dict[str, Any]) -> str | None:
    value = props.get("Architectures")
    if isinstance(value, list) and value:
        return _resolve(value[0], parameters)
    return None


def read_template(path: str | os.PathLike[str], function_folder: Path) -> TemplateFunction:
    """The template's view of the function whose ``CodeUri`` is ``function_folder``.

    A function whose CodeUri is the folder or the folder's parent (a package-layout function)
    matches; with no match, the ``Globals`` apply alone.
    """
    template_path = Path(path).resolve()
    try:
        document = __import__("yaml").load(template_path.read_text(encoding="utf-8"), _loader())
    except OSError as exc:
        raise PackagingError(f"cannot read template {path}: {exc.strerror}") from None
    except Exception as exc:  # noqa: BLE001 - any YAML error: one line naming the file
        raise PackagingError(f"template {path} is not valid YAML: {exc}") from None
    if not isinstance(document, dict):
        raise PackagingError(f"template {path} is not a SAM template")
    parameters = document.get("Parameters") or {}
    globals_ = ((document.get("Globals") or {}).get("Function")) or {}
    environment = _environment(globals_, parameters)
    runtime = _resolve(globals_.get("Runtime"), parameters)
    architecture = _architecture(globals_, parameters)
    name = None
    folder = function_folder.resolve()
    for resource_name, resource in (document.get("Resources") or {}).items():
        if not isinstance(resource, dict) or resource.get("Type") != "AWS::Serverless::Function":
            continue
        props = resource.get("Properties") or {}
        code_uri = _resolve(props.get("CodeUri", globals_.get("CodeUri")), parameters)
        if code_uri is None:
            continue
        where = (template_path.parent / code_uri).resolve()
        if where in (folder, folder.parent):
            environment = {**environment, **_environment(props, parameters)}
            runtime = _resolve(props.get("Runtime"), parameters) or runtime
            architecture = _architecture(props, parameters) or architecture
            name = str(resource_name)
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
