"""What hooks can cause is bounded by the operator: hooks, messages, senders, thresholds."""

import logging
import unittest
from datetime import UTC, datetime, timedelta

from kinto_emailer import hooks, listener, quotas
from kinto_emailer.settings import EmailerSettings
from tests.support import EmailerWebTest, store_unchecked
from tests.test_preferences import links


HOOK = {"template": "{uri}", "recipients": ["a@example.com"], "resource_name": "record"}
RECORDS = "/buckets/b/collections/c/records"
UNENCODABLE = "victim@" + "\u00e4" * 64 + ".com"


class BoundsTest(EmailerWebTest):
    extra_settings = {
        "includes": "kinto_emailer tests.plugins.recording_metrics",
        "emailer.max_hooks": "3",
        "emailer.max_messages_per_change": "4",
        "emailer.max_messages_per_bucket_hour": "6",
        "emailer.max_messages_per_recipient_hour": "3",
        "emailer.allowed_senders": "news@example.com @example.org",
        "emailer.group_threshold": "3",
    }

    def setUp(self):
        super().setUp()
        for bucket in ("b", "b2"):
            self.app.put_json(f"/buckets/{bucket}", headers=self.headers)
            self.app.put_json(f"/buckets/{bucket}/collections/c", headers=self.headers)

        self.limited_before = self.registry.metrics.counts.get("plugins.emailer.limited", 0)

    def limited(self):
        """Messages dropped by a bound in this test."""
        self.mails()
        counts = self.registry.metrics.counts
        return counts.get("plugins.emailer.limited", 0) - self.limited_before

    def assert_refused(self, uri, hooks_, name, message):
        body = {"data": {"kinto-emailer": {"hooks": hooks_}}}
        error = self.app.put_json(uri, body, headers=self.headers, status=400).json
        self.assertEqual(error["details"][0]["name"], name)
        self.assertIn(message, error["message"])

    def store_unchecked(self, bucket_id, *hooks_):
        obj = {"id": bucket_id, "kinto-emailer": {"hooks": list(hooks_)}}
        store_unchecked(self.registry, "bucket", "", bucket_id, obj)

    def test_hooks_per_bucket_or_collection_are_bounded_on_save(self):
        self.put_hooks("/buckets/b/collections/c", *[HOOK] * 3)
        self.assert_refused(
            "/buckets/b", [HOOK] * 4, "data.kinto-emailer.hooks", "kinto.emailer.max_hooks"
        )

    def test_stored_hooks_past_the_bound_only_the_first_are_used(self):
        self.store_unchecked(
            "b", *({**HOOK, "recipients": [f"r{i}@example.com"]} for i in range(5))
        )
        self.create_record(RECORDS)
        self.assertEqual(
            sorted(m.rcpt_tos[0] for m in self.mails()),
            ["r0@example.com", "r1@example.com", "r2@example.com"],
        )

    def test_an_address_named_by_many_hooks_is_mailed_once(self):
        self.app.put_json(
            "/buckets/b/groups/g",
            {"data": {"members": ["account:A@example.com"]}},
            headers=self.headers,
        )
        self.put_hooks(
            "/buckets/b",
            HOOK,
            {**HOOK, "recipients": ["Someone <A@EXAMPLE.com>"]},
            {**HOOK, "recipients": ["/buckets/b/groups/g", "a@example.com"]},
        )
        self.create_record(RECORDS)
        self.assertEqual([m.rcpt_tos for m in self.mails()], [["a@example.com"]])

    def test_messages_per_change_are_bounded(self):
        addresses = [f"r{i}@example.com" for i in range(6)]
        self.put_hooks("/buckets/b", {**HOOK, "recipients": addresses})
        with self.assertLogs("kinto_emailer.quotas", logging.WARNING) as logs:
            self.create_record(RECORDS)
            self.assertEqual(len(self.mails()), 4)
        self.assertEqual(self.limited(), 2)
        [line] = logs.output
        self.assertIn("kinto.emailer.max_messages_per_change", line)

    def test_messages_per_bucket_and_hour_are_bounded(self):
        self.app.put_json("/buckets/b/collections/c2", headers=self.headers)
        self.put_hooks("/buckets/b/collections/c", {**HOOK, "recipients": ["x@x.org", "y@x.org"]})
        self.put_hooks("/buckets/b/collections/c2", {**HOOK, "recipients": ["v@x.org", "w@x.org"]})
        self.put_hooks("/buckets/b2", {**HOOK, "recipients": ["z@example.com"]})
        with self.assertLogs("kinto_emailer.quotas", logging.WARNING) as logs:
            for collection in ("c", "c", "c2", "c2"):
                self.create_record(f"/buckets/b/collections/{collection}/records")
            self.create_record("/buckets/b2/collections/c/records")
            mails = self.mails()
        # Each recipient is under its own bound (3): the bucket's (6) drops the last two.
        self.assertEqual(len([m for m in mails if m.rcpt_tos != ["z@example.com"]]), 6)
        # Another bucket still mails.
        self.assertEqual(len([m for m in mails if m.rcpt_tos == ["z@example.com"]]), 1)
        self.assertEqual(self.limited(), 2)
        # Logged once for the window, not at each message dropped.
        [line] = logs.output
        self.assertIn("bucket b is over 6 messages this hour", line)

    def test_messages_per_recipient_and_hour_are_bounded_across_buckets(self):
        self.put_hooks("/buckets/b", {**HOOK, "recipients": ["a@example.com", "o@example.com"]})
        self.put_hooks("/buckets/b2", HOOK)
        for bucket in ("b", "b2", "b", "b2"):
            self.create_record(f"/buckets/{bucket}/collections/c/records")
        recipients = [m.rcpt_tos[0] for m in self.mails()]
        self.assertEqual(recipients.count("a@example.com"), 3)
        self.assertEqual(recipients.count("o@example.com"), 2)
        self.assertEqual(self.limited(), 1)

    def test_mail_turned_off_counts_against_no_bound(self):
        # A stranger's bucket mails a@ until a@ unsubscribes from it...
        self.put_hooks("/buckets/b2", HOOK)
        self.create_record("/buckets/b2/collections/c/records")
        [mail] = self.mails()
        unsubscribe, _ = links(mail)
        self.post_link(unsubscribe)
        for _ in range(3):
            self.create_record("/buckets/b2/collections/c/records")
        # ... and its writes since then leave a@ its hourly mail from elsewhere.
        self.put_hooks("/buckets/b", HOOK)
        self.sink.clear()
        for _ in range(3):
            self.create_record(RECORDS)
        self.assertEqual(len(self.mails()), 2)
        self.assertEqual(self.limited(), 1)

    def test_subaddresses_count_against_their_mailbox_s_bound(self):
        # a+1@ and a+2@ reach the inbox of a@: named apart, they would get twice the bound.
        self.put_hooks(
            "/buckets/b", {**HOOK, "recipients": ["a+1@example.com", "A+2@example.com"]}
        )
        self.create_record(RECORDS)
        self.create_record(RECORDS)
        self.assertEqual(len(self.mails()), 3)
        self.assertEqual(self.limited(), 1)

    def test_a_sender_the_operator_does_not_allow_is_refused_on_save(self):
        path = "data.kinto-emailer.hooks.0.sender"
        for sender in ("PayPal Security <security@paypal.com>", "news@example.net"):
            with self.subTest(sender=sender):
                self.assert_refused("/buckets/b", [{**HOOK, "sender": sender}], path, "allowed")
        self.assert_refused(
            "/buckets/b", [{**HOOK, "sender": "{user_id}@example.org"}], path, "placeholders"
        )
        for sender in (
            "Kinto news <news@example.com>",
            "anyone@example.org",
            "{user_id} via Kinto <kinto@example.com>",
        ):
            with self.subTest(sender=sender):
                self.put_hooks("/buckets/b", {**HOOK, "sender": sender})

    def test_any_data_in_the_sender_s_name_keeps_the_mail(self):
        # Else a record writer silences the hook for their own change with a comma.
        self.put_hooks(
            "/buckets/b", {**HOOK, "sender": "{new[name]} via Kinto <news@example.com>"}
        )
        for name in ("Smith, John", 'O"Brien (Dr.) <x@evil.org>'):
            self.create_record(RECORDS, {"name": name})
        mails = self.mails()
        self.assertEqual([m.mail_from for m in mails], ["news@example.com"] * 2)
        self.assertEqual(
            sorted(m.message["From"].addresses[0].display_name for m in mails),
            sorted(f"{name} via Kinto" for name in ("Smith, John", 'O"Brien (Dr.) <x@evil.org>')),
        )

    def test_a_stored_sender_not_allowed_mails_from_the_default_sender(self):
        self.store_unchecked("b", {**HOOK, "sender": "PayPal <security@paypal.com>"})
        # Warned once per process: forget what other tests made it say.
        listener._refused_sender.cache_clear()
        with self.assertLogs("kinto_emailer.listener", logging.WARNING) as logs:
            self.create_record(RECORDS)
            self.create_record(RECORDS)
            mails = self.mails()
        self.assertEqual([m.mail_from for m in mails], ["kinto@example.com"] * 2)
        self.assertEqual(mails[0].message["From"], "Kinto <kinto@example.com>")
        [line] = [line for line in logs.output if "allowed sender" in line]
        self.assertIn("security@paypal.com", line)

    def test_a_hook_may_lower_the_group_threshold_not_raise_it(self):
        self.assert_refused(
            "/buckets/b",
            [{**HOOK, "group_threshold": 4}],
            "data.kinto-emailer.hooks.0.group_threshold",
            "kinto.emailer.group_threshold",
        )
        self.put_hooks("/buckets/b", {**HOOK, "group_threshold": 1})
        requests = [{"method": "POST", "path": RECORDS} for _ in range(2)]
        self.app.post_json("/batch", {"requests": requests}, headers=self.headers)
        [summary] = self.mails()
        self.assertIn("2 records created", summary.message["Subject"])

    def test_an_address_no_smtp_server_takes_stops_no_other_mail(self):
        # Group members are not checked on save: any principal may be one. This one's
        # domain has no ASCII form (a label longer than 63 characters).
        self.app.put_json(
            "/buckets/b/groups/g",
            {"data": {"members": [f"account:{UNENCODABLE}", "account:m@example.com"]}},
            headers=self.headers,
        )
        self.put_hooks("/buckets/b", {**HOOK, "recipients": ["/buckets/b/groups/g"]})
        self.put_hooks("/buckets/b2", {**HOOK, "recipients": ["z@example.com"]})
        self.create_record(RECORDS)
        self.create_record("/buckets/b2/collections/c/records")
        self.assertEqual(
            sorted(m.rcpt_tos[0] for m in self.mails()), ["m@example.com", "z@example.com"]
        )


