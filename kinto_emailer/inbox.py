"""Web notifications: what the hooks of the ``web`` channel leave for people to read in
an app, kept in Kinto's storage backend.

One parent per inbox (``/emailer/inbox/<hash of its key>``), the key being an address or
a principal (see :func:`kinto_emailer.recipients.inbox_key`). They are written by
whatever works out a change, in the transaction that queues its mail, and read through
the ``/v1/emailer/notifications`` resource and the ``/v1/emailer/inbox`` page.

Every write goes through :class:`InboxStore`, which keeps each inbox's counts
(:class:`Counts`) with its notifications, in their transaction: a reader's unread count
is one lookup, and a write knows, without counting, whether the inbox went past the
operator's bounds. Only then does it prune: the notifications older than
``web_max_age`` and, past ``web_max_per_recipient``, the oldest. On PostgreSQL the
counts are rows of ``kinto_emailer_inboxes``, and the notifications of many inboxes are
written in one statement; elsewhere (Kinto's memory backend) they are objects beside
the notifications, written through Kinto's storage API.

A notification's id is a UUIDv7 of its creation time (:func:`notification_id`): ids
sort as notifications were created, so that one index serves the newest first, the
oldest and the too old, and marking one read moves nothing.
"""

import contextlib
import hashlib
import json
import secrets
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from kinto.core.storage import Filter, Sort
from kinto.core.storage.exceptions import ObjectNotFoundError
from kinto.core.utils import COMPARISON

from kinto_emailer import epoch, storagesql
from kinto_emailer.preferences import PreferenceStore
from kinto_emailer.settings import EmailerSettings


RESOURCE = "emailer-notification"
COUNTS = "emailer-inbox"
"""On the memory backend, the resource of each inbox's counts: one object,
:data:`COUNTS_ID`, under the inbox's parent."""
COUNTS_ID = "counts"
PARENT = "/emailer/inbox"
READ = "read"
NEWEST_FIRST = [Sort("id", -1)]
"""By creation (see :func:`notification_id`), not by ``last_modified``, which marking one
read bumps: none moves, those of one change (one time) included."""

Scopes = tuple[str, ...] | None
"""The scopes whose notifications a reader sees; None: every scope."""
Cursor = tuple[int, str]
"""Where a page of an inbox ends: the ``created`` and ``id`` of its last notification."""


def parent_id(key: str) -> str:
    """The parent of an inbox's notifications: keys may hold ``*`` or ``/``, that storage
    reads as wildcards or levels. Principals are case-sensitive: never lowercased here."""
    return f"{PARENT}/{hashlib.sha256(key.encode()).hexdigest()[:32]}"


_MS_BITS = 48


def _time_bits(created: int) -> int:
    """``created`` (epoch milliseconds) as the 48 bits of a UUIDv7: from 1970 to 10889."""
    return min(max(created, 0), 2**_MS_BITS - 1)


def notification_id(created: int, index: int) -> str:
    """The id of the ``index``-th notification of one write, created at ``created``
    (epoch milliseconds): a UUIDv7 (RFC 9562) whose counter is ``index``, so that ids
    sort as the notifications were created and written, then 42 random bits."""
    counter = index & 0xFFFF_FFFF
    value = (
        _time_bits(created) << 80
        | 0x7 << 76  # Version 7.
        | (counter >> 20) << 64
        | 0b10 << 62  # Variant.
        | (counter & 0xF_FFFF) << 42
        | secrets.randbits(42)
    )
    return str(uuid.UUID(int=value))


def first_id(created: int) -> str:
    """The lowest id of a notification created at ``created``: those of lower ids are
    older."""
    return str(uuid.UUID(int=_time_bits(created) << 80 | 0x7 << 76 | 0b10 << 62))


@dataclass(frozen=True)
class Notification:
    """One notification for one inbox."""

    key: str
    subject: str
    body: str
    uri: str
    """Of the object (or, for a grouped burst, of its collection or bucket)."""
    link: str
    """The object's web address; empty when the server has no public URL."""
    scope: str
    """The bucket or collection whose hooks left it."""
    created: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "body": self.body,
            "uri": self.uri,
            "link": self.link,
            "scope": self.scope,
            "created": epoch.ms(self.created),
            READ: False,
        }


