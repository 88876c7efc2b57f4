"""Waking the PostgreSQL workers: no NOTIFY from writes that have nothing to mail, and a
few per burst of writes that have (never one per write), while every mail still goes."""

import collections
import json
import select
import tempfile
import threading
import time
import unittest

import psycopg2
from kinto.events import ServerFlushed

from kinto_emailer import jobs, wakeups
from kinto_emailer.delivery import DirectoryTransport
from kinto_emailer.settings import EmailerSettings
from tests.support import (
    POSTGRESQL_URL,
    EmailerWebTest,
    eventually,
    postgresql_available,
    skip_unless_postgresql,
)
from tests.test_postgresql import PostgreSQL


HOOK = {"template": "{uri}", "recipients": ["a@example.com"]}


class Listener:
    """A session of its own that LISTENs to the workers' channel, as a worker does."""

    def __init__(self, dsn: str) -> None:
        self.connection = psycopg2.connect(dsn)
        self.connection.autocommit = True
        with self.connection.cursor() as cursor:
            cursor.execute(f"LISTEN {wakeups.CHANNEL}")

    def received(self, seconds: float) -> int:
        """The notifications that arrive within ``seconds``."""
        deadline = time.monotonic() + seconds
        count = 0
        while (left := deadline - time.monotonic()) > 0:
            select.select([self.connection], [], [], left)
            self.connection.poll()
            count += len(self.connection.notifies)
            self.connection.notifies.clear()
        return count

    def close(self) -> None:
        self.connection.close()


@skip_unless_postgresql
class WakeupTest(PostgreSQL, EmailerWebTest):
    def setUp(self):
        super().setUp()
        self.queue = self.registry.emailer_delivery.queue
        for bucket in ("quiet", "b"):
            self.app.put_json(f"/buckets/{bucket}", headers=self.headers)
            self.app.put_json(f"/buckets/{bucket}/collections/c", headers=self.headers)
        self.put_hooks("/buckets/b/collections/c", {**HOOK, "resource_name": "record"})
        self.listener = Listener(self.queue.dsn)
        self.addCleanup(self.listener.close)

    def test_writes_where_no_hook_applies_note_nothing_and_wake_nobody(self):
        # Hooks of another collection of the bucket do not apply to "quiet"'s objects.
        self.app.put_json("/buckets/b/collections/other", headers=self.headers)
        self.listener.received(1)
        writes = [
            lambda: self.create_record("/buckets/quiet/collections/c/records"),
            lambda: self.app.put_json("/buckets/quiet/groups/g", headers=self.headers),
            lambda: self.app.put_json("/buckets/quiet/collections/d", headers=self.headers),
            lambda: self.create_record("/buckets/b/collections/other/records"),
        ]
        for write in writes:
            write()
            self.assertEqual(self.listener.received(1), 0)
        self.assertEqual(self.queue.status()["changes"], 0)
        # Wakes arrive on the listening session: the test can fail.
        self.create_record("/buckets/b/collections/c/records")
        self.assertGreater(self.listener.received(2), 0)
        self.assertEqual(len(self.mails()), 1)

    def test_a_burst_of_writes_wakes_the_workers_a_few_times_and_mails_each_once(self):
        # Longer than a write takes, even on a busy machine: the bound shows whatever its speed.
        self.queue.waker.interval = 2.0
        self.addCleanup(setattr, self.queue.waker, "interval", wakeups.WAKE_INTERVAL)
        self.listener.received(1)
        writes = 60
        started = time.monotonic()
        for i in range(writes):
            self.app.put_json(f"/buckets/b/collections/c/records/r{i}", headers=self.headers)
        received = self.listener.received(1)
        elapsed = time.monotonic() - started
        self.assertLess(received, writes / 5)
        # At most one an interval, whatever the number of writes.
        self.assertLessEqual(received, 1 + elapsed / self.queue.waker.interval)
        self.sink.wait_for(writes, timeout=30)
        self.assertTrue(self.queue.join(30))
        counts = collections.Counter(m.body for m in self.sink.received)
        self.assertEqual(len(counts), writes)
        self.assertEqual(set(counts.values()), {1})


