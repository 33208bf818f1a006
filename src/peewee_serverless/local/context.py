"""A Lambda-like context object for running handlers outside AWS.

It carries the attributes the Python Lambda runtime provides and that handlers and Powertools
read (``Logger.inject_lambda_context`` takes ``function_name``, ``memory_limit_in_mb``,
``invoked_function_arn`` and ``aws_request_id``); ``get_remaining_time_in_millis()`` counts down
from the configured timeout starting when the context is created, as Lambda's does from the
start of the invocation.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

__all__ = ["DEFAULT_FUNCTION_NAME", "DEFAULT_TIMEOUT_SECONDS", "LambdaContext", "log_stream_name"]

DEFAULT_FUNCTION_NAME = "peewee-serverless-local"
#: Lambda's own default function timeout is 3 s; local runs are more forgiving.
DEFAULT_TIMEOUT_SECONDS = 30.0


def log_stream_name(version: str = "$LATEST") -> str:
    """A log stream name shaped like Lambda's: one per execution environment."""
    return f"{time.strftime('%Y/%m/%d', time.gmtime())}/[{version}]{uuid.uuid4().hex}"


class LambdaContext:
    """The context object passed as a handler's second argument, one per invocation."""

    __slots__ = (
        "_deadline",
        "aws_request_id",
        "client_context",
        "function_name",
        "function_version",
        "identity",
        "invoked_function_arn",
        "log_group_name",
        "log_stream_name",
        "memory_limit_in_mb",
        "tenant_id",
    )

    def __init__(
        self,
        *,
        function_name: str = DEFAULT_FUNCTION_NAME,
        function_version: str = "$LATEST",
        memory_limit_in_mb: int = 128,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        region: str = "us-east-1",
        account_id: str = "123456789012",
        aws_request_id: str | None = None,
        log_stream: str | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        self._deadline = time.monotonic() + timeout
        self.function_name = function_name
        self.function_version = function_version
        self.memory_limit_in_mb = memory_limit_in_mb
        self.invoked_function_arn = f"arn:aws:lambda:{region}:{account_id}:function:{function_name}"
        self.aws_request_id = aws_request_id or str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = log_stream or log_stream_name(function_version)
        # Present on the real context; None outside mobile SDK / multi-tenant invocations.
        self.identity: Any = None
        self.client_context: Any = None
        self.tenant_id: str | None = None

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the (simulated) Lambda timeout; never negative."""
        return max(0, int((self._deadline - time.monotonic()) * 1000))

    def __repr__(self) -> str:
        return (
            f"LambdaContext(function_name={self.function_name!r}, "
            f"aws_request_id={self.aws_request_id!r}, "
            f"remaining_ms={self.get_remaining_time_in_millis()})"
        )
