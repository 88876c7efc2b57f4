"""The plugin in a real Kinto app (memory storage), mailing a real SMTP server."""

import unittest

from kinto.core.testing import get_user_headers

from tests.support import BOB, EmailerWebTest


HOOK = {
    "template": "{action}d {uri}",
    "subject": "{resource_name} {id}",
    "recipients": ["a@example.com"],
}


class SetupTest(EmailerWebTest):
    def test_capability_has_version(self):
        from kinto_emailer import __version__

        capability = self.app.get("/").json["capabilities"]["emailer"]
        self.assertEqual(capability["version"], __version__)
        self.assertIn("url", capability)

    def test_build_and_send_notification_are_importable(self):
        from kinto_emailer import build_notification, send_notification

        self.assertIs(build_notification, send_notification)


class HookResolutionTest(EmailerWebTest):
    def setUp(self):
        super().setUp()
        self.create_collection()

    def test_bucket_hook_mails_on_record_creation(self):
        self.put_hooks("/buckets/b", HOOK)
        record = self.create_record("/buckets/b/collections/c/records").json["data"]
        [mail] = self.mails()
        self.assertEqual(mail.rcpt_tos, ["a@example.com"])
        self.assertEqual(mail.message["Subject"], f"record {record['id']}")
        self.assertEqual(mail.body, f"created /buckets/b/collections/c/records/{record['id']}")

    def test_collection_hooks_win_over_bucket_hooks(self):
        self.put_hooks("/buckets/b", {**HOOK, "recipients": ["bucket@example.com"]})
        self.put_hooks("/buckets/b/collections/c", {**HOOK, "recipients": ["coll@example.com"]})
        self.sink.clear()
        self.create_record("/buckets/b/collections/c/records")
        self.assertEqual([m.rcpt_tos for m in self.mails()], [["coll@example.com"]])

    def test_empty_collection_hooks_silence_the_bucket_hooks(self):
        self.put_hooks("/buckets/b", HOOK)
        self.put_hooks("/buckets/b/collections/c")
        self.sink.clear()
        self.create_record("/buckets/b/collections/c/records")
        self.assertEqual(self.mails(), [])

    def test_collection_events_use_the_collection_metadata(self):
        self.put_hooks("/buckets/b/collections/c", {**HOOK, "resource_name": "collection"})
        self.app.patch_json("/buckets/b/collections/c", {"data": {"a": 1}}, headers=self.headers)
        [mail] = self.mails()
        self.assertEqual(mail.body, "updated /buckets/b/collections/c")

    def test_deleted_collection_uses_its_last_metadata(self):
        self.put_hooks("/buckets/b/collections/c", {**HOOK, "action": "delete"})
        self.app.delete("/buckets/b/collections/c", headers=self.headers)
        [mail] = self.mails()
        self.assertEqual(mail.body, "deleted /buckets/b/collections/c")

    def test_group_changes_fire_bucket_hooks(self):
        self.put_hooks("/buckets/b", {**HOOK, "resource_name": "group"})
        self.app.put_json("/buckets/b/groups/g", {"data": {"members": []}}, headers=self.headers)
        [mail] = self.mails()
        self.assertEqual(mail.body, "created /buckets/b/groups/g")
        self.assertEqual(mail.message["Subject"], "group g")

    def test_default_event_filter_value_matches(self):
        hook = {**HOOK, "event": "kinto.core.events.AfterResourceChanged"}
        other = {**HOOK, "event": "kinto.core.events.ResourceChanged", "recipients": ["b@x.org"]}
        self.put_hooks("/buckets/b", hook, other)
        self.create_record("/buckets/b/collections/c/records")
        self.assertEqual(len(self.mails()), 2)

    def test_filters_exact_and_regex(self):
        hooks = [
            {"subject": "exact", "record_id": "r1"},
            {"subject": "regex", "record_id": "^r[0-9]$"},
            {"subject": "not-c", "collection_id": "^(?!c$)"},
            {"subject": "updates", "action": "update"},
            {"subject": "past tense", "action": "created"},
        ]
        # Each its own recipient: an address named by several hooks gets one message.
        self.put_hooks(
            "/buckets/b",
            *(
                {**HOOK, **hook, "recipients": [f"r{i}@example.com"]}
                for i, hook in enumerate(hooks)
            ),
        )
        for record_id in ("r1", "r2", "rx"):
            self.app.put_json(
                f"/buckets/b/collections/c/records/{record_id}", headers=self.headers
            )
        subjects = sorted(m.message["Subject"] for m in self.mails())
        self.assertEqual(
            subjects,
            ["exact", "past tense", "past tense", "past tense", "regex", "regex"],
        )

    def test_record_filter_does_not_match_collection_events(self):
        self.put_hooks("/buckets/b", {**HOOK, "record_id": "^.*"})
        self.app.patch_json("/buckets/b/collections/c", {"data": {"a": 1}}, headers=self.headers)
        self.assertEqual(self.mails(), [])

    def test_hooks_of_another_bucket_are_not_used(self):
        self.app.put_json("/buckets/other", headers=self.headers)
        self.put_hooks("/buckets/other", HOOK)
        self.create_record("/buckets/b/collections/c/records")
        self.assertEqual(self.mails(), [])

    def batch(self, *requests):
        self.app.post_json("/batch", {"requests": list(requests)}, headers=self.headers)

    def test_hooks_saved_in_a_batch_apply_to_its_writes_before_and_after_them(self):
        # Known to have no hooks, from a write before.
        self.create_record("/buckets/b/collections/c/records")
        self.assertEqual(self.mails(), [])
        hooks = {"data": {"kinto-emailer": {"hooks": [{**HOOK, "resource_name": "record"}]}}}
        self.batch(
            {"method": "PUT", "path": "/buckets/b/collections/c/records/before"},
            {"method": "PATCH", "path": "/buckets/b", "body": hooks},
            {"method": "PUT", "path": "/buckets/b/collections/c/records/after"},
        )
        self.assertEqual(
            sorted(m.body for m in self.mails()),
            [f"created /buckets/b/collections/c/records/{r}" for r in ("after", "before")],
        )

    def test_hooks_removed_in_a_batch_mail_nobody_about_its_writes(self):
        self.put_hooks("/buckets/b", HOOK)
        self.batch(
            {"method": "PUT", "path": "/buckets/b/collections/c/records/r"},
            {"method": "PUT", "path": "/buckets/b", "body": {"data": {}}},
        )
        self.assertEqual(self.mails(), [])

    def test_a_batch_over_collections_with_and_without_hooks_mails_about_those_with(self):
        hooks = {"kinto-emailer": {"hooks": [HOOK]}}
        self.batch(
            {"method": "PUT", "path": "/buckets/b/collections/quiet", "body": {"data": {}}},
            {"method": "PUT", "path": "/buckets/b/collections/loud", "body": {"data": hooks}},
            {"method": "PUT", "path": "/buckets/b/collections/quiet/records/q"},
            {"method": "PUT", "path": "/buckets/b/collections/loud/records/l"},
        )
        self.assertEqual(
            sorted(m.body for m in self.mails()),
            [
                "created /buckets/b/collections/loud",
                "created /buckets/b/collections/loud/records/l",
            ],
        )

    def test_a_group_saved_with_the_hooks_of_its_bucket_mails(self):
        hooks = {"data": {"kinto-emailer": {"hooks": [{**HOOK, "resource_name": "group"}]}}}
        self.batch(
            {"method": "PUT", "path": "/buckets/b/groups/g", "body": {"data": {"members": []}}},
            {"method": "PATCH", "path": "/buckets/b", "body": hooks},
        )
        self.assertEqual([m.body for m in self.mails()], ["created /buckets/b/groups/g"])


