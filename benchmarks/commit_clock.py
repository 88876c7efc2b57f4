"""A Kinto plugin that notes when each transaction with changes committed.

Kinto notifies ``AfterResourceChanged`` from its own after-commit hook, added when the
request starts: before any hook a plugin adds while the request runs, so before the
mail of the transaction is handed over.
"""

import time

from kinto.core.events import AfterResourceChanged
from pyramid.config import Configurator


COMMITTED: list[float] = []
"""``time.perf_counter()`` of each commit, in order."""


def note(event: AfterResourceChanged) -> None:
    COMMITTED.append(time.perf_counter())


def includeme(config: Configurator) -> None:
    config.add_subscriber(note, AfterResourceChanged)
