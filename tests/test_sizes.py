"""Large changes on PostgreSQL: what one statement inserts, and one claim of changes
turns out, is bounded in bytes, and every message still goes."""

import unittest.mock

from kinto_emailer import jobs
from tests.support import EmailerWebTest, skip_unless_postgresql
from tests.test_postgresql import PostgreSQL


READERS = [f"reader{i}@example.com" for i in range(20)]
RECORDS = 10
# Each message carries the template: 20 readers x 10 records x ~2.6 KB = ~520 KB a change.
TEMPLATE = "{uri} " + "x" * 2000
QUEUE_BYTES = 64 * 1024
EXPAND_BYTES = 256 * 1024
# The bytes of one statement's rows, as PostgreSQL prints their jsonb: no more than the
# JSON that was sent.
STATEMENTS = """
SELECT cmin::text::int, sum(length(draft::text) + 1)
  FROM kinto_emailer_jobs GROUP BY cmin::text::int
"""


@skip_unless_postgresql
class LargeChangeTest(PostgreSQL, EmailerWebTest):
    extra_settings = {
        "emailer.worker": "false",
        "emailer.max_messages_per_bucket_hour": "100000",
        "emailer.max_messages_per_recipient_hour": "10000",
    }

    def setUp(self):
        super().setUp()
        self.queue = self.registry.emailer_delivery.queue
        self.create_collection()
        hook = {"template": TEMPLATE, "recipients": READERS, "resource_name": "record"}
        self.app.put_json(
            "/buckets/b", {"data": {"kinto-emailer": {"hooks": [hook]}}}, headers=self.headers
        )
        self.queue.expand_all()
        self.addCleanup(self.queue.stop_worker)
        for bound in ("QUEUE_BYTES", "EXPAND_BYTES"):
            patcher = unittest.mock.patch.object(jobs, bound, globals()[bound])
            patcher.start()
            self.addCleanup(patcher.stop)

    def batch(self, prefix):
        requests = [
            {"method": "PUT", "path": f"/buckets/b/collections/c/records/{prefix}{i}"}
            for i in range(RECORDS)
        ]
        self.app.post_json("/batch", {"requests": requests}, headers=self.headers)

    def test_a_large_change_is_queued_in_bounded_statements_and_sent(self):
        self.batch("a")
        self.batch("b")
        self.assertEqual(self.queue.status()["changes"], 2)
        # The first change alone goes past EXPAND_BYTES: the second waits for the next claim.
        self.assertEqual(self.queue.expand(), 1)
        status = self.queue.status()
        self.assertEqual((status["changes"], status["queued"]), (1, len(READERS) * RECORDS))
        with jobs.session(self.queue.dsn) as connection:
            statements = jobs.execute(connection, STATEMENTS)
        self.assertGreaterEqual(len(statements), 8)
        self.assertLessEqual(max(size for _, size in statements), QUEUE_BYTES)

        self.queue.start_worker()
        mails = self.sink.wait_for(2 * len(READERS) * RECORDS, timeout=60)
        self.assertEqual(len(mails), 2 * len(READERS) * RECORDS)
        self.assertEqual(sorted({to for mail in mails for to in mail.rcpt_tos}), sorted(READERS))
        self.assertIn("x" * 2000, mails[-1].text)
