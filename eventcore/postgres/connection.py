"""The one place that opens PostgreSQL connections: URLs, database creation, error translation,
migrations and the check that a database is ours.

Every psycopg error that leaves this backend goes through `translated`, which turns it into the
core's own error with the password taken out of the message. Schemas are numbered SQL files
(`migrations/<schema>/NNNN_name.sql`) applied in order under an advisory lock, so two processes
starting at once do not both migrate, and tracked in the table `eventcore_migrations`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import errors, sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.string import TextLoader

from eventcore.errors import StorageRefused, Unavailable

log = logging.getLogger(__name__)

Connection = psycopg.Connection[tuple[Any, ...]]

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
URL_SCHEMES = ("postgresql://", "postgres://")
# pg_advisory_lock keys (bigint): migrations, projector leadership, and the event store's appends.
MIGRATION_LOCK = 0x6576_656E_7463_6F01
LEADER_LOCK = 0x6576_656E_7463_6F02
APPEND_LOCK = 0x6576_656E_7463_6F03
MAINTENANCE_LOCK = 0x6576_656E_7463_6F04  # one projector command (rebuild, retry, skip) at a time
# NOTIFY channel of every store's commits (payload: the store's new position), see changes.py.
CHANGES_CHANNEL = "eventcore_changes"
# The table each schema's migrations create first: if it exists untracked, the database is not ours.
OWN_TABLES = {"event_store": "events", "read_store": "projections"}


def is_url(location: object) -> bool:
    return isinstance(location, str) and location.startswith(URL_SCHEMES)


def redact(url: str) -> str:
    """The URL with its password replaced by ***, fit for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


class DatabaseNotReady(FileNotFoundError):
    """The database or its schema does not exist yet (its writer has not started): wait for it."""


def _password(url: str) -> str:
    try:
        return str(conninfo_to_dict(url).get("password") or "")
    except psycopg.Error:  # not a URL libpq understands: the error says so, redact() hides the password
        return ""


def describe(error: BaseException, url: str) -> str:
    """One line for a driver error, never containing the password."""
    text = " ".join(str(error).split()) or type(error).__name__
    password = _password(url)
    return text.replace(password, "***") if password else text


def unreachable(url: str, timeout: int = 3) -> str:
    """Empty when the server at `url` answers; else one line saying why not (password hidden)."""
    try:
        with psycopg.connect(url, connect_timeout=timeout, autocommit=True) as connection:
            connection.execute("SELECT 1")
    except psycopg.Error as error:
        return f"PostgreSQL not reachable at {redact(url)}: {describe(error, url)[:200]}"
    return ""


@contextmanager
def translated(url: str, what: str, kind: type[Exception] = Unavailable) -> Iterator[None]:
    """Turn a psycopg error raised inside the block into `kind` ("<what> unavailable: ...")."""
    try:
        yield
    except psycopg.Error as error:
        raise kind(f"{what} {redact(url)} unavailable: {describe(error, url)}") from None


def connect(url: str, *, read_only: bool = False, application_name: str = "eventcore") -> Connection:
    """An autocommit connection (transactions are explicit) that loads json/jsonb as text."""
    params = conninfo_to_dict(url)
    params.setdefault("application_name", application_name)
    params.setdefault("connect_timeout", 5)
    if read_only:
        params["options"] = (str(params.get("options", "")) + " -c default_transaction_read_only=on").strip()
    connection = psycopg.connect(make_conninfo("", **params), autocommit=True)
    for type_name in ("json", "jsonb"):
        connection.adapters.register_loader(type_name, TextLoader)
    return connection


def create_database(admin: Connection, name: str) -> None:
    """CREATE DATABASE `name` as the services expect it: UTF-8, C collation (byte order, like SQLite)."""
    admin.execute(
        sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'").format(
            sql.Identifier(name)
        )
    )


def drop_database(admin: Connection, name: str) -> None:
    """DROP DATABASE `name` if it exists, ending whatever sessions still use it."""
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def with_database(url: str, name: str) -> str:
    """`url` naming database `name` instead."""
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


def create_database_if_missing(url: str) -> None:
    """CREATE DATABASE for the URL's database unless it exists (C collation: byte order, like SQLite)."""
    params = conninfo_to_dict(url)
    name = str(params.get("dbname") or params.get("user") or "postgres")
    params["dbname"] = "postgres"
    with psycopg.connect(make_conninfo("", **params), autocommit=True, connect_timeout=5) as admin:
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return
        try:
            create_database(admin, name)
            log.info("created database %s", name)
        except (errors.DuplicateDatabase, errors.UniqueViolation):  # another process created it meanwhile
            pass


