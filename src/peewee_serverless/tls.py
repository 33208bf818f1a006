"""TLS to the database server: one setting for both drivers, and a clear error when it fails.

``DB_SSL_MODE`` uses PostgreSQL's names for the four useful levels:

============  ======================================================================
``disable``   no TLS
``prefer``    TLS when the server offers it, plaintext otherwise (both drivers' default)
``require``   TLS, but the server's certificate is not checked (encryption only)
``verify-ca`` TLS, the certificate must be signed by a CA in ``DB_SSL_CA``
``verify-full`` as ``verify-ca`` and the certificate must name the host connected to
============  ======================================================================

``DB_SSL_CA`` is the path of a PEM CA bundle (for RDS: the ``global-bundle.pem`` AWS publishes,
shipped inside the function package). With verification and no bundle, the system trust store
is used. Setting only ``DB_SSL_CA`` means ``verify-full``. Unset, each driver keeps its default
(``prefer``: PyMySQL and libpq both *try* TLS and fall back to plaintext).

PyMySQL gets an :class:`ssl.SSLContext` (``ssl=``; a required TLS that the server does not offer
fails) or ``ssl_disabled``; psycopg2 gets ``sslmode`` / ``sslrootcert``.

**One context per process.** PyMySQL builds a fresh context for every connection when it is
given no TLS option (``ssl.create_default_context()``: it loads the whole system CA store, ~20 ms,
although its "preferred" mode then verifies nothing) and we used to build one per database. A Lambda
container reconnects after every freeze and under connection-limit churn, so
:func:`client_context` builds each (mode, CA) context once and every connect reuses it; PyMySQL's
preferred mode gets it through :func:`pymysql_connect`, whose connection class differs from
PyMySQL's only in *where* that context comes from (the fallback to plaintext is PyMySQL's own).
The context also remembers the server's last TLS session (ticket) per host name and offers it on
the next handshake, so a reconnect resumes instead of redoing the key exchange and certificate
check (MariaDB and MySQL accept it; a ticket the server no longer knows costs nothing, the
handshake is then simply a full one). libpq builds its own context in C and turns session tickets
off, so psycopg2 has nothing to reuse.

A certificate that fails verification is reported as
:class:`~peewee_serverless.errors.ConfigurationError` naming ``DB_SSL_CA``: no retry or back-off
can fix a wrong CA bundle, a wrong host name or an impostor, and the operator must act.
"""

from __future__ import annotations

import functools
import operator
import os
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigurationError

__all__ = [
    "SSL_MODES",
    "TlsSettings",
    "client_context",
    "pymysql_connect",
    "tls_from_env",
    "verification_failure",
]

SSL_MODES = ("disable", "prefer", "require", "verify-ca", "verify-full")

# Text of a failed verification, as PyMySQL (Python's ssl) and libpq word it.
_VERIFY_FRAGMENTS = (
    "certificate verify failed",
    "certificate_verify_failed",
    "does not match host name",
    "hostname mismatch",
    "ip address mismatch",
    "root certificate file",
    "could not read root certificate",
)


@dataclass(frozen=True)
class TlsSettings:
    """``mode`` (one of :data:`SSL_MODES`) and the CA bundle path ``ca`` (``None``: system)."""

    mode: str
    ca: str | None = None

    @property
    def verify(self) -> bool:
        """Whether the server's certificate is checked."""
        return self.mode in ("verify-ca", "verify-full")

    def ssl_context(self) -> ssl.SSLContext:
        """The process-wide client context for this mode and CA (for PyMySQL)."""
        return client_context(self.mode, self.ca)

    def connect_params(self, engine: str) -> dict[str, Any]:
        """Driver connect parameters for ``engine`` (``mysql`` / ``postgres``; SQLite: none)."""
        if engine == "mysql":
            if self.mode == "disable":
                return {"ssl_disabled": True}
            if self.mode == "prefer":
                # PyMySQL's default; pymysql_connect supplies the shared context.
                return {}
            return {"ssl": self.ssl_context()}
        if engine == "postgres":
            params: dict[str, Any] = {"sslmode": self.mode}
            if self.verify:
                # libpq >= 16 understands "system"; otherwise it would look in ~/.postgresql.
                params["sslrootcert"] = self.ca or "system"
            return params
        return {}


