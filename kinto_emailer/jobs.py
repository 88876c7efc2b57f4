"""Delivery jobs in PostgreSQL, with procrastinate.

With Kinto's PostgreSQL storage, a change's messages become procrastinate jobs written
in Kinto's own transaction, on its own connection: they commit or roll back with the
data. Workers (a thread of each Kinto process, or ``kinto-emailer worker`` processes on
any machine) take jobs with ``SELECT ... FOR UPDATE SKIP LOCKED``, so two workers never
run the same job, and a job of a killed worker is taken again once its heartbeat stops.

A job holds the messages of one event. A message's idempotency key is written to
``kinto_emailer_sent`` as soon as the SMTP server accepted it, and a message whose key
is there is not sent again.
"""

import asyncio
import datetime
import logging
import threading
import time
from typing import Any

import procrastinate
import psycopg
import psycopg.rows
import psycopg.types.json
import sqlalchemy
from procrastinate.contrib.psycopg2 import Psycopg2Connector
from psycopg2.extras import RealDictCursor

from kinto_emailer.delivery import Counter, Job, Transport, attempt
from kinto_emailer.messages import Draft
from kinto_emailer.settings import EmailerSettings


logger = logging.getLogger(__name__)

QUEUE = "kinto_emailer"
TASK = "kinto_emailer.send"
SCHEMA = """
CREATE TABLE IF NOT EXISTS kinto_emailer_sent (
    key TEXT PRIMARY KEY,
    sent_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS kinto_emailer_sent_at ON kinto_emailer_sent (sent_at);
CREATE TABLE IF NOT EXISTS kinto_emailer_failed (
    key TEXT PRIMARY KEY,
    draft JSONB NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT NOT NULL,
    failed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS kinto_emailer_counts (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
"""


def send(
    context: procrastinate.JobContext, drafts: list[dict[str, str]], attempts: int = 0
) -> None:
    """One job: the messages of one event, or those to try again after the same delay."""
    context.additional_context["sender"].send([Draft.from_json(d) for d in drafts], attempts)


def make_app(connector: Any) -> tuple[procrastinate.App, Any]:
    """A procrastinate app knowing the plugin's task, and that task."""
    app = procrastinate.App(connector=connector)
    # A job that fails on something else than SMTP (the database restarting) runs again.
    retry = procrastinate.RetryStrategy(max_attempts=5, linear_wait=30)
    task = app.task(name=TASK, queue=QUEUE, pass_context=True, retry=retry)(send)
    return app, task


def defer(
    task: Any, connection: Any, drafts: list[Draft], attempts: int = 0, **options: Any
) -> None:
    """One job for ``drafts``, written on ``connection`` (in its transaction)."""
    task.configure(connection=connection, **options).defer(
        drafts=[draft.to_json() for draft in drafts], attempts=attempts
    )


