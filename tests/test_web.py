"""The web channel: hooks that leave notifications people read through the API."""

import base64
import json
import time

import transaction

from tests.support import BOB, EmailerWebTest


HOOK = {"subject": "{action}d {id}", "template": "{action}d {uri}"}
NOTIFICATIONS = "/emailer/notifications"
RECORDS = "/buckets/b/collections/c/records"


def user(address: str) -> dict[str, str]:
    """A user whose address the proxy in front of Kinto proved."""
    return {"X-Forwarded-Email": address}


class WebBase(EmailerWebTest):
    extra_settings = {
        "includes": "kinto_emailer kinto.plugins.accounts tests.plugins.failing",
        "multiauth.policies": "proxy account basicauth",
        "multiauth.policy.proxy.use": "tests.plugins.ForwardedEmailPolicy",
        "multiauth.policy.account.use": "kinto.plugins.accounts.authentication."
        "AccountsAuthenticationPolicy",
        "account_create_principals": "system.Everyone",
        "emailer.verified_principals": "proxy",
        "user-data_delete_principals": "system.Authenticated",
    }

    def setUp(self):
        super().setUp()
        self.app.put_json("/buckets/b", headers=self.headers)
        self.app.put_json("/buckets/b/collections/c", headers=self.headers)
        self.mails()

    def account(self, name: str) -> dict[str, str]:
        password = "s3cret-enough"
        self.app.put_json(f"/accounts/{name}", {"data": {"password": password}})
        token = base64.b64encode(f"{name}:{password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def group(self, *members: str) -> None:
        self.app.put_json(
            "/buckets/b/groups/g", {"data": {"members": list(members)}}, headers=self.headers
        )

    def create(self, *ids: str) -> None:
        for record_id in ids:
            # Changes of one millisecond have one time: the order of their notifications
            # is the order of their ids.
            time.sleep(0.002)
            self.app.put_json(f"{RECORDS}/{record_id}", headers=self.headers)
        self.mails()  # Every change is worked out.

    def feed(self, headers: dict[str, str], query: str = "", **kw) -> list[dict]:
        return self.app.get(f"{NOTIFICATIONS}{query}", headers=headers, **kw).json["data"]

    def subjects(self, headers: dict[str, str], query: str = "") -> list[str]:
        return [n["subject"] for n in self.feed(headers, query)]


class WebTest(WebBase):
    def test_a_web_hook_mails_nobody_and_feeds_its_recipients(self):
        self.put_hooks(
            "/buckets/b", {**HOOK, "recipients": ["A@example.com"], "channels": ["web"]}
        )
        self.create("r1", "r2")
        self.assertEqual(self.mails(), [])
        alice = user("a@example.com")
        [newest, oldest] = self.feed(alice)
        self.assertEqual([newest["subject"], oldest["subject"]], ["created r2", "created r1"])
        self.assertEqual(
            {k: v for k, v in newest.items() if k not in ("id", "created", "last_modified")},
            {
                "subject": "created r2",
                "body": f"created {RECORDS}/r2",
                "uri": f"{RECORDS}/r2",
                "link": f"http://localhost/v1{RECORDS}/r2",
                "scope": "/buckets/b",
                "read": False,
            },
        )
        self.assertGreaterEqual(newest["created"], oldest["created"])
        self.assertEqual(self.feed(user("b@example.com")), [])

    def test_both_channels(self):
        self.put_hooks(
            "/buckets/b",
            {**HOOK, "recipients": ["a@example.com"], "channels": ["email", "web"]},
        )
        self.create("r1")
        self.assertEqual([m.rcpt_tos for m in self.mails()], [["a@example.com"]])
        self.assertEqual(self.subjects(user("a@example.com")), ["created r1"])

    def test_email_only_by_default(self):
        self.put_hooks("/buckets/b", {**HOOK, "recipients": ["a@example.com"]})
        self.create("r1")
        self.assertEqual(len(self.mails()), 1)
        self.assertEqual(self.feed(user("a@example.com")), [])

    def test_group_members_without_an_address_read_with_their_credentials(self):
        alice = self.account("alice")
        squatter = self.account("c@example.com")
        bob_id = self.app.get("/", headers=BOB).json["user"]["id"]
        self.group("account:alice", bob_id, "proxy:d@example.com", "account:c@example.com")
        self.put_hooks(
            "/buckets/b", {**HOOK, "recipients": ["/buckets/b/groups/g"], "channels": ["web"]}
        )
        self.create("r1")
        for headers in (alice, BOB, user("d@example.com"), squatter):
            with self.subTest(headers=headers):
                self.assertEqual(self.subjects(headers), ["created r1"])
        # An account named after an address reads what is kept for the account, never
        # what is kept for the address.
        self.assertEqual(self.feed(user("c@example.com")), [])

    def test_users_never_see_each_others_notifications(self):
        self.put_hooks(
            "/buckets/b", {**HOOK, "recipients": ["a@example.com"], "channels": ["web"]}
        )
        self.create("r1", "r2")
        alice, bob = user("a@example.com"), user("b@example.com")
        [notification, _] = self.feed(alice)
        uri = f"{NOTIFICATIONS}/{notification['id']}"
        self.app.get(uri, headers=bob, status=404)
        self.app.patch_json(uri, {"data": {"read": True}}, headers=bob, status=404)
        self.app.delete(uri, headers=bob, status=404)
        counts = self.app.head(NOTIFICATIONS, headers=bob)
        self.assertEqual(counts.headers["Total-Objects"], "0")
        self.assertEqual(self.app.head(NOTIFICATIONS, headers=alice).headers["Total-Objects"], "2")
        self.assertFalse(self.app.get(uri, headers=alice).json["data"]["read"])
        for method in ("get", "head"):
            getattr(self.app, method)(NOTIFICATIONS, status=401)
        self.app.get(uri, status=401)
        self.app.patch_json(uri, {"data": {"read": True}}, status=401)
        self.app.post_json(f"{NOTIFICATIONS}/read", {}, status=401)

    def test_paging_polling_and_caching_follow_kinto(self):
        self.put_hooks(
            "/buckets/b", {**HOOK, "recipients": ["a@example.com"], "channels": ["web"]}
        )
        self.create("r1", "r2", "r3")
        alice = user("a@example.com")
        first = self.app.get(f"{NOTIFICATIONS}?_limit=2", headers=alice)
        self.assertEqual([n["subject"] for n in first.json["data"]], ["created r3", "created r2"])
        second = self.app.get(
            first.headers["Next-Page"].replace("http://localhost/v1", ""), headers=alice
        )
        self.assertEqual([n["subject"] for n in second.json["data"]], ["created r1"])
        self.assertNotIn("Next-Page", second.headers)

        etag = self.app.get(NOTIFICATIONS, headers=alice).headers["ETag"]
        self.app.get(NOTIFICATIONS, headers={**alice, "If-None-Match": etag}, status=304)
        since = etag.strip('"')
        self.assertEqual(self.feed(alice, f"?_since={since}"), [])
        self.create("r4")
        self.app.get(NOTIFICATIONS, headers={**alice, "If-None-Match": etag}, status=200)
        self.assertEqual(self.subjects(alice, f"?_since={since}"), ["created r4"])

    def test_mark_read_one_or_all_and_delete(self):
        self.put_hooks(
            "/buckets/b", {**HOOK, "recipients": ["a@example.com"], "channels": ["web"]}
        )
        self.create("r1", "r2", "r3")
        alice = user("a@example.com")
        [r3, r2, r1] = self.feed(alice)
        uri = f"{NOTIFICATIONS}/{r2['id']}"
        read = self.app.patch_json(uri, {"data": {"read": True}}, headers=alice).json["data"]
        self.assertIs(read["read"], True)
        # Still in its place: newest first is by creation.
        self.assertEqual(self.subjects(alice), ["created r3", "created r2", "created r1"])
        self.assertEqual(self.subjects(alice, "?unread=true"), ["created r3", "created r1"])
        self.assertEqual(self.subjects(alice, "?read=true"), ["created r2"])
        unread = self.app.head(f"{NOTIFICATIONS}?unread=true", headers=alice)
        self.assertEqual(unread.headers["Total-Objects"], "2")

        for body, name in [
            ({"data": {"subject": "mine"}}, "data.subject"),
            ({"data": {"read": "yes"}}, "data.read"),
            ({"data": {"read": True, "uri": "/elsewhere"}}, "data.uri"),
            ({"data": {"extra": {}}}, "data.extra"),
            # A time of the far future would break the reader's own polling (_since).
            ({"data": {"read": True, "last_modified": 99999999999999}}, "data.last_modified"),
            ({"permissions": {"read": ["system.Everyone"]}}, "permissions"),
        ]:
            with self.subTest(body=body):
                error = self.app.patch_json(uri, body, headers=alice, status=400).json
                self.assertEqual(error["details"][0]["name"], name)
        self.app.get(f"{NOTIFICATIONS}?unread=maybe", headers=alice, status=400)
        # JSON Patch too: read back to unread, and nothing else.
        json_patch = {**alice, "Content-Type": "application/json-patch+json"}
        operations = [{"op": "replace", "path": "/data/read", "value": False}]
        self.app.patch(uri, json.dumps(operations), headers=json_patch)
        self.assertIs(self.app.get(uri, headers=alice).json["data"]["read"], False)
        for operation, name in [
            ({"op": "remove", "path": "/data/subject"}, "data.subject"),
            (
                {"op": "replace", "path": "/data/last_modified", "value": 99999999999999},
                "data.last_modified",
            ),
            ({"op": "add", "path": "/permissions/read/system.Everyone"}, "permissions"),
        ]:
            with self.subTest(operation=operation):
                error = self.app.patch(
                    uri, json.dumps([operation]), headers=json_patch, status=400
                ).json
                self.assertEqual(error["details"][0]["name"], name)

        # What a form of another site could send: refused, nothing marked.
        self.app.post(f"{NOTIFICATIONS}/read", {"x": "1"}, headers=alice, status=415)
        self.assertEqual(len(self.feed(alice, "?unread=true")), 3)
        marked = self.app.post_json(f"{NOTIFICATIONS}/read", {}, headers=alice).json["data"]
        self.assertEqual(marked, {"marked": 3})
        self.assertEqual(self.feed(alice, "?unread=true"), [])
        self.app.delete(f"{NOTIFICATIONS}/{r1['id']}", headers=alice)
        self.assertEqual(self.subjects(alice), ["created r3", "created r2"])
        self.app.get(f"{NOTIFICATIONS}/{r1['id']}", headers=alice, status=404)

    def test_notifications_of_one_change_keep_their_order_when_read(self):
        self.put_hooks(
            "/buckets/b", {**HOOK, "recipients": ["a@example.com"], "channels": ["web"]}
        )
        requests = [{"method": "PUT", "path": f"{RECORDS}/r{i}"} for i in range(4)]
        self.app.post_json("/batch", {"requests": requests}, headers=self.headers)
        self.mails()
        alice = user("a@example.com")
        before = self.feed(alice)
        self.assertEqual(len({n["created"] for n in before}), 1)
        for notification in before[1:3]:
            uri = f"{NOTIFICATIONS}/{notification['id']}"
            self.app.patch_json(uri, {"data": {"read": True}}, headers=alice)
        self.assertEqual([n["id"] for n in self.feed(alice)], [n["id"] for n in before])
        first = self.app.get(f"{NOTIFICATIONS}?_limit=3", headers=alice)
        rest = self.app.get(first.headers["Next-Page"].split("/v1", 1)[1], headers=alice)
        self.assertEqual(
            [n["id"] for n in first.json["data"] + rest.json["data"]], [n["id"] for n in before]
        )

    def test_preferences_of_mail_apply_for_now(self):
        self.put_hooks(
            "/buckets/b", {**HOOK, "recipients": ["a@example.com"], "channels": ["email", "web"]}
        )
        self.create("r1")
        alice = user("a@example.com")
        body = {"data": {"scopes": {"/buckets/b": "off"}}}
        self.app.patch_json("/emailer/preferences", body, headers=alice)
        self.create("r2")
        self.assertEqual(self.subjects(alice), ["created r1"])

    def test_grouped_bursts_make_one_notification(self):
        self.put_hooks(
            "/buckets/b",
            {**HOOK, "recipients": ["a@example.com"], "channels": ["web"], "group_threshold": 2},
        )
        requests = [{"method": "PUT", "path": f"{RECORDS}/r{i}"} for i in range(3)]
        self.app.post_json("/batch", {"requests": requests}, headers=self.headers)
        self.mails()
        [summary] = self.feed(user("a@example.com"))
        self.assertEqual(summary["subject"], "3 records created in b/c")
        self.assertEqual(summary["uri"], "/buckets/b/collections/c")

    def test_a_rolled_back_change_leaves_no_notification(self):
        self.put_hooks(
            "/buckets/b", {**HOOK, "recipients": ["a@example.com"], "channels": ["web"]}
        )
        self.app.put_json(
            f"{RECORDS}/r1", {"data": {"fail": True}}, headers=self.headers, status=500
        )
        self.create("r2")
        self.assertEqual(self.subjects(user("a@example.com")), ["created r2"])

    def test_deleting_a_users_data_deletes_their_notifications_and_preferences(self):
        self.put_hooks(
            "/buckets/b",
            {
                **HOOK,
                "recipients": ["a@example.com", "b@example.com"],
                "channels": ["email", "web"],
            },
        )
        self.create("r1")
        alice, bob = user("a@example.com"), user("b@example.com")
        self.assertEqual(
            self.app.get("/emailer/preferences", headers=alice).json["data"]["scopes"].keys(),
            {"/buckets/b"},
        )
        # Kinto 26 on PostgreSQL answers 503 for a user who owns nothing (an empty IN ()).
        self.app.put_json("/buckets/alices", headers=alice)
        self.app.delete("/__user_data__/proxy:a@example.com", headers=alice)
        self.app.get("/buckets/alices", headers=self.headers, status=403)
        self.assertEqual(self.feed(alice), [])
        self.assertEqual(
            self.app.get("/emailer/preferences", headers=alice).json["data"]["scopes"], {}
        )
        self.assertEqual(self.subjects(bob), ["created r1"])
        self.assertIn(
            "/buckets/b", self.app.get("/emailer/preferences", headers=bob).json["data"]["scopes"]
        )


class RetentionTest(WebBase):
    extra_settings = {**WebBase.extra_settings, "emailer.web_max_per_recipient": "2"}

    def test_the_oldest_go_first(self):
        self.put_hooks(
            "/buckets/b", {**HOOK, "recipients": ["a@example.com"], "channels": ["web"]}
        )
        self.create("r1", "r2", "r3")
        alice = user("a@example.com")
        self.assertEqual(self.subjects(alice), ["created r3", "created r2"])
        self.assertEqual(self.app.head(NOTIFICATIONS, headers=alice).headers["Total-Objects"], "2")

    def test_older_than_web_max_age_go(self):
        from kinto_emailer import inbox

        storage = self.registry.storage
        with transaction.manager:
            storage.create(
                resource_name=inbox.RESOURCE,
                parent_id=inbox.parent_id("a@example.com"),
                obj={"subject": "ancient", "created": 0, "read": False},
            )
        alice = user("a@example.com")
        self.assertEqual(self.subjects(alice), ["ancient"])
        self.put_hooks(
            "/buckets/b", {**HOOK, "recipients": ["a@example.com"], "channels": ["web"]}
        )
        self.create("r1")
        self.assertEqual(self.subjects(alice), ["created r1"])


class BoundsTest(WebBase):
    extra_settings = {
        **WebBase.extra_settings,
        "emailer.max_messages_per_change": "2",
        "emailer.max_messages_per_recipient_hour": "3",
    }

    def total(self, headers: dict[str, str]) -> int:
        return int(self.app.head(NOTIFICATIONS, headers=headers).headers["Total-Objects"])

    def test_web_notifications_count_against_every_bound_as_mail_does(self):
        self.put_hooks(
            "/buckets/b", {**HOOK, "recipients": ["a@example.com"], "channels": ["web"]}
        )
        alice = user("a@example.com")
        # One change of three records: two notifications, the change's bound.
        requests = [{"method": "PUT", "path": f"{RECORDS}/s{i}"} for i in range(3)]
        self.app.post_json("/batch", {"requests": requests}, headers=self.headers)
        self.mails()
        self.assertEqual(self.total(alice), 2)
        # A flood of changes stops at the recipient's hourly bound: a stranger's hooks
        # cannot push someone's notifications out of their inbox.
        self.create("r1", "r2", "r3")
        self.assertEqual(self.total(alice), 3)

    def test_an_email_and_a_notification_are_two_messages(self):
        self.put_hooks(
            "/buckets/b",
            {**HOOK, "recipients": ["a@example.com"], "channels": ["email", "web"]},
        )
        self.create("r1", "r2")
        self.assertEqual(len(self.mails()), 2)
        self.assertEqual(self.subjects(user("a@example.com")), ["created r1"])
