"""What goes into the zip besides the function: one pip resolution for Lambda's platform.

The library's requirements (and the extras the function needs) and the function's own
``requirements.txt`` / ``--requirements FILE`` are installed by **one** ``pip install --target``
run, so pip resolves them together (a conflict is pip's error, naming both sides), as Linux
wheels for the Lambda runtime: ``--platform manylinux..._<arch>``, ``--python-version``,
``--implementation cp``, ``--only-binary=:all:``. Nothing is compiled here, so a build on macOS
still gets Linux binaries. A requirement with no such wheel is reported by name, telling a
source-only distribution apart from a name that does not exist (``pip index versions``).

pip is run as ``python -m pip`` of this interpreter: it is the tool SAM, Chalice and every
guide use, and re-implementing a resolver would be worse. ``packaging`` parses requirement lines
(the library pip vendors).
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import PackagingError

__all__ = [
    "ARCHITECTURES",
    "DISTRIBUTION",
    "FunctionRequirements",
    "PipSource",
    "download_wheels",
    "install",
    "library_requirements",
    "platform_args",
    "read_requirements",
]

DISTRIBUTION = "peewee-serverless"

#: Lambda architecture -> wheel platform suffix.
ARCHITECTURES: dict[str, str] = {"x86_64": "x86_64", "arm64": "aarch64"}

#: Highest glibc of the Lambda runtime per Python (Amazon Linux 2: 2.26; AL2023: 2.34).
_GLIBC = {"3.9": 26, "3.10": 26, "3.11": 26}
_GLIBC_AL2023 = 34

_PYTHON_VERSION = re.compile(r"^3\.\d{1,2}$")


@dataclass(frozen=True)
class PipSource:
    """Where pip may look: cache, extra wheel folders, the index or not."""

    cache_dir: str | None = None
    find_links: tuple[str, ...] = ()
    no_index: bool = False

    def args(self) -> list[str]:
        out = ["--disable-pip-version-check", "--no-input"]
        if self.cache_dir is not None:
            out += ["--cache-dir", self.cache_dir]
        for link in self.find_links:
            out += ["--find-links", link]
        if self.no_index:
            out.append("--no-index")
        return out


def platform_args(python_version: str, architecture: str) -> list[str]:
    """pip options selecting wheels for the Lambda runtime (checked before any slow step)."""
    if architecture not in ARCHITECTURES:
        raise PackagingError(
            f"architecture must be one of {', '.join(ARCHITECTURES)}, got {architecture!r}"
        )
    if not _PYTHON_VERSION.match(python_version):
        raise PackagingError(f"python version must look like 3.12, got {python_version!r}")
    machine = ARCHITECTURES[architecture]
    glibc = _GLIBC.get(python_version, _GLIBC_AL2023)
    platforms = [f"manylinux2014_{machine}"] + [
        f"manylinux_2_{minor}_{machine}" for minor in range(17, glibc + 1)
    ]
    args: list[str] = []
    for tag in platforms:
        args += ["--platform", tag]
    return [
        *args,
        *("--implementation", "cp", "--python-version", python_version),
        "--only-binary=:all:",
    ]


# -- the library's side --------------------------------------------------------------------------
def _split_marker(requirement: str) -> tuple[str, str]:
    spec, _, marker = requirement.partition(";")
    return spec.strip(), marker.strip()


def _extra_of(marker: str) -> str | None:
    found = re.fullmatch(r"""extra\s*==\s*["']([^"']+)["']""", marker)
    return found.group(1) if found else None


def library_requirements(extras: Iterable[str] = ()) -> list[str]:
    """This library's runtime requirements plus those of ``extras``, as pip requirement strings.

    Read from the installed distribution's metadata. Raises :class:`PackagingError` for an
    extra the library does not declare.
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
    return list(dict.fromkeys(out))


# -- the function's side -------------------------------------------------------------------------
@dataclass(frozen=True)
class FunctionRequirements:
    """The function's requirement files, with lines naming this library taken out.

    ``lines`` go to pip (``-r``/``-c`` paths made absolute); ``library_extras`` are the extras
    of a ``peewee-serverless[...]`` line: the library itself is copied from this installation.
    """

    files: tuple[Path, ...]
    lines: tuple[str, ...]
    library_extras: tuple[str, ...]
    #: Canonical names of the requirements listed, and whether they pin hashes (a lock file).
    names: frozenset[str] = frozenset()
    hashed: bool = False


