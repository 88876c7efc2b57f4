"""The queue's tables in PostgreSQL, created and upgraded by ``kinto migrate``.

Each step is a file of ``migrations/``, ``migration_NNN_MMM.sql`` (MMM = NNN + 1), that
ends by recording the version it leads to; Kinto runs those from the version recorded
(1 when there is none) to the newest. A new step is a new file.
"""

import os
import re

from kinto.core.storage.postgresql import PostgreSQLPluginMigration


NAME = "kinto_emailer"
DIRECTORY = os.path.join(os.path.dirname(__file__), "migrations")
_STEP = re.compile(r"migration_(\d{3})_(\d{3})\.sql")


def newest_version(directory: str = DIRECTORY) -> int:
    """The version the steps of ``directory`` lead to; ValueError if one is missing."""
    steps = sorted(
        (int(m[1]), int(m[2])) for name in os.listdir(directory) if (m := _STEP.fullmatch(name))
    )
    expected = [(version, version + 1) for version in range(1, len(steps) + 1)]
    if steps != expected:
        raise ValueError(f"The steps of {directory} do not go 1 -> 2 -> ...: {steps}")
    return len(steps) + 1


class EmailerMigration(PostgreSQLPluginMigration):
    """Registered with ``config.add_migration``: ``kinto migrate`` runs it on PostgreSQL."""

    name = NAME
    schema_version = newest_version()
    migrations_directory = DIRECTORY
