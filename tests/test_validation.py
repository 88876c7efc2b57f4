"""Hooks are checked when metadata is saved: a 400 naming the JSON path, nothing stored."""

import logging
import unittest

from kinto_emailer import hooks
from kinto_emailer.settings import EmailerSettings
from tests.support import EmailerWebTest, store_unchecked


HOOK = {"template": "{id}", "recipients": ["a@example.com"]}


class ValidationTest(EmailerWebTest):
    extra_settings = {"emailer.allowed_senders": "team@example.com"}

    def setUp(self):
        super().setUp()
        self.create_collection()

    def assert_refused(self, emailer, name, message=""):
        for uri in ("/buckets/b", "/buckets/b/collections/c"):
            resp = self.app.put_json(
                uri, {"data": {"kinto-emailer": emailer}}, headers=self.headers, status=400
            )
            self.assertEqual(resp.json["errno"], 107)
            self.assertEqual(resp.json["details"][0]["location"], "body")
            self.assertEqual(resp.json["details"][0]["name"], name)
            self.assertIn(message, resp.json["message"])
            self.assertNotIn("kinto-emailer", self.app.get(uri, headers=self.headers).json["data"])

    def test_template_errors(self):
        cases = {
            "{nope}": "unknown placeholder {nope}",
            "{0}": "positional fields",
            "{}": "positional fields",
            "a { b": "expected '}'",
            "a } b": "Single '}'",
            "{id.__class__}": "attribute access",
            "{id:>200000000}": "limited to 100",
            "{id:.999}": "limited to 100",
            "{id:{timestamp}}": "nested fields",
            "{id!r}": "conversion",
            "{impacted_objects}": "unknown placeholder {impacted_objects}",
            "{settings[userid_hmac_secret]}": "is not allowed",
            "{new}": "needs one to 3 fields",
            "{id:%%%}": "invalid format spec",
            # Specs that cannot format the placeholder's type, whatever the event.
            "{timestamp:c}": "cannot format {timestamp:c}",
            "{changes_count:c}": "cannot format {changes_count:c}",
            "{timestamp:s}": "cannot format {timestamp:s}",
            "{id:d}": "cannot format {id:d}",
            "{user_id:+}": "cannot format {user_id:+}",
            "{new[n]:.2f}": "cannot format {new[n]:.2f}",
            "{old[a][b]:x}": "cannot format {old[a][b]:x}",
        }
        for template, message in cases.items():
            with self.subTest(template=template):
                self.assert_refused(
                    {"hooks": [HOOK, {**HOOK, "template": template}]},
                    "data.kinto-emailer.hooks.1.template",
                    message,
                )

    def test_error_lists_what_is_allowed(self):
        resp = self.app.put_json(
            "/buckets/b",
            {"data": {"kinto-emailer": {"hooks": [{**HOOK, "subject": "{nope}"}]}}},
            headers=self.headers,
            status=400,
        )
        self.assertEqual(resp.json["details"][0]["name"], "data.kinto-emailer.hooks.0.subject")
        self.assertIn("{record_id}", resp.json["message"])
        self.assertIn("{new[<field>]}", resp.json["message"])

    def test_structure_errors(self):
        cases = [
            ({}, "data.kinto-emailer", "'hooks' is a required property"),
            ({"hooks": {}}, "data.kinto-emailer.hooks", "is not of type 'array'"),
            (
                {"hooks": [{"recipients": ["a@example.com"]}]},
                "data.kinto-emailer.hooks.0",
                "'template' is a required property",
            ),
            (
                {"hooks": [{"template": "x"}]},
                "data.kinto-emailer.hooks.0",
                "'recipients' is a required property",
            ),
            (
                {"hooks": [{**HOOK, "recipients": []}]},
                "data.kinto-emailer.hooks.0.recipients",
                "should be non-empty",
            ),
            (
                {"hooks": [{**HOOK, "recipient": "x"}]},
                "data.kinto-emailer.hooks.0",
                "'recipient' was unexpected",
            ),
            (
                {"hooks": [{**HOOK, "template": 3}]},
                "data.kinto-emailer.hooks.0.template",
                "is not of type 'string'",
            ),
            ({"hooks": [], "other": 1}, "data.kinto-emailer", "'other' was unexpected"),
        ]
        for emailer, name, message in cases:
            with self.subTest(emailer=emailer):
                self.assert_refused(emailer, name, message)

    def test_filter_errors(self):
        cases = [
            ("resource_name", "records", "not one of record, collection, group"),
            ("action", "modify", "not one of create"),
            ("event", "kinto.core.events.AfterResourceChange", "not one of"),
            ("collection_id", "^(unclosed", "Invalid regular expression"),
            # RE2 reads repeat counts up to 1000; Python's re overflowed on this one.
            ("event", "^a{99999999999}", "repeat counts are at most 1000"),
            ("record_id", "^a{1001}", "repeat counts are at most 1000"),
            ("record_id", "^a{01}", "repeat counts are at most 1000"),
            ("record_id", "^a{,5}", "repeat counts are at most 1000"),
            ("record_id", "^(a{100}){100}", "Invalid regular expression"),
            # What RE2 does not do: no engine without backtracking can.
            ("id", "^(a)\\1", "Invalid regular expression"),
            ("id", "^a(?=b)", "Invalid regular expression"),
            ("id", "^(?<!a)b", "Invalid regular expression"),
            ("id", "^a\\Z", "Invalid regular expression"),
            ("collection_id", "^(?!(unclosed)", "Invalid regular expression"),
            ("collection_id", "^(?!a(?!b))", "Invalid regular expression"),
            ("collection_id", "^" + "a" * 200, "at most 200 characters"),
            # Short, but a program too large to match a long id quickly.
            ("record_id", "^(?:a?){999}a{999}", "too large"),
            ("record_id", "^\\pL{1,100}", "too large"),
        ]
        for field, value, message in cases:
            with self.subTest(field=field):
                self.assert_refused(
                    {"hooks": [{**HOOK, field: value}]},
                    f"data.kinto-emailer.hooks.0.{field}",
                    message,
                )

    def test_recipient_errors(self):
        cases = [
            ("not-an-address", "not a valid email address"),
            ("a@example.com, b@example.com", "exactly one email address"),
            ("A <a@example.com>, B <b@example.com>", "exactly one email address"),
            ("/buckets/bb/groups/g", "must belong to bucket 'b'"),
            ("/buckets/b/groups/g/extra", "is not a group URI"),
            ("/buckets/b/groups/{nope}", "unknown placeholder"),
        ]
        for recipient, message in cases:
            with self.subTest(recipient=recipient):
                self.assert_refused(
                    {"hooks": [{**HOOK, "recipients": ["ok@example.com", recipient]}]},
                    "data.kinto-emailer.hooks.0.recipients.1",
                    message,
                )

    def test_channel_errors(self):
        cases = [
            ([], "data.kinto-emailer.hooks.0.channels", "should be non-empty"),
            ("web", "data.kinto-emailer.hooks.0.channels", "is not of type 'array'"),
            (["web", "web"], "data.kinto-emailer.hooks.0.channels", "non-unique elements"),
            (["email", "sms"], "data.kinto-emailer.hooks.0.channels.1", "is not one of"),
        ]
        for channels, name, message in cases:
            with self.subTest(channels=channels):
                self.assert_refused({"hooks": [{**HOOK, "channels": channels}]}, name, message)
        for channels in (["web"], ["web", "email"], ["email"]):
            self.put_hooks("/buckets/b", {**HOOK, "channels": channels})

    def test_non_editable_errors(self):
        name = "data.kinto-emailer.hooks.0.non_editable"
        cases = [
            ([], name, "should be non-empty"),
            ("web", name, "is not of type 'boolean', 'array'"),
            (1, name, "is not of type 'boolean', 'array'"),
            (None, name, "is not of type 'boolean', 'array'"),
            (["web", "web"], name, "non-unique elements"),
            (["email", "sms"], f"{name}.1", "is not one of"),
            ([True], f"{name}.0", "is not one of"),
        ]
        for value, path, message in cases:
            with self.subTest(non_editable=value):
                self.assert_refused({"hooks": [{**HOOK, "non_editable": value}]}, path, message)
        for value in (True, False, ["email"], ["web"], ["web", "email"]):
            self.put_hooks("/buckets/b", {**HOOK, "non_editable": value})

    def test_sender_errors(self):
        self.assert_refused(
            {"hooks": [{**HOOK, "sender": "a@example.com, b@example.com"}]},
            "data.kinto-emailer.hooks.0.sender",
            "exactly one email address",
        )

    def test_valid_hooks_are_stored(self):
        hook = {
            **HOOK,
            "subject": "{{literal}} {settings[project_name]}",
            "sender": "Team <team@example.com>",
            "recipients": ["/buckets/{bucket_id}/groups/{collection_id}-reviewers"],
            "event": "^kinto_remote_settings",
            "action": "update",
            "collection_id": "^(?!drafts$)(?![)])[a-z]{1,100}",
            "record_id": "^" + "r" * 199,
        }
        self.put_hooks("/buckets/b", hook)
        stored = self.app.get("/buckets/b", headers=self.headers).json["data"]
        self.assertEqual(stored["kinto-emailer"], {"hooks": [hook]})

    def test_patch_is_checked_on_the_merged_object(self):
        self.put_hooks("/buckets/b/collections/c", HOOK)
        uri = "/buckets/b/collections/c"
        bad = {"kinto-emailer": {"hooks": [{**HOOK, "template": "{nope}"}]}}
        self.app.patch_json(uri, {"data": bad}, headers=self.headers, status=400)
        self.app.patch(
            uri,
            '{"data": {"kinto-emailer": {"hooks": [{"template": "{nope}"}]}}}',
            headers={**self.headers, "Content-Type": "application/merge-patch+json"},
            status=400,
        )
        json_patch = [
            {"op": "replace", "path": "/data/kinto-emailer/hooks/0/template", "value": "{nope}"}
        ]
        resp = self.app.patch_json(
            uri,
            json_patch,
            headers={**self.headers, "Content-Type": "application/json-patch+json"},
            status=400,
        )
        self.assertEqual(resp.json["details"][0]["name"], "data.kinto-emailer.hooks.0.template")
        stored = self.app.get(uri, headers=self.headers).json["data"]
        self.assertEqual(stored["kinto-emailer"], {"hooks": [HOOK]})

    def test_batch_refuses_the_bad_subrequest_only(self):
        requests = [
            {
                "method": "PUT",
                "path": "/buckets/b/collections/good",
                "body": {"data": {"kinto-emailer": {"hooks": [HOOK]}}},
            },
            {
                "method": "PUT",
                "path": "/buckets/b/collections/bad",
                "body": {"data": {"kinto-emailer": {"hooks": [{**HOOK, "template": "{0}"}]}}},
            },
        ]
        resp = self.app.post_json("/batch", {"requests": requests}, headers=self.headers)
        statuses = [r["status"] for r in resp.json["responses"]]
        self.assertEqual(statuses, [201, 400])
        self.assertEqual(
            resp.json["responses"][1]["body"]["details"][0]["name"],
            "data.kinto-emailer.hooks.0.template",
        )
        self.app.get("/buckets/b/collections/bad", headers=self.headers, status=404)

    def test_new_bucket_with_bad_hooks_is_not_created(self):
        body = {"data": {"kinto-emailer": {"hooks": [{**HOOK, "template": "{"}]}}}
        self.app.put_json("/buckets/new", body, headers=self.headers, status=400)
        self.app.post_json(
            "/buckets", {"data": {"id": "new2", **body["data"]}}, headers=self.headers, status=400
        )
        self.app.get("/buckets/new", headers=self.headers, status=403)
        self.app.get("/buckets/new2", headers=self.headers, status=403)
        ids = [b["id"] for b in self.app.get("/buckets", headers=self.headers).json["data"]]
        self.assertEqual(ids, ["b"])

    def test_writes_after_a_refused_hook_still_succeed(self):
        self.put_hooks("/buckets/b", HOOK)
        self.app.put_json(
            "/buckets/b",
            {"data": {"kinto-emailer": {"hooks": [{**HOOK, "template": "{nope}"}]}}},
            headers=self.headers,
            status=400,
        )
        self.create_record("/buckets/b/collections/c/records")
        self.assertEqual(len(self.mails()), 1)


