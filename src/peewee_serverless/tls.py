"""TLS to the database server: one setting for both drivers, and a clear error when it fails.

``DB_SSL_MODE`` uses PostgreSQL's names for the four useful levels:

============  ======================================================================
``disable``   no TLS
``require``   TLS, but the server's certificate is not checked (encryption only)
``verify-ca`` TLS, the certificate must be signed by a CA in ``DB_SSL_CA``
``verify-full`` as ``verify-ca`` and the certificate must name the host connected to
============  ======================================================================

``DB_SSL_CA`` is the path of a PEM CA bundle (for RDS: the ``global-bundle.pem`` AWS publishes,
shipped inside the function package). With verification and no bundle, the system trust store
is used. Setting only ``DB_SSL_CA`` means ``verify-full``. Unset, each driver keeps its default
(PyMySQL and libpq both *try* TLS and fall back to plaintext).

PyMySQL gets an :class:`ssl.SSLContext` (``ssl=``; a required TLS that the server does not offer
fails) or ``ssl_disabled``; psycopg2 gets ``sslmode`` / ``sslrootcert``.

A certificate that fails verification is reported as
:class:`~peewee_serverless.errors.ConfigurationError` naming ``DB_SSL_CA``: no retry or back-off
can fix a wrong CA bundle, a wrong host name or an impostor, and the operator must act.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigurationError

__all__ = ["SSL_MODES", "TlsSettings", "tls_from_env", "verification_failure"]

SSL_MODES = ("disable", "require", "verify-ca", "verify-full")

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
        """The client context for ``require`` / ``verify-*`` (for PyMySQL)."""
        if self.verify:
            ctx = ssl.create_default_context(cafile=self.ca)
            ctx.check_hostname = self.mode == "verify-full"
        else:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def connect_params(self, engine: str) -> dict[str, Any]:
        """Driver connect parameters for ``engine`` (``mysql`` / ``postgres``; SQLite: none)."""
        if engine == "mysql":
            if self.mode == "disable":
                return {"ssl_disabled": True}
            return {"ssl": self.ssl_context()}
        if engine == "postgres":
            params: dict[str, Any] = {"sslmode": self.mode}
            if self.verify:
                # libpq >= 16 understands "system"; otherwise it would look in ~/.postgresql.
                params["sslrootcert"] = self.ca or "system"
            return params
        return {}


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
    if ca is not None and mode == "require":
        # A CA without verification would suggest a check that does not happen.
        raise ConfigurationError("DB_SSL_CA", "is set but DB_SSL_MODE=require does not verify")
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
