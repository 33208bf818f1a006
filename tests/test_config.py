"""Configuration from the environment: every path, the default, and every bad setting."""

from __future__ import annotations

import pytest

from peewee_serverless import (
    ConfigurationError,
    ServerlessMySQLDatabase,
    ServerlessPostgresqlDatabase,
    ServerlessSqliteDatabase,
    database_from_env,
    settings_from_env,
)
from peewee_serverless.config import DEFAULT_SQLITE_PATH

SECRET = "s3cr3t-Pa55word"


def test_nothing_set_is_an_embedded_sqlite_file() -> None:
    settings = settings_from_env({})
    assert settings.engine == "sqlite"
    assert settings.database == DEFAULT_SQLITE_PATH
    db = database_from_env({})
    assert isinstance(db, ServerlessSqliteDatabase)
    assert db.is_closed()


def test_db_name_alone_names_the_sqlite_file(tmp_path) -> None:
    path = str(tmp_path / "app.db")
    assert settings_from_env({"DB_NAME": path}).database == path


def test_seed_variables_with_a_host_mean_mysql() -> None:
    env = {
        "DB_HOST": "db.example.internal",
        "DB_NAME": "app",
        "DB_USER": "app",
        "DB_PASSWORD": SECRET,
        "DB_PORT": "3307",
    }
    settings = settings_from_env(env)
    assert (settings.engine, settings.host, settings.port, settings.user) == (
        "mysql",
        "db.example.internal",
        3307,
        "app",
    )
    assert settings.password == SECRET
    db = database_from_env(env)
    assert isinstance(db, ServerlessMySQLDatabase)
    assert db.connect_params["password"] == SECRET
    assert db.is_closed()


@pytest.mark.parametrize(
    ("engine", "cls", "port"),
    [
        ("postgres", ServerlessPostgresqlDatabase, 5432),
        ("postgresql", ServerlessPostgresqlDatabase, 5432),
        ("mariadb", ServerlessMySQLDatabase, 3306),
        ("MySQL", ServerlessMySQLDatabase, 3306),
    ],
)
def test_db_engine_selects_the_class_and_default_port(engine: str, cls: type, port: int) -> None:
    db = database_from_env({"DB_ENGINE": engine, "DB_HOST": "h", "DB_NAME": "n"})
    assert isinstance(db, cls)
    assert db.connect_params["port"] == port


@pytest.mark.parametrize(
    ("url", "engine", "host", "port", "user", "database"),
    [
        ("mysql://u:p%40ss@h:3310/app", "mysql", "h", 3310, "u", "app"),
        ("postgres://u@h/app", "postgres", "h", 5432, "u", "app"),
        ("postgresql://u:pw@h:6543/app?sslmode=require", "postgres", "h", 6543, "u", "app"),
        ("sqlite:////tmp/x.db", "sqlite", None, None, None, "/tmp/x.db"),
        ("sqlite://", "sqlite", None, None, None, ":memory:"),
    ],
)
def test_database_url_schemes(
    url: str, engine: str, host: str | None, port: int | None, user: str | None, database: str
) -> None:
    settings = settings_from_env({"DATABASE_URL": url, "DB_HOST": "ignored"})
    assert (settings.engine, settings.host, settings.port, settings.user, settings.database) == (
        engine,
        host,
        port,
        user,
        database,
    )


def test_url_password_is_unquoted_and_query_args_pass_through() -> None:
    settings = settings_from_env({"DATABASE_URL": "mysql://u:p%40ss@h/app?charset=utf8mb4"})
    assert settings.password == "p@ss"
    assert settings.connect_params()["charset"] == "utf8mb4"
    pg = settings_from_env({"DATABASE_URL": "postgresql://u@h/app?sslmode=require"})
    assert pg.connect_params()["sslmode"] == "require"


def test_options_from_env() -> None:
    options = settings_from_env(
        {
            "DB_IDLE_CHECK_SECONDS": "2.5",
            "DB_CLOSE_POLICY": "close",
            "DB_CONNECT_TIMEOUT": "3",
            "DB_APPLICATION_NAME": "users-api",
            "DB_MODE": "proxy",
        }
    ).options
    assert options.idle_check_seconds == 2.5
    assert options.close_policy == "close"
    assert options.connect_timeout == 3.0
    assert options.application_name == "users-api"
    assert options.mode == "proxy"


