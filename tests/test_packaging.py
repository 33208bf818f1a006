"""The Lambda package: built offline from pre-fetched wheels, checked, and run in a clean venv.

The wheels are downloaded once per session (pip's cache makes repeat runs cheap); every build
after that is offline (``--no-index``). The zip targets the running interpreter's Python minor
and this machine's architecture so that it imports here; Lambda builds default to 3.12.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from peewee_serverless.packaging import (
    ZIP_TIMESTAMP,
    PackageReport,
    PackagingError,
    add_command,
    build_package,
    download_wheels,
    library_requirements,
)

ROOT = Path(__file__).resolve().parent.parent
APP_DIR = ROOT / "examples" / "users"
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}.get(
    platform.machine().lower()
)

pytestmark = pytest.mark.skipif(
    ARCH is None or not sys.platform.startswith("linux"),
    reason="the zip holds Linux wheels; running it needs a Linux x86_64/arm64 machine",
)


@pytest.fixture(scope="session")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The dependencies' Lambda wheels (and boto3's), downloaded once: the only index access."""
    dest = tmp_path_factory.mktemp("wheels")
    download_wheels(
        dest,
        python_version=PYTHON,
        architecture=ARCH or "x86_64",
        extras=("mysql",),
        include_boto3=True,
    )
    return dest


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory, wheels: Path) -> PackageReport:
    """The example service's zip, built offline."""
    out = tmp_path_factory.mktemp("dist") / "function.zip"
    return build_package(
        APP_DIR,
        out,
        python_version=PYTHON,
        architecture=ARCH or "x86_64",
        find_links=[wheels],
        no_index=True,
        package_root=ROOT,
    )


def _names(zip_path: Path) -> list[str]:
    with zipfile.ZipFile(zip_path) as zf:
        return zf.namelist()


def test_zip_holds_the_app_the_library_and_its_dependencies(built: PackageReport) -> None:
    names = set(_names(built.zip_path))
    for expected in (
        "examples/__init__.py",
        "examples/users/__init__.py",
        "examples/users/app.py",
        "examples/users/migrations/0001_create_user.py",
        "peewee_serverless/__init__.py",
        "peewee_serverless/migrate.py",
        "peewee.py",
        "playhouse/migrate.py",
        "pymysql/__init__.py",
        "pydantic/__init__.py",
        "aws_lambda_powertools/__init__.py",
    ):
        assert expected in names
    assert built.app_package == "examples.users"
    assert any(re.fullmatch(r"pydantic_core/_pydantic_core\..*linux.*\.so", n) for n in names)


def test_zip_has_no_tests_caches_scripts_or_runtime_provided_packages(
    built: PackageReport,
) -> None:
    names = _names(built.zip_path)
    assert names == sorted(names)
    for name in names:
        parts = name.split("/")
        assert "__pycache__" not in parts and "tests" not in parts, name
        assert not name.endswith((".pyc", ".pyo")), name
        assert parts[0] not in ("bin", "boto3", "botocore", "s3transfer"), name
        assert not (parts[-1] == "RECORD" and parts[0].endswith(".dist-info")), name
    with zipfile.ZipFile(built.zip_path) as zf:
        assert {info.date_time for info in zf.infolist()} == {ZIP_TIMESTAMP}


def test_size_report(built: PackageReport) -> None:
    assert built.within_limits
    assert built.zipped_bytes == built.zip_path.stat().st_size
    assert 0 < built.zipped_bytes < built.unzipped_bytes
    assert {"peewee", "peewee_serverless", "pydantic_core", "examples"} <= set(built.packages)
    sizes = [unzipped for unzipped, _ in built.packages.values()]
    assert sizes == sorted(sizes, reverse=True)
    text = built.format()
    assert "total" in text and "250 MB unzipped" in text and "examples.users" in text