class PlaceholderTest(EmailerWebTest):
    def setUp(self):
        super().setUp()
        self.create_collection()

    def hook(self, template, **extra):
        self.put_hooks("/buckets/b/collections/c", {**HOOK, "template": template, **extra})

    def test_every_documented_placeholder(self):
        template = (
            "bucket_id={bucket_id} id={id} collection_id={collection_id} "
            "record_id={record_id} resource_name={resource_name} uri={uri} "
            "action={action} timestamp={timestamp} root_url={root_url} "
            "client_address={client_address} user_agent={user_agent} event={event} "
            "project={settings[project_name]} user_id={user_id}"
        )
        self.hook(template, resource_name="record")
        resp = self.app.put_json(
            "/buckets/b/collections/c/records/r1",
            headers={**self.headers, "User-Agent": "tester/1.0"},
            extra_environ={"REMOTE_ADDR": "10.1.2.3"},
        )
        [mail] = self.mails()
        user_id = self.app.get("/", headers=self.headers).json["user"]["id"]
        self.assertEqual(
            mail.body,
            "bucket_id=b id=r1 collection_id=c record_id=r1 resource_name=record "
            "uri=/buckets/b/collections/c/records/r1 action=create "
            f"timestamp={resp.json['data']['last_modified']} root_url=http://localhost/v1/ "
            "client_address=10.1.2.3 user_agent=tester/1.0 "
            f"event=kinto.core.events.ResourceChanged project=Kinto Test user_id={user_id}",
        )

    def test_new_and_old_values_of_a_field(self):
        self.hook("{old[title]} -> {new[title]} ({new[meta][lang]}){new[missing]}")
        self.app.put_json(
            "/buckets/b/collections/c/records/r1", {"data": {"title": "one"}}, headers=self.headers
        )
        self.app.put_json(
            "/buckets/b/collections/c/records/r1",
            {"data": {"title": "two", "meta": {"lang": "fr"}}},
            headers=self.headers,
        )
        self.assertEqual([m.body for m in self.mails()], ["-> one ()", "one -> two (fr)"])

    def test_format_specs_within_bounds(self):
        self.hook("[{id:>5}] [{id:.1}] {timestamp:d}")
        self.app.put_json("/buckets/b/collections/c/records/r1", headers=self.headers)
        [mail] = self.mails()
        self.assertRegex(mail.body, r"^\[   r1\] \[r\] \d+$")

    def test_each_record_of_a_batch_gets_its_own_uri(self):
        self.hook("{uri}")
        requests = [
            {"method": "PUT", "path": f"/buckets/b/collections/c/records/r{i}"} for i in range(3)
        ]
        self.app.post_json("/batch", {"requests": requests}, headers=self.headers)
        self.assertEqual(
            sorted(m.body for m in self.mails()),
            [f"/buckets/b/collections/c/records/r{i}" for i in range(3)],
        )

    def test_a_batch_mails_only_the_records_the_filter_matches(self):
        self.hook("{uri}", record_id="r1")
        requests = [
            {"method": "PUT", "path": f"/buckets/b/collections/c/records/r{i}"} for i in range(3)
        ]
        self.app.post_json("/batch", {"requests": requests}, headers=self.headers)
        self.assertEqual([m.body for m in self.mails()], ["/buckets/b/collections/c/records/r1"])


