"""Fair claims: a bucket flooding the PostgreSQL queue does not hold back another's mail."""

from tests.support import EmailerWebTest, eventually, skip_unless_postgresql
from tests.test_postgresql import PostgreSQL


REVIEWER = "reviewer@example.com"
FLOOD = [f"reader{i}@example.com" for i in range(50)]


def hook(recipients):
    return {"template": "{uri}", "recipients": recipients, "resource_name": "record"}


@skip_unless_postgresql
class FairShareTest(PostgreSQL, EmailerWebTest):
    extra_settings = {
        "emailer.worker": "false",
        "emailer.max_messages_per_bucket_hour": "100000",
        "emailer.max_messages_per_recipient_hour": "10000",
        "batch_max_requests": "50",
    }

    def setUp(self):
        super().setUp()
        self.queue = self.registry.emailer_delivery.queue
        for bucket, recipients in (("flood", FLOOD), ("review", [REVIEWER])):
            self.app.put_json(f"/buckets/{bucket}", headers=self.headers)
            self.app.put_json(f"/buckets/{bucket}/collections/c", headers=self.headers)
            hooks = {"data": {"kinto-emailer": {"hooks": [hook(recipients)]}}}
            self.app.put_json(f"/buckets/{bucket}", hooks, headers=self.headers)
        self.queue.expand_all()
        self.addCleanup(self.queue.stop_worker)

    def flood(self, records, per_change=50):
        """Records created in the flooding bucket, ``per_change`` in each batch."""
        for start in range(0, records, per_change):
            requests = [
                {"method": "PUT", "path": f"/buckets/flood/collections/c/records/r{i:04}"}
                for i in range(start, min(records, start + per_change))
            ]
            self.app.post_json("/batch", {"requests": requests}, headers=self.headers)

    def flood_hooks(self, recipients):
        hooks = {"data": {"kinto-emailer": {"hooks": [hook(recipients)]}}}
        self.app.put_json("/buckets/flood", hooks, headers=self.headers)
        self.queue.expand_all()

    def review(self):
        self.app.put_json("/buckets/review/collections/c/records/r", headers=self.headers)

    def position_of_the_reviewers_mail(self):
        """How many mails of the flooding bucket went out before the reviewer's."""
        self.queue.start_worker()

        def recipients():
            return [m.rcpt_tos[0] for m in list(self.sink.received)]

        self.assertTrue(eventually(lambda: REVIEWER in recipients(), timeout=120))
        return recipients().index(REVIEWER)

    def test_a_reviewers_mail_goes_out_while_another_bucket_has_5000_queued(self):
        self.flood(100, per_change=20)  # 1,000 messages each: max_messages_per_change
        self.queue.expand_all()
        self.assertEqual(self.queue.status()["queued"], 5000)
        self.review()
        self.assertLess(self.position_of_the_reviewers_mail(), 100)
        self.assertGreater(self.queue.status()["queued"], 4000)

    def test_a_reviewers_change_is_worked_out_while_another_bucket_has_150_waiting(self):
        self.flood_hooks([FLOOD[0]])
        self.flood(150, per_change=1)
        self.review()
        self.assertEqual(self.queue.status()["changes"], 151)
        self.assertLess(self.position_of_the_reviewers_mail(), 50)


class OutboxFairShareTest(EmailerWebTest):
    """On memory storage, the outbox works a change out a round at a time, and each round
    gives every bucket with mail waiting a turn."""

    extra_settings = {
        "emailer.max_messages_per_bucket_hour": "100000",
        "emailer.max_messages_per_recipient_hour": "10000",
        "batch_max_requests": "50",
    }

    def setUp(self):
        super().setUp()
        self.outbox = self.registry.emailer_outbox
        for bucket in ("flood", "review"):
            self.app.put_json(f"/buckets/{bucket}", headers=self.headers)
            self.app.put_json(f"/buckets/{bucket}/collections/c", headers=self.headers)
        self.put_hooks("/buckets/review", hook([REVIEWER]))
        self.put_hooks("/buckets/flood", hook(FLOOD))

    flood = FairShareTest.flood

    def reviewers_turn(self):
        """How many mails of the flooding bucket went out before the reviewer's, and how
        many messages the outbox had worked out then."""
        self.app.put_json("/buckets/review/collections/c/records/r", headers=self.headers)
        seen = []

        def reviewer_mailed():
            recipients = [m.rcpt_tos[0] for m in list(self.sink.received)]
            if REVIEWER in recipients:
                seen.append((recipients.index(REVIEWER), self.outbox.counts["queued"]))
            return seen

        self.assertTrue(eventually(reviewer_mailed, timeout=60))
        return seen[0]

    def assert_flood_sent_once_in_order(self, records):
        mails = [m for m in self.mails() if m.rcpt_tos != [REVIEWER]]
        sent = [(m.body, m.rcpt_tos[0]) for m in mails]
        self.assertEqual(len(sent), records * len(FLOOD))
        self.assertEqual(len(set(sent)), len(sent))
        # Oldest first within a bucket: a change is done before the next one starts.
        uris = [body for body, _ in sent]
        self.assertEqual(uris, sorted(uris))

    def test_a_reviewers_mail_goes_out_while_a_change_of_1000_messages_is_sent(self):
        queued = self.outbox.counts["queued"]
        self.flood(20)  # One change: 20 records x 50 readers.
        position, worked_out = self.reviewers_turn()
        self.assertLess(position, 200)
        # The large change is worked out as it is sent, not all at once.
        self.assertLess(worked_out - queued, 600)
        self.assert_flood_sent_once_in_order(20)

    def test_a_reviewers_mail_goes_out_while_50_changes_of_another_bucket_wait(self):
        self.put_hooks("/buckets/flood", hook(FLOOD[:20]))
        for i in range(50):
            uri = f"/buckets/flood/collections/c/records/r{i:04}"
            self.app.put_json(uri, headers=self.headers)
        position, _ = self.reviewers_turn()
        self.assertLess(position, 200)
        mails = [m for m in self.mails() if m.rcpt_tos != [REVIEWER]]
        self.assertEqual(len({(m.body, m.rcpt_tos[0]) for m in mails}), 1000)


class OutboxBoundsTest(EmailerWebTest):
    """A change worked out over several rounds counts once against its bounds."""

    extra_settings = {
        "emailer.max_messages_per_change": "150",
        "emailer.max_messages_per_recipient_hour": "10000",
        "batch_max_requests": "50",
    }

    def test_the_first_150_messages_of_a_change_of_1000_go(self):
        self.app.put_json("/buckets/flood", headers=self.headers)
        self.app.put_json("/buckets/flood/collections/c", headers=self.headers)
        self.put_hooks("/buckets/flood", hook(FLOOD))
        limited = self.registry.emailer_outbox.counts["limited"]
        FairShareTest.flood(self, 20)
        mails = self.mails()
        records = {m.body.rsplit("/", 1)[1] for m in mails}
        self.assertEqual(len({(m.body, m.rcpt_tos[0]) for m in mails}), 150)
        self.assertEqual(records, {"r0000", "r0001", "r0002"})
        self.assertEqual(self.registry.emailer_outbox.counts["limited"] - limited, 850)
