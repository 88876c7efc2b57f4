"""Two workers working out changes of the same buckets at once never deadlock."""

import collections
import copy
import logging
import threading

import psycopg2

from tests.support import EmailerWebTest, eventually, skip_unless_postgresql
from tests.test_postgresql import PostgreSQL


READERS = {"a": "x@example.com", "b": "y@example.com"}
WAITING = """
SELECT count(*) FROM pg_stat_activity
 WHERE datname = current_database() AND wait_event_type = 'Lock'
"""


def pausing(each, reached, gate):
    """``each``'s changes in turn, waiting for ``gate`` once the first one is out."""

    def paused(*args, **kw):
        iterator = each(*args, **kw)
        yield next(iterator)
        reached.set()
        gate.wait(30)
        yield from iterator

    return paused


def one_by_one(each, reached=None, gate=None):
    """``each``, failing for a claim of several changes: they are worked out one by one.
    Before the second change alone, waits for ``gate`` once ``reached`` is set."""
    alone = 0

    def notices(changes):
        nonlocal alone
        if len(changes) > 1:
            raise RuntimeError("a claim that cannot be worked out as a whole")
        alone += 1
        if alone == 2 and reached is not None:
            reached.set()
            gate.wait(30)
        return each(changes)

    return notices


@skip_unless_postgresql
class CrossingExpansionsTest(PostgreSQL, EmailerWebTest):
    extra_settings = {"emailer.worker": "false"}
    channels = ["email"]

    def setUp(self):
        super().setUp()
        self.queue = self.registry.emailer_delivery.queue
        self.addCleanup(self.queue.stop_worker)
        for bucket, reader in READERS.items():
            hook = {
                "template": "{uri}",
                "recipients": [reader],
                "resource_name": "record",
                "channels": self.channels,
            }
            self.app.put_json(f"/buckets/{bucket}", headers=self.headers)
            self.app.put_json(f"/buckets/{bucket}/collections/c", headers=self.headers)
            self.put_hooks(f"/buckets/{bucket}", hook)
        self.queue.expand_all()
        # One worker gets a1 and b1, in this order; the other b2 and a2 (fair claims
        # order the changes of a round by their ids).
        for bucket, record in (("a", "1"), ("b", "1"), ("b", "2"), ("a", "2")):
            self.app.put_json(
                f"/buckets/{bucket}/collections/c/records/{record}", headers=self.headers
            )
        self.connection = psycopg2.connect(self.queue.dsn)
        self.addCleanup(self.connection.close)

    def execute(self, query, *parameters):
        with self.connection.cursor() as cursor:
            cursor.execute(query, parameters)
            return cursor.fetchall() if cursor.description else []

    def waiting(self):
        """Sessions waiting for a lock (a new transaction: PostgreSQL keeps the
        statistics it read for the rest of one)."""
        (count,) = self.execute(WAITING)[0]
        self.connection.commit()
        return count

    def crossing(self, pausing, notices):
        """Two workers expand at once: the first gets a1 and b1, and its ``notices``
        (``pausing`` the queue's) wait at the gate; the second, with ``notices``, gets b2
        and a2 meanwhile."""
        ids = [i for (i,) in self.execute("SELECT id FROM kinto_emailer_changes ORDER BY id")]
        self.assertEqual(len(ids), 4)
        # Kept from the first worker's claim, for the second.
        self.execute("SELECT 1 FROM kinto_emailer_changes WHERE id = ANY(%s) FOR UPDATE", ids[2:])
        reached, gate = threading.Event(), threading.Event()
        first, second = copy.copy(self.queue), copy.copy(self.queue)
        first.notices = pausing(self.queue.notices, reached, gate)
        second.notices = notices
        workers = [threading.Thread(target=first.expand), threading.Thread(target=second.expand)]
        workers[0].start()
        self.assertTrue(reached.wait(30))
        self.connection.commit()
        workers[1].start()
        # The second worker is done, or waits for a row the first one holds.
        self.assertTrue(eventually(lambda: not workers[1].is_alive() or self.waiting()))
        gate.set()
        for worker in workers:
            worker.join(30)
        self.assertEqual(self.queue.status()["changes"], 0)

    def test_two_expansions_over_the_same_buckets_in_crossing_orders(self):
        with self.assertNoLogs("kinto_emailer", logging.ERROR):
            self.crossing(pausing, self.queue.notices)
        self.assertMailed()

    def test_two_expansions_one_by_one_over_the_same_buckets_in_crossing_orders(self):
        # Claims that fail as a whole: each change is worked out alone, and lets go of
        # its locks before the next one takes any.
        self.crossing(one_by_one, one_by_one(self.queue.notices))
        self.assertEqual(self.queue.failed(), [])
        self.assertMailed()

    def assertMailed(self):  # noqa: N802
        self.queue.start_worker()
        mails = self.sink.wait_for(4)
        self.assertTrue(self.queue.join(10))
        self.assertEqual(
            collections.Counter(m.rcpt_tos[0] for m in mails),
            {reader: 2 for reader in READERS.values()},
        )


@skip_unless_postgresql
class CrossingWebExpansionsTest(CrossingExpansionsTest):
    """The same, writing the readers' inboxes too (one timestamp row each)."""

    channels = ["email", "web"]
