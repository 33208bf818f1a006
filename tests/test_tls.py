"""TLS settings against private MariaDB / PostgreSQL servers with a certificate made here.

The test makes a CA and a server certificate (``cryptography``) whose only name is
``localhost``, starts a private server with it (the shared servers are never reconfigured), and
connects through :func:`peewee_serverless.database_from_env` with ``DB_SSL_MODE`` /
``DB_SSL_CA``. The server itself reports that the session is encrypted (``Ssl_cipher`` /
``pg_stat_ssl``).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from peewee_serverless import ConfigurationError, database_from_env, settings_from_env
from peewee_serverless.tls import TlsSettings, client_context, verification_failure

from .servers import private_server


@dataclass
class Pki:
    """Paths of the PEM files made for one test module."""

    ca: Path
    wrong_ca: Path
    cert: Path
    key: Path


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _ca(common: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(_name(common))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _pem(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA, a server certificate for ``localhost`` only (no IP name), and an unrelated CA."""
    tmp = tmp_path_factory.mktemp("pki")
    ca_key, ca_cert = _ca("pst test CA")
    _, wrong_cert = _ca("pst unrelated CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return Pki(
        ca=_pem(tmp / "ca.pem", ca_cert.public_bytes(pem)),
        wrong_ca=_pem(tmp / "wrong-ca.pem", wrong_cert.public_bytes(pem)),
        cert=_pem(tmp / "server.crt", cert.public_bytes(pem)),
        key=_pem(
            tmp / "server.key",
            key.private_bytes(
                pem, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
            ),
        ),
    )


@pytest.fixture(scope="module")
def _mariadb_tls(pki: Pki) -> Iterator[Any]:
    files = {"server.crt": pki.cert, "server.key": pki.key, "ca.pem": pki.ca}
    options = {
        "ssl_cert": "{datadir}/server.crt",
        "ssl_key": "{datadir}/server.key",
        "ssl_ca": "{datadir}/ca.pem",
    }
    with private_server("mariadb", options=options, files=files) as srv:
        yield srv


@pytest.fixture(scope="module")
def _postgres_tls(pki: Pki) -> Iterator[Any]:
    files = {"server.crt": pki.cert, "server.key": pki.key}
    options = {
        "ssl": "on",
        "ssl_cert_file": "{datadir}/server.crt",
        "ssl_key_file": "{datadir}/server.key",
    }
    with private_server("postgres", options=options, files=files) as srv:
        yield srv


@pytest.fixture(params=["mariadb", "postgres"])
def tls_server(request: pytest.FixtureRequest) -> Any:
    """A private server speaking TLS with the certificate from :func:`pki`."""
    return request.getfixturevalue(f"_{request.param}_tls")