def test_application_name_defaults_to_the_lambda_function_name() -> None:
    settings = settings_from_env(
        {"DB_ENGINE": "postgres", "DB_HOST": "h", "DB_NAME": "n", "AWS_LAMBDA_FUNCTION_NAME": "fn"}
    )
    assert settings.connect_params()["application_name"] == "fn"


BAD = [
    ({"DB_ENGINE": "oracle"}, "DB_ENGINE"),
    ({"DB_ENGINE": "mysql", "DB_HOST": "h"}, "DB_NAME"),
    ({"DB_ENGINE": "postgres", "DB_NAME": "n"}, "DB_HOST"),
    ({"DB_HOST": "h", "DB_NAME": "n", "DB_PORT": "abc"}, "DB_PORT"),
    ({"DB_HOST": "h", "DB_NAME": "n", "DB_PORT": "0"}, "DB_PORT"),
    ({"DB_HOST": "h", "DB_NAME": "n", "DB_PORT": "70000"}, "DB_PORT"),
    ({"DATABASE_URL": f"oracle://u:{SECRET}@h/db"}, "DATABASE_URL"),
    ({"DATABASE_URL": f"mysql://u:{SECRET}@h:port/db"}, "DATABASE_URL"),
    ({"DATABASE_URL": f"mysql://u:{SECRET}@h/"}, "DATABASE_URL"),
    ({"DATABASE_URL": f"postgres://u:{SECRET}@/db"}, "DATABASE_URL"),
    ({"DATABASE_URL": "mysql://"}, "DATABASE_URL"),
    ({"DB_IDLE_CHECK_SECONDS": "soon"}, "DB_IDLE_CHECK_SECONDS"),
    ({"DB_IDLE_CHECK_SECONDS": "-1"}, "DB_IDLE_CHECK_SECONDS"),
    ({"DB_CLOSE_POLICY": "sometimes"}, "DB_CLOSE_POLICY"),
    ({"DB_CONNECT_TIMEOUT": "0"}, "DB_CONNECT_TIMEOUT"),
    ({"DB_MODE": "pooled"}, "DB_MODE"),
]


@pytest.mark.parametrize(("env", "setting"), BAD)
def test_bad_settings_raise_one_typed_error_naming_the_variable(
    env: dict[str, str], setting: str
) -> None:
    env = {**env, "DB_PASSWORD": SECRET}
    with pytest.raises(ConfigurationError) as info:
        database_from_env(env)
    err = info.value
    assert err.setting == setting
    assert str(err).startswith(setting)
    assert isinstance(err, ValueError)
    assert SECRET not in str(err)
    assert SECRET not in repr(err)


def test_password_never_in_repr() -> None:
    settings = settings_from_env({"DATABASE_URL": f"mysql://u:{SECRET}@h/app"})
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)
    assert "***" in repr(settings)


def test_every_path_connects_to_the_real_backend(backend) -> None:
    """The DB_* variables and the equivalent DATABASE_URL reach the same real server."""
    env = backend.env
    if backend.engine == "sqlite":
        url = f"sqlite:///{env['DB_NAME']}"
    else:
        scheme = "mysql" if backend.engine == "mysql" else "postgresql"
        auth = env["DB_USER"] + (f":{env['DB_PASSWORD']}" if env.get("DB_PASSWORD") else "")
        url = f"{scheme}://{auth}@{env['DB_HOST']}:{env['DB_PORT']}/{env['DB_NAME']}"
    for environ in (env, {"DATABASE_URL": url}):
        db = database_from_env(environ)
        assert db.is_closed()
        assert db.execute_sql("SELECT 1").fetchone()[0] == 1
        db.close()


def test_wrong_password_error_does_not_echo_it(server_backend) -> None:
    db = server_backend.make_db({"DB_USER": "pst_nobody", "DB_PASSWORD": SECRET})
    with pytest.raises(Exception) as info:
        db.connect()
    assert SECRET not in str(info.value)
    assert SECRET not in repr(info.value)


def test_int_setting_for_applications() -> None:
    from peewee_serverless.config import int_setting

    assert int_setting("API_MAX_BODY_BYTES", 7, environ={}) == 7
    assert int_setting("API_MAX_BODY_BYTES", 7, environ={"API_MAX_BODY_BYTES": " 64 "}) == 64
    for bad in ("lots", "0"):
        with pytest.raises(ConfigurationError) as info:
            int_setting("API_MAX_BODY_BYTES", 7, environ={"API_MAX_BODY_BYTES": bad})
        assert info.value.setting == "API_MAX_BODY_BYTES"
