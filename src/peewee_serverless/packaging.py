"""Build an AWS Lambda deployment zip: the app, this library and its dependencies.

``peewee-serverless package examples/users -o dist/function.zip`` does, in a temporary
staging directory:

1. ``pip install --target`` this library's dependencies (and the chosen extras: ``mysql`` ->
   PyMySQL, ``postgres`` -> psycopg2-binary) as *Linux wheels for the Lambda runtime*:
   ``--platform manylinux2014_x86_64`` (or ``_aarch64``), ``--only-binary=:all:``,
   ``--python-version 3.12 --implementation cp``. Nothing is compiled on this machine, so a build
   on macOS or Windows still gets Linux binaries (pydantic-core, psycopg2).
2. copies this library (the ``peewee_serverless`` package that is imported here, so an editable
   checkout ships its current source) and a minimal ``.dist-info`` for it;
3. copies the app folder *at its import path*: ``examples/users`` relative to the package root
   (the current directory by default) is stored as ``examples/users/`` together with the
   ``__init__.py`` files of its parents, so the handler string is ``examples.users.app.handler``,
   exactly as in the source tree. An app folder outside the current directory becomes a
   top-level package (``myapp/`` -> handler ``myapp.app.handler``);
4. strips what Lambda never imports: ``__pycache__``, ``*.pyc``, ``tests`` directories,
   console scripts (``bin/``), ``RECORD`` files (stale after stripping) and, unless asked,
   boto3/botocore/s3transfer (the Lambda Python runtime provides them);
5. writes a deterministic zip (sorted entries, fixed timestamps and permissions): the same
   inputs give a byte-identical file, so a rebuild does not trigger a redeploy;
6. reports sizes (largest top-level packages, total zipped and unzipped) against Lambda's
   limits of 50 MB zipped (direct upload) and 250 MB unzipped.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ARCHITECTURES",
    "LAMBDA_UNZIPPED_LIMIT",
    "LAMBDA_ZIPPED_LIMIT",
    "PackageReport",
    "PackagingError",
    "add_command",
    "build_package",
    "download_wheels",
    "library_requirements",
    "write_zip",
]

DISTRIBUTION = "peewee-serverless"
PACKAGE = "peewee_serverless"

#: Lambda architecture -> the wheel platform tag pip must select (glibc 2.17+, both runtimes).
ARCHITECTURES: dict[str, str] = {
    "x86_64": "manylinux2014_x86_64",
    "arm64": "manylinux2014_aarch64",
}

#: Lambda limits for a zip deployment package (uploaded directly / after unpacking).
LAMBDA_ZIPPED_LIMIT = 50 * 1024 * 1024
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024

#: Provided by the Lambda Python runtime: shipping them only costs size and cold-start time.
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer")

#: Directory names never shipped (anywhere in the tree).
PRUNED_DIRS = frozenset({"__pycache__", "tests", ".pytest_cache", ".mypy_cache", ".ruff_cache"})
PRUNED_SUFFIXES = (".pyc", ".pyo")

#: Every zip entry gets this timestamp (the earliest a zip can store): rebuilds are identical.
ZIP_TIMESTAMP = (1980, 1, 1, 0, 0, 0)

_PYTHON_VERSION = re.compile(r"^3\.\d{1,2}$")


class PackagingError(Exception):
    """The package could not be built (bad arguments, pip failed, app folder not importable)."""


# -- what to install -----------------------------------------------------------------------------
def _split_marker(requirement: str) -> tuple[str, str]:
    spec, _, marker = requirement.partition(";")
    return spec.strip(), marker.strip()


def _extra_of(marker: str) -> str | None:
    found = re.fullmatch(r"""extra\s*==\s*["']([^"']+)["']""", marker)
    return found.group(1) if found else None


def library_requirements(extras: Iterable[str] = ("mysql",)) -> list[str]:
    """This library's runtime requirements plus those of ``extras``, as pip requirement strings.

    Read from the installed distribution's metadata (``pyproject.toml`` of an editable install).
    Raises :class:`PackagingError` for an extra the library does not declare.
    """
    try:
        declared = importlib.metadata.requires(DISTRIBUTION) or []
        known = set(importlib.metadata.metadata(DISTRIBUTION).get_all("Provides-Extra") or [])
    except importlib.metadata.PackageNotFoundError:
        raise PackagingError(
            f"{DISTRIBUTION} is not installed; cannot read its requirements"
        ) from None
    wanted = list(dict.fromkeys(extras))
    unknown = [e for e in wanted if e not in known]
    if unknown:
        raise PackagingError(
            f"unknown extra {', '.join(unknown)}; choose from {', '.join(sorted(known))}"
        )
    out: list[str] = []
    for requirement in declared:
        spec, marker = _split_marker(requirement)
        extra = _extra_of(marker) if marker else None
        if not marker:
            out.append(spec)
        elif extra is None:
            out.append(requirement)  # another environment marker: pip evaluates it
        elif extra in wanted:
            out.append(spec)
    return out


def _pip_platform_args(python_version: str, architecture: str) -> list[str]:
    if architecture not in ARCHITECTURES:
        raise PackagingError(
            f"architecture must be one of {', '.join(ARCHITECTURES)}, got {architecture!r}"
        )
    if not _PYTHON_VERSION.match(python_version):
        raise PackagingError(f"python version must look like 3.12, got {python_version!r}")
    return [
        "--platform",
        ARCHITECTURES[architecture],
        "--implementation",
        "cp",
        "--python-version",
        python_version,
        "--only-binary=:all:",
    ]


def _pip_source_args(
    cache_dir: str | os.PathLike[str] | None,
    find_links: Sequence[str | os.PathLike[str]],
    no_index: bool,
) -> list[str]:
    args = ["--disable-pip-version-check", "--no-input"]
    if cache_dir is not None:
        args += ["--cache-dir", os.fspath(cache_dir)]
    for link in find_links:
        args += ["--find-links", os.fspath(link)]
    if no_index:
        args.append("--no-index")
    return args


def _run_pip(args: list[str]) -> None:
    command = [sys.executable, "-m", "pip", *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise PackagingError(f"pip {args[0]} failed (exit {done.returncode}):\n{tail}")


def download_wheels(
    dest: str | os.PathLike[str],
    *,
    python_version: str = "3.12",
    architecture: str = "x86_64",
    extras: Iterable[str] = ("mysql",),
    include_boto3: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
) -> list[Path]:
    """Download the Lambda wheels of the library's dependencies into ``dest``; return them.

    Pass ``dest`` as ``find_links`` with ``no_index=True`` to :func:`build_package` to build
    offline afterwards (CI caches, air-gapped builds, repeated builds in tests).
    """
    extras = list(extras)
    if include_boto3 and "aws" not in extras:
        extras.append("aws")
    requirements = library_requirements(extras)
    Path(dest).mkdir(parents=True, exist_ok=True)
    _run_pip(
        [
            "download",
            "--dest",
            os.fspath(dest),
            *_pip_platform_args(python_version, architecture),
            *_pip_source_args(cache_dir, (), False),
            *requirements,
        ]
    )
    return sorted(Path(dest).glob("*.whl"))


# -- staging -------------------------------------------------------------------------------------
def _ignore(directory: str, names: list[str]) -> set[str]:
    return {
        n for n in names if n in PRUNED_DIRS or n.endswith(PRUNED_SUFFIXES) or n.startswith(".")
    }


def _app_location(app_dir: Path, package_root: Path | None) -> tuple[Path, Path]:
    """(root, app path relative to root): the app's import path inside the zip."""
    app_dir = app_dir.resolve()
    if not app_dir.is_dir():
        raise PackagingError(f"app folder {app_dir} does not exist")
    if package_root is None:
        cwd = Path.cwd().resolve()
        root = cwd if app_dir.is_relative_to(cwd) and app_dir != cwd else app_dir.parent
    else:
        root = package_root.resolve()
        if not app_dir.is_relative_to(root) or app_dir == root:
            raise PackagingError(f"app folder {app_dir} is not inside package root {root}")
    relative = app_dir.relative_to(root)
    bad = [part for part in relative.parts if not part.isidentifier()]
    if bad:
        raise PackagingError(
            f"app folder path {relative.as_posix()!r} is not an importable package path "
            f"({', '.join(bad)}); pass a package root so the path is made of Python identifiers"
        )
    return root, relative


