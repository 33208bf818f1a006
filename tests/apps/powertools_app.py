"""A Powertools resolver app (REST v1 and HTTP v2) with Logger context injection."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, APIGatewayRestResolver
from aws_lambda_powertools.event_handler.exceptions import NotFoundError

logger = Logger(service="local-test-app")
ITEMS: dict[str, dict[str, Any]] = {"1": {"id": "1", "name": "first"}}


def _routes(app: Any) -> None:
    @app.get("/items/<item_id>")
    def get_item(item_id: str) -> dict[str, Any]:
        item = ITEMS.get(item_id)
        if item is None:
            raise NotFoundError(f"item {item_id} not found")
        return item

    @app.post("/items")
    def create_item() -> tuple[dict[str, Any], int]:
        body = app.current_event.json_body
        return {"received": body, "query": app.current_event.query_string_parameters}, 201


rest_app = APIGatewayRestResolver()
http_app = APIGatewayHttpResolver()
_routes(rest_app)
_routes(http_app)


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """REST API (v1 events) entry point."""
    return rest_app.resolve(event, context)


@logger.inject_lambda_context
def http_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """HTTP API (v2 events) entry point."""
    return http_app.resolve(event, context)
