"""Reading a SAM ``template.yaml``: one loader for ``serve``/``invoke`` and for ``package``.

Why this exists: PyYAML's safe loader rejects CloudFormation's short tags (``!Ref``, ``!Sub``,
``!GetAtt``...), and both the local runtime (:mod:`.local.template`: handler, timeout, memory,
environment, API type) and the packaging step (:mod:`.packaging.template`: environment, runtime,
architecture) read the same file. Short tags are read as their long form (``!Ref X`` ->
``{"Ref": "X"}``, ``!Sub s`` -> ``{"Fn::Sub": "s"}``), as cfn-lint reads them, so a template
written either way looks the same. Only what a machine without CloudFormation can know is
resolved: a ``Ref`` to a parameter gives the parameter's ``Default``; every other intrinsic
resolves to None, and each caller says what None means for it.

A development tool (PyYAML comes with the ``local`` and ``package`` extras): never in a
function zip.
"""

from __future__ import annotations

import os
from typing import Any

from .errors import InvalidInput

__all__ = [
    "FUNCTION_TYPE",
    "TemplateError",
    "environment_variables",
    "function_globals",
    "functions",
    "load_template",
    "parameter_defaults",
    "resolve",
]

FUNCTION_TYPE = "AWS::Serverless::Function"


class TemplateError(InvalidInput):
    """The template cannot be read or does not describe the function asked for."""


def _loader() -> tuple[Any, Any]:
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML comes with the `local` and `package` extras
        raise TemplateError(
            "reading template.yaml needs PyYAML: pip install 'peewee-serverless[local]' "
            "(or [package])"
        ) from None

    class Loader(yaml.SafeLoader):
        pass

    def short_tag(loader: Any, suffix: str, node: Any) -> dict[str, Any]:
        key = suffix if suffix in ("Ref", "Condition") else f"Fn::{suffix}"
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {key: value}

    Loader.add_multi_constructor("!", short_tag)
    return yaml, Loader


def load_template(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The template at ``path`` as a mapping (short tags in their long form), or a one-line
    :class:`TemplateError` naming the file."""
    yaml, loader = _loader()
    try:
        with open(path, encoding="utf-8") as fh:
            document = yaml.load(fh, Loader=loader)  # noqa: S506 - a SafeLoader subclass
    except OSError as exc:
        raise TemplateError(f"cannot read template {path}: {exc.strerror or exc}") from None
    except (yaml.YAMLError, RecursionError, UnicodeDecodeError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise TemplateError(f"template {path} is not valid YAML: {first}") from None
    if not isinstance(document, dict):
        raise TemplateError(f"template {path} is not a SAM template")
    return document


def parameter_defaults(document: dict[str, Any]) -> dict[str, Any]:
    """Parameter name -> its ``Default`` (None without one)."""
    return {
        str(name): spec.get("Default")
        for name, spec in (document.get("Parameters") or {}).items()
        if isinstance(spec, dict)
    }


def function_globals(document: dict[str, Any]) -> dict[str, Any]:
    """``Globals.Function``: the properties every function has unless it says otherwise."""
    found = (document.get("Globals") or {}).get("Function")
    return found if isinstance(found, dict) else {}


def functions(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every ``AWS::Serverless::Function`` as (logical id, its ``Properties``), in order."""
    return [
        (str(logical_id), resource.get("Properties") or {})
        for logical_id, resource in (document.get("Resources") or {}).items()
        if isinstance(resource, dict) and resource.get("Type") == FUNCTION_TYPE
    ]


def _is_intrinsic(value: Any) -> bool:
    if not isinstance(value, dict) or len(value) != 1:
        return False
    (key,) = value
    return key in ("Ref", "Condition") or str(key).startswith("Fn::")


def resolve(value: Any, defaults: dict[str, Any]) -> Any:
    """``value`` as far as it can be known here: a ``Ref`` to a parameter is its default, any
    other intrinsic None, anything else itself."""
    if not _is_intrinsic(value):
        return value
    target = value.get("Ref")
    if isinstance(target, str):
        return defaults.get(target)
    return None


def environment_variables(properties: dict[str, Any], defaults: dict[str, Any]) -> dict[str, str]:
    """``Environment.Variables`` of ``properties`` as Lambda sets them (strings; booleans as
    ``true``/``false``, as CloudFormation writes them), leaving out what cannot be resolved."""
    variables = (properties.get("Environment") or {}).get("Variables") or {}
    out: dict[str, str] = {}
    for name, raw in variables.items():
        value = resolve(raw, defaults)
        if isinstance(value, bool):
            out[str(name)] = "true" if value else "false"
        elif value is not None and not isinstance(value, (dict, list)):
            out[str(name)] = str(value)
    return out
