"""MySQL/MariaDB: store any Unicode in ``users`` and compare emails exactly (no-op elsewhere).

0001 created ``users`` in the database's default character set, which may be ``utf8mb3`` (a
4-byte character such as an emoji is then refused, or stored as ``?`` in non-strict mode) and
whose default collation (``utf8mb4_unicode_ci`` and friends) treats ``jose@`` and ``josé@`` as
the same email. This converts the table to ``utf8mb4`` and gives ``email`` the binary collation
``utf8mb4_bin``: emails are normalised by the application (``models.normalize_email``) and then
compared byte for byte, as PostgreSQL and SQLite compare them. A new file rather than a change
to 0001, so that existing deployments get it too; on an existing table the conversion rewrites
it (table lock for its duration) and can only remove duplicates, never create them (a binary
comparison distinguishes more strings than the old one).
"""

from peewee import Database, MySQLDatabase
from playhouse.migrate import SchemaMigrator


def _run(db: Database, sql: str) -> None:
    db.execute_sql(sql)  # type: ignore[no-untyped-call]  # Peewee is untyped


def up(migrator: SchemaMigrator, db: Database) -> None:
    if not isinstance(db, MySQLDatabase):
        return  # PostgreSQL (UTF8 database) and SQLite already store and compare this way
    _run(db, "ALTER TABLE users CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    _run(
        db,
        "ALTER TABLE users MODIFY email VARCHAR(254) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
        " NOT NULL",
    )


def down(migrator: SchemaMigrator, db: Database) -> None:
    # Fails (duplicate key) when emails now differing only by accent or case were stored.
    if isinstance(db, MySQLDatabase):
        _run(
            db,
            "ALTER TABLE users MODIFY email VARCHAR(254) CHARACTER SET utf8mb4"
            " COLLATE utf8mb4_unicode_ci NOT NULL",
        )
