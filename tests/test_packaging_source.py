"""What ships from a function folder: only code; layout and handler detection (no pip here)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from peewee_serverless.packaging import PackagingError
from peewee_serverless.packaging.source import scan_function

from .packaging_functions import FLAT, PACKAGE, write_function

CANARY = "canary-5e3c1f0a"
PRIVATE_KEY = f"-----BEGIN OPENSSH PRIVATE KEY-----\n{CANARY}\n-----END OPENSSH PRIVATE KEY-----\n"

JUNK = {
    "venv/pyvenv.cfg": "home = /usr/bin\n",
    "venv/lib/python3.11/site-packages/evil.py": f"# {CANARY}\n",
    "secrets.json": f'{{"password": "{CANARY}"}}\n',
    "id_rsa": PRIVATE_KEY,
    "server.pem": PRIVATE_KEY,
    "users.sqlite3": CANARY,
    "debug.log": CANARY,
    "dist/function.zip": CANARY,
    ".env": f"DB_PASSWORD={CANARY}\n",
    ".aws-sam/build/app.py": CANARY,
    "__pycache__/app.cpython-311.pyc": CANARY,
    "tests/test_app.py": "def test(): pass\n",
    "notes.txt": CANARY,  # ignored by the folder's .gitignore
    "scratch/tmp.py": CANARY,  # ignored by .lambdaignore
    "keys/deploy.py": f"KEY = '''{PRIVATE_KEY}'''\n",  # code, but it holds a private key
    "global-bundle.pem": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    ".gitignore": "*.txt\n!requirements.txt\n",
    ".lambdaignore": "scratch/\n!global-bundle.pem\n",
}


def shipped(folder: Path) -> set[str]:
    return {f.arcname for f in scan_function(folder).files}


def test_only_code_ships(tmp_path: Path) -> None:
    folder = write_function(tmp_path / "notes", {**FLAT, **JUNK})
    source = scan_function(folder)
    found = {f.arcname for f in source.files}
    # The CA bundle is re-included by .lambdaignore; certificates are not secrets.
    assert found == {"app.py", "models.py", "requirements.txt", "global-bundle.pem"}
    for item in source.files:
        assert CANARY not in item.path.read_text()
    skipped = dict(source.skipped)
    assert skipped["venv/"] == "virtualenv"
    assert skipped["notes.txt"].endswith(".gitignore")
    assert skipped["scratch/"] == ".lambdaignore"
    assert skipped["keys/deploy.py"] == "holds a private key"
    for name in ("secrets.json", "id_rsa", "server.pem", "users.sqlite3", "debug.log", "dist/",
                 ".env", ".aws-sam/", "__pycache__/", "tests/"):  # fmt: skip
        assert skipped[name] == "built-in rule", name


def test_enclosing_repository_gitignore_applies(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("generated_*.py\n")
    folder = write_function(tmp_path / "functions" / "notes", {**FLAT, "generated_x.py": "x=1\n"})
    assert shipped(folder) == {"app.py", "models.py", "requirements.txt"}


def test_symlink_leaving_the_folder_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text(CANARY)
    folder = write_function(tmp_path / "notes", FLAT)
    (folder / "config.py").symlink_to(outside)
    with pytest.raises(
        PackagingError, match=r"symlink config.py points outside the function folder"
    ):
        scan_function(folder)


def test_symlink_inside_the_folder_ships_its_content(tmp_path: Path) -> None:
    folder = write_function(tmp_path / "notes", FLAT)
    (folder / "settings.py").symlink_to(folder / "models.py")
    assert "settings.py" in shipped(folder)


def test_layouts_and_handlers(tmp_path: Path) -> None:
    flat = scan_function(write_function(tmp_path / "notes", FLAT))
    assert (flat.layout, flat.handler, flat.prefix) == ("flat", "app.handler", "")
    assert "slugify" in flat.imports and "models" in flat.imports
    package = scan_function(write_function(tmp_path / "orders", PACKAGE))
    assert (package.layout, package.handler) == ("package", "orders.app.handler")
    assert {f.arcname for f in package.files} >= {"orders/app.py", "orders/codes/format.py"}
    # An __init__.py alone does not make a package: absolute imports work only at the root.
    both = scan_function(write_function(tmp_path / "both", {**FLAT, "__init__.py": ""}))
    assert both.layout == "flat"
    forced = scan_function(tmp_path / "both", layout="package")
    assert forced.handler == "both.app.handler"


def test_package_folder_needs_an_identifier_name(tmp_path: Path) -> None:
    folder = write_function(tmp_path / "my-orders", PACKAGE)
    with pytest.raises(PackagingError, match="not a Python identifier"):
        scan_function(folder)