def _copy_app(app_dir: Path, package_root: Path | None, staging: Path) -> str:
    root, relative = _app_location(app_dir, package_root)
    destination = staging / relative
    if destination.exists():
        raise PackagingError(f"app path {relative.as_posix()} clashes with an installed package")
    # Parents' __init__.py files (examples/__init__.py) make the path a regular package path.
    for depth in range(1, len(relative.parts)):
        parent = Path(*relative.parts[:depth])
        init = root / parent / "__init__.py"
        (staging / parent).mkdir(parents=True, exist_ok=True)
        if init.is_file():
            shutil.copyfile(init, staging / parent / "__init__.py")
    shutil.copytree(root / relative, destination, ignore=_ignore)
    return ".".join(relative.parts)


def _copy_library(staging: Path) -> None:
    import peewee_serverless

    source = Path(peewee_serverless.__file__).resolve().parent
    shutil.copytree(source, staging / PACKAGE, ignore=_ignore)
    # A minimal distribution record: importlib.metadata.version("peewee-serverless") works.
    version = importlib.metadata.version(DISTRIBUTION)
    info = staging / f"{PACKAGE}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {DISTRIBUTION}\nVersion: {version}\n", encoding="utf-8"
    )
    (info / "top_level.txt").write_text(f"{PACKAGE}\n", encoding="utf-8")


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


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


