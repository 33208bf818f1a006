"""From ``serve`` / ``invoke`` options to something that runs the function.

Both commands take the same function options (:func:`add_function_arguments`) and
:func:`launch` turns them into an invoker:

* **in-process** (default for a source folder): ``MODULE:HANDLER`` imported here, run by
  :class:`~.inprocess.InProcessInvoker`; the shell's environment plus ``--env-file``;
* **ric** (``--zip``, ``--runtime ric`` or ``--reload``): :class:`~.pool.ContainerPool`, each
  container a ``python -m awslambdaric`` process as Lambda starts it. With ``--zip`` the task
  root is the unpacked zip and nothing of this tool's ``sys.path`` is visible; with a source
  folder the current directory is the task root and this tool's installed packages are added
  after it, as a layer would be (``/opt/python``), because the folder holds no dependencies.
  The environment is Lambda's, template.yaml's ``Environment``, then ``--env-file``; the shell's
  variables do not reach the function (as with ``sam local``), except AWS credentials.

template.yaml (in the current directory, or ``--template``) supplies what the options leave
out: the handler, timeout, memory size, environment and the API type (``HttpApi`` -> v2 events,
``Api`` -> v1; v2 without a template).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidInput
from .context import DEFAULT_FUNCTION_NAME, DEFAULT_TIMEOUT_SECONDS
from .function import FunctionError, FunctionSpec, read_env_file, runtime_dir, unpack_zip
from .template import FunctionTemplate, TemplateError, find_template, read_template

__all__ = ["LaunchError", "Launched", "add_function_arguments", "launch"]

RUNTIMES = ("inprocess", "ric")


class LaunchError(InvalidInput):
    """The options do not describe a function that can be run (one line for the user)."""


@dataclass
class Launched:
    """A ready invoker and what the command should tell the user about it."""

    invoker: Any
    event_version: str
    description: str
    runtime: str
    notes: list[str] = field(default_factory=list)
    on_ready: Callable[[Any], None] | None = None


def add_function_arguments(parser: argparse.ArgumentParser) -> None:
    """The options ``serve`` and ``invoke`` share: what to run and how."""
    parser.add_argument(
        "handler",
        nargs="?",
        metavar="HANDLER",
        help="module:function or module.function (default: template.yaml's Handler)",
    )
    parser.add_argument(
        "--zip",
        metavar="ZIP",
        help="run this deployment zip as Lambda does: unpacked, under awslambdaric (ric)",
    )
    parser.add_argument(
        "--runtime",
        choices=RUNTIMES,
        help="inprocess (fast, default for a source folder) or ric (AWS's runtime client in "
        "fresh processes; default with --zip)",
    )
    parser.add_argument(
        "--env-file",
        metavar="FILE",
        help="the function's environment: KEY=value lines or JSON (sam local --env-vars shape)",
    )
    parser.add_argument(
        "--template",
        metavar="FILE",
        help="SAM template to read the function from (default: ./template.yaml if present)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        help=f"function timeout in seconds (default: template's, else {DEFAULT_TIMEOUT_SECONDS:g})",
    )
    parser.add_argument(
        "--memory", type=int, help="memory size in MB (default: template's, else 128)"
    )
    parser.add_argument(
        "--function-name",
        help=f"the function's name (default: template's logical id, else {DEFAULT_FUNCTION_NAME})",
    )


def _template(args: argparse.Namespace, lambda_handler: str | None) -> FunctionTemplate | None:
    path = args.template
    if path is None:
        path = find_template(os.getcwd())
        if path is None:
            return None
    elif not os.path.isfile(path):
        raise LaunchError(f"no such template: {path}")
    try:
        return read_template(path, lambda_handler)
    except TemplateError as exc:
        if lambda_handler is not None and args.template is None:
            return None  # a handler that is not in ./template.yaml: run it without the template
        raise LaunchError(str(exc)) from None


def _lambda_handler(handler: str) -> str:
    module, sep, attr = handler.partition(":")
    return f"{module}.{attr}" if sep else handler


def _import_target(handler: str) -> str:
    if ":" in handler:
        return handler
    module, _, attr = handler.rpartition(".")
    if not module:
        raise LaunchError(f"handler must look like 'package.module.function', got {handler!r}")
    return f"{module}:{attr}"


def _tool_layer() -> list[Path]:
    """This tool's packages, for a source folder run under ric (see the module docstring)."""
    import site

    import peewee_serverless

    paths = [Path(p) for p in site.getsitepackages()]
    # An editable checkout is found through a hook that `python -S` does not run.
    source = Path(peewee_serverless.__file__).resolve().parent.parent
    if source not in paths:
        paths.insert(0, source)
    return paths


