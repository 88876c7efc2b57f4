"""The delivery log: what became of each message about a bucket's objects, newest first,
for the bucket's editors (``GET /v1/buckets/<bucket>/emailer/log``) and for operators
(``kinto-emailer log``).

The log costs the sending of a message no statement of its own. With PostgreSQL, the
state of a message is read from the rows that delivery writes anyway: queued or retrying
(a row of ``kinto_emailer_jobs``, with its next attempt and last error), or failed
(``kinto_emailer_failed``). A claim of messages ends by deleting its jobs: the same
statement moves those sent into ``kinto_emailer_log``, where what a worker decides
instead of queuing a message (a digest entry, mail the recipient turned off, mail
dropped) goes too, in the transaction of the claim that decided it, one statement per
claim. Without PostgreSQL, each process keeps its newest entries in memory
(:class:`MemoryLog`). Entries older than ``kinto.emailer.log_max_age`` are never shown,
and are deleted in batches, now and then.
"""

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kinto_emailer import epoch
from kinto_emailer.messages import Draft


STATES = ("queued", "sent", "retrying", "failed", "dropped", "digest", "off")
TOO_OLD = "older than kinto.emailer.max_age"
"""Why a message whose change got too old before its turn was dropped."""

# The time of its state, and the detail it shows, by state.
_AT = {"sent": "sent_at", "retrying": "next_attempt", "failed": "failed_at"}
_DETAIL = {
    "retrying": "last_error",
    "failed": "last_error",
    "dropped": "reason",
    "digest": "cadence",
}


def bucket_of(uri: str) -> str:
    """The bucket of a message's object; '' for mail about no bucket (digests)."""
    parts = uri.split("/", 3)
    return parts[2] if len(parts) > 2 and parts[1] == "buckets" else ""


def micros(moment: datetime) -> int:
    """``moment`` exactly, as an integer: the position of an entry in a page token."""
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=value)


