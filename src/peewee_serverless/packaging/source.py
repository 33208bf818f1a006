"""The function folder: which files ship, where they go in the zip, and what they import.

Layout (as SAM and Chalice pack a ``CodeUri`` folder): the folder's *contents* go to the zip
root, so flat modules import as on the laptop (``app.py`` + ``models.py`` with
``from models import db``; handler ``app.handler``). A folder that is a package — it has an
``__init__.py`` *and* its modules use relative imports (``from .models import db``), which
cannot work at the zip root — is stored as that package instead (``users/app.py``, handler
``users.app.handler``). ``--layout flat|package`` overrides the detection.

Only code ships. Skipped, in this order of precedence (later wins, ``!pattern`` re-includes):

1. built-in rules (:data:`DEFAULT_IGNORE`): dot-files and dot-folders, caches, virtualenvs
   (any folder holding ``pyvenv.cfg``), databases, logs, keys and certificates, ``secrets.json``,
   earlier build outputs (``dist/``, ``build/``, ``*.zip``), ``node_modules/``, tests
   (``tests/``, ``conftest.py``, ``test_*.py``, ``*_test.py``, ``pytest.ini``);
2. ``.gitignore`` files from the enclosing git repository's root down to the function folder,
   and those inside it, each applying to its own directory as git does;
3. ``.lambdaignore`` in the function folder (same syntax), the place to re-include a file
   (``!global-bundle.pem`` for a CA bundle).

Whatever the rules say, a file holding a PEM private key never ships, and a symlink that leaves
the folder is an error (its target would be shipped without anyone noticing). Gitignore
semantics come from ``pathspec`` (the library pip and black use), not our own matcher.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import PackagingError

__all__ = [
    "DEFAULT_IGNORE",
    "FunctionSource",
    "IGNORE_FILES",
    "SourceFile",
    "scan_function",
]

#: Built-in ignore rules (gitignore syntax), applied before the user's ignore files.
DEFAULT_IGNORE: tuple[str, ...] = (
    ".*",  # dot-files and dot-folders: .env, .git, .venv, .aws-sam, .pytest_cache, ...
    "__pycache__/",
    "*.py[cod]",
    "*.egg-info/",
    # databases and logs
    "*.sqlite",
    "*.sqlite3",
    "*.db",
    "*.db-journal",
    "*.sqlite3-journal",
    "*.log",
    # keys, certificates, credentials
    "*.pem",
    "*.key",
    "*.crt",
    "*.p12",
    "*.pfx",
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    "secrets.json",
    "credentials",
    # earlier build outputs and other tools' folders
    "dist/",
    "build/",
    "*.zip",
    "node_modules/",
    # tests: pytest's own discovery patterns and configuration (the runtime never imports them)
    "tests/",
    "conftest.py",
    "test_*.py",
    "*_test.py",
    "pytest.ini",
)

#: The ignore files read, in increasing precedence (documented in docs/deployment.md).
IGNORE_FILES = (".gitignore", ".lambdaignore")

_PRIVATE_KEY_MARK = b"PRIVATE KEY-----"


@dataclass(frozen=True)
class SourceFile:
    """One file to ship: where it is, and its path inside the zip (POSIX)."""

    path: Path
    arcname: str


@dataclass
class FunctionSource:
    """The scanned function folder."""

    folder: Path
    layout: str  # "flat" | "package"
    #: Import prefix of the folder's modules in the zip: "" (flat) or "users." (package).
    prefix: str
    files: list[SourceFile] = field(default_factory=list)
    #: (path relative to the folder, reason) for everything left out.
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: Top-level module names the function's code imports (``peewee_serverless.http`` included
    #: as its full dotted name when it comes from us).
    imports: set[str] = field(default_factory=set)
    #: Module names (dotted, with prefix) that define a top-level ``handler``.
    handlers: list[str] = field(default_factory=list)

    @property
    def handler(self) -> str:
        """The handler string to put in the template (``app.handler`` when there is app.py)."""
        preferred = f"{self.prefix}app"
        if preferred in self.handlers or not self.handlers:
            return f"{preferred}.handler"
        return f"{self.handlers[0]}.handler"

    def has_module(self, name: str) -> bool:
        """Whether the folder has the top-level module ``name`` (``app`` -> app.py)."""
        wanted = self.prefix.replace(".", "/") + f"{name}.py"
        return any(item.arcname == wanted for item in self.files)

    @property
    def modules(self) -> set[str]:
        """The top-level names the function itself provides in the zip."""
        if self.layout == "package":
            return {self.prefix.rstrip(".")}
        names = set()
        for item in self.files:
            first = item.arcname.split("/", 1)[0]
            names.add(first.removesuffix(".py"))
        return names


# -- ignore rules --------------------------------------------------------------------------------
class _Rules:
    """Ignore specs, each anchored at a directory; the last one with an opinion wins."""

    def __init__(self) -> None:
        try:
            import pathspec
        except ImportError:
            raise PackagingError(
                "the package command needs the `package` extra: "
                'pip install "peewee-serverless[package]"'
            ) from None

        self._pathspec = pathspec
        self._specs: list[tuple[Path, str, pathspec.PathSpec]] = []
        self._final: list[tuple[Path, str, pathspec.PathSpec]] = []  # .lambdaignore: wins

    def add(self, base: Path, lines: list[str], origin: str, final: bool = False) -> None:
        spec = self._pathspec.GitIgnoreSpec.from_lines(lines)
        (self._final if final else self._specs).append((base, origin, spec))

    def add_file(self, path: Path, origin: str, final: bool = False) -> None:
        if path.is_file():
            lines = path.read_text(encoding="utf-8").splitlines()
            self.add(path.parent, lines, origin, final)

    def ignored_by(self, path: Path, is_dir: bool) -> str | None:
        verdict: str | None = None
        for base, origin, spec in (*self._specs, *self._final):
            try:
                relative = path.relative_to(base).as_posix()
            except ValueError:
                continue
            result = spec.check_file(relative + ("/" if is_dir else ""))
            if result.include is True:
                verdict = origin
            elif result.include is False:
                verdict = None
        return verdict


def _git_root(folder: Path) -> Path | None:
    for candidate in (folder, *folder.parents):
        if (candidate / ".git").exists():
            return candidate
    return None


def _rules_for(folder: Path) -> _Rules:
    rules = _Rules()
    rules.add(folder, list(DEFAULT_IGNORE), "built-in rule")
    root = _git_root(folder)
    if root is not None and root != folder:
        # The repository's .gitignore files above the folder, outermost first.
        chain = [p for p in (folder, *folder.parents) if p.is_relative_to(root) and p != folder]
        for directory in reversed(chain):
            rules.add_file(directory / ".gitignore", f"{directory / '.gitignore'}")
    return rules


# -- walking -------------------------------------------------------------------------------------
def _holds_private_key(path: Path) -> bool:
    with path.open("rb") as fh:
        return _PRIVATE_KEY_MARK in fh.read(1 << 20)


def _walk(folder: Path, rules: _Rules, source: FunctionSource) -> Iterator[tuple[Path, str]]:
    """(real file, path relative to the folder) for every file that ships, sorted."""
    lambdaignore = folder / ".lambdaignore"

    def visit(directory: Path, relative: str, seen: frozenset[Path]) -> Iterator[tuple[Path, str]]:
        rules.add_file(directory / ".gitignore", f"{relative or '.'}/.gitignore")
        if directory == folder:
            rules.add_file(lambdaignore, ".lambdaignore", final=True)
        for entry in sorted(directory.iterdir(), key=lambda p: p.name):
            rel = f"{relative}{entry.name}"
            target = entry
            if entry.is_symlink():
                resolved = entry.resolve()
                if not resolved.exists():
                    raise PackagingError(
                        f"symlink {rel} points to {resolved}, which does not exist"
                    )
                if not resolved.is_relative_to(folder):
                    raise PackagingError(
                        f"symlink {rel} points outside the function folder (to {resolved}); "
                        "copy the file into the folder or remove the link"
                    )
                target = resolved
            is_dir = target.is_dir()
            if is_dir and (target / "pyvenv.cfg").is_file():
                source.skipped.append((rel + "/", "virtualenv"))
                continue
            reason = rules.ignored_by(entry, is_dir)
            if reason is not None:
                source.skipped.append((rel + ("/" if is_dir else ""), reason))
                continue
            if is_dir:
                real = target.resolve()
                if real in seen:
                    raise PackagingError(f"symlink {rel} makes a loop")
                yield from visit(target, rel + "/", seen | {real})
            elif target.is_file():
                if _holds_private_key(target):
                    source.skipped.append((rel, "holds a private key"))
                    continue
                yield target, rel

    yield from visit(folder, "", frozenset({folder}))


# -- what the code says --------------------------------------------------------------------------
def _parse(path: Path) -> ast.Module | None:
    try:
        return ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError):
        return None  # the import check reports it, with the module's name


def _uses_relative_imports(tree: ast.Module) -> bool:
    return any(isinstance(n, ast.ImportFrom) and n.level > 0 for n in ast.walk(tree))


def _imported_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            if node.module == "peewee_serverless":
                names.update(f"peewee_serverless.{alias.name}" for alias in node.names)
    return names


def _defines_handler(tree: ast.Module) -> bool:
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "handler":
            return True
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "handler" for t in targets):
                return True
    return False


def scan_function(folder: str | os.PathLike[str], layout: str = "auto") -> FunctionSource:
    """Scan a function folder: the files that ship, the layout, imports and handler modules."""
    root = Path(folder).resolve()
    if not root.is_dir():
        raise PackagingError(f"function folder {folder} does not exist")
    if layout not in ("auto", "flat", "package"):
        raise PackagingError(f"layout must be auto, flat or package, got {layout!r}")
    source = FunctionSource(folder=root, layout="flat", prefix="")
    found = list(_walk(root, _rules_for(root), source))
    trees = {rel: _parse(path) for path, rel in found if rel.endswith(".py")}
    relative = any(t is not None and _uses_relative_imports(t) for t in trees.values())
    is_package = (root / "__init__.py").is_file()
    if layout == "package" or (layout == "auto" and is_package and relative):
        if not root.name.isidentifier():
            raise PackagingError(
                f"function folder {root.name!r} is a package (relative imports) but its name is "
                "not a Python identifier; rename it or use absolute imports (flat layout)"
            )
        source.layout, source.prefix = "package", f"{root.name}."
    if not found:
        raise PackagingError(f"function folder {folder} has no files to ship")
    arc_prefix = source.prefix.replace(".", "/")
    source.files = [SourceFile(path, arc_prefix + rel) for path, rel in found]
    for rel, tree in trees.items():
        if tree is None:
            continue
        source.imports |= _imported_names(tree)
        if _defines_handler(tree) and "/" not in rel:
            source.handlers.append(source.prefix + rel.removesuffix(".py"))
    source.handlers.sort()
    return source
