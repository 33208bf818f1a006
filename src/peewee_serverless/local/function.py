"""A function as Lambda would run it: its task root, handler, limits and environment.

:class:`FunctionSpec` is everything a container (see :mod:`.pool`) needs to start
``python -m awslambdaric HANDLER`` the way Lambda starts a Python runtime:

* the **task root** (Lambda's ``/var/task``): a deployment zip unpacked into a fresh directory
  (:func:`unpack_zip`), or a source folder;
* the **runtime directory** (Lambda's ``/var/runtime``): a directory of links to the installed
  ``awslambdaric`` (AWS's runtime interface client, from PyPI) and its dependencies, and to
  ``boto3`` when installed, because the Lambda Python runtime provides boto3 too
  (:func:`runtime_dir`). Nothing else of this tool's ``sys.path`` is visible: the interpreter
  runs with ``-S`` (no site-packages) and ``PYTHONPATH`` = task root, layers, runtime directory;
* the **environment** Lambda sets (:meth:`FunctionSpec.environment`), with the function's own
  variables (template.yaml's ``Environment``, then ``--env-file``) over it.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
import uuid
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from ..errors import InvalidInput
from .context import DEFAULT_FUNCTION_NAME, DEFAULT_TIMEOUT_SECONDS

__all__ = [
    "FunctionError",
    "FunctionSpec",
    "read_env_file",
    "runtime_dir",
    "to_lambda_handler",
    "unpack_zip",
]

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"
#: Lambda's limit on the initialisation phase of an on-demand execution environment.
INIT_TIMEOUT_SECONDS = 10.0
#: What the Lambda Python runtime provides besides the standard library.
RUNTIME_DISTRIBUTIONS = ("awslambdaric", "boto3")
#: Credentials Lambda would give the function (its role's); passed through when set here.
_PASSED_THROUGH = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


class FunctionError(InvalidInput):
    """The function cannot be prepared: bad zip, missing awslambdaric, bad env file."""


def to_lambda_handler(target: str) -> str:
    """``pkg.module:function`` (this tool's spelling) -> ``pkg.module.function`` (Lambda's)."""
    module, sep, attr = target.partition(":")
    if sep:
        if not module or not attr:
            raise FunctionError(f"handler must look like 'package.module.function', got {target!r}")
        return f"{module}.{attr}"
    if "." not in target.strip("."):
        raise FunctionError(f"handler must look like 'package.module.function', got {target!r}")
    return target


def unpack_zip(zip_path: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Unpack a deployment zip into ``dest`` (Lambda's ``/var/task``), refusing unsafe entries."""
    dest = Path(dest)
    try:
        with zipfile.ZipFile(zip_path) as zf:
            for name in zf.namelist():
                target = (dest / name).resolve()
                if not target.is_relative_to(dest.resolve()):
                    raise FunctionError(f"{zip_path}: entry {name!r} points outside the zip")
            zf.extractall(dest)
    except FileNotFoundError:
        raise FunctionError(f"no such zip file: {zip_path}") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise FunctionError(f"cannot unpack {zip_path}: {exc}") from None
    return dest


def _top_levels(dist: metadata.Distribution) -> set[str]:
    names: set[str] = set()
    for file in dist.files or ():
        parts = Path(str(file)).parts
        if not parts or parts[0] in ("..", "bin") or parts[0].endswith(".pth"):
            continue
        names.add(parts[0])
    return names


def _requirements(dist: metadata.Distribution) -> list[str]:
    wanted = []
    for req in dist.requires or ():
        if ";" in req and "extra" in req.split(";", 1)[1]:
            continue  # only what an install without extras brings
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
        if match:
            wanted.append(match.group(1))
    return wanted


def runtime_dir(
    directory: str | os.PathLike[str], distributions: Iterable[str] = RUNTIME_DISTRIBUTIONS
) -> Path:
    """Fill ``directory`` with links to the installed ``distributions`` and their dependencies.

    awslambdaric is required (:class:`FunctionError` naming the extra when missing); the others
    are linked when installed.
    """
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    todo = list(distributions)
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            if name == "awslambdaric":
                raise FunctionError(
                    "running the function as Lambda does needs awslambdaric: "
                    "pip install 'peewee-serverless[local]'"
                ) from None
            continue
        base = Path(str(dist.locate_file("")))
        for top in _top_levels(dist):
            link = root / top
            if not link.exists() and (base / top).exists():
                link.symlink_to(base / top)
        todo.extend(_requirements(dist))
    return root