# -- the zip and its report ----------------------------------------------------------------------
def _files(root: Path) -> Iterator[tuple[str, Path]]:
    for path in root.rglob("*"):
        if path.is_file():
            yield path.relative_to(root).as_posix(), path


def write_zip(source_dir: str | os.PathLike[str], output_zip: str | os.PathLike[str]) -> Path:
    """Zip every file under ``source_dir`` deterministically: sorted names, fixed timestamps.

    Permissions are normalised too (``0644``; Lambda only needs to read the files), so the
    result depends on file names and contents only.
    """
    output = Path(output_zip)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, path in sorted(_files(Path(source_dir))):
            info = zipfile.ZipInfo(name, date_time=ZIP_TIMESTAMP)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # Unix, so external_attr carries the permission bits
            info.external_attr = (0o100644 & 0xFFFF) << 16
            zf.writestr(info, path.read_bytes(), compresslevel=9)
    partial.replace(output)
    return output


def _top_level(name: str) -> str:
    first = name.split("/", 1)[0]
    if first.endswith(".dist-info"):
        return "(package metadata)"
    if first.endswith(".libs"):  # auditwheel-vendored shared libraries belong to their package
        first = first[: -len(".libs")].rstrip("_")
    return first.removesuffix(".py").removesuffix(".so").split(".")[0]


@dataclass(frozen=True)
class PackageReport:
    """What was built: the zip, the handler package, and sizes per top-level package (bytes)."""

    zip_path: Path
    app_package: str
    architecture: str
    python_version: str
    zipped_bytes: int
    unzipped_bytes: int
    #: top-level name -> (unzipped bytes, zipped bytes), largest first.
    packages: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def within_limits(self) -> bool:
        """True when Lambda accepts the zip (direct upload, unpacked size)."""
        return (
            self.zipped_bytes <= LAMBDA_ZIPPED_LIMIT
            and self.unzipped_bytes <= LAMBDA_UNZIPPED_LIMIT
        )

    @classmethod
    def from_zip(
        cls, zip_path: Path, app_package: str, architecture: str, python_version: str
    ) -> PackageReport:
        """Measure a built zip."""
        sizes: dict[str, list[int]] = {}
        with zipfile.ZipFile(zip_path) as zf:
            for info in zf.infolist():
                entry = sizes.setdefault(_top_level(info.filename), [0, 0])
                entry[0] += info.file_size
                entry[1] += info.compress_size
        ordered = sorted(sizes.items(), key=lambda item: (-item[1][0], item[0]))
        return cls(
            zip_path=zip_path,
            app_package=app_package,
            architecture=architecture,
            python_version=python_version,
            zipped_bytes=zip_path.stat().st_size,
            unzipped_bytes=sum(s[0] for s in sizes.values()),
            packages={name: (s[0], s[1]) for name, s in ordered},
        )

    def format(self, top: int = 10) -> str:
        """A human-readable size report (the ``package`` command prints it)."""

        def mb(n: int) -> str:
            return f"{n / (1024 * 1024):7.2f} MB"

        lines = [
            f"{self.zip_path}  (python{self.python_version}, {self.architecture})",
            f"handler package: {self.app_package}  (e.g. handler {self.app_package}.app.handler)",
            f"{'package':<28}{'unzipped':>12}{'zipped':>12}",
        ]
        for name, (unzipped, zipped) in list(self.packages.items())[:top]:
            lines.append(f"{name:<28}{mb(unzipped):>12}{mb(zipped):>12}")
        rest = list(self.packages.values())[top:]
        if rest:
            lines.append(
                f"{f'({len(rest)} more)':<28}"
                f"{mb(sum(r[0] for r in rest)):>12}{mb(sum(r[1] for r in rest)):>12}"
            )
        lines.append(
            f"{'total':<28}{mb(self.unzipped_bytes):>12}{mb(self.zipped_bytes):>12}"
            f"   (Lambda limits: {LAMBDA_UNZIPPED_LIMIT // 2**20} MB unzipped, "
            f"{LAMBDA_ZIPPED_LIMIT // 2**20} MB zipped)"
        )
        if not self.within_limits:
            lines.append("OVER LAMBDA LIMITS: use a container image or layers")
        return "\n".join(lines)


