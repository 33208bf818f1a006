"""Build an AWS Lambda deployment zip that cannot fail to import.

``peewee-serverless package FUNCTION_DIR`` does, in a temporary staging directory:

1. scans the function folder (:mod:`.source`): what ships (only code: ignore rules, no
   symlink leaving the folder), the layout (contents at the zip root as SAM does, or the folder
   as a package when its modules use relative imports), what it imports, its handler;
2. works out what else it needs: the library's extras from its imports (``api`` for the HTTP
   resolver / idempotency / Powertools / pydantic), the database driver from its engine
   (``--engine`` or the template's ``DB_ENGINE`` / ``DATABASE_URL``), its own
   ``requirements.txt`` and ``--requirements`` files;
3. installs all of that with **one** pip resolution as Linux wheels for the Lambda runtime
   (:mod:`.requirements`), copies this library (the imported copy, so an editable checkout
   ships its current source; without the development-only parts: ``local``, ``packaging``,
   the ``testing`` pytest plugin, the Data API stand-in ``data_api/endpoint.py``, the
   model generator ``introspect.py`` and the template reader ``sam_template.py``) and
   the function; strips caches, tests, console scripts and the runtime-provided boto3;
   compiles it all to hash-checked bytecode with the target's Python, this one or a
   ``python3.X`` on ``PATH`` (:mod:`.bytecode`: Lambda's task root is read-only, so without it
   every cold start compiles from source);
4. writes a deterministic zip (:mod:`.archive`) to a temporary file, unpacks it and imports
   the handler in a fresh interpreter as Lambda would (:mod:`.check`); only then moves it to
   the output path. A failure is one line naming the module and why, and no zip;
5. reports the handler string to put in the template and sizes against Lambda's limits.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..errors import PackagingError
from .archive import (
    LAMBDA_UNZIPPED_LIMIT,
    LAMBDA_ZIPPED_LIMIT,
    ZIP_TIMESTAMP,
    PackageReport,
    write_zip,
)
from .bytecode import Bytecode, compile_tree
from .check import check_zip
from .requirements import (
    ARCHITECTURES,
    DISTRIBUTION,
    FunctionRequirements,
    PipSource,
    download_wheels,
    install,
    library_requirements,
    read_requirements,
)
from .source import FunctionSource, scan_function
from .template import ENGINE_EXTRAS, TemplateFunction, engine_from_environment, read_template

__all__ = [
    "ARCHITECTURES",
    "Bytecode",
    "LAMBDA_UNZIPPED_LIMIT",
    "LAMBDA_ZIPPED_LIMIT",
    "ZIP_TIMESTAMP",
    "PackageReport",
    "PackagingError",
    "add_arguments",
    "build_package",
    "detect_extras",
    "download_wheels",
    "library_requirements",
    "write_zip",
]

PACKAGE = "peewee_serverless"

#: Provided by the Lambda Python runtime: shipping them only costs size and cold-start time.
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer")

#: Parts of this library that only a developer's machine uses (never imported in Lambda), as
#: paths inside the package: the local runtime, this command, the pytest plugin, the local
#: Data API stand-in (``data-api serve``), the model generator (``models``) and the SAM
#: template reader both local tools share.
DEVELOPMENT_ONLY = (
    "local",
    "packaging",
    "testing",
    "data_api/endpoint.py",
    "introspect.py",
    "sam_template.py",
)

#: Imports that need the ``api`` extra (Powertools resolver, pydantic models, idempotency).
API_IMPORTS = (
    "peewee_serverless.http",
    "peewee_serverless.idempotency",
    "aws_lambda_powertools",
    "pydantic",
)

#: Directory names and suffixes never shipped from the dependencies.
PRUNED_DIRS = frozenset({"__pycache__", "tests", ".pytest_cache", ".mypy_cache", ".ruff_cache"})
PRUNED_SUFFIXES = (".pyc", ".pyo")


def _requirement_name(requirement: str) -> str:
    return _normalise(re.split(r"[\s<>=!~\[;(@]", requirement.strip(), maxsplit=1)[0])


def _normalised(requirements: FunctionRequirements) -> set[str]:
    return {_normalise(n) for n in requirements.names}


def _normalise(name: str) -> str:
    return name.replace("-", "_").replace(".", "_").lower()


def detect_extras(
    source: FunctionSource, engine: str | None, environment: dict[str, str]
) -> list[str]:
    """The library extras a function needs, from its imports, engine and environment."""
    extras: list[str] = []
    if any(
        name == api or name.startswith(api + ".") for name in source.imports for api in API_IMPORTS
    ):
        extras.append("api")
    driver = ENGINE_EXTRAS.get(engine or "")
    if driver:
        extras.append(driver)
    if "DB_SECRET_ARN" in environment or "DB_IAM_AUTH" in environment:
        extras.append("aws")  # Secrets Manager via Powertools Parameters, IAM tokens via boto3
    return extras


def _copy_library(staging: Path) -> None:
    import peewee_serverless

    origin = Path(peewee_serverless.__file__).resolve().parent
    skip = set(DEVELOPMENT_ONLY)

    def ignore(directory: str, names: list[str]) -> set[str]:
        inside = Path(directory).relative_to(origin)
        return {
            n
            for n in names
            if n in PRUNED_DIRS or n.endswith(PRUNED_SUFFIXES) or (inside / n).as_posix() in skip
        }

    shutil.copytree(origin, staging / PACKAGE, ignore=ignore)
    version = importlib.metadata.version(DISTRIBUTION)
    info = staging / f"{PACKAGE}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {DISTRIBUTION}\nVersion: {version}\n", encoding="utf-8"
    )
    (info / "top_level.txt").write_text(f"{PACKAGE}\n", encoding="utf-8")


def _prune(staging: Path, include_boto3: bool) -> None:
    if (staging / "bin").is_dir():
        shutil.rmtree(staging / "bin")
    dropped = set() if include_boto3 else {_normalise(n) for n in RUNTIME_PROVIDED}
    for entry in list(staging.iterdir()):
        stem = entry.name.split("-")[0] if entry.name.endswith(".dist-info") else entry.name
        # Type stubs (peewee-stubs) only serve type checkers.
        if _normalise(stem) in dropped or entry.name.endswith("-stubs"):
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    for path in sorted(staging.rglob("*"), reverse=True):  # children before their parents
        if path.is_dir() and path.name in PRUNED_DIRS:
            shutil.rmtree(path)
        elif path.is_file() and (
            path.name.endswith(PRUNED_SUFFIXES)
            or (path.name == "RECORD" and path.parent.name.endswith(".dist-info"))
        ):
            path.unlink()


def _copy_function(source: FunctionSource, staging: Path) -> None:
    taken = {p.name.removesuffix(".py") for p in staging.iterdir()}
    clash = sorted(source.modules & taken)
    if clash:
        raise PackagingError(
            f"function module {clash[0]!r} has the name of a dependency in the zip; rename it"
        )
    for item in source.files:
        destination = staging / item.arcname
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(item.path, destination)


#: What the `package` command itself needs (the `package` extra), by import name.
TOOLS = {"pathspec": "pathspec", "packaging": "packaging", "yaml": "PyYAML"}


def _require_tools() -> None:
    missing = [dist for module, dist in TOOLS.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise PackagingError(
            f"the package command needs the `package` extra ({', '.join(missing)} missing): "
            'pip install "peewee-serverless[package]"'
        )


def _own_requirements(source: FunctionSource) -> Path | None:
    """The function's requirements.txt: in its folder, else (a package) in the folder SAM builds.

    A package-layout function is built by SAM from its parent folder (CodeUri), which is where
    SAM reads requirements.txt; a flat function's folder is its CodeUri.
    """
    candidates = [source.folder / "requirements.txt"]
    if source.layout == "package":
        candidates.append(source.folder.parent / "requirements.txt")
    return next((c for c in candidates if c.is_file()), None)


def _default_template() -> Path | None:
    candidate = Path("template.yaml")
    return candidate if candidate.is_file() else None


def _resolve_engine(
    engine: str | None, template: TemplateFunction | None
) -> tuple[str | None, str]:
    if engine is not None:
        if engine not in ENGINE_EXTRAS:
            raise PackagingError(
                f"engine must be one of {', '.join(ENGINE_EXTRAS)}, got {engine!r}"
            )
        return engine, "--engine"
    if template is not None:
        found = engine_from_environment(template.environment)
        if found is not None:
            return found, f"{template.path.name} environment"
    found = engine_from_environment(dict(os.environ))
    if found is not None:
        return found, "DATABASE_URL / DB_ENGINE here"
    return None, "not set"


def build_package(
    function_dir: str | os.PathLike[str],
    output_zip: str | os.PathLike[str] = "dist/function.zip",
    *,
    python_version: str | None = None,
    architecture: str | None = None,
    engine: str | None = None,
    extras: Iterable[str] | None = None,
    requirements: Sequence[str | os.PathLike[str]] = (),
    layout: str = "auto",
    template: str | os.PathLike[str] | None = None,
    handler: str | None = None,
    check: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    find_links: Sequence[str | os.PathLike[str]] = (),
    no_index: bool = False,
    include_boto3: bool = False,
    compile: bool = True,
) -> PackageReport:
    """Build the Lambda deployment zip for ``function_dir``; return its :class:`PackageReport`.

    ``python_version`` defaults to the template's ``Runtime``, else this interpreter's;
    ``architecture`` to the template's ``Architectures``, else ``x86_64``.
    ``extras`` (library extras) default to what the function imports plus its engine's driver;
    given explicitly, they are used as they are (and a missing driver is refused).
    ``requirements`` are requirement files added to the folder's own ``requirements.txt``.
    ``template`` defaults to ``template.yaml`` in the current directory when there is one.
    ``check=False`` skips the import check (cross-builds). ``compile=False`` ships no bytecode
    (a smaller zip; every cold start then compiles from source); bytecode is compiled by
    ``python_version``'s interpreter, this one or a ``python3.X`` on ``PATH``, and left out
    (the report says why) when there is none (:mod:`.bytecode`). The other options go to pip.
    """
    _require_tools()
    if handler is not None and "." not in handler.strip("."):
        raise PackagingError(f"handler must look like module.function, got {handler!r}")
    pip_source = PipSource(
        cache_dir=None if cache_dir is None else os.fspath(cache_dir),
        find_links=tuple(os.fspath(p) for p in find_links),
        no_index=no_index,
    )
    template_path = Path(template) if template is not None else _default_template()
    source = scan_function(function_dir, layout)
    if handler is None and not source.handlers and not source.has_module("app"):
        raise PackagingError(
            f"no module of {function_dir} defines a top-level `handler` and there is no app.py; "
            "pass --handler MODULE.FUNCTION"
        )
    tmpl = None if template_path is None else read_template(template_path, source.folder)
    if template is None and tmpl is not None and tmpl.name is None:
        tmpl = None  # ./template.yaml describes other functions: its Globals are not ours
    if python_version is None:
        runtime = tmpl.runtime if tmpl is not None else None
        if runtime and runtime.startswith("python"):
            python_version = runtime.removeprefix("python")
        else:
            python_version = f"{sys.version_info.major}.{sys.version_info.minor}"
    if architecture is None:
        architecture = (tmpl.architecture if tmpl is not None else None) or "x86_64"
    from .requirements import platform_args

    platform_args(python_version, architecture)  # bad arguments fail before anything slow
    engine, engine_origin = _resolve_engine(engine, tmpl)
    environment = dict(tmpl.environment) if tmpl is not None else {}

    files = [Path(p) for p in requirements]
    own = _own_requirements(source)
    if own is not None:
        files.insert(0, own)
    function_requirements = read_requirements(files)

    if extras is None:
        chosen = detect_extras(source, engine, environment)
    else:
        chosen = list(extras)
        driver = ENGINE_EXTRAS.get(engine or "")
        wanted = {"mysql": ("pymysql",), "postgres": ("psycopg2", "psycopg2-binary")}
        named = " ".join(function_requirements.lines).lower()
        if (
            driver
            and driver not in chosen
            and driver not in function_requirements.library_extras
            and not any(n in named for n in wanted[driver])
        ):
            raise PackagingError(
                f"the function uses {engine} ({engine_origin}) but the zip would have no "
                f"{engine} driver: add --extra {driver}"
            )
    chosen = list(dict.fromkeys([*chosen, *function_requirements.library_extras]))
    if include_boto3 and "aws" not in chosen:
        chosen.append("aws")
    library = library_requirements(chosen)
    if not include_boto3:
        # The runtime has boto3 and its dependencies: not even resolved, so none of them ship.
        library = [r for r in library if _requirement_name(r) not in RUNTIME_PROVIDED]
    if function_requirements.hashed:
        # A lock file pins (and hashes) the library's dependencies itself: its pins stand in
        # for the library's ranges, which pip's hash-checking mode would refuse unhashed.
        library = [
            r for r in library if _requirement_name(r) not in _normalised(function_requirements)
        ]
    pip_lines = [*library, *function_requirements.lines]

    with tempfile.TemporaryDirectory(prefix="peewee-serverless-package-") as tmp:
        staging = Path(tmp) / "package"
        staging.mkdir()
        install(
            staging,
            pip_lines,
            python_version=python_version,
            architecture=architecture,
            source=pip_source,
        )
        _prune(staging, include_boto3)
        _copy_library(staging)
        _copy_function(source, staging)
        bytecode = (
            compile_tree(staging, python_version) if compile else Bytecode(skipped="--no-compile")
        )
        built = write_zip(staging, Path(tmp) / "function.zip")
        the_handler = handler or source.handler
        if check:
            check_zip(
                built,
                the_handler,
                python_version=python_version,
                architecture=architecture,
                engine=engine,
                function_env=environment,
                source=pip_source,
            )
        output = Path(output_zip)
        output.parent.mkdir(parents=True, exist_ok=True)
        partial = output.with_name(output.name + ".partial")
        shutil.copyfile(built, partial)
        partial.replace(output)
    unzipped, packages = PackageReport.measure(output)
    return PackageReport(
        zip_path=output,
        handler=the_handler,
        layout=source.layout,
        architecture=architecture,
        python_version=python_version,
        zipped_bytes=output.stat().st_size,
        unzipped_bytes=unzipped,
        packages=packages,
        extras=tuple(chosen),
        skipped=tuple(source.skipped),
        checked=check,
        bytecode=bytecode,
    )


# -- command line --------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Build a Lambda deployment zip for a function folder (import-checked).

    Build a Lambda zip: the function folder's code, its requirements.txt and the parts of
    peewee-serverless it uses, as Linux wheels for the Lambda runtime; the zip is unpacked and
    its handler imported before it is written.
    """
    parser.add_argument("function_dir", metavar="FUNCTION_DIR", help="the function folder")
    parser.add_argument(
        "-o",
        "--output",
        dest="output_zip",
        default="dist/function.zip",
        metavar="OUTPUT",
        help="zip to write (dist/function.zip)",
    )
    parser.add_argument(
        "--arch",
        dest="architecture",
        choices=ARCHITECTURES,
        help="Lambda architecture (the template's Architectures, else x86_64)",
    )
    parser.add_argument(
        "--python",
        dest="python_version",
        metavar="PYTHON",
        help="Lambda Python version (the template's Runtime, else this one's)",
    )
    parser.add_argument(
        "--engine",
        choices=tuple(ENGINE_EXTRAS),
        help="database engine, whose driver goes in (default: the template's DB_ENGINE)",
    )
    parser.add_argument(
        "--extra",
        action="append",
        dest="extras",
        help="library extra (api, mysql, postgres, aws); repeatable; replaces detection",
    )
    parser.add_argument(
        "-r",
        "--requirements",
        action="append",
        default=[],
        metavar="FILE",
        help="requirements file, besides the folder's requirements.txt; repeatable",
    )
    parser.add_argument(
        "--layout",
        choices=("auto", "flat", "package"),
        default="auto",
        help="flat: folder contents at the zip root; package: the folder as a package",
    )
    parser.add_argument("--template", help="SAM template (./template.yaml)")
    parser.add_argument("--handler", help="handler to check (detected)")
    parser.add_argument(
        "--no-check",
        action="store_false",
        dest="check",
        help="skip the import check (cross-builds)",
    )
    parser.add_argument(
        "--no-compile",
        action="store_false",
        dest="compile",
        help="ship no bytecode (smaller zip; each cold start compiles from source)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="list the skipped files")
    parser.add_argument(
        "--include-boto3", action="store_true", help="ship boto3 instead of the runtime's"
    )
    parser.add_argument(
        "--find-links", action="append", default=[], help="extra wheel directory for pip"
    )
    parser.add_argument("--no-index", action="store_true", help="do not use PyPI (offline)")
    parser.add_argument("--cache-dir", help="pip cache directory")
    parser.set_defaults(func=command)


#: What the parsed command line holds besides build_package's parameters.
_COMMAND_LINE_ONLY = frozenset({"command", "func", "verbose"})


def command(args: argparse.Namespace) -> int:
    """Run the ``package`` command: build, print the report. Exit 1 over Lambda limits."""
    from ..cli import CommandError

    # Each option is stored under the name of the build_package parameter it sets; everything
    # but the command line's own entries is passed, so an option whose name matches no
    # parameter fails (TypeError) instead of being dropped without a word.
    options = {k: v for k, v in vars(args).items() if k not in _COMMAND_LINE_ONLY}
    try:
        report = build_package(**options)
    except PackagingError as exc:
        raise CommandError(str(exc)) from None
    print(report.format(verbose=args.verbose))
    return 0 if report.within_limits else 1
