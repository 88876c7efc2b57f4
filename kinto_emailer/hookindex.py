"""Which buckets and collections hold hooks, known to each Kinto process on PostgreSQL.

A write notes its change only when hooks apply to it (:func:`kinto_emailer.listener
.hooks_apply`): knowing that would cost a read of its bucket (and collection) at every
write, a sixth more queries for a record's creation. Each Kinto process keeps instead,
for each bucket and collection it read, whether its metadata holds hooks, and forgets
everything it kept:

* when any bucket or collection with hooks (before or after) is written, by any Kinto
  process: the write sends a NOTIFY on :data:`CHANNEL` in its transaction (delivered
  when it commits; such writes are rare), which a thread of each process LISTENs to;
  while that thread is not listening (starting, or its connection lost), nothing is
  kept, and what a request read is kept only if nothing was heard of since it started;
* when Kinto's data is flushed (``/__flush__``), hooks with it, no write telling: the
  flush sends the same NOTIFY;
* after :data:`HookIndex.max_age` seconds, for hooks written around Kinto (SQL by hand).

A request that writes a bucket or collection itself reads them in its transaction, never
from what is kept: hooks it saves apply to its own other writes.
"""

import collections
import logging
import os
import select
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import psycopg2
import transaction
from kinto.core.storage.exceptions import ObjectNotFoundError
from pyramid.events import ContextFound, NewRequest
from pyramid.request import Request

from kinto_emailer.hooks import METADATA_KEY, declared
from kinto_emailer.wakeups import connect


logger = logging.getLogger(__name__)

CHANNEL = "kinto_emailer_hooks"
MAX_ENTRIES = 10_000
_GENERATION = "kinto_emailer.hooks_generation"
_WRITES_HOOKS = "kinto_emailer.writes_hooks"
# The routes whose writes may save or remove hooks.
_HOOK_ROUTES = frozenset(
    f"{resource}-{kind}" for resource in ("bucket", "collection") for kind in ("object", "plural")
)
_READS = frozenset({"GET", "HEAD", "OPTIONS"})

Key = tuple[str, str, str]


def summary(metadata: Mapping[str, Any]) -> Mapping[str, Any]:
    """The part of ``metadata`` that tells whether hooks apply: whether it has the hooks'
    key, and whether it declares any."""
    if METADATA_KEY not in metadata:
        return {}
    return {METADATA_KEY: {"hooks": [True]} if declared(metadata) else {}}


class HookIndex:
    """What each bucket and collection read holds, kept for the writes that follow."""

    def __init__(
        self, storage: Any, dsn: str, execute: Callable[[str, dict[str, Any]], object]
    ) -> None:
        self.storage = storage
        self.dsn = dsn
        self._execute = execute
        self._lock = threading.Lock()
        self._entries: collections.OrderedDict[Key, tuple[float, Mapping[str, Any]]] = (
            collections.OrderedDict()
        )
        self._generation = 0
        self._listening = False
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0

    max_age = 60.0
    """Seconds a summary is kept, at most."""

    def generation(self) -> int | None:
        """What was heard so far, counted; None while not listening."""
        with self._lock:
            if self._pid != os.getpid():  # The first call, or a process forked since.
                self._pid = os.getpid()
                self._listening = False
                self._closed.clear()
                self._thread = threading.Thread(
                    target=self._listen, name="kinto-emailer-hooks", daemon=True
                )
                self._thread.start()
            return self._generation if self._listening else None

    def _forget(self, listening: bool | None = None) -> None:
        with self._lock:
            self._entries.clear()
            self._generation += 1
            if listening is not None:
                self._listening = listening

    def _listen(self) -> None:
        while not self._closed.is_set():
            connection = None
            try:
                connection = connect(self.dsn)
                with connection.cursor() as cursor:
                    cursor.execute(f"LISTEN {CHANNEL}")
                self._forget(listening=True)
                while not self._closed.is_set():
                    if select.select([connection], [], [], 0.25)[0]:
                        connection.poll()
                        if connection.notifies:
                            connection.notifies.clear()
                            self._forget(listening=True)
            except psycopg2.Error as e:
                logger.warning("Not listening to hook changes (%s): reading them at each write", e)
            finally:
                self._forget(listening=False)
                if connection is not None:
                    connection.close()
            self._closed.wait(5.0)

    def flushed(self) -> None:
        """Kinto's data was flushed: every process forgets what it kept, this one at once."""
        connection = connect(self.dsn)
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"NOTIFY {CHANNEL}")
        finally:
            connection.close()
        self._forget()

    def close(self) -> None:
        self._closed.set()
        if self._thread is not None and self._pid == os.getpid():
            self._thread.join()
        self._thread = None
        self._pid = 0

    def get(self, key: Key, generation: int | None) -> Mapping[str, Any]:
        """The summary of a bucket or collection ({} if there is none); ``generation`` is
        what was heard of when the request started, None to read it in the request."""
        if generation is not None:
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None and time.monotonic() - entry[0] < self.max_age:
                    self._entries.move_to_end(key)
                    return entry[1]
        resource_name, parent_id, object_id = key
        try:
            found = summary(
                self.storage.get(
                    resource_name=resource_name, parent_id=parent_id, object_id=object_id
                )
            )
        except ObjectNotFoundError:
            found = {}
        with self._lock:
            if generation is not None and generation == self._generation and self._listening:
                self._entries[key] = (time.monotonic(), found)
                self._entries.move_to_end(key)
                if len(self._entries) > MAX_ENTRIES:
                    self._entries.popitem(last=False)
        return found

    def reader(self, request: Request) -> "Reader":
        """What :class:`kinto_emailer.listener.EventStore` reads, for ``request``."""
        data = getattr(request, "bound_data", {})
        generation = None if data.get(_WRITES_HOOKS) else data.get(_GENERATION)
        return Reader(self, generation)

    def on_new_request(self, event: NewRequest) -> None:
        """Remember what was heard of when a request (and its transaction) starts."""
        if not hasattr(event.request, "parent"):  # A batch's requests share it.
            event.request.bound_data[_GENERATION] = self.generation()

    def on_context_found(self, event: ContextFound) -> None:
        """Mark a request (a batch with all its requests) that writes a bucket or collection."""
        request = event.request
        route = request.matched_route
        if request.method not in _READS and route is not None and route.name in _HOOK_ROUTES:
            request.bound_data[_WRITES_HOOKS] = True

    def on_metadata_changed(self, event: Any) -> None:
        """Tell every process, once committed, that hooks were saved or removed; this one
        at once, before its next request."""
        for impacted in event.impacted_objects:
            if any(METADATA_KEY in (impacted.get(state) or {}) for state in ("old", "new")):
                self._execute(f"NOTIFY {CHANNEL}", {})
                transaction.get().addAfterCommitHook(lambda committed: self._forget())
                return


class Reader:
    """Reads buckets and collections as Kinto's storage does (their summary only)."""

    def __init__(self, index: HookIndex, generation: int | None) -> None:
        self._index = index
        self._generation = generation

    def get(self, resource_name: str, parent_id: str, object_id: str) -> Mapping[str, Any]:
        return self._index.get((resource_name, parent_id, object_id), self._generation)