def _abi_mismatch(task_root: Path) -> str | None:
    """A warning when the zip's compiled modules are for another Python than the containers'."""
    import re

    here = f"cpython-{sys.version_info.major}{sys.version_info.minor}"
    tags = set()
    for path in task_root.rglob("*.so"):
        match = re.search(r"\.(cpython-\d+)", path.name)
        if match:
            tags.add(match.group(1))
    if tags and here not in tags:
        found = ", ".join(sorted(tags))
        return (
            f"warning: the zip's compiled modules are for {found}, the containers run {here}: "
            f"rebuild it with package --python {sys.version_info.major}.{sys.version_info.minor}"
        )
    return None


def _container_options(args: argparse.Namespace) -> list[str]:
    used = []
    if (getattr(args, "concurrency", None) or 1) > 1:
        used.append("--concurrency")
    if getattr(args, "freeze", False):
        used.append("--freeze")
    if getattr(args, "idle_timeout", None) is not None:
        used.append("--idle-timeout")
    if getattr(args, "queue", True) is False:
        used.append("--no-queue")
    return used


def _check_numbers(args: argparse.Namespace) -> None:
    if args.timeout is not None and not 0 < args.timeout <= 900:
        raise LaunchError(
            f"--timeout must be in (0, 900] seconds (Lambda's range), got {args.timeout:g}"
        )
    if args.memory is not None and not 128 <= args.memory <= 10240:
        raise LaunchError(f"--memory must be 128..10240 MB (Lambda's range), got {args.memory}")
    concurrency = getattr(args, "concurrency", None)
    if concurrency is not None and concurrency < 1:
        raise LaunchError(f"--concurrency must be at least 1, got {concurrency}")
    idle = getattr(args, "idle_timeout", None)
    if idle is not None and idle <= 0:
        raise LaunchError(f"--idle-timeout must be positive, got {idle:g}")
    port = getattr(args, "port", None)
    if port is not None and not 0 <= port <= 65535:
        raise LaunchError(f"--port must be 0..65535, got {port}")
    max_body = getattr(args, "max_body_bytes", None)
    if max_body is not None and max_body < 0:
        raise LaunchError(f"--max-body-bytes must not be negative, got {max_body}")


