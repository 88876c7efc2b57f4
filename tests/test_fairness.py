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
