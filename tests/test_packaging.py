"""Lambda zips: the example, a flat function and a package function, each run from a clean venv.

The Lambda wheels are downloaded once per session (pip's cache makes repeat runs cheap); every
build after that is offline (``--no-index``). Zips target the running interpreter's Python and
this machine's architecture so that they import here. Each unpacked zip runs in a virtualenv
with nothing installed; its ``sys.path`` is the zip, then a folder holding boto3 (Lambda's
``/var/runtime``), as in Lambda.
"""

from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from peewee_serverless.cli import main
from peewee_serverless.packaging import (
    ZIP_TIMESTAMP,
    PackageReport,
    PackagingError,
    build_package,
    download_wheels,
    library_requirements,
)

from .conftest import Backend
from .packaging_functions import (
    EVENTS,
    FLAT,
    PACKAGE,
    assert_create_duplicate_get,
    example_events,
    run_task,
    write_function,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "users"
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}.get(
    platform.machine().lower(), "x86_64"
)

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"),
    reason="the zip holds Linux wheels; running it needs a Linux x86_64/arm64 machine",
)


@pytest.fixture(scope="session")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every wheel the tests' zips need (and boto3's, for the runtime): the only index access."""
    dest = tmp_path_factory.mktemp("wheels")
    download_wheels(
        dest,
        python_version=PYTHON,
        architecture=ARCH,
        extras=("api", "mysql", "postgres"),
        requirements=["python-slugify>=8"],
        include_boto3=True,
    )
    return dest


def offline(wheels: Path) -> dict[str, Any]:
    return {
        "find_links": [wheels],
        "no_index": True,
        "python_version": PYTHON,
        "architecture": ARCH,
    }


@pytest.fixture(scope="session")
def example_zip(tmp_path_factory: pytest.TempPathFactory, wheels: Path) -> PackageReport:
    out = tmp_path_factory.mktemp("example") / "function.zip"
    return build_package(
        EXAMPLE, out, extras=("api", "mysql", "postgres"), template=ROOT / "template.yaml",
        **offline(wheels),
    )  # fmt: skip


@pytest.fixture(scope="session")
def flat_zip(tmp_path_factory: pytest.TempPathFactory, wheels: Path) -> PackageReport:
    folder = write_function(tmp_path_factory.mktemp("notes-src") / "notes", FLAT)
    out = tmp_path_factory.mktemp("notes") / "function.zip"
    return build_package(folder, out, extras=("mysql", "postgres"), **offline(wheels))


@pytest.fixture(scope="session")
def package_zip(tmp_path_factory: pytest.TempPathFactory, wheels: Path) -> PackageReport:
    folder = write_function(tmp_path_factory.mktemp("orders-src") / "orders", PACKAGE)
    out = tmp_path_factory.mktemp("orders") / "function.zip"
    return build_package(folder, out, extras=("mysql", "postgres"), **offline(wheels))


def names(zip_path: Path) -> list[str]:
    with zipfile.ZipFile(zip_path) as zf:
        return zf.namelist()


# -- layout --------------------------------------------------------------------------------------
def test_flat_function_is_at_the_zip_root_with_its_own_requirement(flat_zip: PackageReport) -> None:
    found = set(names(flat_zip.zip_path))
    assert {"app.py", "models.py", "slugify/__init__.py", "peewee.py"} <= found
    assert "peewee_serverless/__init__.py" in found
    assert flat_zip.handler == "app.handler" and flat_zip.layout == "flat"
    # No API layer: nothing of Powertools or pydantic, and the developer-only parts stay out.
    assert not any(n.startswith(("aws_lambda_powertools/", "pydantic")) for n in found)
    assert not any(n.startswith(("peewee_serverless/local/", "peewee_serverless/packaging/"))
                   for n in found)  # fmt: skip
    assert flat_zip.extras == ("mysql", "postgres")


def test_package_function_keeps_its_package(package_zip: PackageReport) -> None:
    found = set(names(package_zip.zip_path))
    assert {"orders/__init__.py", "orders/app.py", "orders/codes/format.py"} <= found
    assert "app.py" not in found
    assert package_zip.handler == "orders.app.handler" and package_zip.layout == "package"


def test_example_zip(example_zip: PackageReport) -> None:
    found = set(names(example_zip.zip_path))
    for expected in (
        "users/__init__.py",
        "users/app.py",
        "users/migrate_handler.py",
        "users/migrations/0001_create_user.py",
        "peewee_serverless/http.py",
        "pymysql/__init__.py",
        "psycopg2/__init__.py",
        "pydantic/__init__.py",
        "aws_lambda_powertools/__init__.py",
    ):
        assert expected in found
    assert example_zip.handler == "users.app.handler"
    assert any(re.fullmatch(r"pydantic_core/_pydantic_core\..*linux.*\.so", n) for n in found)
    listed = sorted(found)
    assert names(example_zip.zip_path) == listed
    tag = sys.implementation.cache_tag
    for name in listed:
        parts = name.split("/")
        assert "tests" not in parts, name
        if "__pycache__" in parts:  # our bytecode only, not a wheel's or a checkout's leftovers
            assert re.fullmatch(rf"[^/]+\.{tag}\.pyc", parts[-1]), name
        assert parts[0] not in ("bin", "boto3", "botocore", "s3transfer", "examples"), name
        assert not (parts[-1] == "RECORD" and parts[0].endswith(".dist-info")), name
    with zipfile.ZipFile(example_zip.zip_path) as zf:
        assert {info.date_time for info in zf.infolist()} == {ZIP_TIMESTAMP}


def test_template_handlers_are_in_the_example_zip(example_zip: PackageReport) -> None:
    template = (ROOT / "template.yaml").read_text()
    handlers = re.findall(r"^\s+Handler:\s*(\S+)\s*$", template, flags=re.M)
    assert handlers == ["users.app.handler", "users.migrate_handler.handler"]
    found = set(names(example_zip.zip_path))
    for handler in handlers:
        assert handler.rsplit(".", 1)[0].replace(".", "/") + ".py" in found


def test_size_report(example_zip: PackageReport, wheels: Path, tmp_path: Path) -> None:
    assert example_zip.within_limits
    assert example_zip.zipped_bytes == example_zip.zip_path.stat().st_size
    assert 0 < example_zip.zipped_bytes < example_zip.unzipped_bytes
    sizes = [unzipped for unzipped, _ in example_zip.packages.values()]
    assert sizes == sorted(sizes, reverse=True)
    text = example_zip.format()
    assert "handler: users.app.handler" in text and "250 MB unzipped" in text
    # Without the `api` extra a MySQL function is the database layer alone (README's number).
    folder = write_function(tmp_path / "notes", FLAT)
    mysql_only = build_package(folder, tmp_path / "f.zip", engine="mysql", **offline(wheels))
    assert mysql_only.extras == ("mysql",)
    assert mysql_only.unzipped_bytes < 5 * 1024 * 1024 < example_zip.unzipped_bytes


# -- running the unpacked zips -------------------------------------------------------------------
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


def run_zip(
    report: PackageReport,
    events: list[dict[str, Any]],
    backend: Backend,
    clean_python: Path,
    runtime: Path,
    tmp_path: Path,
    prelude: str = "",
) -> list[dict[str, Any]]:
    task = tmp_path / "task"  # Lambda unpacks to /var/task
    with zipfile.ZipFile(report.zip_path) as zf:
        zf.extractall(task)
    return run_task(task, report.handler, events, backend.env, clean_python, runtime, prelude)


@pytest.mark.slow
def test_flat_zip_answers_in_a_clean_venv(
    flat_zip: PackageReport, backend: Backend, clean_python: Path, lambda_runtime: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    answers = run_zip(flat_zip, EVENTS, backend, clean_python, lambda_runtime, tmp_path)
    assert_create_duplicate_get(answers)
    assert json.loads(answers[2]["body"])["slug"] == "hello-world"  # its own requirement ran


@pytest.mark.slow
def test_package_zip_answers_in_a_clean_venv(
    package_zip: PackageReport, backend: Backend, clean_python: Path, lambda_runtime: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    answers = run_zip(package_zip, EVENTS, backend, clean_python, lambda_runtime, tmp_path)
    assert_create_duplicate_get(answers)
    assert json.loads(answers[2]["body"])["code"] == "ORD-HELLO WORLD"


@pytest.mark.slow
def test_example_zip_answers_in_a_clean_venv(
    example_zip: PackageReport, backend: Backend, clean_python: Path, lambda_runtime: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    answers = run_zip(
        example_zip, example_events(EXAMPLE), backend, clean_python, lambda_runtime, tmp_path,
        prelude="users.migrate_handler.handler",
    )  # fmt: skip
    assert_create_duplicate_get(answers)
    assert json.loads(answers[1]["body"])["error"] == "conflict"


#: What only a developer's machine uses: the local runtime, the `package` command, the pytest
#: plugin for users' tests, the local Data API stand-in, the model generator and the template
#: reader. None of it goes into a function zip.
DEVELOPMENT_ONLY = (
    "peewee_serverless/local/",
    "peewee_serverless/packaging/",
    "peewee_serverless/testing/",
    "peewee_serverless/data_api/endpoint.py",
    "peewee_serverless/introspect.py",
    "peewee_serverless/sam_template.py",
)


@pytest.mark.slow
def test_zips_hold_no_test_or_development_parts_and_run_under_awslambdaric(
    flat_zip: PackageReport, example_zip: PackageReport, backend: Backend, tmp_path: Path
) -> None:
    from peewee_serverless.local.function import FunctionSpec, runtime_dir, unpack_zip
    from peewee_serverless.local.pool import ContainerPool

    for report in (flat_zip, example_zip):
        found = names(report.zip_path)
        assert "peewee_serverless/__init__.py" in found
        assert not [n for n in found if n.startswith(DEVELOPMENT_ONLY)], report.zip_path
    assert "peewee_serverless/data_api/driver.py" in names(example_zip.zip_path)
    # Without them the zip still starts under AWS's runtime client and answers.
    task = unpack_zip(flat_zip.zip_path, tmp_path / "task")
    spec = FunctionSpec(
        flat_zip.handler, task, runtime_dir(tmp_path / "runtime"), timeout=30.0, env=backend.env
    )
    pool = ContainerPool(spec, log=lambda line: None)
    try:
        answers = []
        for event in EVENTS:
            if event.get("id") == "$ID":
                event = {**event, "id": json.loads(answers[0]["body"])["id"]}
            outcome = pool.invoke(event)
            assert outcome.kind == "ok", outcome.error
            answers.append(outcome.json())
    finally:
        pool.close()
    assert_create_duplicate_get(answers)


# -- bytecode ------------------------------------------------------------------------------------
#: pyc header flags (PEP 552): bit 0 hash-based, bit 1 check the source.
CHECKED_HASH_FLAGS = 0b11


def pyc_of(module_path: str) -> str:
    folder, _, name = module_path.rpartition("/")
    pyc = f"__pycache__/{name.removesuffix('.py')}.{sys.implementation.cache_tag}.pyc"
    return f"{folder}/{pyc}" if folder else pyc


def test_zip_holds_hash_checked_bytecode(example_zip: PackageReport) -> None:
    import importlib.util
    import marshal

    with zipfile.ZipFile(example_zip.zip_path) as zf:
        found = set(zf.namelist())
        for module in (
            "users/app.py",
            "users/migrations/0001_create_user.py",
            "peewee.py",
            "peewee_serverless/__init__.py",
            "peewee_serverless/http.py",
            "pydantic/__init__.py",
        ):
            data = zf.read(pyc_of(module))
            assert data[:4] == importlib.util.MAGIC_NUMBER, module
            assert int.from_bytes(data[4:8], "little") == CHECKED_HASH_FLAGS, module
            # The recorded hash is the shipped source's: Python uses the pyc, not the source.
            assert data[8:16] == importlib.util.source_hash(zf.read(module)), module
            # Compiled under Lambda's task root, not the random staging folder: reproducible.
            assert marshal.loads(data[16:]).co_filename == f"/var/task/{module}", module
        pycs = [n for n in found if n.endswith(".pyc")]
        assert all(int.from_bytes(zf.read(n)[4:8], "little") == CHECKED_HASH_FLAGS for n in pycs)
    sources = [n for n in found if n.endswith(".py")]
    assert {pyc_of(n) for n in sources} == set(pycs)  # every module, nothing else
    assert example_zip.bytecode.compiled == len(sources) and not example_zip.bytecode.failed
    assert f"bytecode: {len(sources)} modules compiled (hash-checked pycs)" in (
        example_zip.format()
    )


@pytest.mark.slow
def test_unpacked_zip_imports_its_bytecode_without_compiling(
    flat_zip: PackageReport, clean_python: Path, tmp_path: Path
) -> None:
    task = tmp_path / "task"
    with zipfile.ZipFile(flat_zip.zip_path) as zf:
        zf.extractall(task)  # mtimes: now, nothing like the sources' (hash-based pycs)
    for path in sorted(task.rglob("*"), reverse=True):
        path.chmod(0o555 if path.is_dir() else 0o444)  # read-only, as /var/task
    try:
        done = subprocess.run(
            [str(clean_python), "-v", "-c", "import app"],
            cwd=task,
            env={"PYTHONDONTWRITEBYTECODE": "1", "DB_ENGINE": "sqlite", "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        for path in task.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
    assert done.returncode == 0, done.stderr[-2000:]
    # `python -v` names the pyc a module's code came from; a module compiled from source has none.
    for module in ("app.py", "models.py", "peewee.py", "peewee_serverless/__init__.py"):
        assert f"code object from '{task / pyc_of(module)}'" in done.stderr, module


def test_no_compile_ships_no_bytecode(
    wheels: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write_function(tmp_path / "notes", FLAT)
    out = tmp_path / "function.zip"
    assert package([str(folder), "-o", str(out), "--engine", "sqlite", "--no-compile"], wheels) == 0
    assert "bytecode: not compiled (--no-compile)" in capsys.readouterr().out
    found = names(out)
    assert "app.py" in found and "peewee.py" in found
    assert not [n for n in found if "__pycache__" in n or n.endswith(".pyc")]


def test_a_file_that_does_not_compile_ships_as_source(
    wheels: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = "print 'python 2 test data'\n"  # not imported by the handler
    folder = write_function(tmp_path / "notes", {**FLAT, "fixtures/legacy.py": broken})
    out = tmp_path / "function.zip"
    assert package([str(folder), "-o", str(out), "--engine", "sqlite", "-v"], wheels) == 0
    printed = capsys.readouterr().out
    assert "1 .py files do not compile and ship as source only" in printed
    assert "not compiled fixtures/legacy.py  (ships as source)" in printed
    found = set(names(out))
    assert "fixtures/legacy.py" in found and pyc_of("fixtures/legacy.py") not in found
    assert pyc_of("app.py") in found


def _another_python() -> tuple[str, Path] | None:
    """(major.minor, folder) of a CPython 3 on this machine other than this one: on PATH, else
    among pyenv's installed versions (their shims on PATH only run the selected one)."""
    import glob
    import os

    candidates = [
        *(str(Path(d) / "python3") for d in os.environ.get("PATH", "").split(os.pathsep) if d),
        *sorted(glob.glob("/usr/bin/python3.*")),
        *sorted(glob.glob("/usr/local/bin/python3.*")),
        *sorted(glob.glob(str(Path.home() / ".pyenv/versions/3.*/bin/python3.*"))),
    ]
    found: dict[tuple[int, ...], Path] = {}
    for exe in candidates:
        if not re.fullmatch(r"python3\.\d+", Path(exe).name):
            continue
        said = subprocess.run(
            [exe, "-I", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        version = tuple(int(n) for n in said.stdout.split(".")) if said.returncode == 0 else ()
        if version and said.stdout.strip() != PYTHON and version >= (3, 8):
            found.setdefault(version, Path(exe).parent)
    if not found:
        return None
    newest = max(found)  # the likeliest Lambda runtime
    return ".".join(map(str, newest)), found[newest]


def test_the_lookup_runs_each_candidate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``python3.X`` ahead on PATH that does not run that version (a pyenv shim of a version
    not selected prints an error) is passed over for the real one behind it."""
    from peewee_serverless.packaging.check import python_for

    found = _another_python()
    if found is None:
        pytest.skip(f"no CPython 3.8+ other than {PYTHON} on this machine (PATH, /usr, pyenv)")
    version, folder = found
    shim = tmp_path / "shims" / f"python{version}"
    shim.parent.mkdir()
    shim.write_text(f"#!/bin/sh\necho 'pyenv: python{version}: command not found' >&2\nexit 127\n")
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim.parent}:{folder}")
    assert python_for(version) == str(folder / f"python{version}")
    monkeypatch.setenv("PATH", str(shim.parent))
    assert python_for(version) is None


def test_without_the_targets_python_no_bytecode_and_the_report_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from peewee_serverless.packaging.bytecode import compile_tree

    (tmp_path / "m.py").write_text("X = 1\n")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no python3.X to be found
    other = "3.12" if PYTHON != "3.12" else "3.11"
    skipped = compile_tree(tmp_path, other)
    assert skipped.line() == (
        f"bytecode: not compiled (target {other}, this Python {PYTHON}, "
        f"no python{other} on PATH to compile with)"
    )
    assert not (tmp_path / "__pycache__").exists()
    assert compile_tree(tmp_path, PYTHON).compiled == 1
    assert (tmp_path / pyc_of("m.py")).is_file()


def test_bytecode_for_another_python_is_compiled_by_that_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The target is another Python that this machine has: its python3.X compiles the tree,
    its pycs (its magic number, its tag) are what it imports, without compiling."""
    from peewee_serverless.packaging.bytecode import compile_tree

    found = _another_python()
    if found is None:
        pytest.skip(f"no CPython 3.8+ other than {PYTHON} on this machine (PATH, /usr, pyenv)")
    version, folder = found
    # Only that Python's folder on PATH (what --python X.Y looks up); a pyenv shim of the same
    # name ahead of it would be skipped by the lookup, as it does not run that version.
    monkeypatch.setenv("PATH", f"{folder}:/usr/bin:/bin")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "mod.py").write_text("X = {'a', 'b'}\n")
    (tmp_path / "legacy.py").write_text("print 'py2'\n")
    report = compile_tree(tmp_path, version)
    assert (report.compiled, report.failed, report.skipped) == (2, ("legacy.py",), None)
    python = str(folder / f"python{version}")
    facts = subprocess.run(
        [python, "-I", "-c", "import sys, importlib.util; "
         "print(sys.implementation.cache_tag, importlib.util.MAGIC_NUMBER.hex())"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout.split()  # fmt: skip
    tag, magic = facts
    assert tag != sys.implementation.cache_tag
    pyc = tmp_path / "pkg" / "__pycache__" / f"mod.{tag}.pyc"
    data = pyc.read_bytes()
    assert data[:4].hex() == magic
    assert int.from_bytes(data[4:8], "little") == CHECKED_HASH_FLAGS
    assert not list(tmp_path.rglob(f"*.{sys.implementation.cache_tag}.pyc"))  # none of ours
    done = subprocess.run(
        [python, "-I", "-v", "-c", "import sys; sys.path.insert(0, '.'); import pkg.mod"],
        cwd=tmp_path,
        env={"PYTHONDONTWRITEBYTECODE": "1", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"code object from '{pyc}'" in done.stderr


# -- the command: errors, determinism ------------------------------------------------------------
def package(argv: list[str], wheels: Path) -> int:
    extra = ["--python", PYTHON, "--arch", ARCH, "--find-links", str(wheels), "--no-index"]
    return main(["package", *argv, *extra])


def test_rebuild_is_byte_identical(
    flat_zip: PackageReport, wheels: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write_function(tmp_path / "notes", FLAT)
    out = tmp_path / "again.zip"
    status = package(
        [str(folder), "-o", str(out), "--extra", "mysql", "--extra", "postgres"], wheels
    )
    assert status == 0
    assert "handler: app.handler" in capsys.readouterr().out
    assert out.read_bytes() == flat_zip.zip_path.read_bytes()


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {"app.py": "from models import db\ndef handler(e, c): return 1\n"},
            r"cannot import app: No module named 'models' \(at app.py:1\)",
        ),
        (
            {"app.py": "import helpers\ndef handler(e, c): return 1\n", "helpers.py": "x = (\n"},
            r"cannot import app: SyntaxError: .* \(at helpers.py:1\)",
        ),
        (
            {"app.py": "def handle(e, c): return 1\n"},
            r"module 'app' has no callable 'handler'",
        ),
    ],
    ids=["missing-module", "syntax-error", "no-handler"],
)
def test_import_failure_exits_2_naming_the_module_and_writes_no_zip(
    files: dict[str, str], expected: str, wheels: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    folder = write_function(tmp_path / "fn", files)
    out = tmp_path / "dist" / "function.zip"
    assert package([str(folder), "-o", str(out), "--engine", "sqlite"], wheels) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert re.search(expected, err), err
    assert not out.exists() and not list(tmp_path.rglob("*.zip*"))


def test_postgres_function_without_its_driver_is_refused(
    wheels: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write_function(tmp_path / "notes", FLAT)
    out = tmp_path / "function.zip"
    assert (
        package([str(folder), "-o", str(out), "--engine", "postgres", "--extra", "mysql"], wheels)
        == 2
    )
    assert "add --extra postgres" in capsys.readouterr().err
    assert not out.exists()


def test_engine_from_the_template_picks_the_driver(wheels: Path, tmp_path: Path) -> None:
    folder = write_function(tmp_path / "notes", FLAT)
    template = tmp_path / "template.yaml"
    template.write_text(
        "Transform: AWS::Serverless-2016-10-31\n"
        "Parameters:\n  Engine:\n    Type: String\n    Default: postgres\n"
        "Globals:\n  Function:\n    Runtime: python3.11\n"
        "    Environment:\n      Variables:\n        DB_ENGINE: !Ref Engine\n"
        "Resources:\n  Notes:\n    Type: AWS::Serverless::Function\n"
        "    Properties:\n      CodeUri: notes/\n      Handler: app.handler\n"
    )
    report = build_package(folder, tmp_path / "f.zip", template=template, **offline(wheels))
    found = set(names(report.zip_path))
    assert "psycopg2/__init__.py" in found and "pymysql/__init__.py" not in found
    assert report.extras == ("postgres",)


def test_unresolvable_requirement_is_named(wheels: Path, tmp_path: Path) -> None:
    folder = write_function(tmp_path / "fn", {**FLAT, "requirements.txt": "no-such-dist-zz>=1\n"})
    with pytest.raises(PackagingError, match=r"no-such-dist-zz>=1 cannot be resolved"):
        build_package(folder, tmp_path / "f.zip", engine="sqlite", **offline(wheels))
    assert not (tmp_path / "f.zip").exists()


def test_sdist_only_requirement_is_named(wheels: Path, tmp_path: Path) -> None:
    import tarfile

    links = tmp_path / "links"
    links.mkdir()
    with tarfile.open(links / "onlysource-1.0.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("onlysource-1.0/PKG-INFO")
        data = b"Metadata-Version: 2.1\nName: onlysource\nVersion: 1.0\n"
        info.size = len(data)
        import io

        tar.addfile(info, io.BytesIO(data))
    folder = write_function(tmp_path / "fn", {**FLAT, "requirements.txt": "onlysource\n"})
    options = offline(wheels) | {"find_links": [wheels, links]}
    with pytest.raises(PackagingError, match=r"onlysource has no wheel .*only a source"):
        build_package(folder, tmp_path / "f.zip", engine="sqlite", **options)


def test_library_requirements_follow_the_extras() -> None:
    core = library_requirements(())
    assert [re.split(r"[<>=,]", r)[0].lower() for r in core] == ["peewee"]  # Peewee alone
    api = library_requirements(("api",))
    assert any(r.startswith("aws-lambda-powertools") for r in api)
    assert any(r.startswith("pydantic") for r in api)
    both = library_requirements(("mysql", "postgres"))
    assert any(r.lower().startswith("pymysql") for r in both)
    assert any(r.lower().startswith("psycopg2-binary") for r in both)
    with pytest.raises(PackagingError, match="unknown extra"):
        library_requirements(("oracle",))


def test_bad_arguments_fail_before_pip(tmp_path: Path) -> None:
    folder = write_function(tmp_path / "fn", FLAT)
    with pytest.raises(PackagingError, match="architecture"):
        build_package(folder, tmp_path / "f.zip", architecture="sparc")
    with pytest.raises(PackagingError, match="python version"):
        build_package(folder, tmp_path / "f.zip", python_version="python3")
    with pytest.raises(PackagingError, match="does not exist"):
        build_package(tmp_path / "nope", tmp_path / "f.zip")
    assert not (tmp_path / "f.zip").exists()


def test_cross_build_needs_no_check(wheels: Path, tmp_path: Path) -> None:
    other = "arm64" if ARCH == "x86_64" else "x86_64"
    folder = write_function(tmp_path / "notes", FLAT)  # pure-Python wheels only (SQLite)
    options = offline(wheels) | {"architecture": other, "engine": "sqlite"}
    with pytest.raises(PackagingError, match=rf"Linux {other} zip .*--no-check"):
        build_package(folder, tmp_path / "f.zip", **options)
    assert not (tmp_path / "f.zip").exists()
    report = build_package(folder, tmp_path / "f.zip", check=False, **options)
    assert not report.checked and "import check: skipped" in report.format()
    assert {"app.py", "slugify/__init__.py", "peewee.py"} <= set(names(report.zip_path))


def test_other_python_without_its_interpreter_is_refused(
    wheels: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no python3.X to be found
    folder = write_function(tmp_path / "notes", FLAT)
    other = "3.12" if PYTHON != "3.12" else "3.11"
    options = offline(wheels) | {"python_version": other, "engine": "sqlite"}
    with pytest.raises(PackagingError, match=rf"no python{other} on PATH.*--no-check"):
        build_package(folder, tmp_path / "f.zip", **options)


def test_verbose_lists_what_was_left_out(
    wheels: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    canary = "canary-0b7d"
    junk = {"secrets.json": f'{{"k": "{canary}"}}', "debug.log": canary, ".env": canary}
    folder = write_function(tmp_path / "notes", {**FLAT, **junk})
    (folder / "venv").mkdir()
    (folder / "venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    out = tmp_path / "function.zip"
    assert package([str(folder), "-o", str(out), "--engine", "sqlite", "-v"], wheels) == 0
    printed = capsys.readouterr().out
    for line in (
        "skipped secrets.json  (built-in rule)",
        "skipped debug.log  (built-in rule)",
        "skipped .env  (built-in rule)",
        "skipped venv/  (virtualenv)",
        "import check: passed",
    ):
        assert line in printed, printed
    with zipfile.ZipFile(out) as zf:
        assert not any(canary.encode() in zf.read(n) for n in zf.namelist())


def test_hashed_lock_file(wheels: Path, tmp_path: Path) -> None:
    import hashlib

    def pin(prefix: str) -> str:
        (wheel,) = wheels.glob(f"{prefix}-*.whl")
        name, version = wheel.name.split("-")[:2]
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        return f"{name}=={version} \\\n    --hash=sha256:{digest}\n"

    lock = "".join(pin(p) for p in ("python_slugify", "text_unidecode"))
    folder = write_function(tmp_path / "notes", {**FLAT, "requirements.txt": lock})
    # The library's own dependency (Peewee) is not in the lock: pip's hash mode refuses it.
    with pytest.raises(PackagingError, match=r"pin hashes .* put peewee-serverless"):
        build_package(folder, tmp_path / "f.zip", engine="sqlite", **offline(wheels))
    (folder / "requirements.txt").write_text(lock + pin("peewee"))
    report = build_package(folder, tmp_path / "f.zip", engine="sqlite", **offline(wheels))
    assert {"slugify/__init__.py", "peewee.py"} <= set(names(report.zip_path))


def test_runtime_stand_in_without_a_local_boto3_is_installed_once(
    wheels: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from peewee_serverless.packaging import check
    from peewee_serverless.packaging.requirements import PipSource

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    source = PipSource(find_links=(str(wheels),), no_index=True)
    runtime = check._installed_runtime(source)
    assert (runtime / "boto3" / "__init__.py").is_file()
    assert (runtime / "botocore" / "__init__.py").is_file()

    def no_pip(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("pip ran again")

    monkeypatch.setattr(check.subprocess, "run", no_pip)
    assert check._installed_runtime(source) == runtime  # cached


@pytest.mark.parametrize(
    ("files", "args", "expected"),
    [
        (
            {"main.py": "def handle(event, context):\n    return 1\n"},
            [],
            r"no module of .* defines a top-level `handler` and there is no app.py",
        ),
        (
            {"app.py": "def handler(event, context):\n    return 1\n"},
            ["--handler", "notes.app.handler"],  # the folder's name: not in a flat zip
            r"the handler module notes.app is not in the zip",
        ),
    ],
    ids=["no-handler-anywhere", "handler-not-in-the-layout"],
)
def test_handler_errors_name_the_handler(
    files: dict[str, str], args: list[str], expected: str, wheels: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    folder = write_function(tmp_path / "notes", files)
    out = tmp_path / "function.zip"
    assert package([str(folder), "-o", str(out), "--engine", "sqlite", *args], wheels) == 2
    assert re.search(expected, capsys.readouterr().err)
    assert not out.exists()