def read_env_file(path: str) -> dict[str, str]:
    """Variables from ``path``: a dotenv file (``KEY=value`` lines) or a JSON object.

    JSON may be flat or in ``sam local``'s ``--env-vars`` shape (``{"Parameters": {...}}`` or
    ``{"FunctionLogicalId": {...}}``: every nested object is merged).
    """
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise FunctionError(f"cannot read env file {path!r}: {exc.strerror or exc}") from None
    if text.lstrip().startswith("{"):
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise FunctionError(f"env file {path!r} is not valid JSON: {exc}") from None
        flat: dict[str, str] = {}
        for key, value in doc.items():
            if isinstance(value, dict):
                flat.update({str(k): str(v) for k, v in value.items() if v is not None})
            elif value is not None:
                flat[str(key)] = str(value)
        return flat
    import io

    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(stream=io.StringIO(text)).items() if v is not None}


@dataclass
class FunctionSpec:
    """How to start one execution environment of a function."""

    handler: str
    task_root: Path
    runtime_dir: Path
    function_name: str = DEFAULT_FUNCTION_NAME
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    memory: int = 128
    region: str = REGION
    #: The function's own variables (template, env file): over Lambda's, as in Lambda.
    env: dict[str, str] = field(default_factory=dict)
    #: Extra ``PYTHONPATH`` entries after the task root, like layers in ``/opt/python``.
    layers: list[Path] = field(default_factory=list)
    init_timeout: float = INIT_TIMEOUT_SECONDS
    python: str = sys.executable
    max_response_bytes: int | None = None
    #: Where the function's bytecode goes (``PYTHONPYCACHEPREFIX``); ``serve --reload`` gives each
    #: code generation a fresh one. Python trusts a ``__pycache__`` entry whose source has the
    #: same size and mtime second, so an edit of the same length within the second of the last
    #: import would otherwise be served stale after the reload.
    pycache_prefix: Path | None = None

    def __post_init__(self) -> None:
        self.handler = to_lambda_handler(self.handler)
        if self.timeout <= 0:
            raise FunctionError(f"timeout must be positive, got {self.timeout}")

    @property
    def function_arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{ACCOUNT_ID}:function:{self.function_name}"

    def command(self) -> list[str]:
        """The runtime's command line: ``-S`` keeps this tool's site-packages out of sys.path."""
        return [self.python, "-S", "-m", "awslambdaric", self.handler]

    def environment(
        self, runtime_api: str, *, outer: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """The process environment of one execution environment (Lambda's reserved variables)."""
        outer = os.environ if outer is None else outer
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        stream = f"{time.strftime('%Y/%m/%d', time.gmtime())}/[$LATEST]{uuid.uuid4().hex}"
        path = [str(self.task_root), *(str(p) for p in self.layers), str(self.runtime_dir)]
        # Set by Lambda, but a function may change them.
        env = {
            "PATH": outer.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "LANG": "en_US.UTF-8",
            "TZ": ":UTC",
        }
        # Lambda passes its role's credentials; locally, the caller's (or the env file's).
        env.update({name: outer[name] for name in _PASSED_THROUGH if outer.get(name)})
        env.update(self.env)
        if self.pycache_prefix is not None:
            env["PYTHONPYCACHEPREFIX"] = str(self.pycache_prefix)
        timeout = int(self.timeout) if self.timeout == int(self.timeout) else self.timeout
        # Reserved: Lambda does not let a function's configuration override these.
        env.update(
            {
                "PYTHONPATH": os.pathsep.join(path),
                "PYTHONNOUSERSITE": "1",
                "_HANDLER": self.handler,
                "LAMBDA_TASK_ROOT": str(self.task_root),
                "LAMBDA_RUNTIME_DIR": str(self.runtime_dir),
                "AWS_LAMBDA_RUNTIME_API": runtime_api,
                "AWS_EXECUTION_ENV": f"AWS_Lambda_python{version}",
                "AWS_LAMBDA_FUNCTION_NAME": self.function_name,
                "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.memory),
                # Not set by Lambda itself but by its emulators (SAM, the runtime interface
                # emulator); handy for a function that wants its timeout before an invocation.
                "AWS_LAMBDA_FUNCTION_TIMEOUT": str(timeout),
                "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{self.function_name}",
                "AWS_LAMBDA_LOG_STREAM_NAME": stream,
                "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
                "AWS_REGION": self.region,
                "AWS_DEFAULT_REGION": self.region,
            }
        )
        return env


def make_task_dir(prefix: str = "peewee-serverless-") -> Path:
    """A fresh temporary directory (the caller removes it)."""
    return Path(tempfile.mkdtemp(prefix=prefix))
