"""Web notifications: what the hooks of the ``web`` channel leave for people to read in
an app, kept in Kinto's storage backend.

One parent per inbox (``/emailer/inbox/<hash of its key>``), the key being an address or
a principal (see :func:`kinto_emailer.recipients.inbox_key`). They are written by
whatever works out a change, in the transaction that queues its mail, and read through
the ``/v1/emailer/notifications`` resource and the ``/v1/emailer/inbox`` page. Each
write prunes its inbox to the operator's bounds: the notifications older than
``web_max_age`` and, past ``web_max_per_recipient``, the oldest.
"""

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kinto.core.storage import Filter, Sort
from kinto.core.utils import COMPARISON

from kinto_emailer.settings import EmailerSettings


RESOURCE = "emailer-notification"
PARENT = "/emailer/inbox"
READ = "read"
NEWEST_FIRST = [Sort("created", -1), Sort("id", -1)]
"""Not by ``last_modified``, which marking one read bumps: none moves, those of one
change (one time) included."""

Scopes = tuple[str, ...] | None
"""The scopes whose notifications a reader sees; None: every scope."""
Cursor = tuple[int, str]
"""Where a page of an inbox ends: the ``created`` and ``id`` of its last notification."""


def parent_id(key: str) -> str:
    """The parent of an inbox's notifications: keys may hold ``*`` or ``/``, that storage
    reads as wildcards or levels. Principals are case-sensitive: never lowercased here."""
    return f"{PARENT}/{hashlib.sha256(key.encode()).hexdigest()[:32]}"


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


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
            "created": _ms(self.created),
            READ: False,
        }


def _of(scopes: Scopes) -> list[Filter]:
    return [] if scopes is None else [Filter("scope", list(scopes), COMPARISON.IN)]


class InboxStore:
    """Writes, reads and deletes inboxes through Kinto's storage backend (its transaction)."""

    def __init__(self, storage: Any, settings: EmailerSettings) -> None:
        self.storage = storage
        self.settings = settings

    def add(self, notifications: Iterable[Notification], now: datetime) -> None:
        """Store ``notifications``, then prune each inbox they went to, once."""
        keys: dict[str, None] = {}
        for notification in notifications:
            self.storage.create(
                resource_name=RESOURCE,
                parent_id=parent_id(notification.key),
                obj=notification.to_json(),
            )
            keys.setdefault(notification.key)
        for key in keys:
            self.prune(key, now)

    def prune(self, key: str, now: datetime) -> None:
        """Delete what the bounds no longer keep: too old, then the oldest past the count.

        No tombstones: a pruned notification is gone, as if never there, for pollers too.
        """
        parent = parent_id(key)
        oldest = _ms(now) - int(self.settings.web_max_age * 1000)
        self.storage.delete_all(
            resource_name=RESOURCE,
            parent_id=parent,
            filters=[Filter("created", oldest, COMPARISON.LT)],
            with_deleted=False,
        )
        extra = (
            self.storage.count_all(resource_name=RESOURCE, parent_id=parent)
            - self.settings.web_max_per_recipient
        )
        if extra > 0:
            self.storage.delete_all(
                resource_name=RESOURCE,
                parent_id=parent,
                sorting=[Sort("created", 1), Sort("last_modified", 1)],
                limit=extra,
                with_deleted=False,
            )

    def count(self, key: str, scopes: Scopes = None, unread: bool = False) -> int:
        """How many notifications of ``scopes`` an inbox holds (``unread`` ones only)."""
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
        rules = None
        if before is not None:
            created, last = before
            rules = [
                [Filter("created", created, COMPARISON.LT)],
                [Filter("created", created, COMPARISON.EQ), Filter("id", last, COMPARISON.LT)],
            ]
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
        unread = self.storage.list_all(
            resource_name=RESOURCE,
            parent_id=parent,
            filters=[*filters, Filter(READ, False, COMPARISON.EQ)],
        )
        for notification in unread:
            self.storage.update(
                resource_name=RESOURCE,
                parent_id=parent,
                object_id=notification["id"],
                obj={**notification, READ: True},
            )
        return len(unread)

    def delete(self, key: str) -> None:
        """Every notification of an inbox, tombstones included."""
        self.storage.delete_all(
            resource_name=RESOURCE, parent_id=parent_id(key), with_deleted=False
        )
        self.storage.purge_deleted(resource_name=RESOURCE, parent_id=parent_id(key))