def launch(
    args: argparse.Namespace, stack: contextlib.ExitStack, *, log: Callable[[str], None]
) -> Launched:
    """Build the invoker the options ask for; ``stack`` cleans up (containers, temp dirs)."""
    _check_numbers(args)
    reload = getattr(args, "reload", False)
    if args.runtime == "inprocess" and (args.zip or reload):
        raise LaunchError(
            "--zip and --reload run the function in containers: drop --runtime inprocess"
        )
    runtime = "ric" if (args.zip or reload or args.runtime == "ric") else "inprocess"
    handler = args.handler
    template = _template(args, _lambda_handler(handler) if handler else None)
    notes: list[str] = []
    if handler is None:
        if template is None or not template.handler:
            raise LaunchError("no handler: give MODULE:HANDLER, or run where template.yaml is")
        handler = template.handler
    timeout = args.timeout or (template.timeout if template else None) or DEFAULT_TIMEOUT_SECONDS
    memory = args.memory or (template.memory if template else None) or 128
    name = args.function_name or (template.logical_id if template else DEFAULT_FUNCTION_NAME)
    event_version = getattr(args, "event_version", None)
    if event_version is None:
        if template is not None and template.event_version is not None:
            event_version = template.event_version
            api = "HttpApi" if event_version == "v2" else "Api"
            where = os.path.relpath(template.path)
            notes.append(f"events: {event_version} ({where}: {api} event)")
        else:
            event_version = "v2"
            notes.append(
                "events: v2 (HTTP API, the default without a template; --event-version v1 for REST)"
            )
    try:
        env = read_env_file(args.env_file) if args.env_file else {}
    except FunctionError as exc:
        raise LaunchError(str(exc)) from None

    if runtime == "inprocess":
        used = _container_options(args)
        if used:
            raise LaunchError(f"{', '.join(used)} need containers: add --runtime ric or --zip")
        from .inprocess import InProcessInvoker
        from .loader import load_handler

        os.environ.update(env)
        target = _import_target(handler)
        invoker = InProcessInvoker(load_handler(target), timeout=timeout, function_name=name)
        stack.callback(invoker.close)
        return Launched(invoker, event_version, target, runtime, notes)

    work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="peewee-serverless-")))
    function_env = dict(template.environment) if template else {}
    function_env.update(env)
    try:
        if args.zip:
            task_root = unpack_zip(args.zip, work / "task")
            layers: list[Path] = []
            mismatch = _abi_mismatch(task_root)
            if mismatch:
                notes.append(mismatch)
        else:
            task_root = Path(os.getcwd())
            layers = _tool_layer()
        spec = FunctionSpec(
            handler,
            task_root,
            runtime_dir(work / "runtime"),
            function_name=name,
            timeout=timeout,
            memory=memory,
            env=function_env,
            layers=layers,
        )
    except FunctionError as exc:
        raise LaunchError(str(exc)) from None
    from .pool import ContainerPool

    pool = ContainerPool(
        spec,
        concurrency=getattr(args, "concurrency", None) or 1,
        queue=getattr(args, "queue", True),
        freeze=getattr(args, "freeze", False),
        idle_timeout=getattr(args, "idle_timeout", None),
        log=log,
    )
    stack.callback(pool.close)
    source = f"{args.zip} ({spec.handler})" if args.zip else f"{spec.handler} from {task_root}"
    described = f"{source} in containers (awslambdaric, concurrency {pool.concurrency})"
    on_ready = None
    if reload:
        on_ready = _reloader(args, pool, work, log, stack)
    return Launched(pool, event_version, described, runtime, notes, on_ready)


def _reloader(
    args: argparse.Namespace,
    pool: Any,
    work: Path,
    log: Callable[[str], None],
    stack: contextlib.ExitStack,
) -> Callable[[Any], None]:
    """Start watching the sources once the server listens (watchfiles: inotify, no polling)."""
    try:
        import watchfiles
    except ImportError:
        raise LaunchError(
            "--reload needs watchfiles: pip install 'peewee-serverless[local]'"
        ) from None
    stop = threading.Event()
    stack.callback(stop.set)
    watched = Path(args.zip).resolve() if args.zip else Path(os.getcwd())
    generation = [0]
    pool.spec.pycache_prefix = work / "pycache-0"

    python_files = watchfiles.PythonFilter()  # .py/.pyx/.pyd, outside .git, caches, venvs

    def changed(change: watchfiles.Change, path: str) -> bool:
        if args.zip:
            return Path(path) == watched
        # Python sources only: a log file written into the folder must not restart anything.
        return bool(python_files(change, path))

    watching = threading.Event()

    def watch() -> None:
        target = watched.parent if args.zip else watched
        # yield_on_timeout: the first (empty) yield tells that the watcher is in place, so
        # "watching" is only said once a change can no longer be missed.
        for changes in watchfiles.watch(
            target,
            watch_filter=changed,
            stop_event=stop,
            raise_interrupt=False,
            yield_on_timeout=True,
            rust_timeout=200,
        ):
            watching.set()
            if not changes:
                continue
            generation[0] += 1
            if args.zip:
                try:
                    task_root = unpack_zip(args.zip, work / f"task-{generation[0]}")
                except FunctionError as exc:
                    log(f"reload: {exc}; keeping the running code")
                    continue
                pool.spec.task_root = task_root
            pool.spec.pycache_prefix = work / f"pycache-{generation[0]}"
            names = sorted({os.path.relpath(p, target) for _, p in changes})
            log(f"reload: {', '.join(names[:5])} changed; restarting containers")
            pool.restart()

    def on_ready(server: Any) -> None:
        threading.Thread(target=watch, name="reload-watcher", daemon=True).start()
        if not watching.wait(30):
            log("reload: the watcher did not start within 30 s; changes may be missed")
        print(f"reload: watching {watched}", file=sys.stderr, flush=True)

    return on_ready
