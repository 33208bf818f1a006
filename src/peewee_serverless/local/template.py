"""What a SAM ``template.yaml`` says about a function, for running it locally.

``serve`` and ``invoke`` read the function's handler, timeout, memory size and ``Environment``
(``Globals`` merged under the function's own properties) and the type of API in front of it
(``HttpApi`` -> payload v2, ``Api`` -> v1), as ``sam local`` does. The file is read by
:mod:`..sam_template` (shared with ``package``): ``!Ref`` to a parameter gives its ``Default``;
any other intrinsic (``!Sub``, ``!If``, ``!GetAtt``...) leaves the value out, so a value from
``--env-file`` or the default applies instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from .. import sam_template as sam
from ..sam_template import TemplateError

__all__ = ["FunctionTemplate", "TemplateError", "find_template", "read_template"]

TEMPLATE_NAMES = ("template.yaml", "template.yml")


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


def find_template(directory: str = ".") -> str | None:
    """The path of ``template.yaml`` (or ``.yml``) in ``directory``, if there is one."""
    for name in TEMPLATE_NAMES:
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    return None


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
    doc = sam.load_template(path)
    params = sam.parameter_defaults(doc)
    defaults = sam.function_globals(doc)
    found = sam.functions(doc)
    chosen = None
    for logical_id, props in found:
        if handler is not None and props.get("Handler") == handler:
            chosen = logical_id, props
            break
        if handler is None and _event_version(props) is not None:
            chosen = logical_id, props
            break
    if chosen is None and handler is not None:
        # Run from the source tree, `examples.users.app.handler` is the zip's `users.app.handler`.
        for logical_id, props in found:
            deployed = props.get("Handler")
            if isinstance(deployed, str) and handler.endswith("." + deployed):
                chosen = logical_id, props
                break
    if chosen is None:
        what = f"with Handler {handler}" if handler else "behind an Api or HttpApi event"
        raise TemplateError(f"{path} has no AWS::Serverless::Function {what}")
    logical_id, props = chosen

    def prop(name: str) -> Any:
        return sam.resolve(props.get(name, defaults.get(name)), params)

    environment = {
        **sam.environment_variables(defaults, params),
        **sam.environment_variables(props, params),
    }
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