def _of(scopes: Scopes) -> list[Filter]:
    return [] if scopes is None else [Filter("scope", list(scopes), COMPARISON.IN)]


@dataclass(frozen=True)
class Counts:
    """What an inbox holds."""

    held: int = 0
    unread: int = 0
    oldest: str | None = None
    """No higher than the id of its oldest notification: deleting one may leave it lower,
    until a prune finds nothing that old and sets it again."""

    def to_json(self) -> dict[str, Any]:
        return {"held": self.held, "unread": self.unread, "oldest": self.oldest}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Counts":
        return cls(int(data["held"]), int(data["unread"]), data.get("oldest"))

    def selected(self, filters: Sequence[Filter]) -> int | None:
        """How many notifications ``filters`` select, if these counts tell (all of them,
        the unread ones, the read ones); else None."""
        if not filters:
            return self.held
        [selected, *others] = filters
        if (
            not others
            and selected.field == READ
            and selected.operator == COMPARISON.EQ
            and isinstance(selected.value, bool)
        ):
            return self.held - self.unread if selected.value else self.unread
        return None


def unread(notification: Mapping[str, Any] | None) -> int:
    """1 for an unread notification, 0 for a read one or none."""
    return int(notification is not None and notification.get(READ) is False)


Deltas = dict[str, tuple[int, int]]
"""Notifications held and unread that inboxes gained (or lost), by parent."""
Doomed = dict[str, int]
"""The inboxes to prune, by parent, with how many of their oldest go, at least."""

# Kinto's memory backend lives in one process: a process lock is enough there.
_MEMORY_LOCK = threading.RLock()


