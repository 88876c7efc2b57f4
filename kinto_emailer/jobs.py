"""The mail queue in PostgreSQL.

With Kinto's PostgreSQL storage, each change becomes a row of ``kinto_emailer_changes``
written in Kinto's own transaction, on its own connection: it commits or rolls back with
the data. A worker turns committed changes into messages (rows of ``kinto_emailer_jobs``),
digest entries and preferences, in one transaction of Kinto's storage.

Workers (a thread of each Kinto process, or ``kinto-emailer worker`` processes on any
machine) claim up to :data:`CLAIM_SIZE` changes or due messages at once with ``SELECT
... FOR UPDATE SKIP LOCKED``, and keep the messages locked, in an open transaction, while
they send. Two workers never hold the same row, and the rows of a worker that dies go
back to the queue as soon as PostgreSQL ends its session: a killed process closes its
connection at once, a vanished machine is found out by TCP keepalives after
``stalled_timeout``.

A message's idempotency key is written to ``kinto_emailer_sent`` (on another, autocommit
connection) as soon as the SMTP server accepted it, and a claimed message whose key is
there is not sent again: rows given back by a dead worker do not repeat its mail. The
queue's rows are also the delivery log's (:mod:`kinto_emailer.deliverylog`).
"""

import contextlib
import datetime
import functools
import json
import logging
import os
import select
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import psycopg2
import psycopg2.extensions
import psycopg2.extras
import sqlalchemy
import transaction

from kinto_emailer import deliverylog, listener, storagesql
from kinto_emailer.delivery import Job, Transport, attempt, report_sent
from kinto_emailer.deliverylog import Entry
from kinto_emailer.hookindex import HookIndex
from kinto_emailer.inbox import InboxStore, Notification
from kinto_emailer.listener import AnyNotice, Change, describe
from kinto_emailer.messages import Draft
from kinto_emailer.metrics import Counter
from kinto_emailer.preferences import Preferences, PreferenceStore
from kinto_emailer.quotas import Usage
from kinto_emailer.settings import EmailerSettings
from kinto_emailer.wakeups import CHANNEL, Waker, connect


logger = logging.getLogger(__name__)

# Rows claimed at once: one query for many messages, few enough that other workers
# find work too.
CLAIM_SIZE = 100
# The JSON of the messages (or failures) one statement inserts, and of the messages one
# claim of changes turns out, in bytes: far below PostgreSQL's limits (1 GB a value, 256
# MB a jsonb array) and the worker's memory, whatever one change expands to.
QUEUE_BYTES = 4 * 1024 * 1024
EXPAND_BYTES = 4 * QUEUE_BYTES
# A worker commits (and lets go of what it claimed and did not start) after this long.
CLAIM_SECONDS = 1.0
PRUNE_EVERY = 60.0

TABLES = (
    "kinto_emailer_changes",
    "kinto_emailer_jobs",
    "kinto_emailer_sent",
    "kinto_emailer_failed",
    "kinto_emailer_counts",
    "kinto_emailer_usage",
    "kinto_emailer_log",
)

# Pyformat parameters, for psycopg2 (Kinto's driver), on Kinto's connections and ours.
# A retry's draft comes with its last error, that goes to a column of its own; the time of
# its change, too, for the delivery log.
QUEUE = """
INSERT INTO kinto_emailer_jobs (key, draft, attempts, due, last_error, created)
SELECT item->>'key', CASE WHEN item ? 'last_error' THEN item - 'last_error' ELSE item END,
       %(attempts)s, statement_timestamp() + make_interval(secs => %(delay)s),
       item->>'last_error', (item->>'created')::timestamptz
  FROM jsonb_array_elements(%(drafts)s::jsonb) AS item
    ON CONFLICT (key) DO NOTHING
"""
RECORD_SAVEPOINT = "kinto_emailer_record"
RECORD_INSERT = "INSERT INTO kinto_emailer_changes (change) VALUES (%(change)s::jsonb)"
# Three statements in one round trip (psycopg2 sends them as one query).
RECORD = f"""
SAVEPOINT {RECORD_SAVEPOINT};
{RECORD_INSERT};
RELEASE SAVEPOINT {RECORD_SAVEPOINT}
"""


