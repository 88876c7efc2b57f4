"""Exactly the emails of committed changes, one list per event, whatever goes wrong."""

import logging
import mailbox
import os
import shutil
import tempfile
from email import message_from_bytes, policy

from tests.support import BOB, EmailerWebTest, store_unchecked


HOOK = {"template": "{action}d {uri}", "recipients": ["a@example.com"]}


class EventsTest(EmailerWebTest):
    extra_settings = {"includes": "kinto_emailer tests.plugins.failing tests.plugins.review"}

    def setUp(self):
        super().setUp()
        self.app.put_json("/buckets/b", headers=self.headers)
        for cid in ("c1", "c2"):
            self.app.put_json(f"/buckets/b/collections/{cid}", headers=self.headers)
        self.mails()  # The setup's changes are worked out before any hook is stored.

    def test_nothing_is_sent_for_an_aborted_transaction(self):
        self.put_hooks("/buckets/b", HOOK)
        self.app.put_json(
            "/buckets/b/collections/c1/records/r1",
            {"data": {"fail": True}},
            headers=self.headers,
            status=500,
        )
        self.app.put_json("/buckets/b/collections/c1/records/r2", headers=self.headers)
        self.assertEqual(
            [m.body for m in self.mails()], ["created /buckets/b/collections/c1/records/r2"]
        )

    def test_every_event_of_a_batch_yields_exactly_its_own_messages(self):
        self.put_hooks("/buckets/b", HOOK)
        requests = [
            {"method": "PUT", "path": "/buckets/b/collections/c1/records/r1"},
            {"method": "PUT", "path": "/buckets/b/collections/c2/records/r2"},
            {"method": "PUT", "path": "/buckets/b/collections/c1/records/r3"},
            {"method": "PATCH", "path": "/buckets/b/collections/c2", "body": {"data": {"x": 1}}},
            {"method": "DELETE", "path": "/buckets/b/collections/c1/records/r1"},
        ]
        self.app.post_json("/batch", {"requests": requests}, headers=self.headers)
        self.assertEqual(
            sorted(m.body for m in self.mails()),
            [
                "created /buckets/b/collections/c1/records/r1",
                "created /buckets/b/collections/c1/records/r3",
                "created /buckets/b/collections/c2/records/r2",
                "deleted /buckets/b/collections/c1/records/r1",
                "updated /buckets/b/collections/c2",
            ],
        )

    def test_review_events_are_mailed_with_their_payload(self):
        self.put_hooks(
            "/buckets/b",
            {
                "event": "kinto_remote_settings.signer.events.ReviewRequested",
                "subject": "{user_id} requested a review of {collection_id}",
                "template": "{changes_count} changes ({changes_size_bytes} bytes): {comment}\n"
                "{uri} {event}",
                "recipients": ["reviewer@example.com"],
            },
            {
                "event": "kinto_signer.events.ReviewApproved",
                "template": "approved {uri}",
                "recipients": ["editor@example.com"],
            },
            {**HOOK, "resource_name": "collection", "recipients": ["changes@example.com"]},
        )
        self.app.patch_json(
            "/buckets/b/collections/c1", {"data": {"status": "to-review"}}, headers=self.headers
        )
        self.app.patch_json(
            "/buckets/b/collections/c2", {"data": {"status": "to-sign"}}, headers=self.headers
        )
        mails = {(m.rcpt_tos[0], m.body) for m in self.mails()}
        self.assertEqual(
            mails,
            {
                ("changes@example.com", "updated /buckets/b/collections/c1"),
                ("changes@example.com", "updated /buckets/b/collections/c2"),
                (
                    "reviewer@example.com",
                    "3 changes (120 bytes): please look\n"
                    "/buckets/b/collections/c1 tests.plugins.ReviewRequested",
                ),
                ("editor@example.com", "approved /buckets/b/collections/c2"),
            },
        )

    def test_a_hook_names_any_event_class_by_its_path(self):
        self.put_hooks(
            "/buckets/b",
            {**HOOK, "event": "tests.plugins.Published", "template": "{event} {uri}"},
            {**HOOK, "event": "mylib.NeverSent"},
        )
        self.app.patch_json(
            "/buckets/b/collections/c1", {"data": {"status": "published"}}, headers=self.headers
        )
        self.assertEqual(
            [m.body for m in self.mails()], ["tests.plugins.Published /buckets/b/collections/c1"]
        )

    def test_hooks_without_event_filter_ignore_review_events(self):
        self.put_hooks("/buckets/b", HOOK)
        self.app.patch_json(
            "/buckets/b/collections/c1", {"data": {"status": "to-review"}}, headers=self.headers
        )
        self.assertEqual([m.body for m in self.mails()], ["updated /buckets/b/collections/c1"])

    def test_a_hook_that_cannot_be_rendered_is_skipped_and_the_others_sent(self):
        stored_before_checks = {
            "id": "b",
            "kinto-emailer": {
                "hooks": [
                    {**HOOK, "template": "{impacted_objects}"},
                    {**HOOK, "template": "{id:d}"},
                    # Checked on save only once rendered: no address here.
                    {**HOOK, "sender": "{id}"},
                    {**HOOK, "template": "{id}", "recipients": ["b@example.com"]},
                    {"template": "no recipients"},
                ]
            },
        }
        # What an earlier release let editors store.
        store_unchecked(self.registry, "bucket", "", "b", stored_before_checks)
        with self.assertLogs("kinto_emailer", logging.WARNING) as logs:
            self.app.put_json("/buckets/b/collections/c1/records/r1", headers=self.headers)
            mails = self.mails()
        self.assertEqual([(m.rcpt_tos, m.body) for m in mails], [(["b@example.com"], "r1")])
        self.assertEqual(len(logs.records), 4)
        self.assertIn("/buckets/b/collections/c1/records/r1", "\n".join(logs.output))


