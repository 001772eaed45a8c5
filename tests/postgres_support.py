"""A fresh PostgreSQL database per test, and what happens when there is no server.

The server is found at $ORDERS_TEST_POSTGRES (default postgresql://postgres@127.0.0.1:5432/postgres).
Each test gets `CREATE DATABASE` under a unique name, dropped after the test. Tests that need the
server carry the `postgres` mark; where no server is reachable they are not run (deselected, and the
run says so in one line: tests/conftest.py), except when $CI is set: then they run and fail, so a CI
machine without its server cannot pass by leaving them out.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

from eventcore.postgres import connection
from eventcore.postgres.connection import unreachable, with_database

SERVER_URL = os.environ.get("ORDERS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


@functools.cache
def unreachable_reason() -> str:
    """Empty when the server answers; else one line saying why not."""
    return unreachable(SERVER_URL)


def leaves_out_postgres_tests() -> bool:
    """Whether tests marked `postgres` are left out of this run: no server, and CI not set."""
    return bool(unreachable_reason()) and not os.environ.get("CI")


def require_server() -> None:
    """Fail the calling test when no PostgreSQL server is reachable: under CI, or when the test
    lacks the `postgres` mark that would have left it out of the run."""
    reason = unreachable_reason()
    if reason:
        why = (
            "CI is set: PostgreSQL tests must run"
            if os.environ.get("CI")
            else "the test lacks the postgres mark"
        )
        pytest.fail(f"{reason} ({why})", pytrace=False)


def database_url(name: str) -> str:
    return with_database(SERVER_URL, name)


def drop_database(name: str) -> None:
    with psycopg.connect(SERVER_URL, autocommit=True) as admin:
        connection.drop_database(admin, name)


@contextmanager
def fresh_database_name() -> Iterator[str]:
    """A database name nobody uses, dropped (with whatever created it) at the end."""
    require_server()
    name = f"orders_test_{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        drop_database(name)


@contextmanager
def fresh_database() -> Iterator[str]:
    """The URL of a new, empty database, dropped at the end."""
    with fresh_database_name() as name:
        with psycopg.connect(SERVER_URL, autocommit=True) as admin:
            connection.create_database(admin, name)
        yield database_url(name)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test."""
    with fresh_database() as url:
        yield url
