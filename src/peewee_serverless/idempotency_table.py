"""The SQL table behind :class:`~peewee_serverless.idempotency.PeeweePersistenceLayer`.

Kept apart from the persistence layer because Powertools' idempotency package imports boto3:
migrations and the ``idempotency-cleanup`` command need only this module, which imports nothing
beyond Peewee.

Columns mirror the attribute names of Powertools' DynamoDB layer:

==========================  ============================================================
``id``                      the idempotency key (``<function>#<hash>``), primary key
``status``                  ``INPROGRESS`` or ``COMPLETED``
``expiration``              unix seconds after which the record no longer counts
``in_progress_expiration``  unix **milliseconds** after which an ``INPROGRESS`` record is
                            abandoned (the invocation timed out); ``NULL`` when unknown
``data``                    the JSON-serialised response of a completed call
``validation``              hash of the payload part checked by ``payload_validation_jmespath``
==========================  ============================================================
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from typing import Any

from peewee import BigIntegerField, CharField, Database, Model, TextField

__all__ = [
    "DEFAULT_TABLE",
    "IdempotencyRecord",
    "add_arguments",
    "create_table",
    "delete_expired",
    "drop_table",
    "idempotency_model",
    "storage_key",
]

#: Default table name.
DEFAULT_TABLE = "idempotency_record"

#: Longest key stored verbatim; longer (or non-ASCII) keys are stored in a hashed form.
MAX_KEY_LENGTH = 255
_KEEP = MAX_KEY_LENGTH - 65  # room for "~" + 64 hex digits of SHA-256


def _is_mysql(ctx: Any) -> bool:
    # The schema context carries no database object; MySQL is the only dialect quoting with `.
    return bool(ctx and str(ctx.state.quote or "").startswith("`"))


class IdempotencyKeyField(CharField):
    """``VARCHAR(255)``, compared byte for byte on MySQL.

    MySQL's default collations ignore case and trailing spaces, which would make two distinct
    keys collide; stored keys are always ASCII (see :func:`storage_key`), so ``ascii_bin`` fits.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", MAX_KEY_LENGTH)
        super().__init__(*args, **kwargs)

    def ddl_datatype(self, ctx: Any) -> Any:
        """The column type; MySQL gets a binary ASCII collation."""
        sql = super().ddl_datatype(ctx)
        if _is_mysql(ctx):
            from peewee import SQL

            return SQL(f"VARCHAR({self.max_length}) CHARACTER SET ascii COLLATE ascii_bin")
        return sql


class ResponseDataField(TextField):
    """Unbounded text; ``MEDIUMTEXT`` on MySQL, whose ``TEXT`` stops at 64 KiB."""

    def ddl_datatype(self, ctx: Any) -> Any:
        """The column type; MySQL gets ``MEDIUMTEXT`` (16 MiB)."""
        if _is_mysql(ctx):
            from peewee import SQL

            return SQL("MEDIUMTEXT")
        return super().ddl_datatype(ctx)


class IdempotencyRecord(Model):
    """One idempotency record (unbound; :func:`idempotency_model` binds it to a database)."""

    id = IdempotencyKeyField(primary_key=True)
    status = CharField(max_length=16)
    expiration = BigIntegerField(index=True)
    in_progress_expiration = BigIntegerField(null=True)
    data = ResponseDataField(null=True)
    validation = CharField(max_length=128, null=True)

    class Meta:
        table_name = DEFAULT_TABLE
        legacy_table_names = False


def idempotency_model(database: Database, table_name: str = DEFAULT_TABLE) -> type[Model]:
    """A copy of :class:`IdempotencyRecord` bound to ``database`` and named ``table_name``."""
    meta = type("Meta", (), {"database": database, "table_name": table_name})
    return type("IdempotencyRecord", (IdempotencyRecord,), {"Meta": meta, "__module__": __name__})


def storage_key(idempotency_key: str) -> str:
    """The primary-key value for ``idempotency_key``.

    Keys are ``<function name>#<hex digest>`` and normally stored as they are. A key longer than
    the column or containing non-ASCII characters (possible with a custom ``key_prefix``) keeps a
    readable ASCII prefix and ends in its SHA-256, so it still maps to exactly one row.
    """
    if len(idempotency_key) <= MAX_KEY_LENGTH and idempotency_key.isascii():
        return idempotency_key
    digest = hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()
    prefix = idempotency_key.encode("ascii", "replace").decode("ascii")[:_KEEP]
    return f"{prefix}~{digest}"


def create_table(database: Database, table_name: str = DEFAULT_TABLE, safe: bool = True) -> None:
    """Create the idempotency table and its expiration index (``safe``: if missing)."""
    idempotency_model(database, table_name).create_table(safe=safe)


def drop_table(database: Database, table_name: str = DEFAULT_TABLE, safe: bool = True) -> None:
    """Drop the idempotency table."""
    idempotency_model(database, table_name).drop_table(safe=safe)


def delete_expired(
    database: Database,
    *,
    table_name: str = DEFAULT_TABLE,
    batch_size: int = 500,
    max_batches: int | None = 100,
    now: int | None = None,
) -> int:
    """Delete records whose ``expiration`` has passed, ``batch_size`` rows per statement.

    The work DynamoDB's TTL does for the DynamoDB layer. Each batch is its own short statement
    (no long lock, no huge undo log); at most ``max_batches`` batches run (``None``: until done),
    so a scheduled call has a bounded cost. Only ``expiration`` counts: an abandoned
    ``INPROGRESS`` record is left for the next call with its key to take over, exactly as the
    persistence layer does. Returns the number of rows deleted.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if max_batches is not None and max_batches < 1:
        raise ValueError("max_batches must be >= 1 or None")
    model: Any = idempotency_model(database, table_name)
    cutoff = int(time.time()) if now is None else now
    deleted = 0
    batches = 0
    while max_batches is None or batches < max_batches:
        # Select then delete: MySQL cannot DELETE ... WHERE id IN (SELECT ... LIMIT n).
        ids = [
            row.id
            for row in model.select(model.id)
            .where(model.expiration < cutoff)
            .order_by(model.expiration)
            .limit(batch_size)
        ]
        if not ids:
            break
        # Re-check the expiration: a row replaced since the SELECT is live again.
        deleted += model.delete().where(model.id.in_(ids), model.expiration < cutoff).execute()
        batches += 1
        if len(ids) < batch_size:
            break
    return deleted


def _cleanup(args: argparse.Namespace) -> int:
    from .config import database_from_env

    database: Any = database_from_env(os.environ)
    try:
        deleted = delete_expired(
            database,
            table_name=args.table,
            batch_size=args.batch_size,
            max_batches=args.max_batches or None,
        )
    finally:
        if not database.is_closed():
            database.close()
    print(json.dumps({"table": args.table, "deleted": deleted}))
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Delete expired idempotency records in bounded batches.

    Delete expired idempotency records (database from DATABASE_URL / DB_*).
    """
    parser.add_argument("--table", default=DEFAULT_TABLE, help="table name (default: %(default)s)")
    parser.add_argument(
        "--batch-size", type=int, default=500, help="rows per DELETE (default: %(default)s)"
    )
    parser.add_argument(
        "--max-batches",
        type=int,
        default=100,
        help="stop after this many batches; 0 = until done (default: %(default)s)",
    )
    parser.set_defaults(func=_cleanup)
