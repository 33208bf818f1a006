"""What a SAM ``template.yaml`` says about a function, for running it locally.

``serve`` and ``invoke`` read the function's handler, timeout, memory size and ``Environment``
(``Globals`` merged under the function's own properties) and the type of API in front of it
(``HttpApi`` -> payload v2, ``Api`` -> v1), as ``sam local`` does. CloudFormation intrinsics
are resolved only where a local run can: ``!Ref`` to a parameter gives its ``Default``; any
other intrinsic (``!Sub``, ``!If``, ``!GetAtt``...) leaves the value out, so a value from
``--env-file`` or the default applies instead. PyYAML reads the file (extra ``local``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidInput

__all__ = ["FunctionTemplate", "TemplateError", "read_template"]

TEMPLATE_NAMES = ("template.yaml", "template.yml")


class TemplateError(InvalidInput):
    """The template cannot be read or does not describe the function asked for."""


class _Intrinsic:
    """A CloudFormation intrinsic function (``!Ref X``) as read from YAML."""

    def __init__(self, name: str, value: Any) -> None:
        self.name, self.value = name, value


@dataclass
class FunctionTemplate:
    """One ``AWS::Serverless::Function`` as a local run sees it."""

    logical_id: str
    handler: str | None = None
    timeout: float | None = None
    memory: int | None = None
    environment: dict[str, str] = field(default_factory=dict)
    #: ``"v2"`` behind an ``HttpApi`` event, ``"v1"`` behind an ``Api`` event, else None.
    event_version: str | None = None
    path: str = ""


def _loader() -> Any:
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML comes with the `local` extra
        raise TemplateError(
            "reading template.yaml needs PyYAML: pip install 'peewee-serverless[local]'"
        ) from None

    class Loader(yaml.SafeLoader):
        pass

    def intrinsic(loader: Any, suffix: str, node: Any) -> _Intrinsic:
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return _Intrinsic(suffix, value)

    Loader.add_multi_constructor("!", intrinsic)
    return yaml, Loader


def find_template(directory: str = ".") -> str | None:
    """The path of ``template.yaml`` (or ``.yml``) in ``directory``, if there is one."""
    for name in TEMPLATE_NAMES:
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    return None


def _resolve(value: Any, params: dict[str, Any]) -> Any:
    if isinstance(value, dict) and set(value) == {"Ref"}:
        value = _Intrinsic("Ref", value["Ref"])
    if isinstance(value, _Intrinsic):
        if value.name == "Ref" and isinstance(value.value, str) and value.value in params:
            return params[value.value]
        return None
    return value


def _number(value: Any, what: str) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TemplateError(f"{what} must be a number, got {value!r}") from None


def _event_version(properties: dict[str, Any]) -> str | None:
    events = properties.get("Events") or {}
    types = {ev.get("Type") for ev in events.values() if isinstance(ev, dict)}
    if "HttpApi" in types:
        return "v2"
    if "Api" in types:
        return "v1"
    return None


def read_template(path: str, handler: str | None = None) -> FunctionTemplate:
    """The function in ``path`` whose ``Handler`` is ``handler`` (``module.function``; or ends
    it, as a source-tree import path ends with the zip's), or without ``handler`` the first
    function behind an API event."""
    yaml, loader = _loader()
    try:
        with open(path, encoding="utf-8") as fh:
            doc = yaml.load(fh, Loader=loader)  # noqa: S506 - a SafeLoader subclass
    except OSError as exc:
        raise TemplateError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise TemplateError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(doc, dict):
        raise TemplateError(f"{path} is not a SAM template")
    params = {
        name: (spec or {}).get("Default")
        for name, spec in (doc.get("Parameters") or {}).items()
        if isinstance(spec, dict)
    }
    defaults = ((doc.get("Globals") or {}).get("Function")) or {}
    functions = [
        (logical_id, res.get("Properties") or {})
        for logical_id, res in (doc.get("Resources") or {}).items()
        if isinstance(res, dict) and res.get("Type") == "AWS::Serverless::Function"
    ]
    chosen = None
    for logical_id, props in functions:
        if handler is not None and props.get("Handler") == handler:
            chosen = logical_id, props
            break
        if handler is None and _event_version(props) is not None:
            chosen = logical_id, props
            break
    if chosen is None and handler is not None:
        # Run from the source tree, `examples.users.app.handler` is the zip's `users.app.handler`.
        for logical_id, props in functions:
            deployed = props.get("Handler")
            if isinstance(deployed, str) and handler.endswith("." + deployed):
                chosen = logical_id, props
                break
    if chosen is None:
        what = f"with Handler {handler}" if handler else "behind an Api or HttpApi event"
        raise TemplateError(f"{path} has no AWS::Serverless::Function {what}")
    logical_id, props = chosen

    def prop(name: str) -> Any:
        return _resolve(props.get(name, defaults.get(name)), params)

    environment: dict[str, str] = {}
    for source in (defaults, props):
        variables = (source.get("Environment") or {}).get("Variables") or {}
        for name, raw in variables.items():
            value = _resolve(raw, params)
            if value is not None and not isinstance(value, (dict, list)):
                environment[str(name)] = str(value)
    memory = _number(prop("MemorySize"), "MemorySize")
    return FunctionTemplate(
        logical_id=logical_id,
        handler=prop("Handler"),
        timeout=_number(prop("Timeout"), "Timeout"),
        memory=int(memory) if memory is not None else None,
        environment=environment,
        event_version=_event_version(props),
        path=path,
    )
