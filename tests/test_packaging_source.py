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
    "test_models.py": "def test(): pass\n",  # pytest finds tests next to the code too
    "app_test.py": "def test(): pass\n",
    "conftest.py": "pytest_plugins = ['peewee_serverless.testing']\n",
    "pytest.ini": "[pytest]\n",
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
                 ".env", ".aws-sam/", "__pycache__/", "tests/", "test_models.py", "app_test.py",
                 "conftest.py", "pytest.ini"):  # fmt: skip
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


def test_requirement_files_keep_options_and_take_out_the_library(tmp_path: Path) -> None:
    from peewee_serverless.packaging.requirements import read_requirements

    (tmp_path / "sub").mkdir()
    own = tmp_path / "sub" / "requirements.txt"
    own.write_text(
        "# a lock file, pip-compile style\n"
        "peewee-serverless[api,mysql]>=0.1  # the library: only its extras count\n"
        "python-slugify==8.0.4 \\\n    --hash=sha256:aa \\\n    --hash=sha256:bb\n"
        "-r ../more.txt\n"
    )
    found = read_requirements([own])
    assert found.library_extras == ("api", "mysql")
    assert (
        found.lines[0].startswith("python-slugify==8.0.4") and "--hash=sha256:bb" in found.lines[0]
    )
    assert found.lines[1] == f"-r {tmp_path / 'more.txt'}"  # relative to the file, made absolute
    bad = tmp_path / "bad.txt"
    bad.write_text("not a requirement!\n")
    with pytest.raises(PackagingError, match=r"bad.txt:1: not a requirement"):
        read_requirements([bad])


def test_template_gives_the_function_environment_runtime_and_architecture(tmp_path: Path) -> None:
    from peewee_serverless.packaging.template import engine_from_environment, read_template

    template = tmp_path / "template.yaml"
    template.write_text(
        "Parameters:\n  Engine:\n    Type: String\n    Default: postgresql\n"
        "  Arch:\n    Type: String\n    Default: arm64\n"
        "Globals:\n  Function:\n    Runtime: python3.12\n    Architectures: [!Ref Arch]\n"
        "    Environment:\n      Variables:\n        DB_ENGINE: !Ref Engine\n"
        "        DB_HOST: !GetAtt Db.Endpoint.Address\n"  # only CloudFormation knows: left out
        "Resources:\n"
        "  Other:\n    Type: AWS::Serverless::Function\n    Properties:\n      CodeUri: other/\n"
        "  Notes:\n    Type: AWS::Serverless::Function\n    Properties:\n      CodeUri: notes/\n"
        "      Runtime: python3.11\n"
        "      Environment:\n        Variables:\n          DB_NAME: notes\n"
    )
    found = read_template(template, tmp_path / "notes")
    assert (found.name, found.runtime, found.architecture) == ("Notes", "python3.11", "arm64")
    assert found.environment == {"DB_ENGINE": "postgresql", "DB_NAME": "notes"}
    assert engine_from_environment(found.environment) == "postgres"
    assert read_template(template, tmp_path / "elsewhere").name is None
    assert engine_from_environment({"DATABASE_URL": "mysql+pool://u@h/db"}) == "mysql"
    assert engine_from_environment({"DB_HOST": "db.example.com"}) == "mysql"
    assert engine_from_environment({}) is None
