"""Powertools idempotency stored in the application's own SQL database.

:class:`PeeweePersistenceLayer` plugs into Powertools' extension point
(``BasePersistenceLayer``) so ``@idempotent`` and ``@idempotent_function`` keep their records in
MySQL/MariaDB, PostgreSQL or SQLite instead of a second datastore::

    from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent
    from peewee_serverless.idempotency import PeeweePersistenceLayer

    persistence = PeeweePersistenceLayer(db)

    @idempotent(persistence_store=persistence, config=IdempotencyConfig("body"))
    def handler(event, context): ...

The table comes from :func:`~peewee_serverless.idempotency_table.create_table` (or the migration
``examples/users/migrations/0002_idempotency.py``); expired rows are removed by
:func:`~peewee_serverless.idempotency_table.delete_expired` or
``peewee-serverless idempotency-cleanup``.

Semantics are those of the DynamoDB layer's conditional ``PutItem``: a new record is written
when no record has the key, when the existing one has expired, or when it is ``INPROGRESS`` and
its in-progress expiry (the Lambda timeout of the invocation that wrote it) has passed. The
check is atomic on every backend: an ``INSERT`` guarded by the primary key, and, when the key
exists, one ``UPDATE ... WHERE id = ? AND (<expired>)`` whose row count says who won. Both
statements re-read the latest committed row under the row lock (InnoDB locking reads,
PostgreSQL's re-check of ``WHERE`` after a concurrent update, SQLite's single writer), so of N
concurrent callers exactly one gets the record. The ``INSERT`` runs in ``atomic()`` (a
savepoint inside a transaction) so its unique-key failure cannot abort a PostgreSQL transaction.

Importing this module imports Powertools' idempotency package and therefore boto3 (present in
every Lambda Python runtime; install the ``aws`` extra elsewhere). Call idempotent functions
outside a transaction of your own: the records must be committed to be seen by other callers.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyItemAlreadyExistsError,
    IdempotencyItemNotFoundError,
)
from aws_lambda_powertools.utilities.idempotency.persistence.base import BasePersistenceLayer
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import (
    STATUS_CONSTANTS,
    DataRecord,
)
from peewee import Database, IntegrityError

from .idempotency_table import (
    DEFAULT_TABLE,
    create_table,
    delete_expired,
    drop_table,
    idempotency_model,
    storage_key,
)

__all__ = [
    "PeeweePersistenceLayer",
    "create_table",
    "delete_expired",
    "drop_table",
]

logger = logging.getLogger("peewee_serverless.idempotency")

_INPROGRESS = STATUS_CONSTANTS["INPROGRESS"]

# A key can vanish between our failed INSERT and the UPDATE (its call raised and deleted it);
# then the INSERT is simply tried again, a bounded number of times.
_PUT_ATTEMPTS = 3


class PeeweePersistenceLayer(BasePersistenceLayer):
    """Powertools idempotency records in a table of any Peewee database.

    ``database`` is a Peewee database (serverless or plain, or a ``DatabaseProxy``);
    ``table_name`` names the table created by
    :func:`~peewee_serverless.idempotency_table.create_table`.
    """

    def __init__(self, database: Database, table_name: str = DEFAULT_TABLE) -> None:
        self.database = database
        self.table_name = table_name
        self.model: Any = idempotency_model(database, table_name)
        super().__init__()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(table_name={self.table_name!r})"

    # -- conversions ------------------------------------------------------------------------------
    def _to_data_record(self, idempotency_key: str, row: Any) -> DataRecord:
        return DataRecord(
            idempotency_key=idempotency_key,
            status=row.status,
            expiry_timestamp=row.expiration,
            in_progress_expiry_timestamp=row.in_progress_expiration,
            response_data=row.data or "",
            payload_hash=row.validation or "",
        )

    def _fetch(self, idempotency_key: str) -> DataRecord | None:
        row = self.model.get_or_none(self.model.id == storage_key(idempotency_key))
        return None if row is None else self._to_data_record(idempotency_key, row)

    def _new_row(self, data_record: DataRecord) -> dict[str, Any]:
        # The whole record, as DynamoDB's PutItem writes it: stale response data is cleared.
        validation = data_record.payload_hash if self.payload_validation_enabled else None
        return {
            "status": data_record.status,
            "expiration": data_record.expiry_timestamp,
            "in_progress_expiration": data_record.in_progress_expiry_timestamp,
            "data": None,
            "validation": validation or None,
        }

    # -- BasePersistenceLayer ---------------------------------------------------------------------
    def _get_record(self, idempotency_key: str) -> DataRecord:
        record = self._fetch(idempotency_key)
        if record is None:
            raise IdempotencyItemNotFoundError
        return record

    def _put_record(self, data_record: DataRecord) -> None:
        model = self.model
        key = storage_key(data_record.idempotency_key)
        values = self._new_row(data_record)
        for _ in range(_PUT_ATTEMPTS):
            try:
                with self.database.atomic():
                    model.insert(id=key, **values).execute()
                return
            except IntegrityError:
                pass
            # The key exists: take it over only if it no longer counts (same condition as the
            # DynamoDB layer, evaluated with this process's clock like DynamoDB's ``:now``).
            now = time.time()
            expired = model.expiration < int(now)
            abandoned = (
                (model.status == _INPROGRESS)
                & model.in_progress_expiration.is_null(False)
                & (model.in_progress_expiration < int(now * 1000))
            )
            updated = model.update(**values).where((model.id == key) & (expired | abandoned))
            if updated.execute() == 1:
                logger.debug("replaced expired idempotency record %s", data_record.idempotency_key)
                return
            old = self._fetch(data_record.idempotency_key)
            if old is None:
                continue
            logger.debug(
                "idempotency record %s already exists (status %s)",
                data_record.idempotency_key,
                old.status,
            )
            # Like the DynamoDB layer: a different payload fails now, a match is cached.
            self._validate_payload(data_payload=data_record, stored_data_record=old)
            self._save_to_cache(data_record=old)
            raise IdempotencyItemAlreadyExistsError(old_data_record=old)
        # Still racing with inserts and deletes: let Powertools fetch and decide (it retries).
        raise IdempotencyItemAlreadyExistsError

    def _update_record(self, data_record: DataRecord) -> None:
        model = self.model
        key = storage_key(data_record.idempotency_key)
        values: dict[str, Any] = {
            "data": data_record.response_data,
            "expiration": data_record.expiry_timestamp,
            "status": data_record.status,
        }
        if self.payload_validation_enabled:
            values["validation"] = data_record.payload_hash or None
        if model.update(**values).where(model.id == key).execute():
            return
        # DynamoDB's UpdateItem creates a missing item; so do we (the in-progress record was
        # deleted by cleanup or replaced meanwhile). MySQL also reports 0 for an unchanged row,
        # which the INSERT's key violation tells apart.
        try:
            with self.database.atomic():
                model.insert(id=key, **values).execute()
        except IntegrityError:
            model.update(**values).where(model.id == key).execute()

    def _delete_record(self, data_record: DataRecord) -> None:
        model = self.model
        model.delete().where(model.id == storage_key(data_record.idempotency_key)).execute()
