"""Create the users table (a frozen copy of the model, independent of models.py)."""

from peewee import CharField, Database, DateTimeField, Model
from playhouse.migrate import SchemaMigrator


def _user(db: Database) -> type[Model]:
    class User(Model):
        name = CharField(max_length=100)
        email = CharField(max_length=254, unique=True)
        created_at = DateTimeField()

        class Meta:
            database = db
            table_name = "users"

    return User


def up(migrator: SchemaMigrator, db: Database) -> None:
    db.create_tables([_user(db)])


def down(migrator: SchemaMigrator, db: Database) -> None:
    db.drop_tables([_user(db)])
