"""One bad message, change or statement never stops the rest of the mail, nor loses a write."""

import json
import logging
from datetime import UTC, datetime, timedelta

import transaction

from kinto_emailer import digests, jobs, messages, recipients, send_digests
from tests.support import EmailerWebTest, skip_unless_postgresql
from tests.test_postgresql import PostgreSQL


HOOK = {"template": "{uri}", "resource_name": "record"}
# A label of more than 63 characters once encoded: no DNS name can hold it.
UNENCODABLE = "x@" + "ä" * 64 + ".com"


class AddressTest(EmailerWebTest):
    def setUp(self):
        super().setUp()
        self.create_collection()

    def failures(self):
        return [job.last_error for job in self.registry.emailer_outbox.failures]

    def test_an_internationalized_domain_is_mailed_in_ascii(self):
        self.put_hooks("/buckets/b", {**HOOK, "recipients": ["x@exämple.com", "a@example.com"]})
        self.create_record("/buckets/b/collections/c/records")
        self.assertEqual(
            sorted(m.rcpt_tos[0] for m in self.mails()),
            ["a@example.com", "x@xn--exmple-cua.com"],
        )
        self.assertEqual(self.failures(), [])

    def test_a_group_member_with_an_internationalized_domain_is_mailed_in_ascii(self):
        self.app.put_json(
            "/buckets/b/groups/g",
            {"data": {"members": ["account:y@bücher.example", "account:a@example.com"]}},
            headers=self.headers,
        )
        self.put_hooks("/buckets/b", {**HOOK, "recipients": ["/buckets/b/groups/g"]})
        self.create_record("/buckets/b/collections/c/records")
        self.assertEqual(
            sorted(m.rcpt_tos[0] for m in self.mails()),
            ["a@example.com", "y@xn--bcher-kva.example"],
        )

    def test_a_domain_that_cannot_be_encoded_is_refused_on_save(self):
        response = self.put_hooks("/buckets/b", {**HOOK, "recipients": [UNENCODABLE]}, status=400)
        self.assertIn("hooks.0.recipients.0", response.json["details"][0]["name"])

    def test_every_address_accepted_on_save_is_the_same_once_loaded(self):
        for text in [
            '=?utf-8?q?""=00 <poison@example.com>',
            "=?utf-8?q?=22=5C?= <a@example.com>",
            '"a,b" <a@example.com>',
            "Jöe <x@Exämple.com>",
        ]:
            mailbox = recipients.parse_mailbox(text)
            self.assertEqual(recipients.parse_mailbox(str(mailbox)), mailbox, text)


class UnwritableTest(EmailerWebTest):
    def test_a_message_smtplib_cannot_write_fails_alone_and_the_next_goes(self):
        def draft(address):
            return messages.Draft(
                recipients.parse_mailbox("kinto@example.com"),
                # Built by hand: parse_mailbox would have encoded the domain.
                recipients.Mailbox("", address),
                "Subject",
                address,
                "/buckets/b",
                "http://localhost/v1/",
                key=messages.idempotency_key(address),
            )

        outbox = self.registry.emailer_outbox
        outbox.put([draft("x@exämple.com"), draft("a@example.com")])
        self.assertEqual([m.rcpt_tos for m in self.mails()], [["a@example.com"]])
        [failed] = outbox.failures
        self.assertIn("UnicodeEncodeError", failed.last_error)


@skip_unless_postgresql
class PostgreSQLAddressTest(PostgreSQL, AddressTest):
    def failures(self):
        return [row["last_error"] for row in self.registry.emailer_delivery.queue.failed()]


def poison_draft(key):
    """A stored draft whose recipient no longer parses (written by an older version)."""
    draft = messages.Draft(
        recipients.parse_mailbox("kinto@example.com"),
        recipients.parse_mailbox("poison@example.com"),
        "Poison",
        "poison",
        "/buckets/other/collections/c/records/p",
        "http://localhost/v1/",
        key=key,
    ).to_json()
    return {**draft, "recipient": "not an address"}