def fair_claim(table: str, columns: tuple[str, ...], order: str, ready: str) -> str:
    """Claim up to ``%(limit)s`` rows of ``table``, shared between its buckets.

    The buckets with rows ``ready`` are found by skipping through the ``(bucket, order)``
    index (one probe per bucket, whatever the rows' number); the ``%(limit)s`` buckets
    waiting longest each get an equal share of the claim, its oldest rows, and the rows
    come interleaved: one of each bucket, then the second of each... A bucket with 100,000
    messages queued takes one turn in each round, not the whole queue.

    PostgreSQL cannot tell how few rows that reads (each share is known only when it
    runs): claims are made with ``jit`` off, or it compiles them for longer (a second at
    100,000 rows) than they take.
    """
    selected = ", ".join(f"claimed.{column}" for column in columns)
    return f"""
WITH RECURSIVE buckets AS (
    (SELECT bucket FROM {table} ORDER BY bucket LIMIT 1)
    UNION ALL
    SELECT (SELECT bucket FROM {table} WHERE bucket > buckets.bucket ORDER BY bucket LIMIT 1)
      FROM buckets WHERE buckets.bucket IS NOT NULL
),
waiting AS (
    SELECT buckets.bucket, oldest.position FROM buckets, LATERAL (
        SELECT {order} AS position FROM {table}
         WHERE bucket = buckets.bucket AND {ready} ORDER BY {order} LIMIT 1
    ) AS oldest
     ORDER BY oldest.position
     LIMIT %(limit)s
),
share AS (SELECT ceil(%(limit)s::numeric / greatest(count(*), 1))::int AS n FROM waiting)
SELECT {selected} FROM waiting, share, LATERAL (
    SELECT {", ".join(columns)}, {order} AS position FROM {table}
     WHERE bucket = waiting.bucket AND {ready}
     ORDER BY {order}
     LIMIT share.n
       FOR UPDATE SKIP LOCKED
) AS claimed
 ORDER BY row_number() OVER (PARTITION BY waiting.bucket ORDER BY claimed.position),
          claimed.position
"""


CLAIM_CHANGES = fair_claim("kinto_emailer_changes", ("id", "change"), "id", "true")
CLAIM_CHANGE = (
    "SELECT id, change FROM kinto_emailer_changes WHERE id = %(id)s FOR UPDATE SKIP LOCKED"
)
CLAIM = fair_claim(
    "kinto_emailer_jobs", ("key", "draft", "attempts"), "due", "due <= statement_timestamp()"
)
PRUNE = """
DELETE FROM kinto_emailer_sent WHERE sent_at < now() - make_interval(secs => %(max_age)s)
"""
PRUNE_USAGE = "DELETE FROM kinto_emailer_usage WHERE window_start < now() - interval '1 day'"
# Every row one expansion may count against, made if missing and locked in one pass, in
# the order of the table's key: two expansions wait for each other's rows, never in a
# cycle (a deadlock, where PostgreSQL aborts one). The no-op update locks existing rows.
USAGE_HOLD = """
INSERT INTO kinto_emailer_usage (window_start, key)
SELECT window_start, key
  FROM unnest(%(windows)s::timestamptz[], %(keys)s::text[]) AS u(window_start, key)
 ORDER BY window_start, key
    ON CONFLICT (window_start, key) DO UPDATE SET used = kinto_emailer_usage.used
RETURNING window_start, key, used, dropped
"""
USAGE_UPDATE = """
UPDATE kinto_emailer_usage SET used = u.used, dropped = u.dropped
  FROM unnest(%(windows)s::timestamptz[], %(keys)s::text[], %(used)s::int[], %(dropped)s::int[])
       AS u(window_start, key, used, dropped)
 WHERE kinto_emailer_usage.window_start = u.window_start AND kinto_emailer_usage.key = u.key
"""
# clock_timestamp(): a job a worker queued while this statement started is due too.
DUE = """
SELECT (SELECT count(*) FROM kinto_emailer_jobs WHERE due <= clock_timestamp())
     + (SELECT count(*) FROM kinto_emailer_changes)
"""
STATUS_NAMES = (
    "changes",
    "queued",
    "scheduled",
    "sending",
    "sent",
    "retried",
    "failed",
    "dropped",
    "limited",
)
# Without locking anything: a job claimed by a worker is a row locked by a transaction still
# in progress. PostgreSQL writes the id of the transaction that locks a row in its xmax,
# and every transaction in progress holds the lock of its own id (pg_locks).
STATUS = """
SELECT 'changes', count(*) FROM kinto_emailer_changes
UNION ALL
SELECT 'due', count(*) FROM kinto_emailer_jobs WHERE due <= statement_timestamp()
UNION ALL
SELECT 'sending', count(*) FROM kinto_emailer_jobs
 WHERE due <= statement_timestamp() AND xmax <> '0' AND xmax IN (
    SELECT transactionid FROM pg_locks WHERE locktype = 'transactionid'
 )
UNION ALL
SELECT 'scheduled', count(*) FROM kinto_emailer_jobs WHERE due > statement_timestamp()
UNION ALL
SELECT 'sent', count(*) FROM kinto_emailer_sent
UNION ALL
SELECT 'failed', count(*) FROM kinto_emailer_failed
UNION ALL
SELECT name, value FROM kinto_emailer_counts WHERE name IN ('retried', 'dropped', 'limited')
"""
_SENT = deliverylog.draft_columns("gone.draft")
DONE = f"""
WITH gone AS (
    DELETE FROM kinto_emailer_jobs WHERE key = ANY(%(done)s)
    RETURNING key, bucket, draft, created
)
INSERT INTO kinto_emailer_log (key, bucket, recipient, uri, subject, created, state, at)
SELECT gone.key, gone.bucket, coalesce({_SENT["recipient"]}, ''), {_SENT["uri"]},
       {_SENT["subject"]}, gone.created, 'sent', sent.sent_at
  FROM gone CROSS JOIN LATERAL (
      -- Each found by its key: LIMIT keeps PostgreSQL from reading every key.
      SELECT sent_at FROM kinto_emailer_sent WHERE kinto_emailer_sent.key = gone.key LIMIT 1
  ) AS sent
 WHERE gone.created IS NOT NULL
    ON CONFLICT (key) DO UPDATE SET state = 'sent', at = EXCLUDED.at, detail = ''
"""
"""The end of a claim: its jobs are deleted, and those whose key is stored as sent go to
the delivery log, in the one statement the claim made before the log (its keys were
sent once anyway): sending a message costs nothing more."""
COUNT = """
INSERT INTO kinto_emailer_counts (name, value) VALUES (%s, %s)
    ON CONFLICT (name) DO UPDATE SET value = kinto_emailer_counts.value + EXCLUDED.value
"""
COUNT_NAMED = COUNT.replace("(%s, %s)", "(%(name)s, %(n)s)")


