"""Several SMTP connections at once (``kinto.emailer.smtp_connections``)."""

from tests import test_delivery
from tests.support import EmailerWebTest, skip_unless_postgresql
from tests.test_postgresql import PostgreSQL


RECIPIENTS = [f"r{i}@example.com" for i in range(9)]
HOOK = {"template": "{uri}", "resource_name": "record", "recipients": RECIPIENTS}


class ConnectionsTest(EmailerWebTest):
    extra_settings = {"emailer.smtp_connections": "3"}
    connections = 3

    def setUp(self):
        super().setUp()
        self.create_collection()
        self.put_hooks("/buckets/b", HOOK)
        # Each message takes a while: those sent at once overlap at the server.
        self.sink.delay = 0.1
        self.addCleanup(setattr, self.sink, "delay", 0.0)

    def failed_recipients(self):
        queue = self.registry.emailer_delivery.queue
        if queue is None:
            return [job.draft.recipient.addr_spec for job in self.registry.emailer_outbox.failures]
        return [row["draft"]["recipient"] for row in queue.failed()]

    def test_messages_go_over_as_many_connections_at_once(self):
        self.create_record("/buckets/b/collections/c/records")
        self.assertEqual(sorted(m.rcpt_tos[0] for m in self.mails()), RECIPIENTS)
        self.assertEqual(self.sink.most_under_way, self.connections)

    def test_a_refused_message_fails_alone(self):
        self.sink.refuse.add("r4@example.com")
        self.create_record("/buckets/b/collections/c/records")
        mailed = sorted(m.rcpt_tos[0] for m in self.mails())
        self.assertEqual(mailed, [r for r in RECIPIENTS if r != "r4@example.com"])
        self.assertEqual(self.failed_recipients(), ["r4@example.com"])

    def test_each_message_goes_once(self):
        self.app.post_json(
            "/batch",
            {
                "requests": [
                    {"method": "PUT", "path": f"/buckets/b/collections/c/records/{i}"}
                    for i in range(5)
                ]
            },
            headers=self.headers,
        )
        mails = self.mails()
        self.assertEqual(len(mails), 5 * len(RECIPIENTS))
        self.assertEqual(len({m.message["Message-ID"] for m in mails}), len(mails))


class OneConnectionTest(ConnectionsTest):
    extra_settings: dict = {}
    connections = 1


@skip_unless_postgresql
class PostgreSQLConnectionsTest(PostgreSQL, ConnectionsTest):
    pass


@skip_unless_postgresql
class PostgreSQLOneConnectionTest(PostgreSQL, OneConnectionTest):
    pass


class UnreachableServerTest(test_delivery.UnreachableServerTest):
    """Connections open one at a time: a server that does not answer is tried once."""

    extra_settings = {
        **test_delivery.UnreachableServerTest.extra_settings,
        "emailer.smtp_connections": "3",
    }


@skip_unless_postgresql
class PostgreSQLUnreachableServerTest(PostgreSQL, UnreachableServerTest):
    pass
