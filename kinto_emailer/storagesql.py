"""Statements of the plugin's own on Kinto's PostgreSQL storage, in its current
transaction: what Kinto's storage API has no call for (locks, counts, batches)."""

import contextlib
from collections.abc import Iterator
from typing import Any


def on_postgresql(storage: Any) -> bool:
    """Whether ``storage`` is Kinto's PostgreSQL backend."""
    return type(storage).__module__ == "kinto.core.storage.postgresql"


@contextlib.contextmanager
def connection_of(storage: Any, force_commit: bool = False) -> Iterator[Any]:
    """The DB-API connection of ``storage``, in its current transaction (or, with
    ``force_commit``, one of its own, committed on exit)."""
    with storage.client.connect(force_commit=force_commit) as session:
        yield session.connection().connection.driver_connection


def execute(
    storage: Any, query: str, parameters: dict[str, Any], force_commit: bool = False
) -> list[tuple]:
    """Run ``query`` on ``storage``'s connection; its rows, if it returns any."""
    with connection_of(storage, force_commit) as connection, connection.cursor() as cursor:
        cursor.execute(query, parameters)
        return cursor.fetchall() if cursor.description else []
