"""Bytecode in the zip, so that a Lambda cold start does not compile every module from source.

Lambda's task root (``/var/task``) is read-only: without ``__pycache__`` in the zip, every cold
start compiles Peewee, Powertools, pydantic, this library and the function from source, and
cannot keep the result. The staging folder is compiled with the standard library's
:mod:`compileall` before it is zipped, under these rules:

* **By the target's Python** (major.minor): bytecode is version-specific, and a pyc of another
  version is ignored by the runtime (dead weight). This interpreter compiles when it is the
  target; otherwise the ``python3.X`` the import check runs (:func:`.check.python_for`: found on
  ``PATH`` and asked its version). With none on this machine nothing is compiled and the report
  says so (the zip is as valid, its cold starts compile from source). Bytecode does not depend
  on the architecture: an arm64 zip built on x86_64 gets it too.
* **Hash-based pycs, checked** (:pep:`552`): a timestamp pyc records the source's mtime and size,
  and is only used when they match the file on disk. Zip extraction sets mtimes from the zip
  (our fixed 1980 date, or whatever a tool makes of it), so timestamp pycs would be valid only
  by coincidence. A checked hash pyc records the source's hash: valid whatever the mtimes, and
  still correct when someone edits a source in the unpacked task (the hash no longer matches,
  so Python compiles that one file from source, as without bytecode).
* **Reproducible**: the zip is byte-identical from the same inputs, so the bytecode must be too.
  What does vary is the file name compiled into every code object (``co_filename``): the
  staging folder is a fresh temporary directory, so the files are compiled as
  ``/var/task/...``, where Lambda unpacks them (importing from a pyc puts the real path back in
  any case). Marshal's output can also depend on the process: its back-references follow
  reference counts (what the compiling process did before), and a ``frozenset`` constant
  (``x in {"a", "b"}``) is written in iteration order, which follows the string hash seed. On
  3.11 the same tree compiled under hash seeds 1, 2 and 3 gave identical files, but nothing
  promises that, so the compilation runs in a fresh interpreter with ``PYTHONHASHSEED=0``, one
  process (no worker pool sharing out the files) and ``compileall``'s sorted walk, and without
  ``PYTHONPYCACHEPREFIX`` (which would send the pycs out of the tree).
* **A file that does not compile does not fail the build**: it ships as source, exactly as
  without bytecode; Python raises the same ``SyntaxError`` only if something imports it (data
  or templates with a ``.py`` name, a file written for another Python). A module the handler
  imports is already refused by the import check with its file and line. The report counts
  such files and ``--verbose`` names them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import PackagingError

__all__ = ["Bytecode", "compile_tree", "this_python"]

#: Where Lambda unpacks the zip: the file names compiled into the bytecode.
TASK_ROOT = "/var/task"

#: Run in a fresh interpreter (the target's): compile the tree, quietly (the parent finds what
#: failed), and print the interpreter's pyc tag (``cpython-312``).
_COMPILE = (
    "import compileall, py_compile, sys\n"
    "compileall.compile_dir(sys.argv[1], ddir=sys.argv[2], quiet=2, optimize=0, workers=1,\n"
    "    invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)\n"
    "print(sys.implementation.cache_tag)\n"
)


def this_python() -> str:
    """This interpreter's major.minor, as ``--python`` spells it."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


@dataclass(frozen=True)
class Bytecode:
    """What the zip got: compiled modules, or why none."""

    compiled: int = 0
    #: Paths (in the zip) of ``.py`` files that do not compile: they ship as source only.
    failed: tuple[str, ...] = ()
    #: Why nothing was compiled (``--no-compile``, another Python), or ``None``.
    skipped: str | None = None

    def line(self) -> str:
        """The report's one line about bytecode."""
        if self.skipped is not None:
            return f"bytecode: not compiled ({self.skipped})"
        text = f"bytecode: {self.compiled} modules compiled (hash-checked pycs)"
        if self.failed:
            text += (
                f"; {len(self.failed)} .py files do not compile and ship as source only"
                " (--verbose lists them)"
            )
        return text


def _sources(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if p.is_file() and "__pycache__" not in p.parts)


def _pyc(source: Path, cache_tag: str) -> Path:
    return source.parent / "__pycache__" / f"{source.stem}.{cache_tag}.pyc"


def compile_tree(staging: Path, python_version: str) -> Bytecode:
    """Compile every ``.py`` under ``staging`` to checked-hash pycs with the target's Python."""
    from .check import python_for

    python = python_for(python_version)
    if python is None:
        return Bytecode(
            skipped=f"target {python_version}, this Python {this_python()}, "
            f"no python{python_version} on PATH to compile with"
        )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPYCACHEPREFIX", "PYTHONOPTIMIZE", "PYTHONDONTWRITEBYTECODE")
    }
    env["PYTHONHASHSEED"] = "0"
    try:
        done = subprocess.run(
            [python, "-s", "-c", _COMPILE, str(staging), TASK_ROOT],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise PackagingError("compiling the bytecode took over 900 s; try --no-compile") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise PackagingError(
            f"compiling the bytecode failed (exit {done.returncode}): {last}; try --no-compile"
        )
    cache_tag = (done.stdout.strip().splitlines() or [sys.implementation.cache_tag])[-1]
    sources = _sources(staging)
    failed = tuple(
        p.relative_to(staging).as_posix() for p in sources if not _pyc(p, cache_tag).is_file()
    )
    return Bytecode(compiled=len(sources) - len(failed), failed=failed)
