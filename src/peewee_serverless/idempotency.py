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

Exactly once, with the write: :func:`transactional_idempotent_function` is Powertools'
``idempotent_function`` with one change, made through Powertools' own extension points (this
persistence layer and a subclass of its ``IdempotencyHandler`` whose hooks it overrides): the
function's writes and the completion of its record commit in ONE transaction::

    claim      INSERT/UPDATE the record INPROGRESS (own short autocommit; others now see it)
    BEGIN
    re-check   UPDATE the record WHERE it is still OUR claim   -> row lock, 0 rows = claim lost
    work       the function's own queries
    complete   UPDATE the record: COMPLETED + the serialised response
    COMMIT     work and completed record become visible together (or neither does)

A crash (or a lost COMMIT answer) therefore leaves either the work AND the completed record, so
a retry gets the first answer, or neither, so a retry runs the work once the crashed attempt's
claim lapses (its in-progress expiry, from the Lambda context's remaining time). The claim is
committed on its own, so concurrent retries see it at once (409 ``request_in_progress``) instead
of queueing behind a transaction, and the transaction holding the record's row lock runs only
the work itself. Why our own handler subclass: Powertools calls the function and then
``save_success`` as two separate steps with no hook between them (``response_hook`` only runs on
replays), so nothing short of overriding ``_get_function_response`` can put them in one
transaction.

Importing this module imports Powertools' idempotency package and therefore boto3 (present in
every Lambda Python runtime; install the ``aws`` extra elsewhere). Call idempotent functions
outside a transaction of your own: the records must be committed to be seen by other callers.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from inspect import isclass
from typing import Any, NamedTuple, TypeAlias, TypeVar, cast, overload

from .extras import needs_extra

# Powertools' idempotency package imports boto3 (for its DynamoDB layer) whichever layer is
# used, so locally this module needs the `aws` extra beside `api` (Lambda provides boto3).
with needs_extra(
    "peewee_serverless.idempotency", "api,aws", "aws_lambda_powertools", "boto3", "botocore"
):
    from aws_lambda_powertools.shared import constants
    from aws_lambda_powertools.shared.functions import strtobool
    from aws_lambda_powertools.utilities.idempotency.base import IdempotencyHandler
    from aws_lambda_powertools.utilities.idempotency.config import IdempotencyConfig
    from aws_lambda_powertools.utilities.idempotency.exceptions import (
        IdempotencyAlreadyInProgressError,
        IdempotencyInconsistentStateError,
        IdempotencyItemAlreadyExistsError,
        IdempotencyItemNotFoundError,
        IdempotencyPersistenceLayerError,
    )
    from aws_lambda_powertools.utilities.idempotency.persistence.base import BasePersistenceLayer
    from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import (
        STATUS_CONSTANTS,
        DataRecord,
    )
    from aws_lambda_powertools.utilities.idempotency.serialization.base import (
        BaseIdempotencyModelSerializer,
        BaseIdempotencySerializer,
    )

from peewee import Database, IntegrityError

from .errors import RequestInProgress
from .idempotency_table import (
    DEFAULT_TABLE,
    create_table,
    delete_expired,
    drop_table,
    idempotency_model,
    storage_key,
)

__all__ = [
    "IdempotencyRequestInProgress",
    "PeeweePersistenceLayer",
    "TransactionalIdempotencyHandler",
    "create_table",
    "delete_expired",
    "drop_table",
    "transactional_idempotent_function",
]

logger = logging.getLogger("peewee_serverless.idempotency")

_INPROGRESS = STATUS_CONSTANTS["INPROGRESS"]
_COMPLETED = STATUS_CONSTANTS["COMPLETED"]

# A key can vanish between our failed INSERT and the UPDATE (its call raised and deleted it);
# then the INSERT is simply tried again, a bounded number of times.
_PUT_ATTEMPTS = 3

F = TypeVar("F", bound=Callable[..., Any])
#: What Powertools' ``idempotent_function`` takes as ``output_serializer``.
OutputSerializer: TypeAlias = (
    BaseIdempotencySerializer | type[BaseIdempotencyModelSerializer] | None
)


class _Claim(NamedTuple):
    """The values this process wrote when it claimed a key: how it recognises its own claim."""

    in_progress_expiration: int | None
    expiration: int


class IdempotencyRequestInProgress(RequestInProgress, IdempotencyAlreadyInProgressError):
    """Another invocation holds the key: Powertools' in-progress error, with ``expires_in``.

    Catch it as :class:`~peewee_serverless.errors.RequestInProgress` (our tree) or as Powertools'
    ``IdempotencyAlreadyInProgressError``: it is both.
    """


