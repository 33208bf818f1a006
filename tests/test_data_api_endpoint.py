"""The local Data API endpoint as a client sees it, the driver's pure parts, and the CLI."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from typing import Any
from urllib.parse import urlparse

import pytest

from peewee_serverless import ErrorKind
from peewee_serverless.data_api import driver
from peewee_serverless.data_api.placeholders import format_to_named, named_to_pyformat

from .conftest import DATA_API_CLUSTERS, DATA_API_SECRET, SELECTED, TEST_DB

ENGINES = [e for e, b in (("mysql", "data-api-mysql"), ("postgres", "data-api-postgres"))
           if b in SELECTED]  # fmt: skip


def _post(endpoint: Any, path: str, body: bytes) -> tuple[int, dict[str, str], Any]:
    url = urlparse(endpoint.url)
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=30)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), json.loads(response.read())
    finally:
        conn.close()


def _body(engine: str, **fields: Any) -> bytes:
    base = {"resourceArn": DATA_API_CLUSTERS[engine], "secretArn": DATA_API_SECRET}
    base["database"] = TEST_DB
    return json.dumps({**base, **fields}).encode()


@pytest.mark.parametrize("engine", ENGINES)
def test_bad_requests_get_the_data_api_error_shapes(data_api_endpoint: Any, engine: str) -> None:
    cases = [
        ("/Execute", b"{not json", 400, "BadRequestException"),
        ("/Execute", _body(engine), 400, "BadRequestException"),  # no sql
        ("/Nowhere", _body(engine, sql="SELECT 1"), 404, "NotFoundException"),
        ("/Execute", _body(engine, sql="SELEC 1"), 400, "BadRequestException"),
        (
            "/Execute",
            _body(
                engine,
                sql="SELECT :d",
                parameters=[{"name": "d", "value": {"stringValue": "soon"}, "typeHint": "DATE"}],
            ),
            400,
            "BadRequestException",
        ),
        ("/CommitTransaction", _body(engine, transactionId="nope"), 404,
         "TransactionNotFoundException"),
        (
            "/Execute",
            json.dumps(
                {"resourceArn": "arn:aws:rds:us-east-1:1:cluster:other", "secretArn": "x",
                 "sql": "SELECT 1"}
            ).encode(),
            400,
            "BadRequestException",
        ),
    ]  # fmt: skip
    for path, body, status, code in cases:
        got, headers, answer = _post(data_api_endpoint, path, body)
        assert (got, headers.get("x-amzn-ErrorType")) == (status, code), (path, body)
        assert answer["message"]
    # A bad date names the parameter; an SQL error carries the server's code.
    _, _, answer = _post(data_api_endpoint, cases[4][0], cases[4][1])
    assert "Parameter d" in answer["message"]
    _, _, answer = _post(data_api_endpoint, cases[3][0], cases[3][1])
    assert (
        "1064" in answer["message"] if engine == "mysql" else "SQLState: 42601" in answer["message"]
    )


@pytest.mark.parametrize("engine", ENGINES)
def test_a_transaction_pins_one_session_until_commit(data_api_endpoint: Any, engine: str) -> None:
    import boto3

    client = boto3.client("rds-data", region_name="us-east-1", endpoint_url=data_api_endpoint.url)
    args = {"resourceArn": DATA_API_CLUSTERS[engine], "secretArn": DATA_API_SECRET,
            "database": TEST_DB}  # fmt: skip
    session_sql = "SELECT CONNECTION_ID()" if engine == "mysql" else "SELECT pg_backend_pid()"
    txn = client.begin_transaction(**args)["transactionId"]
    ids = {
        client.execute_statement(**args, sql=session_sql, transactionId=txn)["records"][0][0][
            "longValue"
        ]
        for _ in range(3)
    }
    assert len(ids) == 1
    assert (
        client.commit_transaction(
            resourceArn=args["resourceArn"], secretArn=args["secretArn"], transactionId=txn
        )["transactionStatus"]
        == "Transaction Committed"
    )
    with pytest.raises(client.exceptions.TransactionNotFoundException):
        client.rollback_transaction(
            resourceArn=args["resourceArn"], secretArn=args["secretArn"], transactionId=txn
        )


# -- pure logic --------------------------------------------------------------------------------


def test_format_placeholders_become_named_outside_quotes() -> None:
    sql, names = format_to_named("SELECT '%s', \"a%s\", %s, 100%% FROM t WHERE x = %s", 2)
    assert sql == "SELECT '%s', \"a%s\", :p1, 100% FROM t WHERE x = :p2"
    assert names == ["p1", "p2"]
    with pytest.raises(ValueError):
        format_to_named("SELECT %s", 2)


def test_named_placeholders_become_pyformat_and_casts_survive() -> None:
    sql = named_to_pyformat("SELECT :p1::int, ':p1', x::text, 5 % 2, :other", {"p1"})
    assert sql == "SELECT %(p1)s::int, ':p1', x::text, 5 %% 2, :other"
    cast = named_to_pyformat("WHERE a = :p1 AND b = :p2", {"p1", "p2"}, {"p2": "varchar"})
    assert cast == "WHERE a = %(p1)s AND b = %(p2)s::varchar"


@pytest.mark.parametrize(
    ("code", "message", "error", "kind", "executed"),
    [
        ("BadRequestException", "Database error code: 1062. Message: Duplicate entry 'a' for key",
         driver.IntegrityError, ErrorKind.UNIQUE_VIOLATION, None),
        ("BadRequestException", "Duplicate entry 'a'; Error code: 1062; SQLState: 23000",
         driver.IntegrityError, ErrorKind.UNIQUE_VIOLATION, None),
        ("BadRequestException", 'ERROR: duplicate key value violates unique constraint "u"\n'
         "  Detail: Key (e)=(x) already exists.; SQLState: 23505",
         driver.IntegrityError, ErrorKind.UNIQUE_VIOLATION, None),
        ("BadRequestException", "ERROR: null value in column; SQLState: 23502",
         driver.IntegrityError, ErrorKind.OTHER, None),
        ("BadRequestException", "Communications link failure\n\nThe last packet ...",
         driver.OperationalError, ErrorKind.SERVER_UNAVAILABLE, False),
        ("ThrottlingException", "Rate exceeded",
         driver.OperationalError, ErrorKind.SERVER_UNAVAILABLE, False),
        ("DatabaseResumingException", "resuming",
         driver.OperationalError, ErrorKind.SERVER_UNAVAILABLE, False),
        ("StatementTimeoutException", "timed out",
         driver.OperationalError, ErrorKind.SERVER_UNAVAILABLE, None),
        ("TransactionNotFoundException", "gone",
         driver.OperationalError, ErrorKind.CONNECTION_LOST, None),
        ("ForbiddenException", "no", driver.OperationalError, ErrorKind.AUTH_FAILED, None),
        ("BadRequestException", "Database error code: 1064. Message: syntax",
         driver.ProgrammingError, ErrorKind.OTHER, None),
    ],
)  # fmt: skip
def test_aws_errors_become_typed_dbapi_errors(
    code: str, message: str, error: type, kind: ErrorKind, executed: bool | None
) -> None:
    class ClientError(Exception):
        response = {"Error": {"Code": code, "Message": message}}

    got = driver.translate_error(ClientError())
    assert isinstance(got, error)
    assert isinstance(got, driver.Error)
    assert (got.error_kind, got.executed) == (kind, executed)


def test_cluster_mapping_keeps_the_password_out_of_reprs() -> None:
    from peewee_serverless.data_api.endpoint import parse_cluster

    arn, target = parse_cluster("arn:aws:rds:us-east-1:1:cluster:c=postgresql://u:hunter2@h:6432/d")
    assert (arn, target.engine, target.port, target.database) == (
        "arn:aws:rds:us-east-1:1:cluster:c",
        "postgres",
        6432,
        "d",
    )
    assert target.password == "hunter2" and "hunter2" not in repr(target)


def test_unsupported_parameter_types_are_refused_before_sending() -> None:
    with pytest.raises(driver.ProgrammingError, match="p1"):
        driver.to_parameter("p1", object())


# -- CLI ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--cluster", "not-an-arn"], "--cluster"),
        (["--cluster", "arn:aws:rds:us-east-1:1:cluster:c=ftp://h"], "--cluster"),
        (["--cluster", "arn:aws:rds:us-east-1:1:cluster:c=mysql://h", "--port", "70000"],
         "--port"),
    ],
)  # fmt: skip
def test_cli_errors_are_one_line_exit_2(args: list[str], fragment: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "peewee_serverless", "data-api", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in out.stderr


@pytest.mark.parametrize("engine", ENGINES)
def test_cli_serves_the_protocol(data_api_endpoint: Any, engine: str) -> None:
    """`peewee-serverless data-api serve` in a real process answering boto3 (fixture: keys)."""
    import boto3

    from .conftest import MYSQL_ADMIN, PG_ADMIN

    admin = MYSQL_ADMIN if engine == "mysql" else PG_ADMIN
    scheme = "mysql" if engine == "mysql" else "postgresql"
    cluster = DATA_API_CLUSTERS[engine]
    target = f"{scheme}://{admin['user']}@{admin['host']}:{admin['port']}/{TEST_DB}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "peewee_serverless", "data-api", "serve", "--port", "0",
         "--cluster", f"{cluster}={target}"],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("Data API endpoint for 1 cluster(s) on http://"), line
        url = line.rsplit(" ", 1)[1].strip()
        client = boto3.client("rds-data", region_name="us-east-1", endpoint_url=url)
        answer = client.execute_statement(
            resourceArn=cluster, secretArn=DATA_API_SECRET, sql="SELECT 40 + :n AS n",
            parameters=[{"name": "n", "value": {"longValue": 2}}], includeResultMetadata=True,
        )  # fmt: skip
        assert answer["records"] == [[{"longValue": 42}]]
        assert answer["columnMetadata"][0]["label"] == "n"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