class HooksOnUseTest(unittest.TestCase):
    def test_a_stored_threshold_above_the_operator_s_is_lowered(self):
        settings = EmailerSettings(group_threshold=5)
        metadata = {"kinto-emailer": {"hooks": [{**HOOK, "group_threshold": 50}]}}
        [hook] = hooks.load(metadata, "b", settings, "/buckets/b")
        self.assertEqual(hook.group_threshold, 5)
        [hook] = hooks.load(metadata, "b", EmailerSettings(), "/buckets/b")
        self.assertEqual(hook.group_threshold, 50)


class AdmitTest(unittest.TestCase):
    def test_a_message_dropped_counts_against_no_bound(self):
        settings = EmailerSettings(
            max_messages_per_change=10,
            max_messages_per_bucket_hour=3,
            max_messages_per_recipient_hour=1,
        )
        tally = quotas.MemoryTally(lambda name, n: None)
        now = datetime.now(UTC)
        admitted = quotas.admit(
            ["a@x.org", "A@x.org", "b@x.org", "c@x.org"], "b", now, settings, tally
        )
        recipient_bound = "kinto.emailer.max_messages_per_recipient_hour"
        self.assertEqual(admitted, [None, quotas.Refusal(recipient_bound, True), None, None])
        # The next hour starts afresh; the hour before is forgotten after it.
        later = now + timedelta(hours=1)
        self.assertEqual(quotas.admit(["a@x.org"], "b", later, settings, tally), [None])
        self.assertEqual(
            quotas.admit(["a@x.org"], "b", now, settings, tally),
            [quotas.Refusal("kinto.emailer.max_messages_per_bucket_hour", True)],
        )
        quotas.admit(["a@x.org"], "b", now + timedelta(hours=3), settings, tally)
        self.assertEqual(quotas.admit(["a@x.org"], "b", now, settings, tally), [None])

    def test_a_refusal_names_its_bound_and_as_many_are_noted_as_a_bound_lets_through(self):
        settings = EmailerSettings(
            max_messages_per_change=100,
            max_messages_per_bucket_hour=2,
            max_messages_per_recipient_hour=100,
        )
        tally = quotas.MemoryTally(lambda name, n: None)
        now = datetime.now(UTC)
        everyone = [f"r{i}@x.org" for i in range(6)]
        admitted = quotas.admit(everyone, "b", now, settings, tally)
        bucket_bound = "kinto.emailer.max_messages_per_bucket_hour"
        self.assertEqual(
            admitted,
            [None, None]
            + [quotas.Refusal(bucket_bound, True)] * 2
            + [quotas.Refusal(bucket_bound, False)] * 2,
        )
        # Counted per window, as the bound is.
        later = quotas.admit(["x@x.org"], "b", now, settings, tally)
        self.assertEqual(later, [quotas.Refusal(bucket_bound, False)])
        next_hour = now + timedelta(hours=1)
        self.assertEqual(
            quotas.admit(everyone[:3], "b", next_hour, settings, tally)[2:],
            [quotas.Refusal(bucket_bound, True)],
        )
