"""The table and column names a collection gets in a SQL read store, one rule for every SQL backend.

Names are checked, not quoted: a collection or indexed field that is not lower_snake_case is a
programming error caught when the store is built, and the names can go into SQL text safely.
"""

from __future__ import annotations

import re

from eventcore.read_store import Collection

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def table_name(collection: Collection) -> str:
    if not _NAME.match(collection.name):
        raise ValueError(f"collection name {collection.name!r} must be lower_snake_case")
    return f"rm_{collection.name}"


def column_name(field: str) -> str:
    if not _NAME.match(field):
        raise ValueError(f"indexed field {field!r} must be lower_snake_case")
    return f"f_{field}"