@skip_unless_postgresql
class HooksKnownTest(PostgreSQL, EmailerWebTest):
    """Each Kinto process keeps which buckets and collections have hooks."""

    def setUp(self):
        super().setUp()
        self.index = self.registry.emailer_hooks_index
        self.create_collection()
        # This process now knows that b has no hooks.
        self.create_record("/buckets/b/collections/c/records")
        self.assertEqual(self.mails(), [])

    def test_hooks_saved_by_this_process_apply_to_its_next_request(self):
        self.put_hooks("/buckets/b", HOOK)
        self.create_record("/buckets/b/collections/c/records")
        self.assertEqual(len(self.mails()), 1)

    def test_hooks_saved_through_another_kinto_process_apply_once_it_heard_of_them(self):
        heard = self.index.generation()
        other = self.make_app({"emailer.worker": "false"})
        self.addCleanup(other.app.registry.emailer_delivery.close, 5)
        hooks = {"data": {"kinto-emailer": {"hooks": [HOOK]}}}
        other.put_json("/buckets/b", hooks, headers=self.headers)
        # Within moments of the commit.
        self.assertTrue(eventually(lambda: self.index.generation() != heard))
        self.create_record("/buckets/b/collections/c/records")
        self.assertEqual(len(self.mails()), 1)

    def test_a_flush_makes_every_process_forget_what_it_knew(self):
        # Kinto's flush deletes buckets and their hooks without writing them: a bucket of
        # the same name, made again without hooks, must not be taken for one with hooks.
        other = self.make_app({"emailer.worker": "false"})
        self.addCleanup(other.app.registry.emailer_delivery.close, 5)
        indexes = [self.index, other.app.registry.emailer_hooks_index]
        self.assertTrue(eventually(lambda: None not in [i.generation() for i in indexes]))
        heard = [i.generation() for i in indexes]
        # What Kinto's flush endpoint announces once it deleted everything.
        self.registry.notify(ServerFlushed(None))
        # This process at once, before its next request; the others within moments.
        self.assertNotEqual(self.index.generation(), heard[0])
        self.assertTrue(eventually(lambda: indexes[1].generation() != heard[1]))

    def test_hooks_saved_around_kinto_apply_once_what_was_known_is_too_old(self):
        self.index.max_age = 0.5
        self.addCleanup(setattr, self.index, "max_age", type(self.index).max_age)
        with jobs.session(self.registry.emailer_delivery.queue.dsn) as connection:
            jobs.execute(
                connection,
                "UPDATE objects SET data = data || %s::jsonb"
                " WHERE resource_name = 'bucket' AND id = 'b'",
                (json.dumps({"kinto-emailer": {"hooks": [HOOK]}}),),
            )
        time.sleep(self.index.max_age)
        self.create_record("/buckets/b/collections/c/records")
        self.assertEqual(len(self.mails()), 1)


@skip_unless_postgresql
class BellTest(PostgreSQL, EmailerWebTest):
    """A worker's sender takes the messages its own thread queued at once: it does not
    wait for a NOTIFY, which a process sends at most every interval."""

    extra_settings = {"emailer.worker": "false"}

    def test_the_sender_is_rung_when_its_worker_queued_messages(self):
        queue = self.registry.emailer_delivery.queue
        self.app.put_json("/buckets/b", headers=self.headers)
        self.put_hooks("/buckets/b", {**HOOK, "resource_name": "record"})
        queue.expand_all()
        # Neither a NOTIFY (past the write's own) nor a poll comes within the test.
        queue.waker.interval = 600.0
        self.addCleanup(setattr, queue.waker, "interval", wakeups.WAKE_INTERVAL)

        def expand_late() -> int:
            # Once the sender, woken by the write's NOTIFY, found nothing yet and waits.
            if queue.status()["changes"]:
                time.sleep(0.5)
            return queue.expand()

        worker = jobs.Worker(
            queue.dsn, queue.transport, queue.settings, self.registry.emailer_metrics, expand_late
        )
        worker.poll_interval = 600.0
        stop = threading.Event()
        thread = threading.Thread(target=worker.run, args=(stop,))
        thread.start()
        self.addCleanup(thread.join)
        self.addCleanup(stop.set)
        self.app.put_json("/buckets/b/collections/c", headers=self.headers)
        self.create_record("/buckets/b/collections/c/records")
        self.assertEqual(len(self.sink.wait_for(1, timeout=20)), 1)


@skip_unless_postgresql
class UnmigratedTest(unittest.TestCase):
    """A worker started before ``kinto migrate`` made the plugin's tables."""

    DSN = POSTGRESQL_URL + "_unmigrated"

    def setUp(self):
        self.assertTrue(postgresql_available(self.DSN))
        with jobs.session(self.DSN) as connection:
            for table in jobs.TABLES:
                jobs.execute(connection, f"DROP TABLE IF EXISTS {table}")

    def connections(self) -> int:
        with jobs.session(self.DSN) as connection:
            [(count,)] = jobs.execute(
                connection,
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
        return int(count)

    def test_it_waits_for_its_tables_on_a_few_connections(self):
        directory = self.enterContext(tempfile.TemporaryDirectory())
        worker = jobs.Worker(
            self.DSN, DirectoryTransport(directory), EmailerSettings(), lambda *_: None, lambda: 0
        )
        stop = threading.Event()
        thread = threading.Thread(target=worker.run, args=(stop,))
        thread.start()
        self.addCleanup(thread.join)
        self.addCleanup(stop.set)
        # It tries again every second: the sender, and the thread that listens for changes.
        most = 0
        for _ in range(8):
            time.sleep(0.5)
            most = max(most, self.connections())
        self.assertLessEqual(most, 3)