RECORD_HOOK = {**HOOK, "resource_name": "record"}
# Hooks that kinto-emailer 4.x stored and that today's checks refuse.
STORED_EARLIER = [
    {**RECORD_HOOK, "recipient": "typo@example.com"},
    {**RECORD_HOOK, "template": "{impacted_objects}"},
    {**RECORD_HOOK, "recipients": ["admin@localhost"]},
]
COLLECTION = "/buckets/b/collections/c"


class StoredEarlierTest(EmailerWebTest):
    """Writes are checked for what they change in the hooks, not for what was stored."""

    extra_settings = {"includes": "kinto_emailer tests.plugins.tracking"}

    def setUp(self):
        super().setUp()
        self.app.put_json("/buckets/b", headers=self.headers)
        self.app.put_json(COLLECTION, headers=self.headers)
        emailer = {"kinto-emailer": {"hooks": [*STORED_EARLIER, RECORD_HOOK]}}
        store_unchecked(self.registry, "bucket", "", "b", {"id": "b", **emailer})
        store_unchecked(self.registry, "collection", "/buckets/b", "c", {"id": "c", **emailer})
        self.hooks = [*STORED_EARLIER, RECORD_HOOK]

    def stored_hooks(self, uri=COLLECTION):
        return self.app.get(uri, headers=self.headers).json["data"]["kinto-emailer"]["hooks"]

    def test_writes_that_leave_the_hooks_alone_succeed(self):
        # The tracking plugin writes the collection through the storage backend.
        self.create_record(f"{COLLECTION}/records")
        self.assertEqual(
            self.app.get(COLLECTION, headers=self.headers).json["data"]["status"],
            "work-in-progress",
        )
        self.app.patch_json(COLLECTION, {"data": {"status": "to-review"}}, headers=self.headers)
        self.app.patch(
            COLLECTION,
            '{"data": {"status": "signed"}}',
            headers={**self.headers, "Content-Type": "application/merge-patch+json"},
        )
        self.app.patch_json(
            COLLECTION,
            [{"op": "replace", "path": "/data/status", "value": "to-sign"}],
            headers={**self.headers, "Content-Type": "application/json-patch+json"},
        )
        data = self.app.get(COLLECTION, headers=self.headers).json["data"]
        self.app.put_json(COLLECTION, {"data": {**data, "n": 1}}, headers=self.headers)
        self.app.patch_json("/buckets/b", {"data": {"n": 1}}, headers=self.headers)
        self.assertEqual(self.stored_hooks(), self.hooks)
        self.assertEqual(self.stored_hooks("/buckets/b"), self.hooks)

    def test_a_write_that_changes_hooks_has_the_new_ones_checked(self):
        added = {**RECORD_HOOK, "recipients": ["b@example.com"]}
        self.app.patch_json(
            COLLECTION,
            {"data": {"kinto-emailer": {"hooks": [*self.hooks, added]}}},
            headers=self.headers,
        )
        self.hooks.append(added)
        refused = [
            ({"hooks": [*self.hooks, {**RECORD_HOOK, "template": "{nope}"}]}, "hooks.5.template"),
            (
                {"hooks": [self.hooks[0], {**RECORD_HOOK, "template": "{id} {impacted_objects}"}]},
                "hooks.1.template",
            ),
            (
                {"hooks": [{**RECORD_HOOK, "recipients": ["root@localhost"]}]},
                "hooks.0.recipients.0",
            ),
            ({"hooks": self.hooks, "other": 1}, ""),
        ]
        for emailer, name in refused:
            with self.subTest(emailer=emailer):
                response = self.app.patch_json(
                    COLLECTION,
                    {"data": {"kinto-emailer": emailer}},
                    headers=self.headers,
                    status=400,
                )
                self.assertEqual(
                    response.json["details"][0]["name"],
                    f"data.kinto-emailer.{name}".rstrip("."),
                )
                self.assertEqual(self.stored_hooks(), self.hooks)
        # Fixing or removing a hook stored earlier is a write like any other.
        fixed = [{**RECORD_HOOK, "recipients": ["admin@example.com"]}, *self.hooks[3:]]
        self.app.patch_json(
            COLLECTION, {"data": {"kinto-emailer": {"hooks": fixed}}}, headers=self.headers
        )
        self.assertEqual(self.stored_hooks(), fixed)

    def test_hooks_stored_earlier_are_skipped_with_a_warning_naming_them(self):
        with self.assertLogs("kinto_emailer.hooks", logging.WARNING) as logs:
            self.create_record(f"{COLLECTION}/records")
            mails = self.mails()
        self.assertEqual([m.rcpt_tos for m in mails], [["a@example.com"]])
        reasons = ["'recipient' was unexpected", "{impacted_objects}", "admin@localhost"]
        for index, reason in enumerate(reasons):
            [line] = {line for line in logs.output if f"hook {index} of {COLLECTION}:" in line}
            self.assertIn(reason, line)


