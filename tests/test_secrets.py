"""Credentials from AWS Secrets Manager (moto in server mode) and RDS IAM tokens.

Secrets Manager is moto's server running in this process on a loopback port
(``ThreadedMotoServer``): boto3 talks real HTTP to it. The sources' shared provider
(``secrets.shared_secrets_provider``) is replaced by one built on a boto3 client that counts
``GetSecretValue`` calls (moto keeps no count), except where the deadline-bound one is tested
(behind tests/faultproxy.py). Password checks need a server that checks passwords: the shared
MariaDB (a user created here, named after the run's test database: :func:`rotation_user`) and a
private PostgreSQL with ``scram-sha-256`` on TCP (the shared one trusts everyone).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.parameters import SecretsProvider

from peewee_serverless import ConfigurationError, database_from_env, secrets, settings_from_env
from peewee_serverless.lifecycle import database_lifecycle
from peewee_serverless.secrets import (
    Credentials,
    IamTokenSource,
    SecretsManagerSource,
    StaticCredentials,
    connect_with_credentials,
)

from .conftest import MYSQL_ADMIN, TEST_DB, make_backend
from .faultproxy import FaultProxy
from .servers import free_port, private_server

REGION = "us-east-1"


def rotation_user(test_db: str) -> str:
    """The password-checked user of the run whose test database is ``test_db``.

    The shared MariaDB serves every run on this machine: a fixed name would let one run drop or
    re-password the user another run is using. Derived from the run's own database name (each
    run has its own, ``PEEWEE_SERVERLESS_TEST_DB``), so a run re-creates (``DROP ... IF EXISTS``)
    only its own user, including one left by its crashed predecessor. A name unsafe as a bare
    identifier or over MySQL's 32 characters becomes a hash of it.
    """
    name = f"{test_db}_rot"
    if re.fullmatch(r"[a-z_][a-z0-9_]{0,31}", name):
        return name
    return f"pst_rot_{hashlib.sha256(test_db.encode()).hexdigest()[:16]}"


ROT_USER = rotation_user(TEST_DB)
# Distinctive passwords: any appearance in an error, log or repr is a leak.
P1 = "pw1-Zq8vX3kT"
P2 = "pw2-Hm4rW7pL"


class CountingClient:
    """A boto3 Secrets Manager client that counts ``get_secret_value`` calls."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.get_calls = 0

    def get_secret_value(self, **kwargs: Any) -> Any:
        self.get_calls += 1
        return self._client.get_secret_value(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@dataclass
class Aws:
    """moto's Secrets Manager: an admin client and the counting client Powertools uses."""

    url: str
    client: Any
    counting: CountingClient
    created: list[str] = field(default_factory=list)

    def create_secret(self, value: dict[str, Any] | str) -> str:
        text = value if isinstance(value, str) else json.dumps(value)
        name = f"pst-sec-{uuid.uuid4().hex[:12]}"
        arn = self.client.create_secret(Name=name, SecretString=text)["ARN"]
        self.created.append(arn)
        return str(arn)

    def put_secret(self, arn: str, value: dict[str, Any]) -> None:
        self.client.put_secret_value(SecretId=arn, SecretString=json.dumps(value))


@pytest.fixture
def aws(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Aws:
    """Fake credentials; the sources' shared provider replaced by one on a counting client."""
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_ENDPOINT_URL_SECRETS_MANAGER": moto_server,
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("POWERTOOLS_PARAMETERS_MAX_AGE", raising=False)
    client = boto3.client("secretsmanager", endpoint_url=moto_server, region_name=REGION)
    counting = CountingClient(client)
    monkeypatch.setattr(secrets, "_shared_provider", SecretsProvider(boto3_client=counting))
    return Aws(moto_server, client, counting)


# -- servers that check passwords ------------------------------------------------------------
@dataclass
class AuthServer:
    """A server with a password-checked user ``ROT_USER`` and a way to change its password."""

    engine: str
    host: str
    port: int
    database: str
    admin: Any  # callable(sql, params) -> None

    def env(self) -> dict[str, str]:
        return {"DB_ENGINE": self.engine}

    def secret(self, password: str, **extra: Any) -> dict[str, Any]:
        """The secret JSON in the shape RDS writes."""
        value = {
            "engine": self.engine,
            "host": self.host,
            "port": self.port,
            "username": ROT_USER,
            "password": password,
            "dbname": self.database,
        }
        value.update(extra)
        return value

    def set_password(self, password: str) -> None:
        if self.engine == "mysql":
            # Literal: test passwords are plain alphanumerics; '%' in the host is no placeholder.
            self.admin(f"ALTER USER '{ROT_USER}'@'%' IDENTIFIED BY '{password}'")
        else:
            self.admin(f"ALTER ROLE {ROT_USER} PASSWORD '{password}'")


@pytest.fixture(scope="module")
def _pg_auth() -> Iterator[Any]:
    hba = [
        "local all all trust",
        "host all postgres 127.0.0.1/32 trust",
        "host all all 127.0.0.1/32 scram-sha-256",
    ]
    with private_server("postgres", hba=hba) as srv:
        yield srv


@pytest.fixture(params=["mariadb", "postgres"])
def auth_server(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[AuthServer]:
    if request.param == "mariadb":
        make_backend("mariadb", tmp_path)  # creates the shared test database if needed
        import pymysql

        conn = pymysql.connect(autocommit=True, **MYSQL_ADMIN)

        def admin(sql: str, params: Any = ()) -> None:
            with conn.cursor() as cur:
                cur.execute(sql, params or None)

        admin(f"DROP USER IF EXISTS '{ROT_USER}'@'%'")
        admin(f"CREATE USER '{ROT_USER}'@'%' IDENTIFIED BY '{P1}'")
        admin(f"GRANT ALL ON `{TEST_DB}`.* TO '{ROT_USER}'@'%'")
        try:
            yield AuthServer("mysql", MYSQL_ADMIN["host"], MYSQL_ADMIN["port"], TEST_DB, admin)
        finally:
            admin(f"DROP USER IF EXISTS '{ROT_USER}'@'%'")
            conn.close()
    else:
        srv = request.getfixturevalue("_pg_auth")

        def admin(sql: str, params: Any = ()) -> None:
            srv.query(sql, params)

        admin(f"DROP ROLE IF EXISTS {ROT_USER}")
        admin(f"CREATE ROLE {ROT_USER} LOGIN PASSWORD '{P1}'")
        try:
            yield AuthServer("postgres", srv.host, srv.port, srv.test_db, admin)
        finally:
            srv.query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (ROT_USER,),
            )
            admin(f"DROP ROLE IF EXISTS {ROT_USER}")


def _current_user(db: Any) -> str:
    sql = (
        "SELECT CURRENT_USER()"
        if db.__class__.__name__.endswith("MySQLDatabase")
        else ("SELECT current_user")
    )
    return str(db.execute_sql(sql).fetchone()[0]).split("@")[0]


def _assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert P1 not in text and P2 not in text, text


def _full_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


# -- the tests ------------------------------------------------------------------------------------
def test_each_test_database_has_its_own_rotation_user() -> None:
    """Two runs (two test databases) never share the user this module creates and drops."""
    names = [TEST_DB, "pst_gaps", "pst_dups", "peewee_serverless_test", "Weird-Name", "x" * 64]
    users = [rotation_user(n) for n in names]
    assert len(set(users)) == len(set(names))
    assert all(re.fullmatch(r"[a-z_][a-z0-9_]{0,31}", u) for u in users), users
    assert ROT_USER == rotation_user(TEST_DB) != rotation_user(TEST_DB + "_other")


def test_secret_is_fetched_lazily_and_once_across_warm_invocations(
    aws: Aws, auth_server: AuthServer
) -> None:
    arn = aws.create_secret(auth_server.secret(P1))
    env = {**auth_server.env(), "DB_SECRET_ARN": arn}
    db = database_from_env(env)
    assert aws.counting.get_calls == 0  # nothing at construction

    @database_lifecycle(db, logger=logging.getLogger("test"))
    def handler(event: Any, context: Any) -> str:
        return _current_user(db)

    assert aws.counting.get_calls == 0
    assert [handler({}, None) for _ in range(3)] == [ROT_USER] * 3
    # A connection lost between invocations reconnects with the cached secret.
    db.discard_connection()
    assert handler({}, None) == ROT_USER
    assert aws.counting.get_calls == 1
    assert db.credential_refreshes == 0
    db.close()


def test_rotated_password_is_fetched_again_once(
    aws: Aws, auth_server: AuthServer, caplog: pytest.LogCaptureFixture
) -> None:
    arn = aws.create_secret(auth_server.secret(P1))
    db = database_from_env({**auth_server.env(), "DB_SECRET_ARN": arn})
    with db.connection_context():
        assert _current_user(db) == ROT_USER
    assert aws.counting.get_calls == 1

    # Rotation: the server and the secret change; our cached copy is stale.
    auth_server.set_password(P2)
    aws.put_secret(arn, auth_server.secret(P2))
    caplog.set_level(logging.DEBUG, logger="peewee_serverless")
    caplog.set_level(logging.DEBUG, logger="peewee")
    with db.connection_context():
        assert _current_user(db) == ROT_USER
        assert "password" not in db.connect_params  # the new one is not kept either
    assert aws.counting.get_calls == 2
    assert db.credential_refreshes == 1
    ours = [r for r in caplog.records if r.name.startswith(("peewee_serverless", "peewee"))]
    assert any("fetching them again" in r.getMessage() for r in ours)
    _assert_no_secret(*(f"{r.getMessage()} {r.args!r}" for r in ours))

    # And it stays cached afterwards.
    with db.connection_context():
        assert _current_user(db) == ROT_USER
    assert aws.counting.get_calls == 2


def test_credentials_live_only_in_the_connect_attempt(aws: Aws, auth_server: AuthServer) -> None:
    arn = aws.create_secret(auth_server.secret(P1))
    db = database_from_env({**auth_server.env(), "DB_SECRET_ARN": arn})
    with db.connection_context():
        assert _current_user(db) == ROT_USER
        # Connected with the secret's user and password, yet the database object holds neither:
        # not in connect_params, not in any attribute's repr.
        assert "password" not in db.connect_params and "user" not in db.connect_params
        _assert_no_secret(repr(db.connect_params), repr(vars(db)))
    assert db.database == auth_server.database  # the secret's dbname: a name, kept


def test_cancel_from_a_second_connection_uses_the_secrets_credentials(
    aws: Aws, auth_server: AuthServer
) -> None:
    """A statement cut at the deadline is cancelled from a second connection: that connect
    needs the credentials too, although connect_params never held them."""
    arn = aws.create_secret(auth_server.secret(P1))
    env = {**auth_server.env(), "DB_SECRET_ARN": arn}
    db, busy = database_from_env(env), database_from_env(env)
    sleep = "SELECT SLEEP(60)" if auth_server.engine == "mysql" else "SELECT pg_sleep(60)"
    outcome: list[str] = []
    sessions: list[int] = []

    def run() -> None:  # Peewee's connection state is per thread: connect here
        with busy.connection_context():
            sessions.append(busy._session)
            try:
                busy.execute_sql(sleep).fetchone()
                outcome.append("returned")  # MySQL: KILL QUERY ends SLEEP() early with 1
            except Exception as exc:  # noqa: BLE001 - PostgreSQL: QueryCanceled
                outcome.append(type(exc).__name__)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    if auth_server.engine == "mysql":
        sql = "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = %s"
        sql += " AND INFO LIKE 'SELECT SLEEP%%'"
    else:
        sql = "SELECT COUNT(*) FROM pg_stat_activity WHERE pid = %s"
        sql += " AND query LIKE 'SELECT pg_sleep%%' AND state = 'active'"
    with db.connection_context():
        # The statement must be running before it can be cancelled: wait for it (bounded).
        for _ in range(1000):
            if sessions and db.execute_sql(sql, (sessions[0],)).fetchone()[0]:
                break
            time.sleep(0.01)  # poll interval; the condition is re-read each round
        else:
            pytest.fail("the statement to cancel never started")
        db._cancel_on_server(sessions[0], 5.0)
    worker.join(30)  # a bound, not a timing: the sleep itself is 60 s
    assert not worker.is_alive() and outcome, "the statement was not cancelled"


def test_wrong_password_in_secret_is_refetched_once_then_fails(
    aws: Aws, auth_server: AuthServer
) -> None:
    arn = aws.create_secret(auth_server.secret(P2))  # the server has P1
    db = database_from_env({**auth_server.env(), "DB_SECRET_ARN": arn})
    with pytest.raises(Exception) as info:
        db.connect()
    assert aws.counting.get_calls == 2  # one fetch, one refetch, no loop
    assert db.credential_refreshes == 1
    _assert_no_secret(_full_text(info.value))


def test_wrong_secret_arn_is_a_clear_configuration_error(aws: Aws) -> None:
    real = aws.create_secret({"engine": "mysql", "username": "u", "password": P1})
    wrong = real.rsplit(":", 1)[0] + ":pst-sec-does-not-exist-AbCdEf"
    db = database_from_env({"DB_ENGINE": "mysql", "DB_SECRET_ARN": wrong})
    with pytest.raises(ConfigurationError) as info:
        db.connect()
    err = info.value
    assert err.setting == "DB_SECRET_ARN"
    assert "ResourceNotFoundException" in str(err)
    assert wrong in str(err)
    _assert_no_secret(str(err), repr(err), _full_text(err))
    assert db.is_closed()


def test_secret_that_is_not_json_does_not_leak(aws: Aws) -> None:
    arn = aws.create_secret(f"not json {P1}")
    db = database_from_env({"DB_ENGINE": "postgres", "DB_SECRET_ARN": arn})
    with pytest.raises(ConfigurationError) as info:
        db.connect()
    assert info.value.setting == "DB_SECRET_ARN"
    assert "JSON object" in str(info.value)
    _assert_no_secret(_full_text(info.value))


def test_secret_without_password_names_the_key_not_values(aws: Aws) -> None:
    arn = aws.create_secret({"engine": "mysql", "username": P1})
    source = SecretsManagerSource(arn, engine="mysql")
    with pytest.raises(ConfigurationError, match="'password'") as info:
        source.get()
    _assert_no_secret(_full_text(info.value))


def test_secret_for_another_engine_is_rejected(aws: Aws, moto_server: str) -> None:
    arn = aws.create_secret({"engine": "postgres", "username": "u", "password": P1})
    # The injectable-client path: a private provider on this client.
    client = CountingClient(boto3.client("secretsmanager", endpoint_url=moto_server))
    source = SecretsManagerSource(arn, engine="mysql", boto3_client=client)
    with pytest.raises(ConfigurationError) as info:
        source.get()
    assert info.value.setting == "DB_ENGINE"
    assert client.get_calls == 1
    assert aws.counting.get_calls == 0  # the shared provider was not used


def test_a_silent_secrets_manager_fails_the_connect_by_the_deadline(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Secrets Manager stops answering (connections open, nothing comes back): the connect
    that needs the secret gives up before a 2 s Lambda timeout, as DatabaseUnavailable (503 +
    Retry-After in the HTTP layer), not after Powertools' default client's 60 s reads; with
    time enough and the endpoint back, the same source reads the secret."""
    from peewee_serverless import DatabaseUnavailable
    from peewee_serverless.local.context import LambdaContext

    arn = aws.create_secret({"engine": "mysql", "username": "app", "password": P1})
    host, port = aws.url.removeprefix("http://").split(":")
    with FaultProxy(host, int(port)) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", f"http://{proxy.host}:{proxy.port}")
        monkeypatch.setattr(secrets, "_shared_provider", None)  # the real, deadline-bound one
        env = {
            "DB_ENGINE": "mysql",
            "DB_HOST": "127.0.0.1",
            "DB_PORT": str(free_port()),  # never reached: the secret comes first
            "DB_NAME": "app",
            "DB_SECRET_ARN": arn,
        }
        db = database_from_env(env)

        @database_lifecycle(db)
        def handler(event: Any, context: Any) -> Any:
            return db.execute_sql("SELECT 1").fetchone()

        proxy.set_mode("blackhole")
        context = LambdaContext(timeout=2.0)
        with pytest.raises(DatabaseUnavailable) as info:
            handler({}, context)
        assert context.get_remaining_time_in_millis() > 0, "answered after the timeout"
        assert info.value.retry_after >= 1
        _assert_no_secret(_full_text(info.value))
        proxy.set_mode("pass")
        source = settings_from_env(env).credentials
        assert source is not None and source.get().password == P1


def test_env_pins_host_port_and_name_over_the_secret(aws: Aws) -> None:
    arn = aws.create_secret(
        {
            "engine": "mysql",
            "host": "db.internal",
            "port": 3307,
            "username": "app",
            "password": P1,
            "dbname": "fromsecret",
        }
    )
    pinned = SecretsManagerSource(arn, engine="mysql", host="proxy", port=3306, database="app_db")
    assert pinned.get() == Credentials("app", P1, "proxy", 3306, "app_db")
    free = SecretsManagerSource(arn, engine="mysql")
    assert free.get() == Credentials("app", P1, "db.internal", 3307, "fromsecret")
    assert aws.counting.get_calls == 1  # the two sources share one provider's cache


def test_reprs_never_show_the_password(aws: Aws) -> None:
    arn = aws.create_secret({"engine": "mysql", "username": "app", "password": P1})
    settings = settings_from_env({"DB_ENGINE": "mysql", "DB_SECRET_ARN": arn})
    creds = settings.credentials.get()  # type: ignore[union-attr]
    assert creds.password == P1
    _assert_no_secret(
        repr(settings),
        repr(settings.credentials),
        repr(creds),
        str(creds),
        repr(StaticCredentials("u", P1)),
    )


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"DB_SECRET_ARN": "arn:x", "DB_NAME": "d", "DB_HOST": "h"}, "DB_ENGINE"),
        ({"DB_ENGINE": "mysql", "DB_SECRET_ARN": "arn:x", "DB_PASSWORD": P1}, "DB_PASSWORD"),
        ({"DATABASE_URL": f"mysql://u:{P1}@h/d", "DB_SECRET_ARN": "arn:x"}, "DATABASE_URL"),
        ({"DB_ENGINE": "mysql", "DB_SECRET_ARN": "arn:x", "DB_IAM_AUTH": "true"}, "DB_IAM_AUTH"),
        ({"DB_ENGINE": "sqlite", "DB_SECRET_ARN": "arn:x"}, "DB_SECRET_ARN"),
        (
            {"DB_ENGINE": "mysql", "DB_HOST": "h", "DB_NAME": "d", "DB_IAM_AUTH": "maybe"},
            "DB_IAM_AUTH",
        ),
        ({"DB_ENGINE": "mysql", "DB_HOST": "h", "DB_NAME": "d", "DB_IAM_AUTH": "1"}, "DB_USER"),
        (
            {
                "DB_ENGINE": "mysql",
                "DB_HOST": "h",
                "DB_NAME": "d",
                "DB_USER": "u",
                "DB_IAM_AUTH": "1",
            },
            "AWS_REGION",
        ),
        (
            {
                "DB_ENGINE": "mysql",
                "DB_HOST": "h",
                "DB_NAME": "d",
                "DB_USER": "u",
                "DB_IAM_AUTH": "1",
                "AWS_REGION": REGION,
                "DB_SSL_MODE": "disable",
            },
            "DB_SSL_MODE",
        ),
    ],
)
def test_access_settings_errors_name_the_variable(env: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        settings_from_env(env)
    assert info.value.setting == setting
    _assert_no_secret(str(info.value))


@pytest.mark.parametrize("engine", ["mysql", "postgres"])
def test_iam_token_is_signed_offline_and_used_over_tls(
    engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    env = {
        "DB_ENGINE": engine,
        "DB_HOST": "db.example.com",
        "DB_PORT": "6000",
        "DB_NAME": "app",
        "DB_USER": "iam_user",
        "DB_IAM_AUTH": "true",
        "AWS_REGION": REGION,
    }
    settings = settings_from_env(env)
    assert isinstance(settings.credentials, IamTokenSource)
    assert settings.tls is not None and settings.tls.mode == "require"
    db = settings.create_database()
    seen: dict[str, Any] = {}

    def fake_connect(credentials: dict[str, Any]) -> str:
        seen.update(db.connect_params, **credentials)
        return "conn"

    assert connect_with_credentials(db, fake_connect) == "conn"
    assert "password" not in db.connect_params  # the token was this connect's alone
    token = seen["password"]
    assert token.startswith("db.example.com:6000/?")
    assert "Action=connect" in token and "DBUser=iam_user" in token
    assert "X-Amz-Signature=" in token
    assert seen["user"] == "iam_user"
    if engine == "mysql":
        assert seen["ssl"] is not None and "ssl_disabled" not in seen
    else:
        assert seen["sslmode"] == "require"
    assert token not in repr(settings) + repr(settings.credentials)