class MessageTest(EmailerWebTest):
    extra_settings = {"emailer.allowed_senders": "team@example.com"}

    def setUp(self):
        super().setUp()
        self.create_collection()

    def test_messages_are_valid_rfc5322(self):
        self.put_hooks(
            "/buckets/b",
            {
                **HOOK,
                "sender": "Équipe Kinto <team@example.com>",
                "subject": "Créé: {new[title]}",
                "template": "Données: {new[title]}\n" + "x" * 2000,
                "recipients": ["Zoë <zoe@example.com>"],
            },
        )
        self.app.put_json(
            "/buckets/b/collections/c/records/r1",
            {"data": {"title": "naïve"}},
            headers=self.headers,
        )
        [mail] = self.mails()
        self.assertNotRegex(mail.data, rb"(?<!\r)\n", "bare LF in the message")
        self.assertTrue(all(len(line) <= 998 for line in mail.data.split(b"\r\n")))
        message = mail.message
        self.assertEqual(message["From"], "Équipe Kinto <team@example.com>")
        self.assertEqual(message["To"], "Zoë <zoe@example.com>")
        self.assertEqual(message["Subject"], "Créé: naïve")
        self.assertIsNotNone(message["Date"])
        self.assertRegex(message["Message-ID"], r"^<.+@example\.com>$")
        self.assertEqual(mail.body, "Données: naïve\n" + "x" * 2000)
        self.assertEqual(mail.mail_from, "team@example.com")

    def test_mails_about_one_object_share_a_thread(self):
        self.put_hooks("/buckets/b", HOOK)
        self.app.put_json("/buckets/b/collections/c/records/r1", headers=self.headers)
        self.app.patch_json(
            "/buckets/b/collections/c/records/r1", {"data": {"a": 1}}, headers=self.headers
        )
        self.app.put_json("/buckets/b/collections/c/records/r2", headers=self.headers)
        first, second, other = (m.message for m in self.mails())
        self.assertEqual(first["References"], second["References"])
        self.assertEqual(first["In-Reply-To"], first["References"])
        self.assertNotEqual(first["References"], other["References"])
        self.assertNotEqual(first["Message-ID"], second["Message-ID"])

    def test_each_recipient_gets_a_message_of_its_own(self):
        self.put_hooks("/buckets/b", {**HOOK, "recipients": ["a@example.com", "b@example.com"]})
        self.create_record("/buckets/b/collections/c/records")
        mails = self.mails()
        self.assertEqual(sorted(m.rcpt_tos[0] for m in mails), ["a@example.com", "b@example.com"])
        self.assertEqual([m.message["To"] for m in mails], [m.rcpt_tos[0] for m in mails])

    def test_newlines_in_subject_data_are_flattened_and_nothing_is_lost(self):
        self.put_hooks(
            "/buckets/b",
            {**HOOK, "subject": "New: {new[title]}", "recipients": ["a@example.com"]},
            {**HOOK, "subject": "Other", "recipients": ["b@example.com"]},
        )
        self.app.put_json(
            "/buckets/b/collections/c/records/r1",
            {"data": {"title": "line one\r\nBcc: evil@example.com\nline\u2028three"}},
            headers=self.headers,
        )
        mails = self.mails()
        self.assertEqual(len(mails), 2)
        subjects = {m.rcpt_tos[0]: m.message["Subject"] for m in mails}
        self.assertEqual(
            subjects["a@example.com"], "New: line one Bcc: evil@example.com line three"
        )
        self.assertIsNone(mails[0].message["Bcc"])

    def test_one_refused_recipient_does_not_stop_the_others(self):
        self.sink.refuse.add("b@example.com")
        self.put_hooks(
            "/buckets/b",
            {**HOOK, "recipients": ["a@example.com", "b@example.com", "c@example.com"]},
        )
        self.create_record("/buckets/b/collections/c/records")
        self.assertEqual(
            sorted(m.rcpt_tos[0] for m in self.mails()), ["a@example.com", "c@example.com"]
        )


