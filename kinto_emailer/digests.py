"""Daily and weekly digests: changes kept per recipient, then one email per window.

Entries live in Kinto's storage backend (written when the change that made them is
worked out), under ``/emailer/digests/<cadence>/<recipient>``, with one index object per
recipient so that sending goes through recipients page by page, never loading every
entry at once. A digest lists the entries made before the window's end; its key (the
recipient, the cadence and the window) lets the queue send it once, whoever runs it.
"""

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import transaction
from kinto.core.storage import Filter, Sort
from kinto.core.utils import COMPARISON

from kinto_emailer import listing, messages, preferences, recipients
from kinto_emailer.settings import EmailerSettings


logger = logging.getLogger(__name__)

ENTRY = "emailer-digest-entry"
INDEX = "emailer-digest-recipient"
DIGEST_CADENCES = ("daily", "weekly")
PAGE = 100


def window_end(at: datetime, cadence: str, settings: EmailerSettings) -> datetime:
    """The end of the last window of ``cadence`` that ended at or before ``at``."""
    at = at.astimezone(UTC)
    end = at.replace(hour=settings.digest_daily_hour, minute=0, second=0, microsecond=0)
    if end > at:
        end -= timedelta(days=1)
    if cadence == "weekly":
        end -= timedelta(days=(end.weekday() - settings.digest_weekly_day) % 7)
    return end


def next_window_end(at: datetime, settings: EmailerSettings) -> datetime:
    """When the next digest of any cadence is due after ``at``."""
    return window_end(at, "daily", settings) + timedelta(days=1)


