"""Reading an HTTP request body within a size limit, for the local servers.

``http.server`` parses the request line and headers but leaves the body to the handler; this is
the one place that reads it (``Content-Length`` or ``Transfer-Encoding: chunked``), refusing
before it reads past ``limit`` and rejecting a malformed length or chunk size (``-1``, ``0x10``,
junk) without reading further. No maintained stdlib piece does this for a server (``http.client``
decodes chunked *responses* only), hence this small module.
"""

from __future__ import annotations

import string
from typing import BinaryIO

from ..errors import InvalidInput, PeeweeServerlessError

__all__ = ["BodyTooLarge", "MalformedBody", "read_body"]

_HEX = frozenset(string.hexdigits.encode("ascii"))
#: A chunk-size line longer than this is junk (16 hex digits already mean exabytes).
_MAX_LINE = 1024


class BodyTooLarge(PeeweeServerlessError):
    """The body is larger than the limit; the rest of it is still unread on the socket."""


class MalformedBody(InvalidInput):
    """The Content-Length or a chunk size is not a valid non-negative number."""


def _chunk_size(line: bytes) -> int:
    digits = line.split(b";", 1)[0].strip()
    # int(x, 16) would accept "-1", "+1", "0x10" and "1_0": only plain hex digits are valid.
    if not digits or not set(digits) <= _HEX:
        raise MalformedBody(f"malformed chunk size {line[:40]!r}")
    return int(digits, 16)


def _read_chunked(rfile: BinaryIO, limit: int) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        line = rfile.readline(_MAX_LINE + 1)
        if len(line) > _MAX_LINE or not line.endswith(b"\n"):
            raise MalformedBody("chunk size line too long or truncated")
        size = _chunk_size(line)
        if size == 0:
            # Trailers end with an empty line.
            while True:
                trailer = rfile.readline(_MAX_LINE + 1)
                if trailer in (b"\r\n", b"\n", b""):
                    return b"".join(parts)
                if len(trailer) > _MAX_LINE:
                    raise MalformedBody("trailer line too long")
        total += size
        if total > limit:
            raise BodyTooLarge
        chunk = rfile.read(size)
        if len(chunk) != size:
            raise MalformedBody("chunked body ended early")
        parts.append(chunk)
        if rfile.readline(3) not in (b"\r\n", b"\n"):
            raise MalformedBody("chunk not followed by CRLF")


def read_body(
    rfile: BinaryIO, content_length: str | None, transfer_encoding: str | None, limit: int
) -> bytes:
    """The request body, at most ``limit`` bytes; :class:`BodyTooLarge` / :class:`MalformedBody`."""
    if transfer_encoding and "chunked" in transfer_encoding.lower():
        return _read_chunked(rfile, limit)
    if not content_length:
        return b""
    text = content_length.strip()
    if not (text.isascii() and text.isdigit()):
        raise MalformedBody(f"malformed Content-Length {content_length[:40]!r}")
    size = int(text)
    if size > limit:
        raise BodyTooLarge
    body = rfile.read(size)
    if len(body) != size:
        raise MalformedBody("body shorter than its Content-Length")
    return body