class InboxStore:
    """Writes, reads, counts and deletes inboxes through Kinto's storage backend (its
    transaction)."""

    def __init__(self, storage: Any, settings: EmailerSettings) -> None:
        self.storage = storage
        self.settings = settings
        on_postgresql = storagesql.on_postgresql(storage)
        self._backend: _MemoryBackend = (
            _PostgreSQLBackend(storage) if on_postgresql else _MemoryBackend(storage)
        )

    def locked(self, keys: Iterable[str]) -> contextlib.AbstractContextManager[None]:
        """Hold the locks of inboxes for the block, on PostgreSQL until the transaction
        ends: for writes that depend on what a notification was."""
        return self._backend.locked(keys)

    def add(self, notifications: Sequence[Notification], now: datetime) -> None:
        """Store ``notifications``, in order, then prune the inboxes they took past a
        bound: their notifications created before ``now`` minus ``web_max_age``, and,
        past ``web_max_per_recipient``, the oldest."""
        if not notifications:
            return
        rows = [
            (parent_id(n.key), {**n.to_json(), "id": notification_id(epoch.ms(n.created), i)})
            for i, n in enumerate(notifications)
        ]
        oldest = first_id(epoch.ms(now) - int(self.settings.web_max_age * 1000))
        bound = self.settings.web_max_per_recipient
        with self._backend.adding():
            counts = self._backend.insert(rows)
            doomed = {
                parent: inbox.held - bound
                for parent, inbox in counts.items()
                if inbox.held > bound or (inbox.oldest is not None and inbox.oldest < oldest)
            }
            if doomed:
                self._backend.prune(doomed, oldest)

    def counts(self, key: str) -> Counts:
        return self._backend.counts(parent_id(key))

    def changed(
        self, key: str, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None
    ) -> None:
        """Count the change of one notification from ``before`` to ``after`` (None: not
        there), written under the inbox's lock (:meth:`locked`)."""
        held = (after is not None) - (before is not None)
        unread_change = unread(after) - unread(before)
        if held or unread_change:
            self._backend.adjust({parent_id(key): (held, unread_change)})

    def count(self, key: str, scopes: Scopes = None, unread: bool = False) -> int:
        """How many notifications of ``scopes`` an inbox holds (``unread`` ones only):
        of every scope, its counts tell."""
        if scopes is None:
            counts = self.counts(key)
            return counts.unread if unread else counts.held
        filters = _of(scopes) + ([Filter(READ, False, COMPARISON.EQ)] if unread else [])
        count = self.storage.count_all(
            resource_name=RESOURCE, parent_id=parent_id(key), filters=filters
        )
        return int(count)

    def newest(
        self, key: str, scopes: Scopes, before: Cursor | None, limit: int
    ) -> list[dict[str, Any]]:
        """A page of an inbox: its newest ``limit`` notifications of ``scopes`` that come
        after ``before`` (see :data:`NEWEST_FIRST`)."""
        # Ids sort as (created, id) do: the id alone tells where a page ends.
        rules = None if before is None else [[Filter("id", before[1], COMPARISON.LT)]]
        return list(
            self.storage.list_all(
                resource_name=RESOURCE,
                parent_id=parent_id(key),
                filters=_of(scopes),
                sorting=NEWEST_FIRST,
                pagination_rules=rules,
                limit=limit,
            )
        )

    def mark_read(self, key: str, object_id: str, scopes: Scopes = None) -> bool:
        """Mark one notification read; whether the inbox holds it (of ``scopes``)."""
        found = [Filter("id", object_id, COMPARISON.EQ), *_of(scopes)]
        if not self.storage.count_all(
            resource_name=RESOURCE, parent_id=parent_id(key), filters=found
        ):
            return False
        self._mark_read(key, found)
        return True

    def mark_all_read(self, key: str, scopes: Scopes = None) -> int:
        """Mark every unread notification of an inbox read (of ``scopes``); how many
        there were."""
        return self._mark_read(key, _of(scopes))

    def _mark_read(self, key: str, filters: list[Filter]) -> int:
        parent = parent_id(key)
        with self.locked([key]):
            unread_ones = self.storage.list_all(
                resource_name=RESOURCE,
                parent_id=parent,
                filters=[*filters, Filter(READ, False, COMPARISON.EQ)],
            )
            for notification in unread_ones:
                self.storage.update(
                    resource_name=RESOURCE,
                    parent_id=parent,
                    object_id=notification["id"],
                    obj={**notification, READ: True},
                )
            if unread_ones:
                self._backend.adjust({parent: (0, -len(unread_ones))})
        return len(unread_ones)

    def delete(self, key: str) -> None:
        """Every notification of an inbox, tombstones included, and its counts."""
        parent = parent_id(key)
        with self.locked([key]):
            self.storage.delete_all(resource_name=RESOURCE, parent_id=parent, with_deleted=False)
            self.storage.purge_deleted(resource_name=RESOURCE, parent_id=parent)
            self._backend.forget(parent)

    def flush(self) -> None:
        """Forget every inbox's counts, as Kinto's flush forgets the notifications."""
        self._backend.flush()


