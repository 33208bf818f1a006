"""Handlers that reflect what they were called with, for testing the local runner."""

from __future__ import annotations

import base64
import json
import threading
from typing import Any


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Echo the event and some context fields; ``?status=N`` picks the status code."""
    params = event.get("queryStringParameters") or {}
    return {
        "statusCode": int(params.get("status", 200)),
        "headers": {"Content-Type": "application/json", "X-Echo": "yes"},
        "multiValueHeaders": {"X-Multi": ["one", "two"]},
        "body": json.dumps(
            {
                "event": event,
                "context": {
                    "function_name": context.function_name,
                    "aws_request_id": context.aws_request_id,
                    "remaining_ms": context.get_remaining_time_in_millis(),
                },
                "thread": threading.get_ident(),
            }
        ),
    }


def binary(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Return bytes 0..255 base64-encoded, as a binary response."""
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/octet-stream"},
        "body": base64.b64encode(bytes(range(256))).decode(),
        "isBase64Encoded": True,
    }


def plain(event: dict[str, Any], context: Any) -> Any:
    """Return a bare object without statusCode (valid for HTTP API v2 only)."""
    return {"hello": "world", "path": event.get("rawPath")}


def raising(event: dict[str, Any], context: Any) -> Any:
    """Crash, like a buggy function."""
    raise RuntimeError("boom from handler")
