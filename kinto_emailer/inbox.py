"""Web notifications: what the hooks of the ``web`` channel leave for people to read in
an app, kept in Kinto's storage backend.

One parent per inbox (``/emailer/inbox/<hash of its key>``), the key being an address or
a principal (see :func:`kinto_emailer.recipients.inbox_key`). They are written by
whatever works out a change, in the transaction that queues its mail, and read through
the ``/v1/emailer/notifications`` resource. Each write prunes its inbox to the
operator's bounds: the notifications older than ``web_max_age`` and, past
``web_max_per_recipient``, the oldest.
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


class InboxStore:
    """Writes and deletes inboxes through Kinto's storage backend (its transaction)."""

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

    def mark_all_read(self, key: str) -> int:
        """Mark every unread notification of an inbox read; how many there were."""
        parent = parent_id(key)
        unread = self.storage.list_all(
            resource_name=RESOURCE, parent_id=parent, filters=[Filter(READ, False, COMPARISON.EQ)]
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