class _ClaimLost(Exception):
    """Our in-progress claim was taken over (it lapsed while we ran); never leaves this module."""


def _expires_in(record: DataRecord) -> int | None:
    """Whole seconds until the running invocation's claim lapses (None: no in-progress expiry)."""
    if record.in_progress_expiry_timestamp is None:
        return None
    remaining_ms = record.in_progress_expiry_timestamp - time.time() * 1000
    return max(0, math.ceil(remaining_ms / 1000))


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
        # Claims this thread holds (storage key -> the values it wrote); Lambda runs one
        # invocation per process, tests may run several threads.
        self._local = threading.local()
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

    def _claims(self) -> dict[str, _Claim]:
        claims: dict[str, _Claim] | None = getattr(self._local, "claims", None)
        if claims is None:
            claims = self._local.claims = {}
        return claims

    def _is_our_claim(self, key: str, claim: _Claim) -> Any:
        """The WHERE clause matching the record only while it is still this claim."""
        model = self.model
        ipe = model.in_progress_expiration
        same_ipe = (
            ipe.is_null()
            if claim.in_progress_expiration is None
            else (ipe == claim.in_progress_expiration)
        )
        return (
            (model.id == key)
            & (model.status == _INPROGRESS)
            & (model.expiration == claim.expiration)
            & same_ipe
        )

    def _claimed(self, data_record: DataRecord) -> None:
        self._claims()[storage_key(data_record.idempotency_key)] = _Claim(
            data_record.in_progress_expiry_timestamp, int(data_record.expiry_timestamp or 0)
        )

    # -- the transactional completion (TransactionalIdempotencyHandler) ---------------------------
    def lock_claim(self, data: dict[str, Any]) -> bool:
        """In the work's transaction: lock the record if it is still our claim (else ``False``).

        The record is set ``COMPLETED`` right away: nobody sees that before ``COMMIT`` (and
        after a rollback it is ``INPROGRESS`` again), and a real change is needed for MySQL,
        which counts an ``UPDATE`` that changes nothing as 0 rows. On SQLite the first statement
        being a write takes the write lock at once, so two such transactions never deadlock
        upgrading a read lock.
        """
        idempotency_key = self._get_hashed_idempotency_key(data=data)
        if idempotency_key is None:
            return True  # no key in the payload: Powertools runs the function unrecorded
        key = storage_key(idempotency_key)
        claim = self._claims().get(key)
        if claim is None:
            return False
        model = self.model
        locked = model.update(status=_COMPLETED).where(self._is_our_claim(key, claim)).execute()
        return bool(locked == 1)

    def release_claim(self, data: dict[str, Any]) -> None:
        """Forget our claim on ``data``'s key (its transaction committed)."""
        idempotency_key = self._get_hashed_idempotency_key(data=data)
        if idempotency_key is not None:
            self._claims().pop(storage_key(idempotency_key), None)

    def forget_cached(self, data: dict[str, Any]) -> None:
        """Drop ``data``'s record from the local cache (its transaction did not commit)."""
        idempotency_key = self._get_hashed_idempotency_key(data=data)
        if idempotency_key is not None:
            self._delete_from_cache(idempotency_key=idempotency_key)

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
                self._claimed(data_record)
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
                self._claimed(data_record)
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
        if not self.database.in_transaction():
            # Plain Powertools use: done with the claim. Inside the work's transaction the claim
            # is kept until the outcome is known: a failed COMMIT's clean-up still needs it.
            self._claims().pop(key, None)
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
        # Only our own claim: if it lapsed and another invocation took the key over (or, after a
        # lost COMMIT answer, our transaction did commit and the record is COMPLETED), the
        # record is not ours to remove. A concurrent COMMIT of our own transaction holds the row
        # lock, and the DELETE re-checks its WHERE on the committed row.
        model = self.model
        key = storage_key(data_record.idempotency_key)
        claim = self._claims().pop(key, None)
        where = model.id == key if claim is None else self._is_our_claim(key, claim)
        model.delete().where(where).execute()


