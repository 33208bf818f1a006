"""The deterministic zip and its size report.

Entries are sorted, dated 1980-01-01 (the earliest a zip can store) and stored with mode 0644
(0755 for nothing: Lambda only reads the files), so the bytes depend on file names and contents
only: the same inputs give a byte-identical zip and ``sam deploy`` sees no change when there is
none. ``zipfile`` from the standard library does the writing; nothing here needs more.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .bytecode import Bytecode

__all__ = [
    "LAMBDA_UNZIPPED_LIMIT",
    "LAMBDA_ZIPPED_LIMIT",
    "ZIP_TIMESTAMP",
    "PackageReport",
    "write_zip",
]

#: Lambda limits for a zip deployment package (uploaded directly / after unpacking).
LAMBDA_ZIPPED_LIMIT = 50 * 1024 * 1024
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024

#: Every zip entry gets this timestamp: rebuilds are byte-identical.
ZIP_TIMESTAMP = (1980, 1, 1, 0, 0, 0)


def _files(root: Path) -> Iterator[tuple[str, Path]]:
    for path in root.rglob("*"):
        if path.is_file():
            yield path.relative_to(root).as_posix(), path


def write_zip(source_dir: str | os.PathLike[str], output_zip: str | os.PathLike[str]) -> Path:
    """Zip every file under ``source_dir`` deterministically; return the zip's path."""
    output = Path(output_zip)
    output.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(output, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, path in sorted(_files(Path(source_dir))):
            info = zipfile.ZipInfo(name, date_time=ZIP_TIMESTAMP)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # Unix, so external_attr carries the permission bits
            info.external_attr = (0o100644 & 0xFFFF) << 16
            zf.writestr(info, path.read_bytes(), compresslevel=9)
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
    """What was built: the zip, the handler, and sizes per top-level package (bytes)."""

    zip_path: Path
    handler: str
    layout: str
    architecture: str
    python_version: str
    zipped_bytes: int
    unzipped_bytes: int
    #: top-level name -> (unzipped bytes, zipped bytes), largest first.
    packages: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: The library extras that went in (``api``, ``mysql``, ...).
    extras: tuple[str, ...] = ()
    #: (path in the function folder, reason) for every file left out.
    skipped: tuple[tuple[str, str], ...] = ()
    checked: bool = False
    #: The bytecode that went in (``__pycache__``), or why none.
    bytecode: Bytecode = field(default_factory=lambda: Bytecode(skipped="--no-compile"))

    @property
    def within_limits(self) -> bool:
        """True when Lambda accepts the zip (direct upload, unpacked size)."""
        return (
            self.zipped_bytes <= LAMBDA_ZIPPED_LIMIT
            and self.unzipped_bytes <= LAMBDA_UNZIPPED_LIMIT
        )

    @staticmethod
    def measure(zip_path: Path) -> tuple[int, dict[str, tuple[int, int]]]:
        """(unzipped total, per top-level package sizes largest first) of a zip."""
        sizes: dict[str, list[int]] = {}
        with zipfile.ZipFile(zip_path) as zf:
            for info in zf.infolist():
                entry = sizes.setdefault(_top_level(info.filename), [0, 0])
                entry[0] += info.file_size
                entry[1] += info.compress_size
        ordered = sorted(sizes.items(), key=lambda item: (-item[1][0], item[0]))
        return sum(s[0] for s in sizes.values()), {n: (s[0], s[1]) for n, s in ordered}

    def format(self, top: int = 10, verbose: bool = False) -> str:
        """A human-readable report (the ``package`` command prints it)."""

        def mb(n: int) -> str:
            return f"{n / (1024 * 1024):7.2f} MB"

        extras = ",".join(self.extras) or "none"
        lines = [
            f"{self.zip_path}  (python{self.python_version}, {self.architecture}, "
            f"extras: {extras}, layout: {self.layout})",
            f"handler: {self.handler}",
            "import check: "
            + ("passed (the handler imports from the unpacked zip)" if self.checked else "skipped"),
            self.bytecode.line(),
        ]
        if verbose:
            lines += [f"skipped {path}  ({reason})" for path, reason in self.skipped]
            lines += [f"not compiled {path}  (ships as source)" for path in self.bytecode.failed]
        elif self.skipped:
            lines.append(f"skipped {len(self.skipped)} paths (--verbose lists them)")
        lines.append(f"{'package':<28}{'unzipped':>12}{'zipped':>12}")
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
            lines.append("OVER LAMBDA LIMITS: drop extras, or use a container image or layers")
        return "\n".join(lines)