NoticesEach = Callable[[list[Change]], Iterator[tuple[Change, list[AnyNotice]]]]
"""The messages that each change's hooks decide on, in turn:
:func:`kinto_emailer.listener.notices_by_change`."""


def json_arrays(items: Iterable[Any], limit: int) -> Iterator[tuple[str, int]]:
    """JSON arrays of ``items`` in order, and their length, each at most ``limit`` bytes
    (but for an item larger than that, alone in its array)."""
    chunk: list[str] = []
    size = 2
    for item in items:
        text = json.dumps(item)  # ASCII: as many bytes as characters.
        if chunk and size + len(text) + 1 > limit:
            yield f"[{','.join(chunk)}]", len(chunk)
            chunk, size = [], 2
        chunk.append(text)
        size += len(text) + 1
    if chunk:
        yield f"[{','.join(chunk)}]", len(chunk)


def defer(
    connection: Any,
    drafts: Sequence[Draft],
    attempts: int = 0,
    delay: float = 0,
    errors: Sequence[str] | None = None,
) -> int:
    """Queue ``drafts`` on ``connection``, in its transaction; the bytes of their JSON.
    ``errors``: the last error of each, when they are tried again.

    One statement per :data:`QUEUE_BYTES`; a message already queued is not queued twice.
    """
    queued = 0
    items: Iterable[dict[str, Any]] = (draft.to_json() for draft in drafts)
    if errors is not None:
        items = ({**item, "last_error": error} for item, error in zip(items, errors, strict=True))
    with connection.cursor() as cursor:
        for array, _ in json_arrays(items, QUEUE_BYTES):
            cursor.execute(QUEUE, {"drafts": array, "attempts": attempts, "delay": delay})
            queued += len(array)
    return queued


class Failed(NamedTuple):
    """A row of ``kinto_emailer_failed``: a message given up, or a change that could not
    be worked out, with why."""

    key: str
    draft: dict[str, Any]
    attempts: int
    last_error: str


FAIL = """
INSERT INTO kinto_emailer_failed (key, draft, attempts, last_error)
SELECT f.key, f.draft, f.attempts, f.last_error
  FROM jsonb_to_recordset(%(failed)s::jsonb)
       AS f(key text, draft jsonb, attempts integer, last_error text)
    ON CONFLICT (key) DO UPDATE
   SET attempts = EXCLUDED.attempts, last_error = EXCLUDED.last_error, failed_at = now()
"""


def fail(connection: Any, failed: Sequence[Failed]) -> None:
    """Keep ``failed`` in the failed list, on ``connection``."""
    with connection.cursor() as cursor:
        for array, _ in json_arrays((f._asdict() for f in failed), QUEUE_BYTES):
            cursor.execute(FAIL, {"failed": array})


def log_decided(connection: Any, entries: Iterable[Entry]) -> None:
    """Keep in the delivery log what was decided instead of queuing messages, on
    ``connection`` (in the transaction of the claim that decided it)."""
    with connection.cursor() as cursor:
        for array, _ in json_arrays(deliverylog.decided_rows(entries), QUEUE_BYTES):
            cursor.execute(deliverylog.DECIDED, {"entries": array})