class _MemoryBackend:
    """The writes of :class:`InboxStore` through Kinto's storage API, one call per
    notification and inbox, under a lock of the process that its callers hold; counts
    are objects beside the notifications (resource :data:`COUNTS`), flushed with them."""

    def __init__(self, storage: Any) -> None:
        self.storage = storage

    @contextlib.contextmanager
    def locked(self, keys: Iterable[str]) -> Iterator[None]:
        with _MEMORY_LOCK:
            yield

    def adding(self) -> contextlib.AbstractContextManager[Any]:
        """What adding notifications holds, their inboxes' counts read and written."""
        return _MEMORY_LOCK

    def counts(self, parent: str) -> Counts:
        try:
            stored = self.storage.get(resource_name=COUNTS, parent_id=parent, object_id=COUNTS_ID)
        except ObjectNotFoundError:
            return Counts()
        return Counts.from_json(stored)

    def _store(self, parent: str, counts: Counts) -> None:
        self.storage.update(
            resource_name=COUNTS, parent_id=parent, object_id=COUNTS_ID, obj=counts.to_json()
        )

    def insert(self, rows: list[tuple[str, dict[str, Any]]]) -> dict[str, Counts]:
        """Store each ``(parent, notification)``; the counts of the inboxes written."""
        added: dict[str, list[str]] = {}
        counts = {}
        for parent, notification in rows:
            self.storage.create(resource_name=RESOURCE, parent_id=parent, obj=notification)
            added.setdefault(parent, []).append(notification["id"])
        for parent, ids in added.items():
            before = self.counts(parent)
            oldest = min(ids if before.oldest is None else [before.oldest, *ids])
            counts[parent] = Counts(before.held + len(ids), before.unread + len(ids), oldest)
            self._store(parent, counts[parent])
        return counts

    def adjust(self, deltas: Deltas) -> None:
        for parent, (held, unread_change) in deltas.items():
            before = self.counts(parent)
            self._store(
                parent,
                replace(before, held=before.held + held, unread=before.unread + unread_change),
            )

    def _oldest(self, parent: str, **listing: Any) -> list[dict[str, Any]]:
        return list(
            self.storage.list_all(
                resource_name=RESOURCE, parent_id=parent, sorting=[Sort("id", 1)], **listing
            )
        )

    def prune(self, doomed: Doomed, oldest: str) -> None:
        """Delete the notifications of ids below ``oldest``, and the oldest ones of each
        inbox of ``doomed``, as many as it says; no tombstones."""
        for parent, extra in doomed.items():
            gone = {
                n["id"]: n
                for n in self._oldest(parent, filters=[Filter("id", oldest, COMPARISON.LT)])
                + (self._oldest(parent, limit=extra) if extra > 0 else [])
            }
            if gone:
                self.storage.delete_all(
                    resource_name=RESOURCE,
                    parent_id=parent,
                    filters=[Filter("id", list(gone), COMPARISON.IN)],
                    with_deleted=False,
                )
            before = self.counts(parent)
            first = self._oldest(parent, limit=1)
            after = Counts(
                before.held - len(gone),
                before.unread - sum(map(unread, gone.values())),
                first[0]["id"] if first else None,
            )
            self._store(parent, after)

    def forget(self, parent: str) -> None:
        self.storage.delete_all(resource_name=COUNTS, parent_id=parent, with_deleted=False)

    def flush(self) -> None:
        """Nothing: the counts went with Kinto's data."""


# One statement for the notifications of every inbox, and their counts. Kinto's trigger
# gives each notification its last_modified, as to one created through its API.
INSERT = """
WITH added AS (
    INSERT INTO objects (id, parent_id, resource_name, data, last_modified, deleted)
    SELECT n.id, n.parent_id, %(resource)s, n.data, NULL, FALSE
      FROM jsonb_to_recordset(%(rows)s::jsonb) AS n(id text, parent_id text, data jsonb)
    RETURNING objects.parent_id, objects.id
)
INSERT INTO kinto_emailer_inboxes AS inboxes (parent_id, held, unread, oldest)
SELECT parent_id, count(*), count(*), min(id) FROM added GROUP BY parent_id
    ON CONFLICT (parent_id) DO UPDATE
   SET held = inboxes.held + EXCLUDED.held,
       unread = inboxes.unread + EXCLUDED.unread,
       oldest = LEAST(inboxes.oldest, EXCLUDED.oldest)
RETURNING parent_id, held, unread, oldest
"""
ADJUST = """
UPDATE kinto_emailer_inboxes AS inboxes
   SET held = inboxes.held + d.held, unread = inboxes.unread + d.unread
  FROM jsonb_to_recordset(%(deltas)s::jsonb) AS d(parent_id text, held bigint, unread bigint)
 WHERE inboxes.parent_id = d.parent_id
"""
# The doomed notifications of an inbox are the first of its ids, whichever bound took
# them: the oldest past the count, and those of ids below the oldest kept. Each inbox's
# new oldest is its first id past them (the statement still sees the rows it deletes).
PRUNE = """
WITH pruned AS (
    SELECT * FROM jsonb_to_recordset(%(doomed)s::jsonb) AS p(parent_id text, extra bigint)
), doomed AS (
    SELECT p.parent_id, x.id
      FROM pruned AS p
     CROSS JOIN LATERAL (
         (SELECT id FROM objects
           WHERE parent_id = p.parent_id AND resource_name = %(resource)s AND NOT deleted
           ORDER BY id LIMIT greatest(p.extra, 0))
         UNION
         (SELECT id FROM objects
           WHERE parent_id = p.parent_id AND resource_name = %(resource)s AND NOT deleted
             AND id < %(oldest)s)
     ) AS x
), gone AS (
    DELETE FROM objects USING doomed
     WHERE objects.id = doomed.id AND objects.parent_id = doomed.parent_id
       AND objects.resource_name = %(resource)s
    RETURNING objects.parent_id, objects.id, objects.data->'read' = 'false' AS unread
), tally AS (
    SELECT parent_id, count(*) AS held, count(*) FILTER (WHERE unread) AS unread,
           max(id) AS last
      FROM gone GROUP BY parent_id
)
UPDATE kinto_emailer_inboxes AS inboxes
   SET held = inboxes.held - coalesce(t.held, 0),
       unread = inboxes.unread - coalesce(t.unread, 0),
       oldest = (SELECT id FROM objects AS o
                  WHERE o.parent_id = p.parent_id AND o.resource_name = %(resource)s
                    AND NOT o.deleted AND o.id > coalesce(t.last, '')
                  ORDER BY o.id LIMIT 1)
  FROM pruned AS p LEFT JOIN tally AS t USING (parent_id)
 WHERE inboxes.parent_id = p.parent_id
"""


