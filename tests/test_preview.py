"""A hook's preview: ``POST /v1/buckets/<b>[/collections/<c>]/emailer/preview``."""

import logging
import unittest

import transaction
from kinto.core.cache.memory import Cache

from kinto_emailer import hooks, jobs, messages, preview, preview_views
from kinto_emailer.preferences import Cell, Preferences, PreferenceStore, Scope
from kinto_emailer.ratelimit import RateLimit
from tests.support import BOB, EmailerWebTest, skip_unless_postgresql, store_unchecked
from tests.test_html import HOSTILE, Parts
from tests.test_postgresql import PostgreSQL


RECORDS = "/buckets/b/collections/c/records"
PREVIEW = "/buckets/b/emailer/preview"
COLLECTION_PREVIEW = "/buckets/b/collections/c/emailer/preview"
HOOK = {
    "resource_name": "record",
    "action": "create",
    "subject": "New {new[title]}",
    "template": "{new[title]} was added: {uri}",
    "recipients": ["a@example.com", "Bee <b@example.com>"],
}
PLUGIN_RESOURCES = (
    "emailer-preferences",
    "emailer-digest-entry",
    "emailer-digest-recipient",
    "emailer-notification",
    "emailer-inbox",
)
ME = {"X-Forwarded-Email": "me@example.com"}
"""A user whose address the proxy in front of Kinto proved."""


def user_id(app, headers):
    return app.get("/", headers=headers).json["user"]["id"]