def test_package_command_rebuilds_a_byte_identical_zip(
    built: PackageReport, wheels: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser(prog="peewee-serverless")
    add_command(parser.add_subparsers(dest="command"))
    out = tmp_path / "again.zip"
    args = parser.parse_args(
        [
            "package",
            str(APP_DIR),
            "-o",
            str(out),
            "--python",
            PYTHON,
            "--arch",
            ARCH or "x86_64",
            "--find-links",
            str(wheels),
            "--no-index",
            "--package-root",
            str(ROOT),
        ]
    )
    assert args.func(args) == 0
    assert "examples.users" in capsys.readouterr().out
    assert out.read_bytes() == built.zip_path.read_bytes()


def test_library_requirements_follow_the_extras() -> None:
    base = library_requirements(())
    assert any(r.lower().startswith("peewee") for r in base)
    assert not any(r.lower().startswith(("pymysql", "psycopg2")) for r in base)
    both = library_requirements(("mysql", "postgres"))
    assert any(r.lower().startswith("pymysql") for r in both)
    assert any(r.lower().startswith("psycopg2-binary") for r in both)
    with pytest.raises(PackagingError, match="unknown extra"):
        library_requirements(("oracle",))


def test_bad_arguments_fail_before_pip(tmp_path: Path) -> None:
    with pytest.raises(PackagingError, match="architecture"):
        build_package(APP_DIR, tmp_path / "f.zip", architecture="sparc")
    with pytest.raises(PackagingError, match="python version"):
        build_package(APP_DIR, tmp_path / "f.zip", python_version="python3")
    odd = tmp_path / "my-app"
    odd.mkdir()
    with pytest.raises(PackagingError, match="importable"):
        build_package(odd, tmp_path / "f.zip", package_root=tmp_path)
    assert not (tmp_path / "f.zip").exists()


# -- the unpacked zip in a clean virtualenv ------------------------------------------------------
RUN_IN_CLEAN_VENV = r"""
import json, os, sys

class Context:
    function_name = "users"
    memory_limit_in_mb = 128
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:users"
    aws_request_id = "req-1"
    def get_remaining_time_in_millis(self):
        return 10_000

import peewee_serverless
from examples.users.migrate_handler import handler as migrate  # the template's MigrateFunction
migrated = migrate({}, Context())
from examples.users.app import handler  # the template's UsersFunction
post = json.load(open(sys.argv[1]))
get = json.load(open(sys.argv[2]))
created = handler(post, Context())
listed = handler(get, Context())
import boto3
print(json.dumps({
    "library": peewee_serverless.__file__,
    "boto3": boto3.__file__,
    "migrated": migrated,
    "created": created,
    "listed": listed,
}))
"""


@pytest.fixture(scope="session")
def lambda_runtime(tmp_path_factory: pytest.TempPathFactory, wheels: Path) -> Path:
    """Stands in for Lambda's ``/var/runtime``: boto3, which the zip leaves out on purpose."""
    runtime = tmp_path_factory.mktemp("runtime")
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "--quiet", "--target", str(runtime)),
            *("--no-index", "--find-links", str(wheels), "--only-binary=:all:", "boto3"),
        ],
        check=True,
        timeout=300,
    )
    return runtime


@pytest.fixture(scope="session")
def clean_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv with nothing installed (no pip, no site packages): only the zip counts."""
    venv = tmp_path_factory.mktemp("clean-venv")
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    return venv / "bin" / "python"


def test_unpacked_zip_answers_users_events_in_a_clean_venv(
    built: PackageReport, clean_python: Path, lambda_runtime: Path, tmp_path: Path
) -> None:
    unpacked = tmp_path / "task"  # Lambda unpacks to /var/task
    with zipfile.ZipFile(built.zip_path) as zf:
        zf.extractall(unpacked)
    # The example's own API Gateway REST (payload v1) events: POST /users, then GET /users.
    post = APP_DIR / "events" / "create_user_v1.json"
    get = APP_DIR / "events" / "list_users_v1.json"
    email = json.loads(json.loads(post.read_text())["body"])["email"]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        # Lambda's order: the function's code (/var/task), then the runtime's (/var/runtime).
        "PYTHONPATH": os.pathsep.join((str(unpacked), str(lambda_runtime))),
        "DB_ENGINE": "sqlite",
        "DB_NAME": str(tmp_path / "users.sqlite3"),
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }
    done = subprocess.run(
        [str(clean_python), "-s", "-c", RUN_IN_CLEAN_VENV, str(post), str(get)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(result["library"]).is_relative_to(unpacked)
    assert Path(result["boto3"]).is_relative_to(lambda_runtime)  # not shipped in the zip
    assert "0001_create_user" in result["migrated"]["applied"]
    assert result["created"]["statusCode"] == 201, result["created"]
    listed = result["listed"]
    assert listed["statusCode"] == 200, listed
    body = json.loads(listed["body"])
    assert email in json.dumps(body)


# -- the SAM template ----------------------------------------------------------------------------
def test_template_passes_cfn_lint() -> None:
    exe = shutil.which("cfn-lint", path=str(Path(sys.executable).parent)) or shutil.which(
        "cfn-lint"
    )
    assert exe, "cfn-lint is in the dev extra"
    done = subprocess.run(
        [exe, "template.yaml"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_template_handlers_exist_in_the_zip(built: PackageReport) -> None:
    template = (ROOT / "template.yaml").read_text()
    handlers = re.findall(r"^\s+Handler:\s*(\S+)\s*$", template, flags=re.M)
    assert "examples.users.app.handler" in handlers
    assert "examples.users.migrate_handler.handler" in handlers
    assert re.search(r"^\s+CodeUri:\s*dist/function\.zip\s*$", template, flags=re.M)
    names = set(_names(built.zip_path))
    for handler in handlers:
        module = handler.rsplit(".", 1)[0]
        assert module.replace(".", "/") + ".py" in names, handler