@dataclass(frozen=True)
class Entry:
    """One message, and what became of it."""

    key: str
    recipient: str
    """The address, lowercased."""
    subject: str
    uri: str
    time: datetime
    """Of the message: the time of its change."""
    state: str
    at: datetime | None = None
    """When it was sent or failed, or its next attempt."""
    attempts: int | None = None
    detail: str = ""
    """The last error, why it was dropped, or the cadence of its digest."""

    @classmethod
    def of(
        cls,
        draft: Draft,
        state: str,
        at: datetime | None = None,
        attempts: int | None = None,
        detail: str = "",
    ) -> "Entry":
        return cls(
            draft.key,
            draft.recipient.lowercase_address,
            draft.subject,
            draft.uri,
            draft.created,
            state,
            at,
            attempts,
            detail,
        )

    @property
    def bucket(self) -> str:
        return bucket_of(self.uri)

    @property
    def position(self) -> tuple[int, str]:
        """Where it stands in the log: newest first, then by key."""
        return micros(self.time), self.key

    @property
    def size(self) -> int:
        """About the characters it holds, for the memory log's bound."""
        texts = (self.key, self.recipient, self.subject, self.uri, self.detail)
        return sum(map(len, texts)) + 200

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "key": self.key,
            "recipient": self.recipient,
            "subject": self.subject,
            "uri": self.uri,
            "time": epoch.ms(self.time),
            "state": self.state,
        }
        if self.state in _AT:
            data[_AT[self.state]] = None if self.at is None else epoch.ms(self.at)
        if self.state in ("retrying", "failed"):
            data["attempts"] = self.attempts or 0
        if self.state in _DETAIL:
            data[_DETAIL[self.state]] = self.detail
        return data

    def to_row(self) -> dict[str, str]:
        """A row of ``kinto_emailer_log``: a decision of a worker."""
        return {
            "key": self.key,
            "bucket": self.bucket,
            "recipient": self.recipient,
            "uri": self.uri,
            "subject": self.subject,
            "created": self.time.isoformat(),
            "state": self.state,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Query:
    """Which entries, and which page of them."""

    bucket: str | None = None
    """None: every bucket (the command line)."""
    recipient: str | None = None
    """An address, lowercased."""
    uri: str | None = None
    states: frozenset[str] | None = None
    limit: int = 100
    before: tuple[int, str] | None = None
    """The position of the last entry of the page before (see :attr:`Entry.position`)."""

    def matches(self, entry: Entry) -> bool:
        return (
            (self.bucket is None or entry.bucket == self.bucket)
            and (self.recipient is None or entry.recipient == self.recipient)
            and (self.uri is None or entry.uri == self.uri)
            and (self.states is None or entry.state in self.states)
        )


@dataclass(frozen=True)
class Page:
    entries: list[Entry]
    more: bool
    """Whether a page follows."""


class MemoryLog:
    """The newest entries of the process: at most :attr:`MAX_ENTRIES`, and
    :attr:`MAX_CHARS` characters, none older than ``max_age`` seconds. A message's entry
    changes as its state does, and keeps its place."""

    MAX_ENTRIES = 10_000
    MAX_CHARS = 8 * 1024 * 1024

    def __init__(self, max_age: float) -> None:
        self.max_age = timedelta(seconds=max_age)
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._chars = 0
        self._lock = threading.Lock()

    def record(self, entries: Iterable[Entry]) -> None:
        with self._lock:
            for entry in entries:
                before = self._entries.get(entry.key)
                if before is not None:
                    self._chars -= before.size
                self._entries[entry.key] = entry
                self._chars += entry.size
            oldest = datetime.now(UTC) - self.max_age
            while self._entries:
                first = next(iter(self._entries.values()))
                if (
                    len(self._entries) <= self.MAX_ENTRIES
                    and self._chars <= self.MAX_CHARS
                    and first.time >= oldest
                ):
                    break
                self._entries.popitem(last=False)
                self._chars -= first.size

    def _found(self, query: Query) -> list[Entry]:
        oldest = datetime.now(UTC) - self.max_age
        with self._lock:
            return [e for e in self._entries.values() if e.time >= oldest and query.matches(e)]

    def page(self, query: Query) -> Page:
        found = [
            e for e in self._found(query) if query.before is None or e.position < query.before
        ]
        found.sort(key=lambda e: e.position, reverse=True)
        return Page(found[: query.limit], len(found) > query.limit)

    def count(self, query: Query) -> int:
        """The entries of ``query``, on every page."""
        return len(self._found(query))

    def flush(self) -> None:
        """Forgotten with Kinto's data, as the queue's tables are."""
        with self._lock:
            self._entries.clear()
            self._chars = 0


# PostgreSQL. Pyformat parameters, for psycopg2.

DECIDED = """
INSERT INTO kinto_emailer_log (key, bucket, recipient, uri, subject, created, state, detail)
SELECT e.key, e.bucket, e.recipient, e.uri, e.subject, e.created, e.state, e.detail
  FROM jsonb_to_recordset(%(entries)s::jsonb) AS e(
       key text, bucket text, recipient text, uri text, subject text, created timestamptz,
       state text, detail text)
    ON CONFLICT (key) DO UPDATE SET state = EXCLUDED.state, detail = EXCLUDED.detail
 WHERE kinto_emailer_log.state <> 'sent'
"""
"""Decisions of a worker (a message sent stays sent); one statement inserts a key once
(see :func:`decided_rows`)."""


def decided_rows(entries: Iterable[Entry]) -> list[dict[str, str]]:
    """The rows of ``entries`` for :data:`DECIDED`, the last one of each key."""
    return list({entry.key: entry.to_row() for entry in entries}.values())


PRUNE_BATCH = 10_000
PRUNE = """
WITH gone AS (
    DELETE FROM kinto_emailer_log WHERE ctid = ANY(ARRAY(
        SELECT ctid FROM kinto_emailer_log
         WHERE created < now() - make_interval(secs => %(max_age)s)
         LIMIT %(batch)s
    )) RETURNING 1
)
SELECT count(*) FROM gone
"""
"""One batch of entries older than ``log_max_age``; how many."""


def draft_columns(column: str) -> dict[str, str]:
    """What the log shows of the draft JSON of a queue's row. Rows written by hand (or by
    an older version) may hold anything: what cannot be read is NULL, never an error."""
    created = f"{column}->>'created'"
    recipient = f"{column}->>'recipient'"
    return {
        # The address of "Name <address>".
        "recipient": f"lower(coalesce(substring({recipient} from '<([^<>]*)>$'), {recipient}))",
        "subject": f"coalesce({column}->>'subject', '')",
        "uri": f"coalesce({column}->>'uri', '')",
        "created": (
            f"CASE WHEN {created} ~ '^\\d{{4}}-\\d\\d-\\d\\dT[\\d:.]+([+-]\\d\\d:\\d\\d|Z)$'"
            f" THEN ({created})::timestamptz END"
        ),
    }


_JOB = draft_columns("j.draft")
_FAILED = draft_columns("f.draft")

# The entries of each table, and the rank of each: a message may be in two of them at
# once (a worker may queue again a message whose key is sent, or decide again about a
# change it could not finish), and the first one says what became of it. Both rows of a
# message have its position (time and key).
_TABLES = (
    """SELECT d.key, d.bucket, d.recipient, d.subject, d.uri, d.created, d.state, d.at,
       NULL::integer AS attempts, d.detail, CASE WHEN d.state = 'sent' THEN 0 ELSE 3 END AS rank
  FROM kinto_emailer_log AS d""",
    f"""SELECT f.key, f.bucket, {_FAILED["recipient"]} AS recipient,
       {_FAILED["subject"]} AS subject, {_FAILED["uri"]} AS uri,
       {_FAILED["created"]} AS created, 'failed' AS state, f.failed_at AS at, f.attempts,
       f.last_error AS detail, 1 AS rank
  FROM kinto_emailer_failed AS f""",
    f"""SELECT j.key, j.bucket, {_JOB["recipient"]} AS recipient, {_JOB["subject"]} AS subject,
       {_JOB["uri"]} AS uri, j.created,
       CASE WHEN j.attempts > 0 OR j.last_error IS NOT NULL THEN 'retrying' ELSE 'queued' END
       AS state,
       CASE WHEN j.attempts > 0 OR j.last_error IS NOT NULL THEN j.due END AS at, j.attempts,
       coalesce(j.last_error, '') AS detail, 2 AS rank
  FROM kinto_emailer_jobs AS j""",
)
_WHERE = """created >= now() - make_interval(secs => %(max_age)s)
   AND (%(bucket)s::text IS NULL OR bucket = %(bucket)s)
   AND (%(recipient)s::text IS NULL OR recipient = %(recipient)s)
   AND (%(uri)s::text IS NULL OR uri = %(uri)s)
   AND (%(states)s::text[] IS NULL OR state = ANY(%(states)s))"""
_COLUMNS = "key, recipient, subject, uri, created, state, at, attempts, detail"
_NEWEST = 'created DESC, key COLLATE "C" DESC'
# The page of each table, then of them all, each message once: a table's page is a top-N
# sort, whatever the table holds (100,000 messages queued by one bucket). The page of
# them all holds every entry of the true page (fewer than a page of any table's entries
# come before it), and none that a message of a lower rank hides.
_PAGES = "\n        UNION ALL\n".join(
    f"""        (SELECT * FROM ({table}) AS entries
          WHERE {_WHERE}
            AND (%(before_time)s::timestamptz IS NULL
                 OR (created, key COLLATE "C") < (%(before_time)s, %(before_key)s COLLATE "C"))
          ORDER BY {_NEWEST} LIMIT %(limit)s)"""
    for table in _TABLES
)
PAGE = f"""
SELECT {_COLUMNS} FROM (
    SELECT DISTINCT ON (created, key COLLATE "C") {_COLUMNS} FROM (
{_PAGES}
    ) AS pages
     ORDER BY {_NEWEST}, rank
) AS messages
 ORDER BY {_NEWEST}
 LIMIT %(limit)s
"""
# Each message once: the entries of each table that no entry of a lower rank hides.
_SENT = "SELECT FROM kinto_emailer_log AS s WHERE s.key = {0}.key AND s.state = 'sent'"
_SHOWN = (
    """
 WHERE d.state = 'sent'
    OR NOT (EXISTS (SELECT FROM kinto_emailer_jobs AS j WHERE j.key = d.key)
            OR EXISTS (SELECT FROM kinto_emailer_failed AS f WHERE f.key = d.key))""",
    f"\n WHERE NOT EXISTS ({_SENT.format('f')})",
    f"\n WHERE NOT EXISTS ({_SENT.format('j')})",
)
COUNT = "SELECT " + " + ".join(
    f"(SELECT count(*) FROM ({table}{shown}) AS entries WHERE {_WHERE})"
    for table, shown in zip(_TABLES, _SHOWN, strict=True)
)


Connect = Callable[[], AbstractContextManager[Any]]
"""A connection of the queue's own, for the time of a block."""


class PostgreSQLLog:
    """The log of the queue's tables (see the module's documentation)."""

    def __init__(self, connect: Connect, max_age: float) -> None:
        self._connect = connect
        self.max_age = max_age

    def _rows(self, sql: str, query: Query) -> list[tuple[Any, ...]]:
        before_time, before_key = (None, None) if query.before is None else query.before
        parameters = {
            "max_age": self.max_age,
            "bucket": query.bucket,
            "recipient": query.recipient,
            "uri": query.uri,
            "states": None if query.states is None else sorted(query.states),
            "before_time": None if before_time is None else from_micros(before_time),
            "before_key": before_key,
            "limit": query.limit + 1,
        }
        with self._connect() as connection, connection.cursor() as cursor:
            cursor.execute(sql, parameters)
            return list(cursor.fetchall())

    def page(self, query: Query) -> Page:
        entries = [Entry(*row) for row in self._rows(PAGE, query)]
        return Page(entries[: query.limit], len(entries) > query.limit)

    def count(self, query: Query) -> int:
        """The entries of ``query``, on every page."""
        [(total,)] = self._rows(COUNT, query)
        return int(total)
