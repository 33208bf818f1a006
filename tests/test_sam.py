"""template.yaml under the real AWS SAM CLI: ``sam validate --lint`` and ``sam build``.

``sam`` runs from its own virtualenv (``scripts/sam`` creates ``.venv-sam`` on first use:
aws-sam-cli pins boto3, pydantic and click to other versions than the project's). ``sam build``
uses its own Python builder (pip, no container): it installs ``examples/requirements.txt``
(``peewee-serverless[api,mysql]``) next to the ``users`` package. peewee-serverless is not on
PyPI yet, so pip finds it as a wheel of this checkout through ``PIP_FIND_LINKS``, which is what
the deployment guide tells users to do. The built function then answers the example's events
from a clean interpreter whose path is only the artifact and the runtime's boto3.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from peewee_serverless.packaging.check import runtime_stand_in
from peewee_serverless.packaging.requirements import PipSource

from .conftest import GENERAL_BACKENDS, Backend, make_backend
from .packaging_functions import (
    assert_create_duplicate_get,
    example_events,
    run_task,
    source_tree,
)

ROOT = Path(__file__).resolve().parent.parent
SAM = ROOT / "scripts" / "sam"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux wheels"),
]


def sam(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SAM), *args],
        cwd=ROOT,
        env={**os.environ, "AWS_DEFAULT_REGION": "us-east-1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=900,  # the first call creates .venv-sam
        check=False,
    )


def test_template_passes_sam_validate_lint() -> None:
    done = sam("validate", "--lint", "--template", "template.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "is a valid SAM Template" in done.stdout + done.stderr


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``sam build`` of template.yaml into a temporary build directory."""
    wheels = tmp_path_factory.mktemp("checkout-wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "-w",
            str(wheels),
            str(source_tree(ROOT, tmp_path_factory.mktemp("src") / "checkout")),
        ],
        check=True,
        timeout=300,
    )
    build_dir = tmp_path_factory.mktemp("sam") / "build"
    done = sam(
        *("build", "--template", "template.yaml", "--build-dir", str(build_dir)),
        env={"PIP_FIND_LINKS": str(wheels)},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Build Succeeded" in done.stdout + done.stderr
    return build_dir


def test_sam_build_builds_both_functions_with_their_dependencies(built: Path) -> None:
    for function in ("UsersFunction", "MigrateFunction"):
        root = built / function
        assert (root / "users" / "app.py").is_file(), function
        assert (root / "users" / "migrations" / "0001_create_user.py").is_file()
        for dependency in ("peewee_serverless", "peewee.py", "pymysql", "pydantic"):
            assert (root / dependency).exists(), (function, dependency)
    assert "CodeUri: UsersFunction" in (built / "template.yaml").read_text()


@pytest.fixture(params=[b for b in GENERAL_BACKENDS if b in ("sqlite", "mariadb")])
def mysql_or_sqlite(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """The engines the example's requirements.txt has a driver for (PyMySQL; SQLite built in)."""
    backend = make_backend(request.param, tmp_path)
    yield backend
    backend.close()


def test_sam_build_artifact_answers_the_example_events(
    built: Path, mysql_or_sqlite: Backend, tmp_path: Path
) -> None:
    venv = tmp_path / "clean-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    runtime = runtime_stand_in(tmp_path / "runtime", PipSource())
    answers = run_task(
        built / "UsersFunction",
        "users.app.handler",
        example_events(ROOT / "examples" / "users"),
        mysql_or_sqlite.env,
        venv / "bin" / "python",
        runtime,
        prelude="users.migrate_handler.handler",
    )
    assert_create_duplicate_get(answers)
