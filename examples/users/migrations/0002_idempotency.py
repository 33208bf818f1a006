"""Create the idempotency table used by POST /users (peewee_serverless.idempotency).

Copy this file into any playhouse.migrations directory to add the table to another service.
It imports only peewee_serverless.idempotency_table (Peewee, no Powertools or boto3).
"""

from peewee import Database
from playhouse.migrate import SchemaMigrator

from peewee_serverless.idempotency_table import create_table, drop_table


def up(migrator: SchemaMigrator, db: Database) -> None:
    create_table(db, safe=False)


def down(migrator: SchemaMigrator, db: Database) -> None:
    drop_table(db)