def conninfo(storage_url: str) -> str:
    """The libpq address of Kinto's storage URL (which may name a SQLAlchemy driver)."""
    url = sqlalchemy.engine.make_url(storage_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def execute(connection: Any, query: str, parameters: Any = None) -> list[tuple]:
    """Run ``query`` on ``connection``; its rows, if it returns any."""
    with connection.cursor() as cursor:
        cursor.execute(query, parameters)
        return cursor.fetchall() if cursor.description else []


@contextlib.contextmanager
def session(dsn: str, autocommit: bool = True) -> Iterator[Any]:
    """A connection of the queue's own, closed after use; committed unless
    ``autocommit`` (rolled back on an error)."""
    connection = connect(dsn, autocommit)
    try:
        if autocommit:  # psycopg2's "with connection" would open a transaction all the same.
            yield connection
        else:
            with connection:
                yield connection
    finally:
        connection.close()


# A connection lost (or closed after a failure): the worker connects again.
LOST = (psycopg2.OperationalError, psycopg2.InterfaceError)


def _trying_again(doing: str, error: Exception, stop: threading.Event) -> None:
    """Say that the worker failed ``doing`` something, and wait a moment."""
    if isinstance(error, LOST):
        logger.warning("The mail worker lost its database %s (%s): trying again", doing, error)
    else:
        logger.error("The mail worker failed %s: trying again", doing, exc_info=error)
    stop.wait(1.0)


class Worker:
    """Claims due messages, sends them, and decides what happens to those not sent."""

    def __init__(
        self,
        dsn: str,
        transport: Transport,
        settings: EmailerSettings,
        count: Counter,
        expand: Callable[[], int],
    ) -> None:
        self.dsn = dsn
        self.transport = transport
        self.expand = expand
        self.settings = settings
        self._count = count
        # Claims, retries and failures, in the transaction that holds the claimed rows.
        self._claims: Any = None
        # Sent keys (kept whatever happens to the claim), and wake-ups.
        self._sent: _SentKeys | None = None
        self._pruned = 0.0
        # New mail wakes the worker at once; retries scheduled for later are found by
        # polling, often enough for the shortest retry delay.
        self.poll_interval = min(5.0, max(0.1, min(settings.retry_delays, default=10.0) / 2))

    def _connect(self) -> tuple[Any, "_SentKeys"]:
        if self._claims is None or self._claims.closed:
            self._claims = connect(self.dsn, autocommit=False)
            # PostgreSQL ends the session (and frees its rows) of a worker whose machine
            # stopped answering, after about stalled_timeout.
            idle = max(1, int(self.settings.stalled_timeout / 3))
            interval = max(1, int(self.settings.stalled_timeout / 6))
            execute(
                self._claims,
                f"SET tcp_keepalives_idle = {idle}; SET tcp_keepalives_interval = {interval};"
                " SET tcp_keepalives_count = 3;"
                " SET jit = off",
            )
            self._claims.commit()
        if self._sent is None or self._sent.connection.closed:
            self._sent = _SentKeys(self.dsn, self.settings.stalled_timeout)
        self._sent.settle()
        return self._claims, self._sent

    def close(self) -> None:
        if self._claims is not None:
            self._claims.close()
        if self._sent is not None:
            self._sent.connection.close()
        self._claims = self._sent = None
        self.transport.close()

    def run(self, stop: threading.Event) -> None:
        """Send until ``stop`` is set; the message under way is finished first.

        Changes are worked out in a thread of their own, so that the SMTP server does not
        wait for them; it rings the sender as soon as it queued messages. The first claim
        of messages waits for the first claim of changes to be worked out: it is shared
        between their buckets too.
        """
        bell = _Bell()
        started = threading.Event()
        expanding = threading.Thread(
            target=self._expand_until,
            args=(stop, bell, started),
            name="kinto-emailer-expand",
            daemon=True,
        )
        expanding.start()
        started.wait(self.poll_interval)
        try:
            while not stop.is_set():
                try:
                    self.prune()
                    if not self.work(stop):
                        self._wait(self._connect()[1], stop, bell)
                except Exception as e:
                    self.close()
                    _trying_again("sending", e, stop)
        finally:
            expanding.join()
            bell.close()
            self.close()

    def _expand_until(
        self, stop: threading.Event, bell: "_Bell", started: threading.Event
    ) -> None:
        """Work out changes as they come, until ``stop`` is set; ``started`` once the first
        claim of them was worked out (or failed)."""
        wakeups: _SentKeys | None = None
        while not stop.is_set():
            try:
                if wakeups is None:
                    wakeups = _SentKeys(self.dsn, self.settings.stalled_timeout)
                expanded = self.expand()
                started.set()
                if expanded:
                    bell.ring()
                else:
                    self._wait(wakeups, stop)
            except Exception as e:
                started.set()
                if wakeups is not None:
                    wakeups.connection.close()
                    wakeups = None
                _trying_again("working out changes", e, stop)
        if wakeups is not None:
            wakeups.connection.close()

    def _wait(
        self, wakeups: "_SentKeys", stop: threading.Event, bell: "_Bell | None" = None
    ) -> None:
        """Until ``wakeups`` is woken (or ``bell`` rung), ``stop`` is set or a poll is due."""
        deadline = time.monotonic() + self.poll_interval
        while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
            if wakeups.woken(min(left, 0.5), bell):
                return

    def prune(self) -> None:
        """Keys older than ``max_age`` are forgotten: a message that old is dropped anyway.
        Entries of the delivery log older than ``log_max_age`` too, a batch a statement:
        each is short, whatever is left to delete."""
        if time.monotonic() - self._pruned < PRUNE_EVERY and self._pruned:
            return
        _, sent = self._connect()
        sent.execute(PRUNE, {"max_age": self.settings.max_age})
        old = {"max_age": self.settings.log_max_age, "batch": deliverylog.PRUNE_BATCH}
        while sent.execute(deliverylog.PRUNE, old)[0][0] == deliverylog.PRUNE_BATCH:
            pass
        sent.execute(PRUNE_USAGE)
        self._pruned = time.monotonic()

    def work(self, stop: threading.Event) -> bool:
        """Claim due messages and send them; False when none was due."""
        claims, sent = self._connect()
        settings = self.settings
        started = time.monotonic()
        with claims:  # One transaction: committed, or rolled back on an error.
            rows = execute(claims, CLAIM, {"limit": CLAIM_SIZE})
            if not rows:
                return False
            already = sent.execute(
                "SELECT key FROM kinto_emailer_sent WHERE key = ANY(%s)", ([r[0] for r in rows],)
            )
            sent_keys = {key for (key,) in already}
            outcomes = _Outcomes(sent, self._count)
            done: list[str] = []

            def claimed() -> Iterator[Job]:
                for key, draft, attempts in rows:
                    if done and (stop.is_set() or time.monotonic() - started > CLAIM_SECONDS):
                        return  # Committing lets go of the rows not started.
                    done.append(key)
                    if key in sent_keys:
                        continue
                    try:
                        yield Job(Draft.from_json(draft), attempts)
                    except Exception as e:  # Stored by an older version, or by hand.
                        logger.error("Cannot load the queued mail %s: %r", key, e)
                        outcomes.unloadable(
                            key, draft, attempts, f"cannot load the message: {e!r}"
                        )

            attempt(claimed(), self.transport, settings, outcomes)
            sent.settle()  # The last key is stored before the claim ends.
            execute(claims, DONE, {"done": done})
            for delay, jobs in outcomes.retries.items():
                for attempts, group in _by_attempts(jobs).items():
                    drafts = [job.draft for job in group]
                    defer(claims, drafts, attempts, delay, [job.last_error for job in group])
            if outcomes.failures:
                fail(claims, outcomes.failures)
            if outcomes.dropped_ones:
                log_decided(claims, outcomes.dropped_ones)
            for name, n in outcomes.counts.items():
                execute(claims, COUNT, (name, n))
        for name, n in outcomes.counts.items():
            self._count(name, n)
        return True


class _SentKeys:
    """The worker's autocommit session: sent keys, pruning, and the wake-ups it LISTENs to.

    An asynchronous psycopg2 connection, so that the key of each sent message is written
    without waiting for PostgreSQL's answer: the key leaves for the server as soon as the
    message was accepted (psycopg2 sends a statement whole at once, unless the socket's
    buffer is full), and its answer is read before the session's next statement, while
    the next message is on its way. The keys of messages accepted before that answer
    came go together in the next statement.
    """

    # Prepared with the first keys, by sessions that write any: PostgreSQL would parse
    # and plan it again for every message.
    PREPARE = (
        "PREPARE kinto_emailer_sent_keys (text[]) AS"
        " INSERT INTO kinto_emailer_sent (key) SELECT unnest($1) ON CONFLICT DO NOTHING"
    )
    INSERT = "EXECUTE kinto_emailer_sent_keys (%s)"

    def __init__(self, dsn: str, timeout: float) -> None:
        self.timeout = timeout
        self.connection = psycopg2.connect(dsn, async_=True)
        self._unanswered = False
        self._prepared = False
        # Keys of messages sent while the last keys written were not answered yet.
        self._waiting: list[str] = []
        try:
            self._wait()
            self._cursor = self.connection.cursor()
            # A key is written after every message: not waiting for the disk at each one
            # saves a WAL flush per message. Only a crash of PostgreSQL itself can then
            # lose the last keys written (well under a second): those messages go out
            # again.
            self.execute("SET synchronous_commit = off")
            self.execute(f"LISTEN {CHANNEL}")
        except BaseException:
            self.connection.close()
            raise

    def _wait(self) -> None:
        """Until the statement under way is answered; its error, if it failed."""
        while (state := self.connection.poll()) != psycopg2.extensions.POLL_OK:
            waited: tuple[list[Any], list[Any]] = ([self.connection], [])
            if state != psycopg2.extensions.POLL_READ:
                waited = waited[::-1]
            if not any(select.select(*waited, [], self.timeout)):
                raise psycopg2.OperationalError("PostgreSQL did not answer the worker")

    def execute(self, query: str, parameters: Any = None) -> list[tuple]:
        self.settle()
        self._cursor.execute(query, parameters)
        self._wait()
        return self._cursor.fetchall() if self._cursor.description else []

    def add(self, key: str) -> None:
        """Write ``key`` now, or with the others sent meanwhile once the last are answered:
        messages sent over several connections do not each wait for a round trip."""
        self._waiting.append(key)
        if self._unanswered and self.connection.poll() == psycopg2.extensions.POLL_OK:
            self._unanswered = False
        if not self._unanswered:
            self._write_waiting()

    def _write_waiting(self) -> None:
        keys, self._waiting = self._waiting, []
        # After an error the worker opens a new session: this one is not used again.
        statement = self.INSERT if self._prepared else f"{self.PREPARE}; {self.INSERT}"
        self._cursor.execute(statement, (keys,))
        self._prepared = self._unanswered = True

    def settle(self) -> None:
        """Write the keys still waiting; raise if any key written was not stored."""
        while self._unanswered or self._waiting:
            if self._unanswered:
                self._unanswered = False
                self._wait()
            if self._waiting:
                self._write_waiting()

    def woken(self, timeout: float, bell: "_Bell | None" = None) -> bool:
        """Whether a wake-up came (or ``bell`` rang) since the last call, waiting
        ``timeout`` for one."""
        self.settle()
        notifies = self.connection.notifies
        rung = False
        if not notifies:
            watched = [self.connection] if bell is None else [self.connection, bell]
            readable = select.select(watched, [], [], timeout)[0]
            if self.connection in readable:
                self._wait()  # Reads what came: notifications.
            rung = bell in readable and bell.answer()
        woken = bool(notifies) or rung
        notifies.clear()
        return woken


class _Bell:
    """How a worker's thread that queued messages wakes its sender, at once: the NOTIFYs
    of a process come at most every WAKE_INTERVAL."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)

    def fileno(self) -> int:
        return self._read

    def ring(self) -> None:
        with contextlib.suppress(BlockingIOError):  # Full: it rang already.
            os.write(self._write, b"!")

    def answer(self) -> bool:
        """Whether it rang since the last answer."""
        with contextlib.suppress(BlockingIOError):
            return bool(os.read(self._read, 4096))
        return False

    def close(self) -> None:
        os.close(self._read)
        os.close(self._write)


Execute = Callable[[str, dict[str, Any]], list[tuple]]


class _HeldUsage:
    """The hourly usage of one expansion (see :mod:`kinto_emailer.quotas`): every row it
    may count against, locked in one pass (:data:`USAGE_HOLD`) until its transaction
    ends, and written back at its end with the count of the mail it dropped."""

    def __init__(
        self,
        run: Execute,
        limited: Callable[[int], None],
        keys: Iterable[tuple[datetime.datetime, list[str]]],
    ) -> None:
        self._run = run
        self._limited = limited
        self._dropped = 0
        pairs = sorted({(window, key) for window, names in keys for key in names})
        rows = (
            run(USAGE_HOLD, {"windows": [w for w, _ in pairs], "keys": [k for _, k in pairs]})
            if pairs
            else []
        )
        self._usage = {(window, key): Usage(used, dropped) for window, key, used, dropped in rows}

    @contextlib.contextmanager
    def usage(self, window: datetime.datetime, keys: Sequence[str]) -> Iterator[dict[str, Usage]]:
        yield {key: self._usage[window, key] for key in keys}

    def limited(self, n: int) -> None:
        self._dropped += n

    def write(self) -> None:
        if self._dropped:
            self._limited(self._dropped)
        if self._usage:
            self._run(
                USAGE_UPDATE,
                {
                    "windows": [window for window, _ in self._usage],
                    "keys": [key for _, key in self._usage],
                    "used": [u.used for u in self._usage.values()],
                    "dropped": [u.dropped for u in self._usage.values()],
                },
            )


def _by_attempts(jobs: list[Job]) -> dict[int, list[Job]]:
    groups: dict[int, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.attempts, []).append(job)
    return groups


class _Outcomes:
    """What happened to claimed messages: sent keys at once, the rest with the claim."""

    def __init__(self, sent: "_SentKeys", count: Counter) -> None:
        self.keys = sent
        self._count = count
        self.retries: dict[float, list[Job]] = {}
        self.failures: list[Failed] = []
        self.dropped_ones: list[Entry] = []
        self.counts: dict[str, int] = {}

    def _add(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1

    def sent(self, job: Job) -> None:
        # Right after the server accepted it: only a worker killed in between sends a
        # message twice.
        self.keys.add(job.draft.key)
        report_sent(job.draft, self._count)

    def dropped(self, job: Job) -> None:
        self.dropped_ones.append(Entry.of(job.draft, "dropped", detail=deliverylog.TOO_OLD))
        self._add("dropped")

    def retry(self, job: Job, delay: float) -> None:
        self.retries.setdefault(delay, []).append(job)
        self._add("retried")

    def failed(self, job: Job) -> None:
        self.unloadable(job.draft.key, job.draft.to_json(), job.attempts, job.last_error)

    def unloadable(self, key: str, draft: dict[str, Any], attempts: int, error: str) -> None:
        self.failures.append(Failed(key, draft, attempts, error))
        self._add("failed")


class WorkerThread:
    """A worker in a thread of the Kinto process (``kinto.emailer.worker``)."""

    def __init__(self, worker: Worker) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(worker,), name="kinto-emailer-worker", daemon=True
        )

    def _run(self, worker: Worker) -> None:
        try:
            worker.run(self._stop)
        except Exception:
            logger.exception("The mail worker stopped")

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Let the message under way go out (for ``timeout`` seconds at most), then stop."""
        self._stop.set()
        self._thread.join(timeout)


class JobQueue:
    """Delivery with PostgreSQL storage: messages queued in Kinto's transaction."""

    def __init__(
        self,
        storage: Any,
        dsn: str,
        settings: EmailerSettings,
        transport: Transport,
        count: Counter,
        notices: NoticesEach,
    ) -> None:
        self.storage = storage
        self.notices = notices
        self.dsn = dsn
        self.settings = settings
        self.transport = transport
        self.worker: WorkerThread | None = None
        self.waker = Waker(dsn)
        self.hooks = HookIndex(storage, dsn, self._execute)
        self.log = deliverylog.PostgreSQLLog(functools.partial(session, dsn), settings.log_max_age)
        self._count = count

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Any]:
        """The connection of Kinto's storage, in its current transaction."""
        with storagesql.connection_of(self.storage) as connection:
            yield connection

    def _execute(self, query: str, parameters: dict[str, Any]) -> list[tuple]:
        with self._connection() as connection:
            return execute(connection, query, parameters)

    @contextlib.contextmanager
    def _savepoint(self, name: str) -> Iterator[None]:
        """Statements whose failure rolls back only themselves, not Kinto's transaction."""
        self._execute(f"SAVEPOINT {name}", {})
        try:
            yield
        except BaseException:
            self._execute(f"ROLLBACK TO SAVEPOINT {name}", {})
            raise
        self._execute(f"RELEASE SAVEPOINT {name}", {})

    def record(self, change: Change) -> None:
        """Take note of ``change`` in the current transaction of Kinto's storage.

        In a savepoint, in one round trip: if the note cannot be written (the queue's
        tables are missing...), the change's mail is lost with an error, and the client's
        write is kept (a failed statement would abort its transaction).
        """
        try:
            self._execute(RECORD, {"change": json.dumps(change)})
            self.waker.after_commit()
        except Exception as e:
            self._execute(f"ROLLBACK TO SAVEPOINT {RECORD_SAVEPOINT}", {})
            logger.error(
                "No mail about %s: it could not be noted (run kinto migrate if the mail"
                " queue's tables are missing): %s",
                describe(change),
                e,
            )

    def defer(self, drafts: list[Draft]) -> int:
        """Queue ``drafts`` in the current transaction of Kinto's storage; their bytes."""
        with self._connection() as connection:
            queued = defer(connection, drafts)
        self.waker.after_commit()
        self._count("queued", len(drafts))
        return queued

    def expand(self) -> int:
        """Turn up to :data:`CLAIM_SIZE` committed changes into messages; how many.

        Changes are worked out in turn until their messages reach :data:`EXPAND_BYTES`:
        the rest are let go, for the next claim.

        In one transaction of Kinto's storage: the messages, digest entries and
        preferences of a change are stored with its removal, or not at all. When they
        cannot be worked out together, each change is on its own, in a transaction of its
        own: one that fails alone goes to the failed list, and the others mail.
        """
        with transaction.manager:
            self._execute("SET LOCAL jit = off", {})  # See fair_claim.
            rows = self._execute(CLAIM_CHANGES, {"limit": CLAIM_SIZE})
            if not rows:
                return 0
            try:
                with self._savepoint("kinto_emailer_expand"):
                    return self._expand(rows)
            except Exception:
                logger.exception("Could not work out %s changes at once: one by one", len(rows))
        # The claim is let go: each change is claimed again in a transaction of its own,
        # which holds the locks of no other change while it waits for its own.
        for change_id, _ in rows:
            self._expand_alone(change_id)
        return len(rows)

    def _expand(self, rows: list[tuple]) -> int:
        """Work out ``rows`` in turn, up to :data:`EXPAND_BYTES` of messages; how many.

        The messages of the changes are decided first; then the hourly usage and the
        preferences they may touch are locked, all at once, and only then are they
        routed: two workers whose changes share buckets or recipients wait for each
        other at most once, never in a cycle.
        """
        decided = []
        size = 0
        each = self.notices([change for _, change in rows])
        for (change_id, _), (change, notices) in zip(rows, each, strict=False):
            decided.append((change_id, change, notices))
            size += sum(n.size for n in notices)
            if size >= EXPAND_BYTES:
                break
        keys = [listener.usage_of(change, notices) for _, change, notices in decided if notices]
        usage = _HeldUsage(self._execute, self.limited, keys)
        recipients = {n.recipient for _, _, notices in decided for n in notices}
        preferences = PreferenceStore(self.storage)
        # Inboxes too: writing one holds its timestamp row until commit, as a preference.
        preferences.lock(recipients)
        # Read once for every change, under their locks.
        found = preferences.read_many(recipients) if recipients else {}
        known = {key: found.get(key, Preferences()) for key in recipients}
        drafts: list[Draft] = []
        notifications: list[Notification] = []
        logged: list[Entry] = []
        for _, change, notices in decided:
            routed = listener.routed(change, notices, usage, self.storage, self.settings, known)
            drafts += routed.mail
            notifications += routed.notifications
            # Turned off and over a bound too: whatever the change's hooks ask for.
            logged += routed.log[: self.settings.max_messages_per_change]
        if drafts:
            self.defer(drafts)
        if notifications:
            now = datetime.datetime.now(datetime.UTC)
            InboxStore(self.storage, self.settings).add(notifications, now)
            self._count("web", len(notifications))
        if logged:
            with self._connection() as connection:
                log_decided(connection, logged)
        usage.write()
        done = [change_id for change_id, _, _ in decided]
        self._execute("DELETE FROM kinto_emailer_changes WHERE id = ANY(%(ids)s)", {"ids": done})
        return len(done)

    def _expand_alone(self, change_id: int) -> None:
        """Work out one change in a transaction of its own, unless another worker claimed
        it meanwhile; a change that cannot be worked out goes to the failed list."""
        with transaction.manager:
            rows = self._execute(CLAIM_CHANGE, {"id": change_id})
            if not rows:
                return
            [(_, change)] = rows
            try:
                with self._savepoint("kinto_emailer_expand"):
                    self._expand(rows)
            except Exception as e:
                logger.exception("Could not work out %s: kept as failed", describe(change))
                failed = Failed(
                    f"change-{change_id}",
                    {"recipient": "", "uri": describe(change), "change": change},
                    0,
                    f"cannot work out the change: {e!r}",
                )
                with self._connection() as connection:
                    fail(connection, [failed])
                self._execute(
                    "DELETE FROM kinto_emailer_changes WHERE id = %(id)s", {"id": change_id}
                )

    def limited(self, n: int) -> None:
        """Counted in the transaction of the mail it concerns, for ``status``."""
        self._execute(COUNT_NAMED, {"name": "limited", "n": n})
        self._count("limited", n)

    def expand_all(self) -> None:
        while self.expand():
            pass

    def make_worker(self) -> Worker:
        return Worker(self.dsn, self.transport, self.settings, self._count, self.expand)

    def flush(self) -> None:
        """Forget every message, sent key and count, and which buckets and collections
        held hooks, as Kinto's flush forgets the data."""
        with session(self.dsn) as connection:
            execute(connection, f"TRUNCATE {', '.join(TABLES)}")
        self.hooks.flushed()

    def start_worker(self) -> None:
        self.worker = WorkerThread(self.make_worker())
        self.worker.start()

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.stop(self.settings.drain_timeout)
            self.worker = None

    def close(self) -> None:
        """When the process stops: its worker, the wake-up it still owes, what it knows
        of hooks."""
        self.stop_worker()
        self.waker.close()
        self.hooks.close()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until no message is due or being sent; False if ``timeout`` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with session(self.dsn) as connection:
            while True:
                [(due,)] = execute(connection, DUE)
                if not due:
                    return True
                if deadline is not None and time.monotonic() > deadline:
                    return False
                time.sleep(0.02)

    def failed(self) -> list[dict[str, Any]]:
        """The messages given up, oldest first."""
        with (
            session(self.dsn) as connection,
            connection.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cursor,
        ):
            cursor.execute(
                "SELECT key, draft, attempts, last_error, failed_at"
                " FROM kinto_emailer_failed ORDER BY failed_at"
            )
            return [dict(row) for row in cursor.fetchall()]

    def resend(self, keys: list[str] | None = None) -> int:
        """Queue failed messages again (those of ``keys``, else all); how many were."""
        with session(self.dsn, autocommit=False) as connection:
            rows = execute(
                connection,
                "DELETE FROM kinto_emailer_failed WHERE %s::text[] IS NULL OR key = ANY(%s)"
                " RETURNING draft",
                (keys, keys),
            )
            drafts = [Draft.from_json(d) for (d,) in rows if "change" not in d]
            if drafts:
                defer(connection, drafts)
            # A change that could not be worked out is worked out again.
            for (d,) in rows:
                if "change" in d:
                    execute(connection, RECORD_INSERT, {"change": json.dumps(d["change"])})
        if rows:
            self.waker.wake()
        return len(rows)

    def status(self) -> dict[str, int]:
        """Counts of messages, for ``kinto-emailer status``."""
        with session(self.dsn) as connection:
            counts = dict(execute(connection, STATUS))
        counts["queued"] = max(0, counts["due"] - counts["sending"])
        return {name: int(counts.get(name, 0)) for name in STATUS_NAMES}
