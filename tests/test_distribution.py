"""What `pip install peewee-serverless` gets: the sdist, the wheel's metadata, the core alone.

The sdist and the wheel are built with `python -m build` (PyPA's frontend, isolated build
environment), as a release would be. The core is installed into a fresh virtualenv without any
extra: it must work with Peewee alone (the lifecycle on SQLite), and the `api` modules must
fail to import there with the missing dependency named.
"""

from __future__ import annotations

import email
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from .packaging_functions import source_tree

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    tree = source_tree(ROOT, tmp_path_factory.mktemp("src") / "checkout")
    subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(out), str(tree)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return out


def test_sdist_ships_the_package_and_license_but_no_tests(dist: Path) -> None:
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = [n.split("/", 1)[1] for n in tar.getnames() if "/" in n]
    assert "LICENSE" in names and "README.md" in names and "pyproject.toml" in names
    assert "src/peewee_serverless/packaging/__init__.py" in names
    assert "src/peewee_serverless/py.typed" in names
    for name in names:  # the suite needs the repository (examples, servers): not shipped
        assert not name.startswith(("tests/", "bench/", "examples/", "scripts/")), name


def test_wheel_metadata(dist: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        meta_name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        meta = email.message_from_bytes(zf.read(meta_name))
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in zf.namelist())
    assert meta["License-Expression"] == "MIT"
    classifiers = meta.get_all("Classifier") or []
    assert "Typing :: Typed" in classifiers and "Topic :: Database" in classifiers
    # No public home yet: no invented project URLs (add them, and a check, once there is one).
    assert meta.get_all("Project-URL") is None
    core = [r for r in meta.get_all("Requires-Dist") or [] if "extra ==" not in r]
    assert [r.split("<")[0].split(">")[0] for r in core] == ["peewee"]
    assert {"api", "mysql", "postgres", "aws", "package"} <= set(meta.get_all("Provides-Extra"))


CORE = r"""
import json, sys
import peewee_serverless
from peewee import CharField, Model
from peewee_serverless import database_from_env, database_lifecycle

db = database_from_env({"DB_ENGINE": "sqlite", "DB_NAME": sys.argv[1]})

class Note(Model):
    title = CharField()
    class Meta:
        database = db

class Context:
    def get_remaining_time_in_millis(self):
        return 5000

@database_lifecycle(db)
def handler(event, context):
    db.create_tables([Note])
    return Note.create(title=event["title"]).id

first = handler({"title": "a"}, Context())
second = handler({"title": "b"}, Context())
try:
    import peewee_serverless.http
    api = "imported"
except ImportError as exc:
    api = str(exc)
heavy = sorted(m for m in sys.modules if m.startswith(("aws_lambda_powertools", "pydantic")))
print(json.dumps({"ids": [first, second], "api": api, "heavy": heavy}))
"""


def test_core_install_works_with_peewee_alone(dist: Path, tmp_path: Path) -> None:
    import json

    (wheel,) = dist.glob("*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(wheel)],
        check=True,
        timeout=300,
    )
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        check=True,
    )
    installed = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert installed - {"pip", "setuptools", "wheel"} == {"peewee", "peewee-serverless"}
    done = subprocess.run(
        [str(python), "-c", CORE, str(tmp_path / "core.sqlite3")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["ids"] == [1, 2]
    assert "aws_lambda_powertools" in result["api"]  # what is missing, and the extra bringing it
    assert "pip install 'peewee-serverless[api]'" in result["api"]
    assert result["heavy"] == []