class SessionResumingContext(ssl.SSLContext):
    """A client context that offers the last TLS session seen for a host on the next handshake."""

    def __init__(self, protocol: int = ssl.PROTOCOL_TLS_CLIENT) -> None:
        self._sessions: dict[str, ssl.SSLSession] = {}
        self._lock = threading.Lock()

    def wrap_socket(self, sock: Any, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        host = kwargs.get("server_hostname")
        if kwargs.get("session") is None and host is not None:
            with self._lock:
                kwargs["session"] = self._sessions.get(host)
        return super().wrap_socket(sock, *args, **kwargs)

    def remember(self, host: str, sock: Any) -> None:
        """Keep ``sock``'s session (call after the first reply: TLS 1.3 tickets come late)."""
        session = getattr(sock, "session", None)
        if session is not None:
            with self._lock:
                self._sessions[host] = session


def client_context(mode: str, ca: str | None = None) -> SessionResumingContext:
    """The one client context of this process for ``mode`` (``prefer`` ... ``verify-full``).

    ``prefer`` and ``require`` check nothing (as PyMySQL's own preferred mode), so they skip the
    system CA store; ``verify-*`` load ``ca`` (or the system store) once.
    """
    return _client_context(mode, ca)


@functools.cache
def _client_context(mode: str, ca: str | None) -> SessionResumingContext:
    if mode not in SSL_MODES or mode == "disable":
        raise ValueError(f"no TLS context for mode {mode!r}")
    ctx = SessionResumingContext(ssl.PROTOCOL_TLS_CLIENT)
    if mode in ("verify-ca", "verify-full"):
        if ca is None:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
        else:
            ctx.load_verify_locations(cafile=ca)
        ctx.check_hostname = mode == "verify-full"
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def pymysql_connect(**params: Any) -> Any:
    """``pymysql.connect(**params)`` with the process-wide contexts (see the module docstring)."""
    return _pymysql_connection_class()(**params)


@functools.lru_cache(maxsize=1)
def _pymysql_connection_class() -> type:
    # Built on first use: importing this module must not import the driver.
    from pymysql.connections import Connection

    class TlsReusingConnection(Connection):
        """PyMySQL's connection; TLS context from :func:`client_context`, sessions resumed.

        ``deadline`` (a ``time.monotonic()`` value, or None) ends every socket wait by that
        time: PyMySQL takes its read / write timeout afresh for each wait, so a handshake of
        several round trips (greeting, authentication, SET NAMES, autocommit) bounded by one
        timeout per wait could add up past an invocation's deadline.
        """

        _deadline: float | None = None
        _read_limit: float | None = None
        _write_limit: float | None = None
        #: The deadline's part of the timeouts (the time left, rounded down) and the
        #: ``time.monotonic()`` until which it stays true (0.0: none; see ``_bounded_timeout``).
        _left: float = 0.0
        _left_until: float = 0.0

        @property
        def deadline(self) -> float | None:
            return self._deadline

        @deadline.setter
        def deadline(self, value: float | None) -> None:
            self._deadline = value
            self._left_until = 0.0  # the time left is computed afresh

        def __init__(self, *args: Any, deadline: float | None = None, **kwargs: Any) -> None:
            self.deadline = deadline
            super().__init__(*args, **kwargs)

        # PyMySQL reads these once per packet and once per write (each wait of a statement).
        _read_timeout = _bounded_timeout("_read_limit")
        _write_timeout = _bounded_timeout("_write_limit")

        def _create_ssl_ctx(self, sslp: Any) -> Any:
            # Called with {} in PyMySQL's preferred mode (no TLS option given), which would
            # otherwise build and load a full default context for every connection.
            if not sslp:
                return client_context("prefer")
            return super()._create_ssl_ctx(sslp)

        def connect(self, sock: Any = None) -> None:
            super().connect(sock)
            if self._secure and isinstance(self.ctx, SessionResumingContext):
                self.ctx.remember(self.host, self._sock)

    return TlsReusingConnection


_monotonic = time.monotonic


def _bounded_timeout(limit_name: str) -> property:
    """A socket timeout property: the configured limit (``limit_name``'s value; set through
    the property), but ending by the connection's ``deadline``.

    Never zero (that would mean non-blocking to Python's socket). Rounded down to 10 ms: the
    waits of one statement (a result's packets) get the same value, so PyMySQL, which resets
    the socket's timeout only when the value changes, does not make a system call for each
    packet. Rounding down never moves a wait past the deadline. The time left is kept with the
    instant until which it holds (``deadline`` minus it: up to 10 ms later), so most reads (7
    per simple statement) are a clock read and a comparison.
    """
    limit_of = operator.attrgetter(limit_name)

    def get(self: Any) -> float | None:
        limit: float | None = limit_of(self)
        until = self._left_until
        if until and _monotonic() < until:
            left: float = self._left
        else:
            deadline = self._deadline
            if deadline is None:
                return limit
            left = int((deadline - _monotonic()) * 100) / 100
            if left < 0.001:
                left = 0.001
            self._left = left
            self._left_until = deadline - left
        return left if limit is None or left < limit else limit

    def set_limit(self: Any, value: float | None) -> None:
        setattr(self, limit_name, value)

    return property(get, set_limit)


def tls_from_env(environ: Mapping[str, str]) -> TlsSettings | None:
    """Read ``DB_SSL_MODE`` / ``DB_SSL_CA``; ``None`` when neither is set (driver defaults)."""
    raw_mode = environ.get("DB_SSL_MODE", "").strip()
    ca = environ.get("DB_SSL_CA", "").strip() or None
    if ca is not None and not os.path.isfile(ca):
        raise ConfigurationError("DB_SSL_CA", f"no such file: {ca!r}")
    if not raw_mode:
        return TlsSettings("verify-full", ca) if ca else None
    mode = raw_mode.lower()
    if mode not in SSL_MODES:
        raise ConfigurationError(
            "DB_SSL_MODE", f"must be one of {', '.join(SSL_MODES)}; got {raw_mode!r}"
        )
    if ca is not None and mode == "disable":
        raise ConfigurationError("DB_SSL_CA", "is set but DB_SSL_MODE is disable")
    if ca is not None and mode in ("prefer", "require"):
        # A CA without verification would suggest a check that does not happen.
        raise ConfigurationError("DB_SSL_CA", f"is set but DB_SSL_MODE={mode} does not verify")
    if ca is not None:
        # Read it now: a malformed bundle is a deploy-time error, not a 3 a.m. connect failure.
        try:
            ssl.create_default_context(cafile=ca)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigurationError(
                "DB_SSL_CA", f"is not a PEM CA bundle: {ca!r} ({exc.__class__.__name__})"
            ) from None
    return TlsSettings(mode, ca)


def verification_failure(exc: BaseException) -> ConfigurationError | None:
    """A :class:`ConfigurationError` when ``exc`` (or its cause) is a failed certificate check."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 6:
        chain.append(current)
        current = current.__cause__ or current.__context__
    for err in chain:
        # Python's own verdict (PyMySQL) is the most precise wording.
        if isinstance(err, ssl.SSLCertVerificationError):
            return _failure(f"certificate verify failed: {err.verify_message or err}")
    for err in chain:
        text = str(err)
        if any(fragment in text.lower() for fragment in _VERIFY_FRAGMENTS):
            return _failure(_relevant_line(text))
    return None


def _failure(detail: str) -> ConfigurationError:
    return ConfigurationError(
        "DB_SSL_CA",
        f"the database server's TLS certificate failed verification ({detail.strip()[:300]}); "
        "check DB_SSL_CA (CA bundle) and DB_SSL_MODE",
    )


def _relevant_line(text: str) -> str:
    for line in text.splitlines():
        lowered = line.lower()
        if any(fragment in lowered for fragment in _VERIFY_FRAGMENTS):
            return line
    return text