class ChannelsTest(unittest.TestCase):
    def test_email_by_default_and_fingerprints_of_existing_hooks_unchanged(self):
        settings = EmailerSettings()
        before = hooks.parse_hook(HOOK, 0, "b", settings)
        self.assertEqual(before.channels, ("email",))
        # Keys of mail already sent stay those of the same hook: no mail twice on upgrade.
        self.assertEqual(
            before.fingerprint, "73af712ae671141b9a6fa382e93073ffc727bca39f25cef6e8d2bc60c5aedfac"
        )
        both = hooks.parse_hook({**HOOK, "channels": ["web", "email"]}, 0, "b", settings)
        self.assertEqual(both.channels, ("web", "email"))
        self.assertEqual(both.fingerprint, before.fingerprint)

    def test_non_editable_locks_every_channel_or_those_listed(self):
        settings = EmailerSettings()
        cases = [
            (None, set()),
            (False, set()),
            (True, {"email", "web"}),
            (["web"], {"web"}),
            (["email"], {"email"}),
            (["web", "email"], {"email", "web"}),
        ]
        for value, locked in cases:
            with self.subTest(non_editable=value):
                raw = HOOK if value is None else {**HOOK, "non_editable": value}
                hook = hooks.parse_hook(raw, 0, "b", settings)
                self.assertEqual(hook.non_editable, locked)
                self.assertEqual(
                    hook.fingerprint, hooks.parse_hook(HOOK, 0, "b", settings).fingerprint
                )

    def test_a_stored_non_editable_refused_today_is_skipped_when_used(self):
        # One parser on save and on use: a value stored past the check is never read as
        # another lock.
        metadata = {"kinto-emailer": {"hooks": [{**HOOK, "non_editable": ["sms"]}, HOOK]}}
        with self.assertLogs("kinto_emailer.hooks", logging.WARNING) as logs:
            loaded = hooks.load(metadata, "b", EmailerSettings(), "/buckets/b")
        self.assertEqual(len(loaded), 1)
        [line] = logs.output
        self.assertIn("hook 0 of /buckets/b: data.kinto-emailer.hooks.0.non_editable.0", line)