class TransactionalIdempotencyHandler(IdempotencyHandler):
    """Powertools' ``IdempotencyHandler`` whose function and completed record commit together.

    Powertools claims the key (``save_inprogress``) exactly as before; this class overrides
    the two steps after it. ``_get_function_response`` runs, in one ``database.atomic()``:
    the re-check and lock of our claim (:meth:`PeeweePersistenceLayer.lock_claim`), the
    function, and ``save_success``. A lost claim (it lapsed while we ran and another invocation
    took the key over) rolls the work back and lets Powertools look again (it retries on
    ``IdempotencyInconsistentStateError``). An exception rolls the work back and removes our
    claim, as Powertools does, so a retry runs the function again. ``_handle_for_status``
    raises :class:`IdempotencyRequestInProgress`, which also says when the running claim lapses.
    """

    persistence_store: PeeweePersistenceLayer

    def _get_function_response(self) -> Any:
        store = self.persistence_store
        try:
            with store.database.atomic():
                if not store.lock_claim(self.data):
                    raise _ClaimLost
                response = self.function(*(self.fn_args or ()), **(self.fn_kwargs or {}))
                serialized = (
                    self.output_serializer.to_dict(response) if response is not None else None
                )
                store.save_success(data=self.data, result=serialized)  # type: ignore[arg-type]  # None is JSON null, as in Powertools
        except _ClaimLost:
            raise IdempotencyInconsistentStateError(
                "the in-progress claim lapsed and was taken over"
            ) from None
        except Exception as exc:
            # Rolled back, or (COMMIT's answer lost) committed: the cache must not answer from a
            # record that may not exist, and the conditional delete tells the two cases apart.
            store.forget_cached(self.data)
            try:
                store.delete_record(data=self.data, exception=exc)
            except Exception as delete_exc:
                raise IdempotencyPersistenceLayerError(
                    "Failed to delete record from idempotency store", delete_exc
                ) from delete_exc
            raise
        store.release_claim(self.data)
        return response

    def _handle_for_status(self, data_record: DataRecord) -> Any | None:
        try:
            return super()._handle_for_status(data_record)
        except IdempotencyAlreadyInProgressError as exc:
            raise IdempotencyRequestInProgress(
                str(exc), expires_in=_expires_in(data_record)
            ) from None


@overload
def transactional_idempotent_function(
    function: F,
    *,
    data_keyword_argument: str,
    persistence_store: PeeweePersistenceLayer,
    config: IdempotencyConfig | None = None,
    output_serializer: OutputSerializer = None,
    key_prefix: str | None = None,
) -> F: ...


@overload
def transactional_idempotent_function(
    function: None = None,
    *,
    data_keyword_argument: str,
    persistence_store: PeeweePersistenceLayer,
    config: IdempotencyConfig | None = None,
    output_serializer: OutputSerializer = None,
    key_prefix: str | None = None,
) -> Callable[[F], F]: ...


def transactional_idempotent_function(
    function: F | None = None,
    *,
    data_keyword_argument: str,
    persistence_store: PeeweePersistenceLayer,
    config: IdempotencyConfig | None = None,
    output_serializer: OutputSerializer = None,
    key_prefix: str | None = None,
) -> Any:
    """Powertools' ``idempotent_function``, with the function's writes and its completed
    record committed in one transaction (:class:`TransactionalIdempotencyHandler`).

    Same arguments and behaviour as ``aws_lambda_powertools.utilities.idempotency.
    idempotent_function`` (including ``POWERTOOLS_IDEMPOTENCY_DISABLED``), except that
    ``persistence_store`` must be a :class:`PeeweePersistenceLayer` on the database the function
    writes to, and that the function runs inside ``persistence_store.database.atomic()``. Call it
    outside any transaction of your own (the claim must commit before the work starts); the
    function should do only database work that may be rolled back: a side effect outside the
    database (an e-mail, an HTTP call) is not undone by the rollback.
    """
    if function is None:
        return functools.partial(
            transactional_idempotent_function,
            data_keyword_argument=data_keyword_argument,
            persistence_store=persistence_store,
            config=config,
            output_serializer=output_serializer,
            key_prefix=key_prefix,
        )
    serializer: BaseIdempotencySerializer | None
    if isclass(output_serializer) and issubclass(output_serializer, BaseIdempotencyModelSerializer):
        serializer = output_serializer.instantiate(function.__annotations__.get("return", None))
    else:
        serializer = cast("BaseIdempotencySerializer | None", output_serializer)
    the_config = config or IdempotencyConfig()

    @functools.wraps(function)
    def decorate(*args: Any, **kwargs: Any) -> Any:
        if strtobool(os.getenv(constants.IDEMPOTENCY_DISABLED_ENV, "false")):
            return function(*args, **kwargs)
        if data_keyword_argument not in kwargs:
            raise RuntimeError(
                f"Unable to extract {data_keyword_argument!r} from keyword arguments: call the "
                "function with it as a keyword argument"
            )
        handler = TransactionalIdempotencyHandler(
            function=function,
            function_payload=kwargs[data_keyword_argument],
            config=the_config,
            persistence_store=persistence_store,
            output_serializer=serializer,
            key_prefix=key_prefix,
            function_args=args,
            function_kwargs=kwargs,
        )
        return handler.handle()

    return cast(F, decorate)
