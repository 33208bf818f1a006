"""The users store in DynamoDB (``USERS_STORE=dynamodb``): same routes, same answers as SQL.

One table (``USERS_TABLE``, default ``users``; ``template.yaml`` declares it), string partition
key ``pk`` and string sort key ``sk``, holding four kinds of item::

    pk = "USERS"                   sk = "0000000042"   a user: id, name, email, created_at
    pk = "EMAIL#<email>"           sk = "EMAIL"        the email's owner: id, request
    pk = "COUNTER"                 sk = "USERS"        the last id handed out (ADD 1)
    pk = "idempotency#<function>"  sk = <key hash>     Powertools' idempotency records

* **Ids** stay the API's integers: an atomic ``UpdateItem ... ADD`` on the counter (a number
  lost to a refused create is a gap, as a SQL sequence leaves one).
* **A duplicate email is refused atomically**: one ``TransactWriteItems`` puts the user item and
  the email item, each with ``attribute_not_exists(pk)``; when the email item exists, the whole
  transaction is cancelled (nothing written) and the route answers 409 "Email already exists".
* **Cursor pagination is DynamoDB's own**: users share the partition ``USERS`` with
  zero-padded ids as sort keys, so a ``Query`` returns them in id order; the API's cursor (the
  last id of a page) is the page's ``LastEvaluatedKey`` and goes back as ``ExclusiveStartKey``.
  (One partition keeps the example simple; a very large user base would shard the listing.)
* **Idempotency** is Powertools' own ``DynamoDBPersistenceLayer`` on the same table (composite
  key: ``static_pk_value`` + ``sk``): a retry gets the first answer, a reused key with another
  body is 422, a duplicate in flight is 409. Exactly-once across a crash between the user's
  write and the record's completion: the email item remembers a hash of the request that
  created it, so the retry that meets "email taken" by *its own* earlier write answers that
  user (201) instead of 409.

Reads are strongly consistent (``ConsistentRead``), so a user is listed and found right after
its 201, as in SQL. DynamoDB being unreachable or throttling (after botocore's standard retries)
raises :class:`~peewee_serverless.DatabaseUnavailable`: 503 with ``Retry-After``, as an
unreachable SQL server does.

**The deadline is the law here too**: the client is a
:class:`~peewee_serverless.aws_deadline.DeadlineBoundClient` reading the invocation's time left
from the function's database (``db.time_left()``, set by ``database_lifecycle`` from the Lambda
context), and Powertools' idempotency layer uses the same client. Every call, its retries
included, ends by the deadline (1 s connect / 5 s read timeouts and four attempts when there is
time for them, shorter timeouts and fewer attempts when not); with too little time left the call
is not sent and the answer is 503 with ``Retry-After``
(:class:`~peewee_serverless.DeadlineExceeded`), as on the SQL path.

boto3, not PynamoDB: Powertools' idempotency layer is built on a boto3 client already (and boto3
is in every Lambda Python runtime), the store needs exactly five calls on two item shapes
(``UpdateItem``, ``TransactWriteItems``, ``GetItem``, ``Query`` and Powertools' calls), and
the transaction's cancellation reasons are read straight from the client's error. An ORM would
add a dependency and a model layer for that. The endpoint comes from boto3's own configuration
(``AWS_ENDPOINT_URL_DYNAMODB`` points it at a local endpoint; the tests use moto's server).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from typing import Any

from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyPersistenceLayerError,
)
from botocore.exceptions import BotoCoreError, ClientError

from peewee_serverless import DatabaseUnavailable, DeadlineBoundClient
from peewee_serverless.aws_deadline import TimeLeft
from peewee_serverless.config import int_setting

from .store import EmailTaken

__all__ = ["DynamoDBUsersStore", "create_table"]

USERS_PK = "USERS"
COUNTER_KEY = {"pk": {"S": "COUNTER"}, "sk": {"S": "USERS"}}
ID_DIGITS = 10  # ids up to 2**31 - 1, zero-padded so that string order is id order

#: Errors that mean "DynamoDB cannot take this now" (after botocore's retries): 503.
UNAVAILABLE_CODES = frozenset(
    (
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "TransactionInProgressException",
        # Cancelled for a reason other than the email condition (handled before): a conflict
        # with a concurrent transaction or throttling, both worth a retry.
        "TransactionCanceledException",
    )
)

# Each attempt's timeouts when there is time for them, and the attempts (the first included;
# botocore's standard mode default for DynamoDB). Near the deadline, less: see the module.
CONNECT_TIMEOUT = 1.0
READ_TIMEOUT = 5.0
MAX_ATTEMPTS = 4


def _sort_key(user_id: int) -> str:
    return str(user_id).zfill(ID_DIGITS)


def _user(item: dict[str, Any]) -> dict[str, Any]:
    # Sorted keys, as the SQL model answers: a replay is byte-for-byte the first answer.
    return {
        "created_at": item["created_at"]["S"],
        "email": item["email"]["S"],
        "id": int(item["id"]["N"]),
        "name": item["name"]["S"],
    }


def _request_hash(request: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()


def _unavailable(exc: Exception) -> Exception:
    """The typed error for a DynamoDB failure (``exc`` itself when it is not an outage)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):  # a ClientError: DynamoDB answered, with an error code
        code = str(response.get("Error", {}).get("Code", ""))
        if code not in UNAVAILABLE_CODES:
            return exc
        return DatabaseUnavailable(f"DynamoDB refused the request ({code})", retry_after=1)
    return DatabaseUnavailable(f"DynamoDB is not reachable ({type(exc).__name__})", retry_after=2)