@pytest.fixture(scope="module", params=["mariadb", "postgres"])
def plain_server(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A private server without any TLS configuration (whatever the shared servers offer)."""
    options = {"ssl": "off"} if request.param == "postgres" else {}
    with private_server(request.param, options=options) as srv:
        yield srv


def _encrypted(db: Any) -> bool:
    """What the server says about our own session."""
    if db.__class__.__name__.endswith("MySQLDatabase"):
        row = db.execute_sql("SHOW SESSION STATUS LIKE 'Ssl_cipher'").fetchone()
        return bool(row and row[1])
    row = db.execute_sql("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
    return bool(row[0])


def _connect(env: dict[str, str]) -> bool:
    db = database_from_env(env)
    try:
        with db.connection_context():
            return _encrypted(db)
    finally:
        if not db.is_closed():
            db.close()


@pytest.mark.parametrize(
    ("mode", "host"), [("verify-full", "localhost"), ("verify-ca", "127.0.0.1")]
)
def test_verified_tls_with_the_right_ca(tls_server: Any, pki: Pki, mode: str, host: str) -> None:
    env = {**tls_server.env(), "DB_HOST": host, "DB_SSL_MODE": mode, "DB_SSL_CA": str(pki.ca)}
    assert _connect(env) is True


def test_ca_alone_means_verify_full(tls_server: Any, pki: Pki) -> None:
    env = {**tls_server.env(), "DB_HOST": "localhost", "DB_SSL_CA": str(pki.ca)}
    assert settings_from_env(env).tls == TlsSettings("verify-full", str(pki.ca))
    assert _connect(env) is True


def test_wrong_ca_fails_with_a_clear_configuration_error(tls_server: Any, pki: Pki) -> None:
    env = {
        **tls_server.env(),
        "DB_HOST": "localhost",
        "DB_SSL_MODE": "verify-full",
        "DB_SSL_CA": str(pki.wrong_ca),
    }
    db = database_from_env(env)
    with pytest.raises(ConfigurationError) as info:
        db.connect()
    assert db.is_closed()
    assert db.events.retries == 0  # no connect retry spins on a certificate problem
    assert info.value.setting == "DB_SSL_CA"
    message = str(info.value)
    assert "failed verification" in message
    assert "certificate verify failed" in message.lower()


def test_host_name_not_in_the_certificate_fails_verify_full(tls_server: Any, pki: Pki) -> None:
    env = {
        **tls_server.env(),
        "DB_HOST": "127.0.0.1",  # the certificate names only localhost
        "DB_SSL_MODE": "verify-full",
        "DB_SSL_CA": str(pki.ca),
    }
    with pytest.raises(ConfigurationError) as info:
        _connect(env)
    assert info.value.setting == "DB_SSL_CA"
    assert "failed verification" in str(info.value)


def test_require_encrypts_without_checking(tls_server: Any) -> None:
    assert _connect({**tls_server.env(), "DB_SSL_MODE": "require"}) is True


def test_disable_is_plaintext(tls_server: Any) -> None:
    assert _connect({**tls_server.env(), "DB_SSL_MODE": "disable"}) is False


@pytest.mark.parametrize("mode", ["prefer", None])
def test_prefer_encrypts_when_the_server_offers_tls(tls_server: Any, mode: str | None) -> None:
    env = tls_server.env() if mode is None else {**tls_server.env(), "DB_SSL_MODE": mode}
    assert _connect(env) is True


@pytest.mark.parametrize("mode", ["prefer", None])
def test_prefer_falls_back_to_plaintext_without_server_tls(
    plain_server: Any, mode: str | None
) -> None:
    env = plain_server.env() if mode is None else {**plain_server.env(), "DB_SSL_MODE": mode}
    assert _connect(env) is False


def test_require_fails_without_server_tls(plain_server: Any) -> None:
    env = {**plain_server.env(), "DB_SSL_MODE": "require", "DB_CONNECT_RETRIES": "0"}
    db = database_from_env(env)
    with pytest.raises(Exception, match="(?i)ssl|tls"):
        db.connect()
    assert db.is_closed()


@pytest.mark.parametrize(
    ("mode", "host", "use_ca"),
    [
        (None, "127.0.0.1", False),
        ("require", "127.0.0.1", False),
        ("verify-full", "localhost", True),
    ],
)
def test_mysql_reuses_one_context_and_resumes_the_session(
    _mariadb_tls: Any, pki: Pki, mode: str | None, host: str, use_ca: bool
) -> None:
    env = {**_mariadb_tls.env(), "DB_HOST": host}
    if mode is not None:
        env["DB_SSL_MODE"] = mode
    if use_ca:
        env["DB_SSL_CA"] = str(pki.ca)
    expected = client_context(mode or "prefer", str(pki.ca) if use_ca else None)
    seen = []
    for _ in range(3):  # a fresh database each time: as a new container would, same process
        db = database_from_env(env)
        with db.connection_context():
            conn = db.connection()
            assert _encrypted(db) is True
            seen.append((conn.ctx, conn._sock.session_reused))
    assert all(ctx is expected for ctx, _ in seen)
    # The first handshake is full; later ones resume the session the server handed out.
    assert [reused for _, reused in seen][1:] == [True, True]


# -- settings -----------------------------------------------------------------------------------
BASE = {"DB_ENGINE": "postgres", "DB_HOST": "h", "DB_NAME": "d"}


@pytest.mark.parametrize(
    ("extra", "setting"),
    [
        ({"DB_SSL_MODE": "allow"}, "DB_SSL_MODE"),
        ({"DB_SSL_MODE": "prefer", "DB_SSL_CA": "{ca}"}, "DB_SSL_CA"),
        ({"DB_SSL_MODE": "verify-ca", "DB_SSL_CA": "/nonexistent/ca.pem"}, "DB_SSL_CA"),
        ({"DB_SSL_MODE": "disable", "DB_SSL_CA": "{ca}"}, "DB_SSL_CA"),
        ({"DB_SSL_MODE": "require", "DB_SSL_CA": "{ca}"}, "DB_SSL_CA"),
        ({"DB_SSL_MODE": "verify-ca", "DB_SSL_CA": "{junk}"}, "DB_SSL_CA"),
    ],
)
def test_tls_setting_errors_name_the_variable(
    extra: dict[str, str], setting: str, pki: Pki, tmp_path: Path
) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    env = {**BASE, **{k: v.format(ca=pki.ca, junk=junk) for k, v in extra.items()}}
    with pytest.raises(ConfigurationError) as info:
        settings_from_env(env)
    assert info.value.setting == setting


@pytest.mark.parametrize("engine", ["mysql", "postgres", "sqlite"])
def test_tls_connect_params_per_driver(engine: str, pki: Pki) -> None:
    full = TlsSettings("verify-full", str(pki.ca)).connect_params(engine)
    plain = TlsSettings("disable").connect_params(engine)
    if engine == "mysql":
        ctx = full["ssl"]
        assert ctx.check_hostname is True and ctx.verify_mode.name == "CERT_REQUIRED"
        required = TlsSettings("require").connect_params(engine)["ssl"]
        assert required.verify_mode.name == "CERT_NONE"
        # One context per (mode, CA) for the whole process, however often params are built.
        assert TlsSettings("require").connect_params(engine)["ssl"] is required
        assert TlsSettings("verify-full", str(pki.ca)).connect_params(engine)["ssl"] is ctx
        assert TlsSettings("prefer").connect_params(engine) == {}  # PyMySQL's own default
        assert plain == {"ssl_disabled": True}
    elif engine == "postgres":
        assert full == {"sslmode": "verify-full", "sslrootcert": str(pki.ca)}
        assert TlsSettings("prefer").connect_params(engine) == {"sslmode": "prefer"}
        assert TlsSettings("verify-ca").connect_params(engine)["sslrootcert"] == "system"
        assert plain == {"sslmode": "disable"}
    else:
        assert full == {} and plain == {}


def test_unset_keeps_driver_defaults() -> None:
    settings = settings_from_env(BASE)
    assert settings.tls is None
    assert "sslmode" not in settings.connect_params()


def test_verification_failure_ignores_other_errors() -> None:
    assert verification_failure(OSError("connection refused")) is None
    err = verification_failure(OSError("SSL error: certificate verify failed"))
    assert err is not None and err.setting == "DB_SSL_CA"
