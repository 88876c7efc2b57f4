"""Bounds on how much mail hooks can cause, whoever writes them.

Three bounds, each set by the operator: messages per change, messages per bucket in an
hour and messages per recipient in an hour (across every bucket of the server). Past a
bound the write still succeeds; the extra mail is dropped, counted (``limited``) and
logged once per bound and window. Hourly usage lives where the mail is worked out: in
the queue's table with PostgreSQL (shared by every worker, in the transaction that
stores the mail), else in the process.
"""

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from kinto_emailer.settings import EmailerSettings


logger = logging.getLogger(__name__)

WINDOW = timedelta(hours=1)


@dataclass
class Usage:
    """Messages let through and dropped for one key in one window."""

    used: int = 0
    dropped: int = 0


class Tally(Protocol):
    """Where the hourly usage is kept."""

    def usage(
        self, window: datetime, keys: Sequence[str]
    ) -> AbstractContextManager[dict[str, Usage]]:
        """The usage of ``keys`` in ``window``, held for the block: its changes are kept."""

    def limited(self, n: int) -> None:
        """Count ``n`` messages dropped by a bound."""


class MemoryTally:
    """Hourly usage in the process: the memory backend and the Maildir queue."""

    def __init__(self, count: Callable[[str, int], None]) -> None:
        self._count = count
        self._lock = threading.Lock()
        self._usage: dict[tuple[datetime, str], Usage] = {}
        self._newest: datetime | None = None

    @contextmanager
    def usage(self, window: datetime, keys: Sequence[str]) -> Iterator[dict[str, Usage]]:
        with self._lock:
            # Windows older than the one before the newest are over: forgotten once, when
            # a newer window starts, not looked for at every change.
            if self._newest is None or window > self._newest:
                self._newest = window
                for stale in [k for k in self._usage if k[0] < window - WINDOW]:
                    del self._usage[stale]
            yield {key: self._usage.setdefault((window, key), Usage()) for key in keys}

    def limited(self, n: int) -> None:
        self._count("limited", n)

    def flush(self) -> None:
        """Forgotten with Kinto's data, as the queue's tables are."""
        with self._lock:
            self._usage.clear()
            self._newest = None


def window_of(moment: datetime) -> datetime:
    """The start of the hour of ``moment``: a change counts in the hour it was made."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def bucket_key(bucket_id: str) -> str:
    return f"bucket:{bucket_id}"


def recipient_key(address: str) -> str:
    """The mailbox ``address`` reaches: ``a+tag@example.com`` (a subaddress) is ``a@``'s."""
    local, _, domain = address.lower().rpartition("@")
    return f"recipient:{local.split('+', 1)[0] or local}@{domain}"


def keys_of(
    recipients: Iterable[str], bucket_id: str, made_at: datetime
) -> tuple[datetime, list[str]]:
    """The window and the sorted keys that the mail of one change to ``recipients``
    counts against (none without recipients)."""
    recipients = list(recipients)
    if not recipients:
        return window_of(made_at), []
    return window_of(made_at), sorted({bucket_key(bucket_id), *map(recipient_key, recipients)})


_SETTING = {
    "change": "kinto.emailer.max_messages_per_change",
    "bucket": "kinto.emailer.max_messages_per_bucket_hour",
    "recipient": "kinto.emailer.max_messages_per_recipient_hour",
}


@dataclass(frozen=True)
class Refusal:
    """Why a message was dropped: the setting of a bound it was over."""

    setting: str
    noted: bool
    """Among the first ones each of its bounds refused, as many as the bound lets
    through: the delivery log keeps those, so that it never holds more of them than of
    messages sent, whatever a stranger's hooks ask for."""


def admit(
    recipients: Sequence[str],
    bucket_id: str,
    made_at: datetime,
    settings: EmailerSettings,
    tally: Tally,
    change: Usage | None = None,
) -> list[Refusal | None]:
    """Whether each message of one change, in order, to ``recipients``, may go (None), or
    why not.

    A message goes only while the change, its bucket and its recipient are all under
    their bound; one dropped counts against none of them. ``change``: the usage of the
    change's messages admitted before these ones, when it is worked out a part at a time.
    A web notification is a message as an email is: a stranger's hooks fill no one's
    inbox faster than their mailbox.
    """
    if not recipients:
        return []
    window, keys = keys_of(recipients, bucket_id, made_at)
    bucket = bucket_key(bucket_id)
    limits = {
        "bucket": settings.max_messages_per_bucket_hour,
        "recipient": settings.max_messages_per_recipient_hour,
        "change": settings.max_messages_per_change,
    }
    change = Usage() if change is None else change
    admitted: list[Refusal | None] = []
    with tally.usage(window, keys) as usage:
        usage = {**usage, "change:": change}
        before = {key: u.dropped for key, u in usage.items()}
        for address in recipients:
            counted = ("change:", bucket, recipient_key(address))
            full = [key for key in counted if usage[key].used >= limits[key.split(":", 1)[0]]]
            for key in full:
                usage[key].dropped += 1
            if not full:
                for key in counted:
                    usage[key].used += 1
                admitted.append(None)
                continue
            noted = any(usage[key].dropped <= limits[key.split(":", 1)[0]] for key in full)
            admitted.append(Refusal(_SETTING[full[0].split(":", 1)[0]], noted))
        newly_full = [key for key, u in usage.items() if u.dropped and not before[key]]
    for key in newly_full:
        kind, _, name = key.partition(":")
        where = f"change in bucket {bucket_id}" if kind == "change" else f"{kind} {name}"
        logger.warning(
            "Mail dropped: the %s is over %s %s (%s)",
            where,
            limits[kind],
            "messages" if kind == "change" else "messages this hour",
            _SETTING[kind],
        )
    dropped = len(admitted) - admitted.count(None)
    if dropped:
        tally.limited(dropped)
    return admitted