def read_requirements(files: Sequence[Path]) -> FunctionRequirements:
    """Read requirement files; the library's own line contributes only its extras."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    lines: list[str] = []
    extras: list[str] = []
    names: set[str] = set()
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise PackagingError(f"cannot read requirements file {path}: {exc.strerror}") from None
        # A backslash continues a line (pip-compile's `pkg==1.0 \\ --hash=...` lock files).
        joined = re.sub(r"\\\r?\n", " ", text)
        for number, raw in enumerate(joined.splitlines(), 1):
            line = raw.split(" #", 1)[0].strip()
            if not line or line.startswith("#"):
                continue
            option = re.match(r"^(-r|-c|--requirement|--constraint)\s*=?\s*(\S+)$", line)
            if option:
                lines.append(f"{option.group(1)} {(path.parent / option.group(2)).resolve()}")
                continue
            if line.startswith("-"):
                lines.append(line)  # --index-url, --extra-index-url...: pip's business
                continue
            try:
                # Per-requirement options (--hash=...) are pip's; the name is before them.
                requirement = Requirement(re.split(r"\s+--", line, maxsplit=1)[0])
            except InvalidRequirement as exc:
                raise PackagingError(f"{path}:{number}: not a requirement: {exc}") from None
            if canonicalize_name(requirement.name) == DISTRIBUTION:
                extras.extend(sorted(requirement.extras))
                continue
            names.add(canonicalize_name(requirement.name))
            lines.append(line)
    hashed = any("--hash" in line for line in lines)
    return FunctionRequirements(
        tuple(files), tuple(lines), tuple(dict.fromkeys(extras)), frozenset(names), hashed
    )


# -- running pip ---------------------------------------------------------------------------------
def _pip(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", *args], capture_output=True, text=True, check=False
    )


_NOT_FOUND = re.compile(r"(?:satisfies the requirement|No matching distribution found for) (\S+)")


def _explain_failure(
    done: subprocess.CompletedProcess[str], source: PipSource, python_version: str, arch: str
) -> PackagingError:
    output = (done.stderr or "") + (done.stdout or "")
    found = _NOT_FOUND.search(output)
    if found:
        requirement = found.group(1)
        name = re.split(r"[\s<>=!~\[;(]", requirement, maxsplit=1)[0]
        probe = _pip(["index", "versions", name, *source.args()])
        if probe.returncode == 0 and "Available versions" in probe.stdout:
            return PackagingError(
                f"requirement {requirement} has no wheel for python{python_version} on Linux "
                f"{arch} (only a source distribution or other platforms' wheels): Lambda needs "
                "a prebuilt wheel; pin a version that ships one or build it on Amazon Linux"
            )
        return PackagingError(
            f"requirement {requirement} cannot be resolved: no such package or version"
        )
    conflict = re.search(r"Cannot install (.+?) because", output)
    if conflict or "ResolutionImpossible" in output:
        detail = conflict.group(1) if conflict else "the requirements"
        causes = re.findall(r"^\s+(\S+ \S+ depends on .+)$", output, flags=re.M)
        return PackagingError(
            f"requirements conflict: cannot install {detail}"
            + (f" ({'; '.join(causes)})" if causes else "")
        )
    if "--require-hashes mode" in output:
        return PackagingError(
            "the requirements pin hashes (pip's --require-hashes mode), so every requirement "
            "needs one, this library's own dependencies too: put peewee-serverless with its "
            "extras in the lock file's input (pip-compile --generate-hashes) or drop the hashes"
        )
    errors = [line.strip() for line in output.splitlines() if line.startswith("ERROR:")]
    detail = " | ".join(errors[:3]) or " | ".join(output.strip().splitlines()[-3:])
    return PackagingError(f"pip install failed (exit {done.returncode}): {detail}")


def install(
    target: Path,
    requirements: Sequence[str],
    *,
    python_version: str,
    architecture: str,
    source: PipSource,
) -> None:
    """``pip install --target`` the requirements for Lambda's platform, in one resolution."""
    if not requirements:
        return
    with tempfile.TemporaryDirectory(prefix="peewee-serverless-req-") as tmp:
        # One requirements file: lines with options (-r, --index-url) keep their meaning.
        listing = Path(tmp) / "requirements.txt"
        listing.write_text("\n".join(requirements) + "\n", encoding="utf-8")
        done = _pip(
            [
                "install",
                "--target",
                os.fspath(target),
                *platform_args(python_version, architecture),
                *source.args(),
                "--no-compile",
                "--no-warn-script-location",
                "-r",
                os.fspath(listing),
            ]
        )
    if done.returncode != 0:
        raise _explain_failure(done, source, python_version, architecture)


def download_wheels(
    dest: str | os.PathLike[str],
    *,
    python_version: str = "3.12",
    architecture: str = "x86_64",
    extras: Iterable[str] = ("api", "mysql"),
    requirements: Sequence[str] = (),
    include_boto3: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
) -> list[Path]:
    """Download the Lambda wheels of the library (with ``extras``) and ``requirements``.

    Pass ``dest`` as ``find_links`` with ``no_index=True`` to ``build_package`` to build offline
    afterwards (CI caches, air-gapped builds, repeated builds in tests).
    """
    extras = list(extras)
    if include_boto3 and "aws" not in extras:
        extras.append("aws")
    Path(dest).mkdir(parents=True, exist_ok=True)
    source = PipSource(cache_dir=None if cache_dir is None else os.fspath(cache_dir))
    done = _pip(
        [
            "download",
            "--dest",
            os.fspath(dest),
            *platform_args(python_version, architecture),
            *source.args(),
            *library_requirements(extras),
            *requirements,
        ]
    )
    if done.returncode != 0:
        raise _explain_failure(done, source, python_version, architecture)
    return sorted(Path(dest).glob("*.whl"))
