"""The Lambda-like context object (peewee_serverless.local.context)."""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

import pytest
from aws_lambda_powertools import Logger

from peewee_serverless.lifecycle import deadline_from_context
from peewee_serverless.local.context import LambdaContext


def test_context_has_lambda_runtime_attributes() -> None:
    ctx = LambdaContext(function_name="users", memory_limit_in_mb=256, region="eu-west-1")
    assert ctx.function_name == "users"
    assert ctx.function_version == "$LATEST"
    assert ctx.invoked_function_arn == "arn:aws:lambda:eu-west-1:123456789012:function:users"
    assert ctx.memory_limit_in_mb == 256
    assert ctx.log_group_name == "/aws/lambda/users"
    assert "[$LATEST]" in ctx.log_stream_name
    assert uuid.UUID(ctx.aws_request_id)
    assert ctx.identity is None and ctx.client_context is None


def test_each_context_gets_its_own_request_id() -> None:
    ids = {LambdaContext().aws_request_id for _ in range(5)}
    assert len(ids) == 5


def test_remaining_time_counts_down_from_timeout() -> None:
    ctx = LambdaContext(timeout=2.5)
    first = ctx.get_remaining_time_in_millis()
    second = ctx.get_remaining_time_in_millis()
    assert 0 < first <= 2500
    assert second <= first
    assert 0 < LambdaContext().get_remaining_time_in_millis() <= 30_000


def test_non_positive_timeout_is_refused() -> None:
    with pytest.raises(ValueError, match="timeout"):
        LambdaContext(timeout=0)


def test_lifecycle_reads_a_deadline_from_it() -> None:
    assert deadline_from_context(LambdaContext(timeout=5)) is not None


def test_powertools_inject_lambda_context_accepts_it() -> None:
    stream = io.StringIO()
    logger = Logger(service="ctx-test", stream=stream)

    @logger.inject_lambda_context
    def handler(event: Any, context: Any) -> str:
        logger.info("inside")
        return "ok"

    ctx = LambdaContext(function_name="users")
    assert handler({}, ctx) == "ok"
    record = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert record["function_request_id"] == ctx.aws_request_id
    assert record["function_name"] == "users"
    assert record["function_arn"] == ctx.invoked_function_arn
    assert record["function_memory_size"] == 128
