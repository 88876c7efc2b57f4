"""Runs Remote Settings' tests as they are upstream, with this plugin as ``kinto_emailer``.

- Its plugins (``src/``) import as ``kinto_remote_settings`` and ``kinto_slack``.
- Its tests run under pytest's default warning filters, as upstream: they call what Kinto
  deprecates, and a warning raised as an error inside a request answers 500.
- Its PostgreSQL tests name ``postgresql://postgres:postgres@localhost/testdb``; Kinto reads
  ``KINTO_STORAGE_URL`` and ``KINTO_PERMISSION_URL`` over the settings, so they use a
  database beside ours instead.
"""

import os
import sys
from collections.abc import Iterator

import pytest

from functional.remote_settings.servers import HERE, SRC
from tests.support import IN_CI, POSTGRESQL_URL, postgresql_available


sys.path.insert(0, SRC)

SIGNER = os.path.join(HERE, "signer", "")
UPSTREAM = (SIGNER, os.path.join(HERE, "browser_tests", ""))
SIGNER_DATABASE_URL = POSTGRESQL_URL + "_remote_settings"


def pytest_configure(config: pytest.Config) -> None:
    # Upstream runs its tests with pytest-xdist, which registers this marker.
    config.addinivalue_line("markers", "xdist_group(name): tests that share one xdist worker")


def _uses_postgresql(item: pytest.Item) -> bool:
    cls = getattr(item, "cls", None)
    return cls is not None and any(c.__name__ == "PostgresWebTest" for c in cls.__mro__)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    prefix = os.path.relpath(HERE, config.rootpath) + "/"
    postgresql: bool | None = None
    for item in items:
        if not item.nodeid.startswith(prefix):
            continue
        if str(item.path).startswith(UPSTREAM):
            item.add_marker(pytest.mark.filterwarnings("default"))
        if _uses_postgresql(item):
            if postgresql is None:
                # Called once in any case: it creates the database.
                postgresql = postgresql_available(SIGNER_DATABASE_URL) or IN_CI
            if not postgresql:
                item.add_marker(pytest.mark.skip(f"no PostgreSQL at {SIGNER_DATABASE_URL}"))


@pytest.fixture(autouse=True, scope="module")
def _signer_database(request: pytest.FixtureRequest) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        if str(request.path).startswith(SIGNER):
            for name in ("KINTO_STORAGE_URL", "KINTO_PERMISSION_URL"):
                patch.setenv(name, SIGNER_DATABASE_URL)
        yield
