"""The local commands end to end: generate-event, invoke (in-process, --zip), serve defaults."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from peewee_serverless.local.generate_event import generate_event

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str, cwd: Path = ROOT, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "peewee_serverless", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )


# -- generate-event ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "handler"), [("apigw-v1", "handler"), ("apigw-v2", "http_handler")]
)
def test_generated_event_is_accepted_by_invoke(tmp_path: Path, kind: str, handler: str) -> None:
    made = run(
        "generate-event", kind, "--method", "post", "--path", "/items",
        "--json", '{"name": "second"}', "--query", "a=1", "--header", "X-Trace: t-1",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    event = json.loads(made.stdout)
    (tmp_path / "e.json").write_text(made.stdout)
    done = run(
        "invoke", f"tests.apps.powertools_app:{handler}", "--event", str(tmp_path / "e.json")
    )
    assert done.returncode == 0, done.stderr
    response = json.loads(done.stdout)
    assert response["statusCode"] == 201
    assert json.loads(response["body"]) == {"received": {"name": "second"}, "query": {"a": "1"}}
    if kind == "apigw-v2":
        assert event["version"] == "2.0"
        assert event["headers"]["x-trace"] == "t-1"
    else:
        assert event["httpMethod"] == "POST"
        assert event["headers"]["X-Trace"] == "t-1"


def test_generate_event_api_matches_what_serve_builds() -> None:
    event = generate_event("apigw-v2", method="GET", path="/users/7?x=1", query=[("y", "a b")])
    assert event["rawPath"] == "/users/7"
    assert event["rawQueryString"] == "x=1&y=a%20b"
    assert event["queryStringParameters"] == {"x": "1", "y": "a b"}
    assert event["requestContext"]["http"]["method"] == "GET"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--header", "no-colon"), "--header must look like"),
        (("--query", "novalue"), "--query must look like"),
        (("--json", "{bad"), "--json is not valid JSON"),
        (("--path", "users"), "--path must start with '/'"),
    ],
)
def test_generate_event_bad_input_is_one_line_exit_2(args: tuple[str, ...], expected: str) -> None:
    done = run("generate-event", "apigw-v2", *args)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and expected in done.stderr


# -- invoke input errors -------------------------------------------------------------------------
def test_invoke_deeply_nested_event_is_a_clean_error(tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    done = run("invoke", "tests.apps.echo:handler", "--event", str(deep))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "nested too deeply" in done.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--zip", "absent.zip"), "no such zip file"),
        (("--zip", "not-a.zip"), "cannot unpack"),
        (("--env-file", "absent.env"), "cannot read env file"),
        (("--timeout", "0"), "--timeout must be"),
        (("--memory", "64"), "--memory must be"),
        (("--runtime", "inprocess", "--zip", "x.zip"), "drop --runtime inprocess"),
    ],
)
def test_invoke_option_errors_are_one_line_exit_2(
    tmp_path: Path, args: tuple[str, ...], expected: str
) -> None:
    (tmp_path / "not-a.zip").write_text("not a zip")
    (tmp_path / "e.json").write_text("{}")
    done = run("invoke", "app.handler", *args, "--event", "e.json", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert expected in done.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--port", "99999"), "--port must be 0..65535"),
        (("--concurrency", "0", "--runtime", "ric"), "--concurrency must be at least 1"),
        (("--idle-timeout", "-1", "--runtime", "ric"), "--idle-timeout must be positive"),
        (("--max-body-bytes", "-5"), "--max-body-bytes must not be negative"),
    ],
)
def test_serve_option_errors_are_one_line_exit_2(args: tuple[str, ...], expected: str) -> None:
    done = run("serve", "tests.apps.echo:handler", *args)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and expected in done.stderr


def test_serve_container_options_need_containers() -> None:
    done = run("serve", "tests.apps.echo:handler", "--freeze", "--port", "0")
    assert done.returncode == 2
    assert "--freeze need containers" in done.stderr


# -- invoke --zip ----------------------------------------------------------------------------------
def _zip(path: Path, files: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return path


def test_invoke_zip_runs_under_awslambdaric_with_the_env_file(tmp_path: Path) -> None:
    source = (
        "import os, sys\n"
        "def handler(event, context):\n"
        "    return {'greeting': os.environ['GREETING'], 'event': event,\n"
        "            'runtime': type(context).__module__, 'task': os.environ['LAMBDA_TASK_ROOT']}\n"
    )
    _zip(tmp_path / "f.zip", {"app.py": source})
    (tmp_path / "f.env").write_text("GREETING=hello\n")
    (tmp_path / "e.json").write_text('{"n": 1}')
    done = run(
        "invoke", "app.handler", "--zip", "f.zip", "--env-file", "f.env", "--event", "e.json",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["greeting"] == "hello"
    assert out["event"] == {"n": 1}
    assert out["runtime"] == "awslambdaric.lambda_context"  # AWS's runtime client made it
    assert out["task"] != str(tmp_path)  # unpacked into its own task root
    assert "REPORT RequestId:" in done.stderr and "cold" in done.stderr


def test_invoke_zip_import_error_prints_lambdas_init_error(tmp_path: Path) -> None:
    _zip(tmp_path / "f.zip", {"app.py": "import missing_dependency\n"})
    (tmp_path / "e.json").write_text("{}")
    done = run("invoke", "app.handler", "--zip", "f.zip", "--event", "e.json", cwd=tmp_path)
    assert done.returncode == 1
    error = json.loads(done.stdout)
    assert error["errorType"] == "Runtime.ImportModuleError"
    assert "missing_dependency" in error["errorMessage"]


# -- serve's event version -------------------------------------------------------------------------
TEMPLATE = """
Transform: AWS::Serverless-2016-10-31
Parameters:
  Greeting: {{Type: String, Default: hi}}