class MaildirQueueTest(EmailerWebTest):
    extra_settings = {"includes": "kinto_emailer tests.plugins.failing"}

    @classmethod
    def setUpClass(cls):
        cls.queue_path = tempfile.mkdtemp()
        cls.extra_settings = {**cls.extra_settings, "mail.queue_path": cls.queue_path}
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        shutil.rmtree(cls.queue_path)

    def test_the_queue_is_filled_in_the_transaction(self):
        self.create_collection()
        self.put_hooks("/buckets/b", {**HOOK, "resource_name": "record"})
        self.app.put_json("/buckets/b/collections/c/records/r1", headers=self.headers)
        self.app.put_json(
            "/buckets/b/collections/c/records/r2",
            {"data": {"fail": True}},
            headers=self.headers,
            status=500,
        )
        queued = list(mailbox.Maildir(self.queue_path, create=False))
        self.assertEqual(len(queued), 1)
        message = message_from_bytes(queued[0].as_bytes(), policy=policy.default)
        self.assertEqual(message["To"], "a@example.com")
        self.assertEqual(message["X-Actually-To"], "a@example.com")
        self.assertIn("/records/r1", message.get_content())
        self.assertEqual(os.listdir(os.path.join(self.queue_path, "tmp")), [])
        self.assertEqual(self.mails(), [])

    def test_a_committed_write_logs_no_error(self):
        self.create_collection()
        self.put_hooks("/buckets/b", {**HOOK, "resource_name": "record"})
        with self.assertLogs(level=logging.DEBUG) as logs:
            self.app.put_json("/buckets/b/collections/c/records/r1", headers=self.headers)
        self.assertEqual([r for r in logs.records if r.levelno >= logging.ERROR], [])
        queue = mailbox.Maildir(self.queue_path, create=False)
        self.assertEqual(len(queue), 1)
        queue.clear()  # The other tests count the queue from empty.


class DebugMailerTest(EmailerWebTest):
    @classmethod
    def setUpClass(cls):
        cls.directory = os.path.join(tempfile.mkdtemp(), "mail")
        cls.extra_settings = {
            "includes": "kinto_emailer tests.plugins.review",
            "mail.debug_mailer": "true",
            "mail.top_level_directory": cls.directory,
        }
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        shutil.rmtree(os.path.dirname(cls.directory))

    def setUp(self):
        super().setUp()
        shutil.rmtree(self.directory, ignore_errors=True)

    def files(self) -> list[str]:
        """The files written so far, read at once: nothing waits for them."""
        return sorted(os.listdir(self.directory)) if os.path.isdir(self.directory) else []

    def test_the_files_are_written_when_the_client_gets_its_response(self):
        # As Remote Settings' own email test: it reads the folder right after its PATCH.
        self.create_collection()
        review = "kinto_remote_settings.signer.events.ReviewRequested"
        self.put_hooks(
            "/buckets/b",
            {**HOOK, "resource_name": "record"},
            {**HOOK, "event": review, "template": "review of {uri}"},
        )
        self.assertEqual(self.files(), [])
        self.app.put_json("/buckets/b/collections/c/records/r1", headers=self.headers)
        self.assertEqual(len(self.files()), 1)
        self.app.patch_json(
            "/buckets/b/collections/c", {"data": {"status": "to-review"}}, headers=self.headers
        )
        self.assertEqual(len(self.files()), 2)

    def test_each_mail_is_an_eml_file(self):
        self.create_collection()
        self.put_hooks("/buckets/b", {**HOOK, "resource_name": "record"})
        self.app.put_json("/buckets/b/collections/c/records/r1", headers=self.headers)
        self.mails()
        [name] = os.listdir(self.directory)
        self.assertTrue(name.endswith(".eml"))
        with open(os.path.join(self.directory, name), "rb") as f:
            message = message_from_bytes(f.read(), policy=policy.default)
        self.assertEqual(message["To"], "a@example.com")
        text = message.get_content().replace("\r\n", "\n")
        self.assertTrue(text.startswith("created /buckets/b/collections/c/records/r1\n\n-- \n"))
        self.assertEqual(self.sink.received, [])


class CascadeTest(EmailerWebTest):
    extra_settings = {
        "includes": "kinto_emailer kinto.plugins.admin",
        "user-data_delete_principals": "system.Authenticated",
    }

    def test_deleting_a_users_data_mails_each_deleted_object_once(self):
        self.app.put_json("/buckets/b", headers=BOB)
        self.app.put_json("/buckets/b/collections/c1", headers=BOB)
        self.app.put_json("/buckets/b/collections/c2", headers=BOB)
        create = {"permissions": {"record:create": ["system.Authenticated"]}}
        for cid in ("c1", "c2"):
            self.app.patch_json(f"/buckets/b/collections/{cid}", create, headers=BOB)
        hook = {**HOOK, "action": "delete"}
        self.app.patch_json(
            "/buckets/b", {"data": {"kinto-emailer": {"hooks": [hook]}}}, headers=BOB
        )
        for uri in ("c1/records/r0", "c1/records/r1", "c2/records/s0"):
            self.app.put_json(f"/buckets/b/collections/{uri}", headers=self.headers)
        self.app.put_json("/buckets/b/collections/c1/records/bobs", headers=BOB)
        user_id = self.app.get("/", headers=self.headers).json["user"]["id"]
        self.app.delete(f"/__user_data__/{user_id}", headers=self.headers)
        self.assertEqual(
            sorted(m.body for m in self.mails()),
            [
                "deleted /buckets/b/collections/c1/records/r0",
                "deleted /buckets/b/collections/c1/records/r1",
                "deleted /buckets/b/collections/c2/records/s0",
            ],
        )
