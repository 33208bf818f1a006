"""The command line (peewee_serverless.cli) and ``invoke`` (peewee_serverless.local.invoke)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from peewee_serverless import cli
from peewee_serverless.local import invoke

from .test_local_cli import run

EVENT = {
    "httpMethod": "GET",
    "path": "/items",
    "queryStringParameters": {"status": "201"},
}


def test_invoke_subprocess_prints_response_json(tmp_path: Path) -> None:
    event_file = tmp_path / "event.json"
    event_file.write_text(json.dumps(EVENT))
    result = run("invoke", "tests.apps.echo:handler", "--event", str(event_file))
    assert result.returncode == 0, result.stderr
    response = json.loads(result.stdout)
    assert response["statusCode"] == 201
    assert json.loads(response["body"])["event"] == EVENT


def test_invoke_reads_event_from_stdin() -> None:
    result = run("invoke", "tests.apps.echo:handler", "--event", "-", stdin=json.dumps(EVENT))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["statusCode"] == 201


def test_invoke_powertools_app_with_v1_event() -> None:
    event = {"httpMethod": "GET", "path": "/items/1", "headers": {}, "requestContext": {}}
    result = run(
        "invoke", "tests.apps.powertools_app:handler", "--event", "-", stdin=json.dumps(event)
    )
    assert result.returncode == 0, result.stderr
    response = json.loads(result.stdout)
    assert response["statusCode"] == 200
    assert json.loads(response["body"]) == {"id": "1", "name": "first"}


@pytest.mark.parametrize(
    ("target", "event", "expected"),
    [
        ("tests.apps.nope:handler", "{}", "no module named 'tests.apps.nope'"),
        ("tests.apps.echo:missing", "{}", "has no attribute 'missing'"),
        ("tests", "{}", "must look like"),
        ("tests.apps.echo:handler", "{not json", "not valid JSON"),
    ],
)
def test_invoke_user_errors_exit_2_with_one_line(target: str, event: str, expected: str) -> None:
    result = run("invoke", target, "--event", "-", stdin=event)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert expected in result.stderr


def test_invoke_missing_event_file_exits_2(tmp_path: Path) -> None:
    result = run("invoke", "tests.apps.echo:handler", "--event", str(tmp_path / "absent.json"))
    assert result.returncode == 2
    assert "cannot read event file" in result.stderr


def test_invoke_handler_exception_prints_lambda_error_and_exits_1() -> None:
    result = run("invoke", "tests.apps.echo:raising", "--event", "-", stdin="{}")
    assert result.returncode == 1
    error = json.loads(result.stdout)
    assert error["errorType"] == "RuntimeError"
    assert error["errorMessage"] == "boom from handler"
    assert "Traceback" in result.stderr


def test_invoke_function_calls_handler_with_fresh_context() -> None:
    first = invoke("tests.apps.echo:handler", {"path": "/"}, timeout=3)
    second = invoke("tests.apps.echo:handler", {"path": "/"})
    ctx1 = json.loads(first["body"])["context"]
    ctx2 = json.loads(second["body"])["context"]
    assert ctx1["aws_request_id"] != ctx2["aws_request_id"]
    assert 0 < ctx1["remaining_ms"] <= 3000


def test_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "serve" in out and "invoke" in out


def test_commands_are_pluggable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(cli.COMMANDS, "hello", "tests.apps.cli_plugin:add_arguments")
    assert cli.main(["hello", "--name", "lead"]) == 3
    assert capsys.readouterr().out == "hello lead\n"


def test_unimportable_command_does_not_break_the_others(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(cli.COMMANDS, "broken", "tests.apps.no_such_plugin:add_arguments")
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "broken" in out and "(unavailable" in out and "serve" in out
    assert cli.main(["broken"]) == 2
    assert "unavailable" in capsys.readouterr().err


def test_local_package_and_cli_import_light() -> None:
    code = (
        "import sys, peewee_serverless.cli, peewee_serverless.local;"
        "heavy = [m for m in ('aws_lambda_powertools', 'pydantic', 'boto3') if m in sys.modules];"
        "print(heavy)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"