def build_package(
    app_dir: str | os.PathLike[str],
    output_zip: str | os.PathLike[str],
    *,
    python_version: str = "3.12",
    architecture: str = "x86_64",
    extras: Iterable[str] = ("mysql",),
    cache_dir: str | os.PathLike[str] | None = None,
    find_links: Sequence[str | os.PathLike[str]] = (),
    no_index: bool = False,
    include_boto3: bool = False,
    package_root: str | os.PathLike[str] | None = None,
) -> PackageReport:
    """Build the Lambda deployment zip for ``app_dir``; return its :class:`PackageReport`.

    ``python_version``/``architecture`` select the wheels (the Lambda runtime's, not this
    machine's). ``extras`` are this library's extras (``mysql``, ``postgres``, ``aws``).
    ``cache_dir``, ``find_links`` and ``no_index`` go to pip (build offline from wheels fetched
    by :func:`download_wheels`). ``include_boto3`` ships boto3/botocore instead of using the
    runtime's. ``package_root`` is the directory the app's import path is relative to (default:
    the current directory when the app is inside it, else the app's parent).
    """
    extras = list(extras)
    if include_boto3 and "aws" not in extras:
        extras.append("aws")
    requirements = library_requirements(extras)
    platform_args = _pip_platform_args(python_version, architecture)
    root = None if package_root is None else Path(package_root)
    _app_location(Path(app_dir), root)  # fail on a bad app folder before the slow pip step
    with tempfile.TemporaryDirectory(prefix="peewee-serverless-package-") as tmp:
        staging = Path(tmp) / "package"
        staging.mkdir()
        _run_pip(
            [
                "install",
                "--target",
                os.fspath(staging),
                *platform_args,
                *_pip_source_args(cache_dir, find_links, no_index),
                "--no-compile",
                "--no-warn-script-location",
                *requirements,
            ]
        )
        _copy_library(staging)
        app_package = _copy_app(Path(app_dir), root, staging)
        _prune(staging, include_boto3)
        path = write_zip(staging, output_zip)
    return PackageReport.from_zip(path, app_package, architecture, python_version)


# -- command line --------------------------------------------------------------------------------
def add_command(subparsers: argparse._SubParsersAction[Any]) -> argparse.ArgumentParser:
    """Register ``package APP_DIR [-o ZIP] [--arch] [--python] [--extra ...]``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "package",
        help="build a Lambda deployment zip for an app folder",
        description=(
            "Build a Lambda zip: the app folder (at its import path), peewee-serverless and its "
            "dependencies as Linux wheels for the Lambda runtime, without tests or caches."
        ),
    )
    parser.add_argument("app_dir", metavar="APP_DIR", help="the app folder, e.g. examples/users")
    parser.add_argument(
        "-o", "--output", default="dist/function.zip", help="zip to write (dist/function.zip)"
    )
    parser.add_argument(
        "--arch", choices=tuple(ARCHITECTURES), default="x86_64", help="Lambda architecture"
    )
    parser.add_argument("--python", default="3.12", help="Lambda Python version (3.12)")
    parser.add_argument(
        "--extra",
        action="append",
        dest="extras",
        default=None,
        help="library extra to include: mysql (default), postgres, aws; repeatable",
    )
    parser.add_argument(
        "--include-boto3", action="store_true", help="ship boto3 instead of the runtime's"
    )
    parser.add_argument(
        "--package-root", default=None, help="directory the app's import path starts at (cwd)"
    )
    parser.add_argument(
        "--find-links", action="append", default=[], help="extra wheel directory for pip"
    )
    parser.add_argument("--no-index", action="store_true", help="do not use PyPI (offline)")
    parser.add_argument("--cache-dir", default=None, help="pip cache directory")
    parser.set_defaults(func=command)
    return parser


def command(args: argparse.Namespace) -> int:
    """Run the ``package`` command: build, print the size report. Exit 1 over Lambda limits."""
    try:
        report = build_package(
            args.app_dir,
            args.output,
            python_version=args.python,
            architecture=args.arch,
            extras=args.extras or ("mysql",),
            cache_dir=args.cache_dir,
            find_links=args.find_links,
            no_index=args.no_index,
            include_boto3=args.include_boto3,
            package_root=args.package_root,
        )
    except PackagingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.format())
    return 0 if report.within_limits else 1