class _PostgreSQLBackend(_MemoryBackend):
    """The writes of many inboxes in one statement, on the connection of Kinto's
    storage (its transaction); counts in the table ``kinto_emailer_inboxes``."""

    @contextlib.contextmanager
    def locked(self, keys: Iterable[str]) -> Iterator[None]:
        # An inbox shares its recipient's lock, which workers take before they write.
        PreferenceStore(self.storage).lock(keys)
        yield

    def adding(self) -> contextlib.AbstractContextManager[Any]:
        # Each statement counts what it changes, whoever writes meanwhile.
        return contextlib.nullcontext()

    def _execute(
        self, query: str, parameters: dict[str, Any], force_commit: bool = False
    ) -> list[tuple]:
        parameters = {"resource": RESOURCE, **parameters}
        return storagesql.execute(self.storage, query, parameters, force_commit)

    def counts(self, parent: str) -> Counts:
        found = self._execute(
            "SELECT held, unread, oldest FROM kinto_emailer_inboxes WHERE parent_id = %(parent)s",
            {"parent": parent},
        )
        return Counts(*found[0]) if found else Counts()

    def insert(self, rows: list[tuple[str, dict[str, Any]]]) -> dict[str, Counts]:
        stored = [
            {"id": n["id"], "parent_id": parent, "data": {k: v for k, v in n.items() if k != "id"}}
            for parent, n in rows
        ]
        found = self._execute(INSERT, {"rows": json.dumps(stored)})
        return {parent: Counts(held, unread, oldest) for parent, held, unread, oldest in found}

    def adjust(self, deltas: Deltas) -> None:
        changes = [
            {"parent_id": parent, "held": held, "unread": unread_change}
            for parent, (held, unread_change) in deltas.items()
        ]
        self._execute(ADJUST, {"deltas": json.dumps(changes)})

    def prune(self, doomed: Doomed, oldest: str) -> None:
        pruned = [{"parent_id": parent, "extra": extra} for parent, extra in doomed.items()]
        self._execute(PRUNE, {"doomed": json.dumps(pruned), "oldest": oldest})

    def forget(self, parent: str) -> None:
        self._execute(
            "DELETE FROM kinto_emailer_inboxes WHERE parent_id = %(parent)s", {"parent": parent}
        )

    def flush(self) -> None:
        self._execute("DELETE FROM kinto_emailer_inboxes", {}, force_commit=True)