def create_table(client: Any, table_name: str) -> None:
    """Create the table (on-demand capacity) and wait until it is active; TTL on ``expiration``.

    For tests and local endpoints; in AWS, ``template.yaml`` declares the same table.
    """
    client.create_table(
        TableName=table_name,
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    client.get_waiter("table_exists").wait(
        TableName=table_name, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )
    client.update_time_to_live(
        TableName=table_name,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": "expiration"},
    )


class DynamoDBUsersStore:
    """:class:`~examples.users.store.UsersStore` on one DynamoDB table (see the module)."""

    def __init__(
        self, table_name: str | None = None, client: Any = None, time_left: TimeLeft | None = None
    ) -> None:
        """``client``: a boto3 DynamoDB client used as given (its own timeouts); by default, one
        bounded by ``time_left`` (default: the function database's ``time_left``)."""
        self.table_name = table_name or os.environ.get("USERS_TABLE", "").strip() or "users"
        if client is None:
            if time_left is None:
                from .models import db  # the database whose lifecycle carries the deadline

                time_left = db.time_left
            client = DeadlineBoundClient(
                "dynamodb",
                time_left,
                connect_timeout=CONNECT_TIMEOUT,
                read_timeout=READ_TIMEOUT,
                max_attempts=MAX_ATTEMPTS,
            )
        self.client = client
        self.idempotency_store = DynamoDBPersistenceLayer(
            table_name=self.table_name,
            key_attr="pk",
            sort_key_attr="sk",
            boto3_client=client,
        )
        self.idempotency_config = IdempotencyConfig(
            event_key_jmespath="key || body",
            payload_validation_jmespath="body",
            expires_after_seconds=int_setting("IDEMPOTENCY_EXPIRES_SECONDS", 3600),
        )
        self._create_once = idempotent_function(
            data_keyword_argument="request",
            persistence_store=self.idempotency_store,
            config=self.idempotency_config,
        )(self._create)

    # -- the store's functions ---------------------------------------------------------------
    def start_invocation(self, context: Any) -> None:
        """The in-progress claim of this invocation lapses with its timeout."""
        self.idempotency_config.register_lambda_context(context)

    def create_user(self, request: dict[str, Any]) -> dict[str, Any]:
        """Create the user exactly once per request (see the module)."""
        try:
            result: dict[str, Any] = self._create_once(request=request)
        except IdempotencyPersistenceLayerError as exc:
            # Powertools wraps its own DynamoDB calls' failures: an outage is still a 503.
            cause = exc.__cause__
            if isinstance(cause, (ClientError, BotoCoreError)):
                failure = _unavailable(cause)
                if failure is not cause:
                    raise failure from exc
            raise
        return result

    def get_user(self, user_id: int) -> dict[str, Any] | None:
        """The user with ``user_id`` or ``None``."""
        try:
            found = self.client.get_item(
                TableName=self.table_name,
                Key={"pk": {"S": USERS_PK}, "sk": {"S": _sort_key(user_id)}},
                ConsistentRead=True,
            )
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable(exc) from exc
        item = found.get("Item")
        return None if item is None else _user(item)

    def list_users(self, after: int, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` users with ids above ``after``, in id order (a ``Query`` page)."""
        params: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "pk = :users",
            "ExpressionAttributeValues": {":users": {"S": USERS_PK}},
            "ConsistentRead": True,
        }
        if after > 0:
            # The cursor is the last page's LastEvaluatedKey: {pk: USERS, sk: <its last id>}.
            params["ExclusiveStartKey"] = {"pk": {"S": USERS_PK}, "sk": {"S": _sort_key(after)}}
        users: list[dict[str, Any]] = []
        try:
            while len(users) < limit:
                page = self.client.query(Limit=limit - len(users), **params)
                users += [_user(item) for item in page.get("Items", [])]
                last = page.get("LastEvaluatedKey")
                if not last:
                    break  # a page can stop short of Limit (1 MB), so follow the key
                params["ExclusiveStartKey"] = last
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable(exc) from exc
        return users

    # -- creating ------------------------------------------------------------------------------
    def _create(self, request: dict[str, Any]) -> dict[str, Any]:
        body = request["body"]
        email = body["email"]
        fingerprint = _request_hash(request)
        try:
            user_id = self._next_id()
            created_at = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
            user = {
                "created_at": created_at.replace(tzinfo=None).isoformat() + "Z",
                "email": email,
                "id": user_id,
                "name": body["name"],
            }
            self._put_user_and_email(user, fingerprint)
        except EmailTaken:
            try:
                mine = self._user_created_by(email, fingerprint)
            except (ClientError, BotoCoreError) as exc:
                raise _unavailable(exc) from exc
            if mine is None:
                raise
            return mine  # this request's own earlier write (a retry after a crash)
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable(exc) from exc
        return user

    def _next_id(self) -> int:
        answer = self.client.update_item(
            TableName=self.table_name,
            Key=COUNTER_KEY,
            UpdateExpression="ADD last_id :one",
            ExpressionAttributeValues={":one": {"N": "1"}},
            ReturnValues="UPDATED_NEW",
        )
        return int(answer["Attributes"]["last_id"]["N"])

    def _put_user_and_email(self, user: dict[str, Any], fingerprint: str) -> None:
        email_item = {
            "pk": {"S": f"EMAIL#{user['email']}"},
            "sk": {"S": "EMAIL"},
            "id": {"N": str(user["id"])},
            "request": {"S": fingerprint},
        }
        user_item = {
            "pk": {"S": USERS_PK},
            "sk": {"S": _sort_key(user["id"])},
            "id": {"N": str(user["id"])},
            "name": {"S": user["name"]},
            "email": {"S": user["email"]},
            "created_at": {"S": user["created_at"]},
        }
        try:
            self.client.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self.table_name,
                            "Item": email_item,
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                    {
                        "Put": {
                            "TableName": self.table_name,
                            "Item": user_item,
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                ]
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "TransactionCanceledException":
                raise
            reasons = exc.response.get("CancellationReasons") or []
            codes = [r.get("Code") for r in reasons]
            if codes and codes[0] == "ConditionalCheckFailed":
                raise EmailTaken(user["email"]) from None
            raise

    def _user_created_by(self, email: str, fingerprint: str) -> dict[str, Any] | None:
        """The user that owns ``email`` if this same request created it, else ``None``."""
        owner = self.client.get_item(
            TableName=self.table_name,
            Key={"pk": {"S": f"EMAIL#{email}"}, "sk": {"S": "EMAIL"}},
            ConsistentRead=True,
        ).get("Item")
        if owner is None or owner.get("request", {}).get("S") != fingerprint:
            return None
        return self.get_user(int(owner["id"]["N"]))