def migration_files(schema: str) -> list[Path]:
    files = sorted((MIGRATIONS_DIR / schema).glob("[0-9][0-9][0-9][0-9]_*.sql"))
    for expected, path in enumerate(files, start=1):
        if int(path.name[:4]) != expected:
            raise RuntimeError(f"migration numbers of {schema} must run 0001, 0002, ...: {path.name}")
    return files


def schema_version(connection: Connection, schema: str) -> int | None:
    """The applied version of `schema`; None when this database holds no tracked schema at all."""
    if not _table_exists(connection, "eventcore_migrations"):
        return None
    row = connection.execute(
        "SELECT coalesce(max(version), 0) FROM eventcore_migrations WHERE schema = %s", (schema,)
    ).fetchone()
    return int(row[0]) if row else 0


def check_ours(connection: Connection, url: str, schema: str) -> int:
    """The schema version, after refusing a database whose tables belong to someone else."""
    files = migration_files(schema)
    version = schema_version(connection, schema) or 0
    if version == 0 and _table_exists(connection, OWN_TABLES[schema]):
        raise StorageRefused(
            f"{redact(url)}: table {OWN_TABLES[schema]!r} exists but was not created by this program;"
            " refusing to use the database"
        )
    if version > len(files):
        raise StorageRefused(
            f"{redact(url)}: {schema} schema version {version} is newer than this code ({len(files)})"
        )
    return version


def migrate(connection: Connection, url: str, schema: str) -> None:
    """Apply the pending migrations of `schema`, each in its own transaction, under an advisory lock."""
    connection.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
    try:
        connection.execute(
            "CREATE TABLE IF NOT EXISTS eventcore_migrations (schema text NOT NULL,"
            " version integer NOT NULL, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (schema, version))"
        )
        current = check_ours(connection, url, schema)
        files = migration_files(schema)
        for version, path in enumerate(files[current:], start=current + 1):
            with connection.transaction():
                connection.execute(path.read_text().encode())
                connection.execute(
                    "INSERT INTO eventcore_migrations (schema, version, name) VALUES (%s, %s, %s)",
                    (schema, version, path.name),
                )
            log.info("applied %s migration %s", schema, path.name)
    finally:
        connection.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))


def open_writer(url: str, schema: str, what: str) -> Connection:
    """Create the database if missing (where allowed), connect, migrate (StorageRefused, Unavailable)."""
    with translated(url, what):
        try:
            create_database_if_missing(url)
        except psycopg.Error as error:  # e.g. no access to the server's `postgres` database
            log.debug(
                "cannot check for database %s, assuming it exists: %s", redact(url), describe(error, url)
            )
        connection = connect(url)
        try:
            migrate(connection, url, schema)
        except BaseException:
            connection.close()
            raise
    return connection


def open_reader(url: str, schema: str, what: str) -> Connection:
    """A read-only connection to a database its writer has fully migrated.

    Raises DatabaseNotReady until the database exists with that schema (or while the server cannot
    be reached), so a process started before the writer can wait for it.
    """
    try:
        connection = connect(url, read_only=True)
    except psycopg.Error as error:
        raise DatabaseNotReady(f"{what} {redact(url)}: {describe(error, url)}") from None
    try:
        with translated(url, what):
            version = check_ours(connection, url, schema)
        if version < len(migration_files(schema)):
            raise DatabaseNotReady(f"{what} {redact(url)} is not initialised yet")
    except BaseException:
        connection.close()
        raise
    return connection


class Session:
    """A connection that is opened again after the server dropped it (each call may fail once)."""

    def __init__(self, url: str, what: str, opener: Callable[[], Connection]) -> None:
        self.url = url
        self.what = what
        self._opener = opener
        self._connection: Connection | None = opener()
        self.lock = threading.RLock()

    @property
    def connection(self) -> Connection:
        """The live connection, reopened if the previous one broke."""
        if self._connection is None or self._connection.closed:
            with translated(self.url, self.what):
                self._connection = self._opener()
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _table_exists(connection: Connection, table: str) -> bool:
    row = connection.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    return bool(row and row[0])