@skip_unless_postgresql
class PoisonTest(PostgreSQL, EmailerWebTest):
    def setUp(self):
        super().setUp()
        self.queue = self.registry.emailer_delivery.queue
        self.app.put_json("/buckets/b", headers=self.headers)
        self.put_hooks("/buckets/b", {**HOOK, "recipients": ["a@example.com"]})
        self.app.put_json("/buckets/b/collections/c", headers=self.headers)

    def execute(self, query, *parameters):
        with jobs.session(self.queue.dsn) as connection:
            jobs.execute(connection, query, parameters)

    def test_a_stored_message_that_cannot_be_loaded_fails_alone(self):
        self.execute(
            "INSERT INTO kinto_emailer_jobs (key, draft) VALUES (%s, %s)",
            "poison",
            json.dumps(poison_draft("poison")),
        )
        self.create_record("/buckets/b/collections/c/records")
        self.assertTrue(self.queue.join(10))
        self.assertEqual(len(self.sink.received), 1)
        [failed] = self.queue.failed()
        self.assertEqual(failed["key"], "poison")
        self.assertIn("not an address", failed["last_error"])
        self.assertEqual(self.queue.status()["failed"], 1)

    def test_a_stored_message_without_a_time_zone_fails_alone(self):
        draft = {**poison_draft("naive"), "recipient": "poison@example.com"}
        draft["created"] = draft["created"][:19]
        self.execute(
            "INSERT INTO kinto_emailer_jobs (key, draft) VALUES (%s, %s)",
            "naive",
            json.dumps(draft),
        )
        self.create_record("/buckets/b/collections/c/records")
        self.assertTrue(self.queue.join(10))
        self.assertEqual([m.rcpt_tos for m in self.sink.received], [["a@example.com"]])
        [failed] = self.queue.failed()
        self.assertIn("time zone", failed["last_error"])

    def test_a_change_that_cannot_be_worked_out_fails_alone(self):
        self.execute("INSERT INTO kinto_emailer_changes (change) VALUES ('{}')")
        self.create_record("/buckets/b/collections/c/records")
        self.assertTrue(self.queue.join(10))
        self.assertEqual(len(self.sink.received), 1)
        [failed] = self.queue.failed()
        self.assertIn("cannot work out", failed["last_error"])
        self.assertEqual(self.queue.status()["failed"], 1)
        # Sent again, it is worked out again (and fails again, alone).
        self.assertEqual(self.queue.resend([failed["key"]]), 1)
        self.assertTrue(self.queue.join(10))
        self.assertEqual(len(self.queue.failed()), 1)
        self.assertEqual(len(self.sink.received), 1)

    def test_a_write_is_kept_when_its_change_cannot_be_noted(self):
        self.drop_queue("kinto_emailer_changes")
        try:
            for method, status in [("put_json", 201), ("patch_json", 200)]:
                with self.assertLogs("kinto_emailer", logging.ERROR) as logs:
                    getattr(self.app, method)(
                        "/buckets/b/collections/c/records/kept",
                        {"data": {"method": method}},
                        headers=self.headers,
                        status=status,
                    )
                self.assertTrue(any("No mail about a record" in line for line in logs.output))
                record = self.app.get(
                    "/buckets/b/collections/c/records/kept", headers=self.headers
                )
                self.assertEqual(record.json["data"]["method"], method)
            self.app.delete("/buckets/b/collections/c/records/kept", headers=self.headers)
            self.app.get("/buckets/b/collections/c/records/kept", headers=self.headers, status=404)
        finally:
            self.migrate()


class DigestIsolationTest(EmailerWebTest):
    def setUp(self):
        super().setUp()
        self.create_collection()
        hook = {**HOOK, "cadence": "daily", "recipients": ["a@example.com", "z@example.com"]}
        self.put_hooks("/buckets/b", hook)

    def store(self, resource_name, parent_id, object_id, obj):
        """What an older version may have left in the storage."""
        with transaction.manager:
            self.registry.storage.update(
                resource_name=resource_name, parent_id=parent_id, object_id=object_id, obj=obj
            )

    def test_one_bad_entry_or_recipient_spoils_no_other_digest(self):
        self.create_record("/buckets/b/collections/c/records")
        self.mails()
        [entry] = self.registry.storage.list_all(
            resource_name=digests.ENTRY,
            parent_id=digests.entries_parent("daily", "z@example.com"),
        )
        self.store(
            digests.ENTRY,
            digests.entries_parent("daily", "z@example.com"),
            "poison",
            {**entry, "draft": {**entry["draft"], "sender": "not an address"}},
        )
        self.store(digests.INDEX, digests.index_parent("daily"), "0", {"recipient": "nobody"})
        with self.assertLogs("kinto_emailer", logging.ERROR):
            count = send_digests(self.registry, datetime.now(UTC) + timedelta(days=1))
        self.assertEqual(count, 2)
        self.assertEqual(
            sorted(m.rcpt_tos[0] for m in self.mails()), ["a@example.com", "z@example.com"]
        )


@skip_unless_postgresql
class PostgreSQLDigestIsolationTest(PostgreSQL, DigestIsolationTest):
    pass