class GroupRecipientsTest(EmailerWebTest):
    def setUp(self):
        super().setUp()
        self.create_collection()
        members = [
            "account:Alice@Example.com",
            "ldap:bob@example.com",
            "basicauth:0123456789abcdef",
            "alice@example.com",
        ]
        self.app.put_json(
            "/buckets/b/groups/reviewers", {"data": {"members": members}}, headers=self.headers
        )
        self.app.put_json(
            "/buckets/b/groups/c-editors",
            {"data": {"members": ["carol@example.com"]}},
            headers=self.headers,
        )

    def test_members_that_are_addresses_are_mailed_once(self):
        self.put_hooks(
            "/buckets/b",
            {**HOOK, "recipients": ["/buckets/b/groups/reviewers", "BOB@example.com"]},
        )
        self.create_record("/buckets/b/collections/c/records")
        self.assertEqual(
            sorted(m.rcpt_tos[0] for m in self.mails()), ["Alice@Example.com", "bob@example.com"]
        )

    def test_group_uri_with_placeholders(self):
        self.put_hooks(
            "/buckets/b",
            {**HOOK, "recipients": ["/buckets/{bucket_id}/groups/{collection_id}-editors"]},
        )
        self.create_record("/buckets/b/collections/c/records")
        self.assertEqual([m.rcpt_tos for m in self.mails()], [["carol@example.com"]])

    def test_missing_group_mails_nobody(self):
        self.put_hooks("/buckets/b", {**HOOK, "recipients": ["/buckets/b/groups/nobody"]})
        self.create_record("/buckets/b/collections/c/records")
        self.assertEqual(self.mails(), [])

    def test_group_of_a_bucket_with_a_longer_name_is_refused(self):
        self.app.put_json("/buckets/bb", headers=self.headers)
        resp = self.put_hooks(
            "/buckets/b", {**HOOK, "recipients": ["/buckets/bb/groups/reviewers"]}, status=400
        )
        self.assertEqual(
            resp.json["details"][0]["name"], "data.kinto-emailer.hooks.0.recipients.0"
        )


class AllowedDomainsTest(EmailerWebTest):
    extra_settings = {"emailer.allowed_domains": "example.com", "emailer.max_recipients": "2"}

    def setUp(self):
        super().setUp()
        self.create_collection()

    def test_other_domains_are_refused_on_save(self):
        resp = self.put_hooks(
            "/buckets/b", {**HOOK, "recipients": ["a@example.com", "x@evil.org"]}, status=400
        )
        self.assertEqual(
            resp.json["details"][0]["name"], "data.kinto-emailer.hooks.0.recipients.1"
        )
        self.assertIn("evil.org", resp.json["message"])

    def test_too_many_recipients_are_refused_on_save(self):
        recipients = ["a@example.com", "b@example.com", "c@example.com"]
        resp = self.put_hooks("/buckets/b", {**HOOK, "recipients": recipients}, status=400)
        self.assertEqual(resp.json["details"][0]["name"], "data.kinto-emailer.hooks.0.recipients")

    def test_group_members_are_filtered_and_capped(self):
        members = ["x@evil.org", "a@example.com", "b@example.com", "c@example.com"]
        self.app.put_json(
            "/buckets/b/groups/g", {"data": {"members": members}}, headers=self.headers
        )
        self.put_hooks("/buckets/b", {**HOOK, "recipients": ["/buckets/b/groups/g"]})
        self.create_record("/buckets/b/collections/c/records")
        self.assertEqual(
            sorted(m.rcpt_tos[0] for m in self.mails()), ["a@example.com", "b@example.com"]
        )


class PermissionsTest(EmailerWebTest):
    def test_hooks_need_write_permission_like_any_metadata(self):
        self.app.put_json("/buckets/b", headers=self.headers)
        self.app.put_json(
            "/buckets/b", {"data": {"kinto-emailer": {"hooks": []}}}, headers=BOB, status=403
        )
        self.app.put_json("/buckets/b", {"data": {}}, headers=get_user_headers("eve"), status=403)


if __name__ == "__main__":  # pragma: no cover
    unittest.main()