Resources:
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      Handler: app.handler
      Timeout: 7
      Environment:
        Variables:
          GREETING: !Ref Greeting
          OTHER: !Sub "${{AWS::Region}}"
      Events:
        Call:
          Type: {api}
          Properties: {{Path: /x, Method: GET}}
"""


def _serve_first_lines(cwd: Path, *args: str) -> tuple[str, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "peewee_serverless", "serve", *args, "--port", "0"],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stderr is not None
        err = proc.stderr.readline()
        out = proc.stdout.readline()
        return out, err
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


@pytest.mark.parametrize(("api", "version"), [("Api", "v1"), ("HttpApi", "v2")])
def test_serve_event_version_follows_the_template(tmp_path: Path, api: str, version: str) -> None:
    (tmp_path / "template.yaml").write_text(TEMPLATE.format(api=api))
    (tmp_path / "app.py").write_text("def handler(event, context):\n    return {}\n")
    out, err = _serve_first_lines(tmp_path)
    assert f"events: {version} (" in err and f"{api} event" in err
    assert out.startswith("Serving app:handler on http://127.0.0.1:")
    assert f"(API Gateway {version} events)" in out


def test_serve_without_template_defaults_to_v2(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("def handler(event, context):\n    return {}\n")
    out, err = _serve_first_lines(tmp_path, "app.handler")
    assert "events: v2 (HTTP API" in err
    assert "(API Gateway v2 events)" in out


def test_template_supplies_handler_timeout_and_environment(tmp_path: Path) -> None:
    from peewee_serverless.local.template import read_template

    (tmp_path / "template.yaml").write_text(TEMPLATE.format(api="HttpApi"))
    fn = read_template(str(tmp_path / "template.yaml"))
    assert (fn.logical_id, fn.handler, fn.timeout, fn.event_version) == (
        "Fn",
        "app.handler",
        7,
        "v2",
    )
    assert fn.environment == {"GREETING": "hi"}  # !Sub cannot be resolved locally: left out


def test_a_source_tree_handler_finds_its_deployed_function(tmp_path: Path) -> None:
    from peewee_serverless.local.template import read_template

    (tmp_path / "template.yaml").write_text(TEMPLATE.format(api="Api"))
    fn = read_template(str(tmp_path / "template.yaml"), "examples.fn.app.handler")
    assert (fn.logical_id, fn.event_version) == ("Fn", "v1")


def test_sigterm_to_serve_ends_its_frozen_containers(tmp_path: Path) -> None:
    import http.client
    import os

    app = (
        "import os\n"
        "def handler(event, context):\n"
        "    return {'statusCode': 200, 'body': str(os.getpid())}\n"
    )
    _zip(tmp_path / "f.zip", {"app.py": app})
    proc = subprocess.Popen(
        [sys.executable, "-m", "peewee_serverless", "serve", "app.handler", "--zip", "f.zip",
         "--freeze", "--port", "0"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        port = int(line.split("http://127.0.0.1:")[1].split()[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("GET", "/")
        pid = int(conn.getresponse().read())
        conn.close()
        os.kill(pid, 0)  # alive (frozen) while serve runs
    finally:
        proc.terminate()
        proc.communicate(timeout=60)
    assert proc.returncode == 128 + 15
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_invoke_runtime_ric_runs_a_source_folder_under_awslambdaric() -> None:
    done = run("invoke", "tests.apps.echo:handler", "--runtime", "ric", "--event", "-", stdin="{}")
    assert done.returncode == 0, done.stderr
    body = json.loads(json.loads(done.stdout)["body"])
    request_id = body["context"]["aws_request_id"]
    assert f"REPORT RequestId: {request_id} [c1 cold" in done.stderr  # delivered by our API
    assert 0 < body["context"]["remaining_ms"] <= 30_000