def conninfo(storage_url: str) -> str:
    """The libpq address of Kinto's storage URL (which may name a SQLAlchemy driver)."""
    url = sqlalchemy.engine.make_url(storage_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


class _TransactionConnector(Psycopg2Connector):
    """Defers jobs on a given psycopg2 connection: the one of Kinto's transaction."""

    def execute_query_all_with_connection(
        self, connection: Any, query: str, **arguments: Any
    ) -> list[dict[str, Any]]:
        with connection.cursor(cursor_factory=RealDictCursor) as cursor:
            cursor.execute(query, self._wrap_json(arguments))
            return cursor.fetchall()


def install_schema(dsn: str) -> None:
    """procrastinate's schema (once) and the plugin's tables, idempotently."""
    with psycopg.connect(dsn, autocommit=True) as connection:
        installed = connection.execute("SELECT to_regclass('procrastinate_jobs')").fetchone()
        if installed is None or installed[0] is None:
            app = procrastinate.App(connector=procrastinate.SyncPsycopgConnector(conninfo=dsn))
            with app.open():
                app.schema_manager.apply_schema()
        connection.execute(SCHEMA)


class Sender:
    """The worker side of a job: send its message once, or decide what happens next."""

    def __init__(
        self,
        dsn: str,
        transport: Transport,
        settings: EmailerSettings,
        count: Counter,
    ) -> None:
        self.dsn = dsn
        self.transport = transport
        self.retry_delays = settings.retry_delays
        self.max_age = datetime.timedelta(seconds=settings.max_age)
        self._count = count
        self._connection: psycopg.Connection | None = None
        # Defers on this sender's own connection (retries, sending failed mail again).
        _, self.task = make_app(procrastinate.SyncPsycopgConnector())

    def _connected(self) -> psycopg.Connection:
        if self._connection is None or self._connection.closed:
            self._connection = psycopg.connect(self.dsn, autocommit=True)
            # A key is written after every message: not waiting for the disk at each one
            # saves a WAL flush per message. Only a crash of PostgreSQL itself can then
            # lose the last keys written (well under a second): those messages go out again.
            self._connection.execute("SET synchronous_commit = off")
        return self._connection

    def _execute(self, query: str, *params: Any) -> Any:
        return self._connected().execute(query, params)

    def count(self, name: str) -> None:
        self._execute(
            "INSERT INTO kinto_emailer_counts (name, value) VALUES (%s, 1)"
            " ON CONFLICT (name) DO UPDATE SET value = kinto_emailer_counts.value + 1",
            name,
        )
        self._count(name, 1)

    def send(self, drafts: list[Draft], attempts: int) -> None:
        """Send the messages not sent yet; retry or give up the others."""
        sent = self._execute(
            "SELECT key FROM kinto_emailer_sent WHERE key = ANY(%s)", [d.key for d in drafts]
        ).fetchall()
        sent_keys = {key for (key,) in sent}
        todo = [Job(draft, attempts) for draft in drafts if draft.key not in sent_keys]
        outcomes = _Outcomes(self)
        attempt(todo, self.transport, self.retry_delays, self.max_age, outcomes)
        for delay, group in outcomes.retries.items():
            later = {"seconds": delay}
            defer(self.task, self._connected(), group, attempts + 1, schedule_in=later)

    def sent(self, draft: Draft) -> None:
        # Right after the server accepted it: only a worker killed in between sends a
        # message twice.
        self._execute(
            "INSERT INTO kinto_emailer_sent (key) VALUES (%s) ON CONFLICT DO NOTHING", draft.key
        )
        self._count("sent", 1)

    def failed(self, job: Job) -> None:
        self._execute(
            "INSERT INTO kinto_emailer_failed (key, draft, attempts, last_error)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (key) DO UPDATE SET attempts ="
            " EXCLUDED.attempts, last_error = EXCLUDED.last_error, failed_at = now()",
            job.draft.key,
            psycopg.types.json.Jsonb(job.draft.to_json()),
            job.attempts,
            job.last_error,
        )
        self.count("failed")


class _Outcomes:
    """What happened to the messages of one job, kept in PostgreSQL as it happens."""

    def __init__(self, sender: Sender) -> None:
        self.sender = sender
        self.retries: dict[float, list[Draft]] = {}

    def sent(self, job: Job) -> None:
        self.sender.sent(job.draft)

    def dropped(self, job: Job) -> None:
        self.sender.count("dropped")

    def retry(self, job: Job, delay: float) -> None:
        self.retries.setdefault(delay, []).append(job.draft)
        self.sender.count("retried")

    def failed(self, job: Job) -> None:
        self.sender.failed(job)


PRUNE = """
DELETE FROM kinto_emailer_sent WHERE sent_at < now() - make_interval(secs => %(max_age)s)
"""


async def _maintain(app: procrastinate.App, every: float, settings: EmailerSettings) -> None:
    """Jobs of a worker that stopped sending heartbeats (killed) go back to the queue.

    Keys older than ``max_age`` are forgotten: a message that old is dropped anyway.
    """
    while True:
        await asyncio.sleep(every)
        stalled = await app.job_manager.get_stalled_jobs(
            seconds_since_heartbeat=settings.stalled_timeout
        )
        for job in stalled:
            logger.warning("Job %s of a stalled worker goes back to the queue", job.id)
            await app.job_manager.retry_job(job)
        await app.connector.execute_query_async(PRUNE, max_age=settings.max_age)


async def run_worker(dsn: str, sender: Sender, settings: EmailerSettings) -> None:
    """Take and run jobs until cancelled; several may run against one database.

    New jobs wake the worker at once (LISTEN/NOTIFY); retries scheduled for later are
    found by polling, often enough for the shortest retry delay.
    """
    app, _ = make_app(procrastinate.PsycopgConnector(conninfo=dsn))
    stalled_timeout = settings.stalled_timeout
    heartbeat = min(10.0, stalled_timeout / 3)
    async with app.open_async():
        recovery = asyncio.create_task(_maintain(app, heartbeat, settings))
        try:
            await app.run_worker_async(
                queues=[QUEUE],
                concurrency=1,
                install_signal_handlers=False,
                additional_context={"sender": sender},
                update_heartbeat_interval=heartbeat,
                stalled_worker_timeout=stalled_timeout,
                delete_jobs="successful",
                fetch_job_polling_interval=min(
                    5.0, max(0.1, min(sender.retry_delays, default=10.0) / 2)
                ),
            )
        finally:
            recovery.cancel()
            sender.transport.close()


class WorkerThread:
    """A worker in a thread of the Kinto process (``kinto.emailer.worker``)."""

    def __init__(self, dsn: str, sender: Sender, settings: EmailerSettings) -> None:
        self._loop = asyncio.new_event_loop()
        self._task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(
            target=self._run,
            args=(run_worker(dsn, sender, settings),),
            name="kinto-emailer-worker",
            daemon=True,
        )

    def _run(self, worker: Any) -> None:
        self._task = self._loop.create_task(worker)
        try:
            self._loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        except Exception:
            logger.exception("The mail worker stopped")
        finally:
            self._loop.close()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Let the job under way finish (for ``timeout`` seconds at most), then stop."""
        if self._task is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(timeout)


class JobQueue:
    """Delivery with PostgreSQL storage: jobs in Kinto's transaction, sent by workers."""

    def __init__(
        self,
        storage: Any,
        dsn: str,
        settings: EmailerSettings,
        transport: Transport,
        count: Counter,
    ) -> None:
        self.storage = storage
        self.dsn = dsn
        self.settings = settings
        self.sender = Sender(dsn, transport, settings, count)
        _, self._task = make_app(_TransactionConnector())
        self.worker: WorkerThread | None = None
        self._count = count

    def defer(self, drafts: list[Draft]) -> None:
        """Jobs for ``drafts``, in the current transaction of Kinto's storage."""
        with self.storage.client.connect() as session:
            defer(self._task, session.connection().connection.driver_connection, drafts)
        self._count("queued", len(drafts))

    def install(self) -> None:
        install_schema(self.dsn)

    def flush(self) -> None:
        """Forget every job, sent key and count, as Kinto's flush forgets the data."""
        with psycopg.connect(self.dsn, autocommit=True) as connection:
            connection.execute(
                f"DELETE FROM procrastinate_jobs WHERE queue_name = '{QUEUE}';"
                "TRUNCATE kinto_emailer_sent, kinto_emailer_failed, kinto_emailer_counts"
            )

    def start_worker(self) -> None:
        self.worker = WorkerThread(self.dsn, self.sender, self.settings)
        self.worker.start()

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.stop(self.settings.drain_timeout)
            self.worker = None

    def join(self, timeout: float | None = None) -> bool:
        """Wait until no job is due or running; False if ``timeout`` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with psycopg.connect(self.dsn, autocommit=True) as connection:
            while True:
                (pending,) = connection.execute(_PENDING).fetchone()  # type: ignore[misc]
                if not pending:
                    return True
                if deadline is not None and time.monotonic() > deadline:
                    return False
                time.sleep(0.02)

    def failed(self) -> list[dict[str, Any]]:
        """The messages given up, oldest first."""
        with psycopg.connect(self.dsn, autocommit=True) as connection:
            cursor = connection.cursor(row_factory=psycopg.rows.dict_row)
            return cursor.execute(
                "SELECT key, draft, attempts, last_error, failed_at"
                " FROM kinto_emailer_failed ORDER BY failed_at"
            ).fetchall()

    def resend(self, keys: list[str] | None = None) -> int:
        """Queue failed messages again (those of ``keys``, else all); how many were."""
        with psycopg.connect(self.dsn) as connection:
            rows = connection.execute(
                "DELETE FROM kinto_emailer_failed WHERE %s::text[] IS NULL OR key = ANY(%s)"
                " RETURNING draft",
                (keys, keys),
            ).fetchall()
            if rows:
                defer(self.sender.task, connection, [Draft.from_json(d) for (d,) in rows])
        return len(rows)

    def status(self) -> dict[str, int]:
        """Counts of the queue, for ``kinto-emailer status``."""
        with psycopg.connect(self.dsn, autocommit=True) as connection:
            counts = dict(connection.execute(_STATUS).fetchall())
        return {name: int(counts.get(name, 0)) for name in STATUS_NAMES}


_PENDING = f"""
SELECT count(*) FROM procrastinate_jobs
 WHERE queue_name = '{QUEUE}'
   AND (status = 'doing' OR (status = 'todo' AND coalesce(scheduled_at, now()) <= now()))
"""
STATUS_NAMES = ("queued", "scheduled", "sending", "sent", "retried", "failed", "dropped")
_STATUS = f"""
SELECT 'queued', count(*) FROM procrastinate_jobs
 WHERE queue_name = '{QUEUE}' AND status = 'todo' AND coalesce(scheduled_at, now()) <= now()
UNION ALL
SELECT 'scheduled', count(*) FROM procrastinate_jobs
 WHERE queue_name = '{QUEUE}' AND status = 'todo' AND scheduled_at > now()
UNION ALL
SELECT 'sending', count(*) FROM procrastinate_jobs
 WHERE queue_name = '{QUEUE}' AND status = 'doing'
UNION ALL
SELECT 'sent', count(*) FROM kinto_emailer_sent
UNION ALL
SELECT 'failed', count(*) FROM kinto_emailer_failed
UNION ALL
SELECT name, value FROM kinto_emailer_counts WHERE name IN ('retried', 'dropped')
"""