@dataclass(frozen=True)
class Entry:
    """One change kept for a digest."""

    draft: messages.Draft
    scope: str
    collection: str
    locked: bool = False
    """Of a ``non_editable`` hook: its digest offers no unsubscribe link."""
    web: bool = False
    """Of a hook that leaves web notifications too: its digest links to the inbox page."""

    def to_json(self) -> dict[str, Any]:
        return {
            "draft": self.draft.to_json(),
            "scope": self.scope,
            "collection": self.collection,
            "locked": self.locked,
            "web": self.web,
            "created_at": self.draft.created.timestamp(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Entry":
        draft = messages.Draft.from_json(data["draft"])
        return cls(
            draft,
            data["scope"],
            data["collection"],
            data.get("locked", False),
            data.get("web", False),
        )


def index_parent(cadence: str) -> str:
    return f"/emailer/digests/{cadence}"


def entries_parent(cadence: str, address: str) -> str:
    return f"{index_parent(cadence)}/{preferences.object_id(address)}"


class DigestStore:
    def __init__(self, storage: Any) -> None:
        self.storage = storage

    def add(self, cadence: str, entry: Entry) -> None:
        """Keep ``entry`` for the next digest of its recipient (in the current transaction)."""
        address = entry.draft.recipient.lowercase_address
        self.storage.update(
            resource_name=INDEX,
            parent_id=index_parent(cadence),
            object_id=preferences.object_id(address),
            obj={"recipient": str(entry.draft.recipient)},
        )
        self.storage.update(
            resource_name=ENTRY,
            parent_id=entries_parent(cadence, address),
            object_id=entry.draft.key[:32],
            obj=entry.to_json(),
        )

    def recipients(self, cadence: str) -> Iterator[list[str]]:
        """Pages of recipients with entries, in a stable order, one query a page."""
        for page in listing.pages(self.storage, INDEX, index_parent(cadence), PAGE):
            yield [obj["recipient"] for obj in page]

    def take(
        self,
        cadence: str,
        recipient: str,
        before: datetime,
        limit: int,
        chosen: preferences.Preferences,
    ) -> tuple[list[Entry], int]:
        """The newest ``limit`` entries made before ``before``, and how many there were.

        All of them are deleted (with the current transaction); the recipient's index
        object too, when nothing newer is left. Entries of mail that the recipient
        turned off since they were kept (``chosen``: all mail stopped, or their scope
        off) are deleted first, unsent.
        """
        address = recipients.address_of(recipient)
        parent = entries_parent(cadence, address)
        self._forget_turned_off(parent, chosen)
        older = [Filter("created_at", before.timestamp(), COMPARISON.LT)]
        count = self.storage.count_all(resource_name=ENTRY, parent_id=parent, filters=older)
        newest = self.storage.list_all(
            resource_name=ENTRY,
            parent_id=parent,
            filters=older,
            sorting=[Sort("created_at", -1)],
            limit=limit,
        )
        self.storage.delete_all(
            resource_name=ENTRY, parent_id=parent, filters=older, with_deleted=False
        )
        if not self.storage.count_all(resource_name=ENTRY, parent_id=parent):
            self.storage.delete_all(
                resource_name=INDEX,
                parent_id=index_parent(cadence),
                filters=[Filter("id", preferences.object_id(address), COMPARISON.EQ)],
                with_deleted=False,
            )
        return [entry for obj in newest if (entry := _load(obj, recipient))], count

    def _forget_turned_off(self, parent: str, chosen: preferences.Preferences) -> None:
        free = [Filter("locked", False, COMPARISON.EQ)]
        off = [
            uri
            for uri in chosen.scopes
            if (cell := chosen.cell(uri, "email")) is not None and cell.choice == "off"
        ]
        if not chosen.suppressed and not off:
            return
        if not chosen.suppressed:
            free.append(Filter("scope", off, COMPARISON.IN))
        self.storage.delete_all(
            resource_name=ENTRY, parent_id=parent, filters=free, with_deleted=False
        )


def _load(obj: dict[str, Any], recipient: str) -> Entry | None:
    try:
        return Entry.from_json(obj)
    except Exception:  # Stored by an older version: the rest of the digest still goes.
        logger.exception("Leaving out of %s's digest an entry that cannot be read", recipient)
        return None


def link(entry: Entry) -> str:
    return f"{entry.draft.root_url.rstrip('/')}{entry.draft.uri}"


def digest_draft(
    cadence: str, end: datetime, entries: list[Entry], total: int, settings: EmailerSettings
) -> messages.Draft:
    """One recipient's digest: entries grouped by collection, newest first."""
    newest = entries[0].draft
    by_collection: dict[str, list[Entry]] = {}
    for entry in entries:
        by_collection.setdefault(entry.collection, []).append(entry)
    lines = [f"{total} change(s) until {end:%Y-%m-%d %H:%M} UTC."]
    for collection, group in by_collection.items():
        lines += ["", collection]
        lines += [
            f"  {e.draft.created:%Y-%m-%d %H:%M}  {e.draft.subject}  {link(e)}" for e in group
        ]
    if total > len(entries):
        lines += ["", f"and {total - len(entries)} more"]
    recipient = newest.recipient
    sender = (
        recipients.parse_mailbox(settings.default_sender)
        if settings.default_sender
        else newest.sender
    )
    draft = messages.Draft(
        sender,
        recipient,
        f"{cadence.capitalize()} digest: {total} change(s)",
        "\n".join(lines) + "\n",
        f"/emailer/digests/{cadence}",
        newest.root_url,
        key=messages.idempotency_key(
            "digest", recipient.lowercase_address, cadence, end.isoformat()
        ),
        created=end,
    )
    scopes = tuple(dict.fromkeys(e.scope for e in entries))
    # Its one-click unsubscribe could not stop the mail of locked hooks: none then.
    unsubscribe = not any(e.locked for e in entries)
    inbox = any(e.web for e in entries)
    return messages.with_links(draft, settings.secret, scopes, unsubscribe, inbox)


def _address_of(recipient: str) -> str | None:
    """The address of an indexed recipient; None, logged, for one that no longer parses."""
    try:
        return recipients.address_of(recipient)
    except ValueError as e:
        logger.error("No digest for %r: %s", recipient, e)
        return None


def send_digests(
    storage: Any,
    settings: EmailerSettings,
    at: datetime,
    schedule: Callable[[list[messages.Draft]], None],
) -> int:
    """Queue the digests due at ``at`` (one transaction per page of recipients); how many."""
    store = DigestStore(storage)
    sent = 0
    for cadence in DIGEST_CADENCES:
        end = window_end(at, cadence, settings)
        for page in store.recipients(cadence):
            with transaction.manager:
                addresses = {r: address for r in page if (address := _address_of(r))}
                # As they are now: mail turned off since it was kept is not sent.
                chosen = preferences.PreferenceStore(storage).read_many(addresses.values())
                drafts = []
                for recipient, address in addresses.items():
                    try:
                        entries, total = store.take(
                            cadence,
                            recipient,
                            end,
                            settings.digest_max_items,
                            chosen.get(address, preferences.Preferences()),
                        )
                        if entries:
                            drafts.append(digest_draft(cadence, end, entries, total, settings))
                    except Exception:  # One recipient's: the page's other digests go.
                        logger.exception("Could not make the %s digest of %r", cadence, recipient)
                schedule(drafts)
            sent += len(drafts)
    return sent


class DigestScheduler:
    """A thread that sends the digests when their windows end (``kinto.emailer.worker``)."""

    def __init__(self, run: Callable[[datetime], object], settings: EmailerSettings) -> None:
        self._run = run
        self._settings = settings
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name="kinto-emailer-digests", daemon=True
        )

    def _loop(self) -> None:
        while True:
            due = next_window_end(datetime.now(UTC), self._settings)
            if self._stop.wait((due - datetime.now(UTC)).total_seconds()):
                return
            try:
                self._run(due)
            except Exception:
                logger.exception("Could not send the digests due at %s", due)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