class PreviewTest(EmailerWebTest):
    extra_settings = {
        "includes": "kinto_emailer tests.plugins.recording_metrics",
        "multiauth.policies": "proxy basicauth",
        "multiauth.policy.proxy.use": "tests.plugins.ForwardedEmailPolicy",
        "emailer.verified_principals": "proxy",
        "emailer.group_threshold": "10",
    }

    def setUp(self):
        super().setUp()
        self.create_collection()
        for record_id, title in (("r1", "One"), ("r2", "Two"), ("r3", "Three")):
            self.app.put_json(
                f"{RECORDS}/{record_id}", {"data": {"title": title}}, headers=self.headers
            )
        self.mails()

    def preview(self, body, uri=PREVIEW, status=200, headers=None, query=""):
        response = self.app.post_json(
            f"{uri}{query}", body, headers=headers or self.headers, status=status
        )
        return response.json.get("data", response.json)

    def ask(self, hook=HOOK, obj=f"{RECORDS}/r1", action="create", **kw):
        return self.preview({"hook": hook, "object": obj, "action": action}, **kw)

    def group(self, group_id, *members):
        self.app.put_json(
            f"/buckets/b/groups/{group_id}",
            {"data": {"members": list(members)}},
            headers=self.headers,
        )
        self.mails()

    def choose(self, key, scope="/buckets/b", suppressed=False, **cells):
        """Store ``key``'s choices for ``scope`` (``email="off"``, ``web=False``)."""
        chosen = {
            channel: Cell("immediate" if channel == "email" else True, choice=choice)
            for channel, choice in cells.items()
        }

        def change(preferences):
            return Preferences({**preferences.scopes, scope: Scope(chosen)}, suppressed)

        with transaction.manager:
            PreferenceStore(self.registry.storage).update(key, change)

    def stored_counts(self):
        """What the plugin keeps: its objects in Kinto's storage, its queue and usage."""
        storage = self.registry.storage
        counts = {
            name: storage.count_all(resource_name=name, parent_id="*", include_deleted=True)
            for name in PLUGIN_RESOURCES
        }
        queue = self.registry.emailer_delivery.queue
        if queue is not None:
            with jobs.session(queue.dsn) as connection:
                for table in (*jobs.TABLES, "kinto_emailer_inboxes"):
                    counts[table] = jobs.execute(connection, f"SELECT count(*) FROM {table}")[0][0]
        else:
            outbox = self.registry.emailer_delivery.outbox
            counts["usage"] = len(outbox.tally._usage)
            counts.update(outbox.counts)
        metrics = self.registry.metrics.counts
        counts.update({k: v for k, v in metrics.items() if k.startswith("plugins.emailer.")})
        return counts

    def message_id(self, hook, address, uri=f"{RECORDS}/r1"):
        """The Message-ID of the mail that ``hook`` sends ``address`` about ``uri``."""
        parsed = hooks.parse_new(hook, 0, "b", self.registry.emailer_settings)
        timestamp = self.app.get(uri, headers=self.headers).json["data"]["last_modified"]
        key = messages.idempotency_key(
            "http://localhost/v1/", uri, timestamp, preview.CHANGED, parsed.fingerprint, address
        )
        return f"<{key[:32]}@example.com>"

    # What a preview shows.

    def test_plain_addresses_get_one_message_each_as_it_would_be_sent(self):
        answer = self.ask()
        self.assertTrue(answer["matches"])
        self.assertEqual(answer["matched"], [f"{RECORDS}/r1"])
        self.assertEqual(answer["states"], {"email": {"now": 2}, "web": {}})
        first, second = answer["messages"]
        self.assertEqual(
            [first["recipient"], second["recipient"]], ["a@example.com", "b@example.com"]
        )
        self.assertEqual(second["to"], "Bee <b@example.com>")
        self.assertEqual(first["from"], "Kinto <kinto@example.com>")
        self.assertEqual(first["subject"], "New One")
        self.assertEqual(first["state"], "now")
        self.assertFalse(first["grouped"])
        self.assertEqual(first["headers"]["Subject"], "New One")
        self.assertEqual(first["headers"]["Auto-Submitted"], "auto-generated")
        self.assertTrue(first["text"].startswith(f"One was added: {RECORDS}/r1\n"))
        self.assertIsNone(first["html"])
        self.assertEqual(answer["notifications"], [])
        self.assertEqual(answer["unmatched"], [])

    def test_links_show_their_shape_with_a_placeholder_never_a_token(self):
        [message, _] = self.ask()["messages"]
        unsubscribe = "http://localhost/v1/emailer/unsubscribe?token=PREVIEW-TOKEN"
        self.assertEqual(message["headers"]["List-Unsubscribe"], f"<{unsubscribe}>")
        self.assertIn(f"Unsubscribe: {unsubscribe}", message["text"])
        self.assertIn("emailer/page?token=PREVIEW-TOKEN", message["text"])
        self.assertEqual(message["text"].count("token="), 2)
        # The placeholder opens nothing.
        self.app.get("/emailer/page?token=PREVIEW-TOKEN", status=400)

    def test_group_members_are_expanded(self):
        self.group("g", "proxy:m@example.com", "account:carol", "ldap:x@example.com")
        answer = self.ask({**HOOK, "recipients": ["/buckets/b/groups/g", "a@example.com"]})
        recipients = [m["recipient"] for m in answer["messages"]]
        self.assertEqual(recipients, ["m@example.com", "x@example.com", "a@example.com"])
        self.assertEqual(answer["hidden"], [])

    def test_preferences_decide_each_message_and_are_only_read(self):
        addresses = ["a@example.com", "b@example.com", "c@example.com", "d@example.com"]
        self.choose("a@example.com", email="off")
        self.choose("b@example.com", email="daily")
        self.choose("c@example.com", suppressed=True)
        before = self.stored_counts()
        answer = self.ask({**HOOK, "recipients": addresses})
        states = {m["recipient"]: m["state"] for m in answer["messages"]}
        self.assertEqual(
            states,
            {
                "a@example.com": "off",
                "b@example.com": "daily",
                "c@example.com": "suppressed",
                "d@example.com": "now",
            },
        )
        self.assertEqual(
            answer["states"]["email"], {"off": 1, "daily": 1, "suppressed": 1, "now": 1}
        )
        # Mail kept for a digest goes out in the digest, which carries the links.
        daily = answer["messages"][1]
        self.assertNotIn("token=", daily["text"])
        self.assertNotIn("List-Unsubscribe", daily["headers"])
        self.assertEqual(self.stored_counts(), before)

    def test_a_hooks_cadence_and_locks(self):
        self.choose("a@example.com", email="off")
        hook = {**HOOK, "cadence": "weekly", "recipients": ["a@example.com", "b@example.com"]}
        states = [m["state"] for m in self.ask(hook)["messages"]]
        self.assertEqual(states, ["off", "weekly"])
        locked = {**HOOK, "non_editable": True, "recipients": ["a@example.com"]}
        [message] = self.ask(locked)["messages"]
        self.assertEqual(message["state"], "now")
        # Mail that cannot be turned off offers no unsubscribe link.
        self.assertNotIn("List-Unsubscribe", message["headers"])

    def test_past_the_group_threshold_each_recipient_gets_one_summary(self):
        hook = {
            **HOOK,
            "group_threshold": 2,
            "recipients": ["a@example.com"],
            "channels": ["email", "web"],
        }
        uris = [f"{RECORDS}/r{i}" for i in (1, 2, 3)]
        answer = self.preview({"hook": hook, "objects": uris, "action": "create"})
        [message] = answer["messages"]
        self.assertTrue(message["grouped"])
        self.assertEqual(message["subject"], "3 records created in b/c")
        self.assertIn(f"- New Three: http://localhost/v1{RECORDS}/r3", message["text"])
        [notification] = answer["notifications"]
        self.assertTrue(notification["grouped"])
        self.assertEqual(notification["uri"], "/buckets/b/collections/c")
        below = self.preview({"hook": hook, "objects": uris[:2], "action": "create"})
        self.assertEqual([m["grouped"] for m in below["messages"]], [False, False])

    def test_html_templates_escape_values(self):
        hook = {**HOOK, "html_template": "<h1>{new[title]}</h1>", "recipients": ["a@example.com"]}
        for title in HOSTILE:
            obj = {
                "resource_name": "record",
                "id": "x",
                "collection_id": "c",
                "data": {"title": title},
            }
            with self.subTest(title=title):
                [message] = self.ask(hook, obj)["messages"]
                self.assertTrue(
                    message["headers"]["Content-Type"].startswith("multipart/alternative")
                )
                parts = Parts(message["html"])
                self.assertEqual(
                    parts.tags, ["html", "head", "meta", "body", "h1", "hr", "p", "a", "a"]
                )
                self.assertIn(title, parts.text)

    def test_the_web_channel_per_inbox(self):
        self.group("g", "account:carol", "proxy:m@example.com")
        self.choose("account:carol", web=False)
        hook = {
            **HOOK,
            "recipients": ["/buckets/b/groups/g", "a@example.com"],
            "channels": ["web"],
        }
        answer = self.ask(hook)
        self.assertEqual(answer["messages"], [])
        inboxes = {n["inbox"]: n["state"] for n in answer["notifications"]}
        self.assertEqual(
            inboxes, {"account:carol": "off", "m@example.com": "now", "a@example.com": "now"}
        )
        notification = answer["notifications"][0]
        self.assertEqual(notification["subject"], "New One")
        self.assertEqual(notification["link"], f"http://localhost/v1{RECORDS}/r1")
        self.assertEqual(notification["scope"], "/buckets/b")
        self.assertEqual(answer["states"]["web"], {"off": 1, "now": 2})

    def test_mail_of_hooks_with_both_channels_links_the_inbox(self):
        hook = {**HOOK, "recipients": ["a@example.com"], "channels": ["email", "web"]}
        [message] = self.ask(hook)["messages"]
        self.assertIn("emailer/inbox?token=PREVIEW-TOKEN", message["text"])

    def test_a_hook_that_does_not_match_says_which_filter_failed(self):
        cases = [
            ({**HOOK, "action": "delete"}, "action", "delete", ["create"]),
            ({**HOOK, "record_id": "^draft-"}, "record_id", "^draft-", ["r1"]),
            ({**HOOK, "resource_name": "group"}, "resource_name", "group", ["record"]),
            (
                {**HOOK, "event": "kinto_remote_settings.signer.events.ReviewRequested"},
                "event",
                "kinto_remote_settings.signer.events.ReviewRequested",
                ["kinto.core.events.ResourceChanged", "kinto.core.events.AfterResourceChanged"],
            ),
        ]
        for hook, name, value, change in cases:
            with self.subTest(filter=name):
                answer = self.ask(hook)
                self.assertFalse(answer["matches"])
                self.assertEqual(answer["messages"], [])
                self.assertEqual(
                    answer["unmatched"],
                    [
                        {
                            "uri": f"{RECORDS}/r1",
                            "failed": [{"filter": name, "hook": value, "change": change}],
                        }
                    ],
                )

    def test_events_and_actions_of_the_request_are_matched(self):
        hook = {**HOOK, "action": "updated", "event": "kinto_signer.events.ReviewRequested"}
        answer = self.preview(
            {
                "hook": hook,
                "object": f"{RECORDS}/r1",
                "action": "update",
                "event": "kinto_remote_settings.signer.events.ReviewRequested",
            }
        )
        self.assertTrue(answer["matches"])
        self.assertEqual(answer["event"], "kinto_remote_settings.signer.events.ReviewRequested")

    def test_a_bucket_hook_does_not_apply_where_a_collection_has_hooks_of_its_own(self):
        self.put_hooks("/buckets/b/collections/c", {**HOOK, "recipients": ["c@example.com"]})
        answer = self.ask()
        self.assertEqual(
            answer["unmatched"][0]["failed"],
            [{"filter": "scope", "hook": "/buckets/b", "change": ["/buckets/b/collections/c"]}],
        )
        # The collection's own hooks do.
        answer = self.ask(0, uri=COLLECTION_PREVIEW)
        self.assertEqual(answer["hook"], 0)
        self.assertEqual([m["recipient"] for m in answer["messages"]], ["c@example.com"])

    def test_a_stored_hook_by_its_index(self):
        self.put_hooks("/buckets/b", HOOK, {**HOOK, "recipients": ["z@example.com"]})
        answer = self.ask(1)
        self.assertEqual(answer["hook"], 1)
        self.assertEqual([m["recipient"] for m in answer["messages"]], ["z@example.com"])
        error = self.ask(2, status=400)
        self.assertEqual(error["details"][0]["name"], "hook")
        self.assertIn("/buckets/b holds hooks 0 to 1", error["message"])
        error = self.ask(0, uri=COLLECTION_PREVIEW, status=400)
        self.assertIn("/buckets/b/collections/c holds no hooks", error["message"])

    def test_a_stored_hook_that_would_be_skipped_is_a_400(self):
        bad = {**HOOK, "template": "{impacted_objects}"}
        store_unchecked(
            self.registry, "bucket", "", "b", {"id": "b", "kinto-emailer": {"hooks": [HOOK, bad]}}
        )
        error = self.ask(1, status=400)
        self.assertEqual(error["details"][0]["name"], "data.kinto-emailer.hooks.1.template")
        self.assertIn("skipped when used", error["message"])

    def test_an_invalid_hook_gets_the_400_that_saving_it_gets(self):
        self.app.put_json("/buckets/other", headers=self.headers)
        invalid = [
            {**HOOK, "template": "{nope}"},
            {**HOOK, "html_template": "<p>{id.__class__}</p>"},
            {**HOOK, "recipients": ["a@example.com, b@example.com"]},
            {**HOOK, "recipients": ["/buckets/other/groups/g"]},
            {**HOOK, "record_id": "^(a+)\\1$"},
            {**HOOK, "sender": "Evil <evil@example.org>"},
            {**HOOK, "group_threshold": 11},
            {**HOOK, "unknown": 1},
            {"template": "t"},
        ]
        for hook in invalid:
            with self.subTest(hook=hook):
                body = {"data": {"kinto-emailer": {"hooks": [hook]}}}
                saved = self.app.put_json("/buckets/b", body, headers=self.headers, status=400)
                previewed = self.ask(hook, status=400)
                self.assertEqual(previewed, saved.json)
                self.assertTrue(
                    previewed["details"][0]["name"].startswith("data.kinto-emailer.hooks.0")
                )

    def test_inline_objects_as_they_were_and_are(self):
        hook = {**HOOK, "action": "update", "template": "{old[title]} -> {new[title]}"}
        obj = {
            "resource_name": "record",
            "id": "draft",
            "collection_id": "c",
            "data": {"title": "After"},
            "old": {"title": "Before"},
        }
        [message, _] = self.ask(hook, obj, "update")["messages"]
        self.assertTrue(message["text"].startswith("Before -> After\n"))
        deleted = {**HOOK, "action": "delete", "template": "{old[title]} deleted"}
        [message, _] = self.ask(deleted, f"{RECORDS}/r2", "delete")["messages"]
        self.assertTrue(message["text"].startswith("Two deleted\n"))
        group = {
            **HOOK,
            "resource_name": "group",
            "action": "update",
            "template": "{group_id} {uri}",
        }
        self.group("editors")
        [message, _] = self.ask(group, "/buckets/b/groups/editors", "update")["messages"]
        self.assertTrue(message["text"].startswith("editors /buckets/b/groups/editors\n"))

    def test_placeholders_of_the_caller(self):
        hook = {**HOOK, "template": "{user_id} {action} {event} {root_url}"}
        [message, _] = self.ask(hook)["messages"]
        alice = user_id(self.app, self.headers)
        expected = f"{alice} create kinto.core.events.ResourceChanged http://localhost/v1/\n"
        self.assertTrue(message["text"].startswith(expected))

    def test_bad_requests_name_the_json_path(self):
        inline = {"resource_name": "record", "id": "x", "collection_id": "c"}
        cases = [
            ({"hook": HOOK, "object": f"{RECORDS}/r1"}, "action"),
            ({"hook": HOOK, "object": f"{RECORDS}/r1", "action": "publish"}, "action"),
            ({"hook": HOOK, "action": "create"}, "object"),
            ({"object": f"{RECORDS}/r1", "action": "create"}, "hook"),
            ({"hook": True, "object": f"{RECORDS}/r1", "action": "create"}, "hook"),
            ({"hook": HOOK, "object": f"{RECORDS}/r1", "action": "create", "nope": 1}, "nope"),
            (
                {"hook": HOOK, "object": "/buckets/other/collections/c", "action": "create"},
                "object",
            ),
            ({"hook": HOOK, "object": "/buckets/b", "action": "create"}, "object"),
            ({"hook": HOOK, "object": f"{RECORDS}/missing", "action": "create"}, "object"),
            ({"hook": HOOK, "object": f"{RECORDS}/{'r' * 1024}", "action": "create"}, "object"),
            ({"hook": HOOK, "object": 3, "action": "create"}, "object"),
            ({"hook": HOOK, "object": {**inline, "id": "a/b"}, "action": "create"}, "object.id"),
            ({"hook": HOOK, "object": {**inline, "kind": 1}, "action": "create"}, "object.kind"),
            ({"hook": HOOK, "object": {**inline, "data": []}, "action": "create"}, "object.data"),
            ({"hook": HOOK, "object": {**inline, "old": {}}, "action": "create"}, "object.old"),
            (
                {
                    "hook": HOOK,
                    "object": {**inline, "resource_name": "bucket"},
                    "action": "create",
                },
                "object.resource_name",
            ),
            (
                {"hook": HOOK, "object": {**inline, "collection_id": None}, "action": "create"},
                "object.collection_id",
            ),
            ({"hook": HOOK, "objects": [], "action": "create"}, "objects"),
            (
                {
                    "hook": HOOK,
                    "objects": [f"{RECORDS}/r1", "/buckets/b/collections/c"],
                    "action": "create",
                },
                "objects.1",
            ),
            (
                {
                    "hook": HOOK,
                    "object": f"{RECORDS}/r1",
                    "objects": [f"{RECORDS}/r1"],
                    "action": "create",
                },
                "object",
            ),
            (
                {
                    "hook": HOOK,
                    "object": f"{RECORDS}/r1",
                    "action": "create",
                    "event": "kinto.core.events.AfterResourceChange",
                },
                "event",
            ),
            ([1], "body"),
        ]
        for body, name in cases:
            with self.subTest(body=body):
                error = self.preview(body, status=400)
                self.assertEqual(error["details"][0]["name"], name)
                self.assertEqual(error["details"][0]["location"], "body")
        error = self.app.post(
            PREVIEW, "{", headers={**self.headers, "Content-Type": "application/json"}, status=400
        )
        self.assertEqual(error.json["details"][0]["name"], "body")
        error = self.ask(query="?send_to_me=yes", status=400)
        self.assertEqual(
            error["details"][0],
            {"location": "querystring", "name": "send_to_me", "description": "true or false."},
        )
        too_large = {
            "hook": HOOK,
            "object": {**inline, "data": {"t": "x" * 1_100_000}},
            "action": "create",
        }
        self.preview(too_large, status=413)

    def test_objects_are_bounded(self):
        uris = [f"{RECORDS}/r1"] * (preview.MAX_OBJECTS + 1)
        error = self.preview({"hook": HOOK, "objects": uris, "action": "create"}, status=400)
        self.assertEqual(error["details"][0]["name"], "objects")

    def test_what_an_answer_shows_is_bounded_and_recipients_too(self):
        many = [f"r{i}@example.com" for i in range(preview.MAX_SHOWN + 5)]
        answer = self.ask({**HOOK, "recipients": many})
        self.assertEqual(len(answer["messages"]), preview.MAX_SHOWN)
        self.assertEqual(answer["omitted"], {"messages": 5, "notifications": 0})
        self.assertEqual(answer["states"]["email"], {"now": preview.MAX_SHOWN + 5})
        self.group("big", *(f"proxy:m{i}@example.com" for i in range(150)))
        answer = self.ask({**HOOK, "recipients": ["/buckets/b/groups/big"]})
        self.assertEqual(answer["states"]["email"], {"now": 100})
        self.assertEqual(
            answer["problems"],
            [
                f"A hook for {RECORDS}/r1 has 150 recipients: it notifies the first 100"
                " (kinto.emailer.max_recipients)."
            ],
        )

    # Who may preview, and what they see.

    def test_readers_anonymous_and_writers_of_other_buckets_may_not(self):
        bob = user_id(self.app, BOB)
        self.app.patch_json("/buckets/b", {"permissions": {"read": [bob]}}, headers=self.headers)
        self.app.put_json("/buckets/bobs", headers=BOB)
        self.ask(headers=BOB, status=403)
        self.ask(uri=COLLECTION_PREVIEW, headers=BOB, status=403)
        self.app.post_json(PREVIEW, {}, status=401)
        self.app.post_json(COLLECTION_PREVIEW, {}, status=401)
        self.ask(uri="/buckets/bobs/emailer/preview", headers=self.headers, status=403)

    def test_a_missing_bucket_is_told_from_a_forbidden_one_by_no_stranger(self):
        self.app.put_json("/buckets/bobs", headers=BOB)
        stranger = self.app.post_json(
            "/buckets/bobs/emailer/preview", {}, headers=self.headers, status=403
        )
        missing = self.app.post_json(
            "/buckets/nope/emailer/preview", {}, headers=self.headers, status=403
        )
        self.assertEqual(stranger.json, missing.json)
        self.app.post_json(
            "/buckets/bobs/collections/nope/emailer/preview", {}, headers=self.headers, status=403
        )
        # Its writers learn what Kinto tells them: it does not exist.
        error = self.app.post_json(
            "/buckets/b/collections/nope/emailer/preview", {}, headers=self.headers, status=404
        )
        self.assertEqual(error.json["details"], {"id": "nope", "resource_name": "collection"})

    def test_a_collections_writers_preview_its_hooks_not_its_buckets(self):
        bob = user_id(self.app, BOB)
        self.app.patch_json(
            "/buckets/b/collections/c", {"permissions": {"write": [bob]}}, headers=self.headers
        )
        self.ask(headers=BOB, status=403)
        answer = self.ask(uri=COLLECTION_PREVIEW, headers=BOB)
        self.assertEqual(answer["scope"], "/buckets/b/collections/c")
        self.assertEqual(len(answer["messages"]), 2)
        error = self.ask(
            obj="/buckets/b/collections/d", uri=COLLECTION_PREVIEW, headers=BOB, status=400
        )
        self.assertIn("about that collection and its records only", error["message"])

    def test_members_of_groups_the_caller_may_not_read_are_counted_never_named(self):
        bob = user_id(self.app, BOB)
        self.app.patch_json(
            "/buckets/b/collections/c", {"permissions": {"write": [bob]}}, headers=self.headers
        )
        # x@example.com gets mail, and account:x@example.com web notifications: one member.
        self.group("g", "proxy:m@example.com", "account:carol", "account:x@example.com")
        self.group("open", "proxy:o@example.com")
        self.app.patch_json(
            "/buckets/b/groups/open", {"permissions": {"read": [bob]}}, headers=self.headers
        )
        hook = {
            **HOOK,
            "recipients": ["/buckets/b/groups/g", "/buckets/b/groups/open", "d@example.com"],
            "channels": ["email", "web"],
        }
        response = self.app.post_json(
            COLLECTION_PREVIEW,
            {"hook": hook, "object": f"{RECORDS}/r1", "action": "create"},
            headers=BOB,
        )
        answer = response.json["data"]
        # Message-IDs hash the address: the hidden one's would tell it to whoever guesses.
        ids = {
            address: self.message_id(hook, address)
            for address in ("m@example.com", "d@example.com")
        }
        self.assertEqual(answer["messages"][1]["headers"]["Message-ID"], ids["d@example.com"])
        for secret in ("m@example.com", "carol", "x@example.com", ids["m@example.com"]):
            self.assertNotIn(secret, response.text)
        self.assertEqual(
            [m["recipient"] for m in answer["messages"]], ["o@example.com", "d@example.com"]
        )
        self.assertEqual(
            [n["inbox"] for n in answer["notifications"]], ["o@example.com", "d@example.com"]
        )
        [hidden] = answer["hidden"]
        self.assertEqual(hidden["group"], "/buckets/b/groups/g")
        self.assertEqual(hidden["members"], 3)
        self.assertEqual(
            hidden["message"]["to"], "A member of /buckets/b/groups/g <member@example.invalid>"
        )
        self.assertEqual(hidden["message"]["subject"], "New One")
        self.assertEqual(hidden["notification"]["subject"], "New One")
        self.assertNotIn("state", hidden["message"])
        # The bucket's writers read its groups: they see every member.
        answer = self.preview(
            {"hook": hook, "object": f"{RECORDS}/r1", "action": "create"}, uri=COLLECTION_PREVIEW
        )
        self.assertEqual(answer["hidden"], [])
        self.assertEqual(len(answer["messages"]), 4)

    # Nothing is sent, queued or stored.

    def test_nothing_is_sent_queued_or_stored(self):
        self.group("g", "proxy:m@example.com", "account:carol")
        self.choose("a@example.com", email="daily")
        hook = {
            **HOOK,
            "recipients": ["/buckets/b/groups/g", "a@example.com", "new@example.com"],
            "channels": ["email", "web"],
        }
        before = self.stored_counts()
        answer = self.preview(
            {"hook": hook, "objects": [f"{RECORDS}/r1", f"{RECORDS}/r2"], "action": "create"}
        )
        self.assertEqual(answer["states"]["email"], {"now": 4, "daily": 2})
        self.assertEqual(self.mails(), [])
        self.assertEqual(self.stored_counts(), before)
        self.assertEqual(before["emailer-preferences"], 1)
        for name in ("emailer-digest-entry", "emailer-notification"):
            self.assertEqual(before[name], 0)

    # send_to_me

    def test_send_to_me_mails_the_first_previews_to_the_callers_own_address(self):
        me = user_id(self.app, ME)
        self.assertEqual(me, "proxy:me@example.com")
        self.app.patch_json("/buckets/b", {"permissions": {"write": [me]}}, headers=self.headers)
        hook = {**HOOK, "recipients": [f"r{i}@example.com" for i in range(5)]}
        counts = self.registry.metrics.counts
        sent = counts.get("plugins.emailer.sent", 0)
        with self.assertLogs("kinto_emailer.delivery", logging.INFO) as logs:
            answer = self.ask(hook, headers=ME, query="?send_to_me=true")
            mails = self.sink.wait_for(preview.SENT_TO_ME)
            self.mails()
        self.assertEqual(answer["sent_to_me"], {"to": "me@example.com", "messages": 3})
        self.assertEqual(len(mails), preview.SENT_TO_ME)
        for mail in mails:
            self.assertEqual(mail.rcpt_tos, ["me@example.com"])
            self.assertEqual(mail.message["To"], "me@example.com")
            self.assertEqual(mail.message["Subject"], "[Preview] New One")
            self.assertTrue(mail.body.startswith("One was added"))
        self.assertEqual(len({m.message["Message-ID"] for m in mails}), 3)
        self.assertTrue(
            any("Sent " in line and "to me@example.com" in line for line in logs.output)
        )
        self.assertEqual(counts["plugins.emailer.sent"] - sent, 3)

    def test_send_to_me_needs_an_address_the_server_trusts(self):
        error = self.ask(query="?send_to_me=true", status=403)
        self.assertIn("verified_principals", error["message"])
        self.assertEqual(self.mails(), [])

    def test_send_to_me_a_few_times_a_minute(self):
        me = user_id(self.app, ME)
        self.app.patch_json("/buckets/b", {"permissions": {"write": [me]}}, headers=self.headers)
        hook = {**HOOK, "recipients": ["a@example.com"]}
        for _ in range(3):
            self.ask(hook, headers=ME, query="?send_to_me=true")
        response = self.app.post_json(
            f"{PREVIEW}?send_to_me=true",
            {"hook": hook, "object": f"{RECORDS}/r1", "action": "create"},
            headers=ME,
            status=429,
        )
        self.assertTrue(0 < int(response.headers["Retry-After"]) <= 60)
        self.assertEqual(response.json["errno"], 117)
        self.assertEqual(len(self.sink.wait_for(3)), 3)
        # Previews themselves go on.
        self.ask(hook, headers=ME)
        self.assertEqual(len(self.mails()), 3)

    def test_previews_are_bounded_per_user(self):
        for _ in range(preview_views.PREVIEWS.limit):
            self.ask({**HOOK, "recipients": ["a@example.com"]})
        response = self.ask(status=429)
        self.assertEqual(response["errno"], 117)


@skip_unless_postgresql
class PostgreSQLPreviewTest(PostgreSQL, PreviewTest):
    pass


class RateLimitTest(unittest.TestCase):
    def test_a_window_of_its_own_for_each_user(self):
        cache = Cache(cache_prefix="", cache_max_size_bytes=100_000)
        limit = RateLimit("test", limit=2, period=60)
        self.assertIsNone(limit.take(cache, "alice", now=1000))
        self.assertIsNone(limit.take(cache, "alice", now=1010))
        self.assertEqual(limit.take(cache, "alice", now=1020), 40)
        self.assertEqual(limit.take(cache, "alice", now=1059.5), 1)
        self.assertIsNone(limit.take(cache, "bob", now=1020))
        self.assertIsNone(limit.take(cache, "alice", now=1060))
