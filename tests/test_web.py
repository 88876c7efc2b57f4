"""The web channel: hooks that leave notifications people read through the API."""

import base64
import json
import re
import time
from datetime import UTC, datetime, timedelta

import transaction

from kinto_emailer import inbox
from kinto_emailer.preferences import PARENT, RESOURCE, PreferenceStore, object_id
from tests.support import (
    BOB,
    EmailerWebTest,
    sender_held_after_reading_preferences,
    store_unchecked,
)
from tests.test_preferences import app_path


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
        self.create_collection()
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
        # Worked out now: later, it would meet the hooks that the test saves next.
        self.mails()

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

    def counts(self, headers: dict[str, str]) -> tuple[int, int]:
        """Notifications held and unread, as ``HEAD`` counts them, checked against the
        feed itself and every spelling of the filters."""
        total, unread, unread_too, read = (
            int(self.app.head(f"{NOTIFICATIONS}{query}", headers=headers).headers["Total-Objects"])
            for query in ("", "?unread=true", "?read=false", "?read=true")
        )
        self.assertEqual(unread, unread_too)
        self.assertEqual(total, len(self.feed(headers)))
        self.assertEqual(unread, len(self.feed(headers, "?unread=true")))
        self.assertEqual(read, total - unread)
        return total, unread

    def store(self, key: str, subject: str, created: datetime, now: datetime) -> None:
        """A notification for ``key`` as a worker leaves it at ``now``."""
        notification = inbox.Notification(key, subject, "", "", "", "", created)
        with transaction.manager:
            inbox.InboxStore(self.registry.storage, self.registry.emailer_settings).add(
                [notification], now
            )


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

    def test_counts_follow_every_change(self):
        self.put_hooks(
            "/buckets/b",
            {**HOOK, "recipients": ["a@example.com", "b@example.com"], "channels": ["web"]},
        )
        self.create("r1", "r2", "r3")
        alice, bob = user("a@example.com"), user("b@example.com")
        self.assertEqual(self.counts(alice), (3, 3))
        [r3, r2, r1] = self.feed(alice)

        def patch(notification: dict, read: bool) -> None:
            uri = f"{NOTIFICATIONS}/{notification['id']}"
            self.app.patch_json(uri, {"data": {"read": read}}, headers=alice)

        patch(r2, True)
        self.assertEqual(self.counts(alice), (3, 2))
        patch(r2, True)  # Read already: nothing changes.
        self.assertEqual(self.counts(alice), (3, 2))
        patch(r2, False)
        patch(r3, True)
        self.assertEqual(self.counts(alice), (3, 2))
        self.app.delete(f"{NOTIFICATIONS}/{r1['id']}", headers=alice)
        self.assertEqual(self.counts(alice), (2, 1))
        self.app.delete(f"{NOTIFICATIONS}/{r3['id']}", headers=alice)
        self.assertEqual(self.counts(alice), (1, 1))
        self.app.delete(f"{NOTIFICATIONS}/{r3['id']}", headers=alice, status=404)
        self.app.patch_json(
            f"{NOTIFICATIONS}/{r3['id']}", {"data": {"read": True}}, headers=alice, status=404
        )
        self.assertEqual(self.counts(alice), (1, 1))
        self.create("r4")
        self.assertEqual(self.counts(alice), (2, 2))
        self.app.post_json(f"{NOTIFICATIONS}/read", {}, headers=alice)
        self.assertEqual(self.counts(alice), (2, 0))
        # Another inbox of the same changes counts for itself.
        self.assertEqual(self.counts(bob), (4, 4))

    def test_newest_first_is_by_creation_whenever_written(self):
        alice = user("a@example.com")
        now = datetime.now(UTC)
        self.store("a@example.com", "newer", now, now)
        etag = self.app.get(NOTIFICATIONS, headers=alice).headers["ETag"]
        # A change made earlier, worked out later.
        self.store("a@example.com", "older", now - timedelta(seconds=1), now)
        self.assertEqual(self.subjects(alice), ["newer", "older"])
        self.assertEqual(self.subjects(alice, f"?_since={etag.strip(chr(34))}"), ["older"])
        self.app.get(NOTIFICATIONS, headers={**alice, "If-None-Match": etag}, status=200)

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
        self.assertEqual(self.counts(alice), (0, 0))
        self.assertEqual(
            self.app.get("/emailer/preferences", headers=alice).json["data"]["scopes"], {}
        )
        self.assertEqual(self.subjects(bob), ["created r1"])
        self.assertIn(
            "/buckets/b", self.app.get("/emailer/preferences", headers=bob).json["data"]["scopes"]
        )
        # New notifications count from nothing.
        self.create("r2")
        self.assertEqual(self.counts(alice), (1, 1))
        self.assertEqual(self.counts(bob), (2, 2))


class RetentionTest(WebBase):
    extra_settings = {**WebBase.extra_settings, "emailer.web_max_per_recipient": "2"}

    def test_the_oldest_go_first(self):
        self.put_hooks(
            "/buckets/b", {**HOOK, "recipients": ["a@example.com"], "channels": ["web"]}
        )
        self.create("r1", "r2", "r3")
        alice = user("a@example.com")
        self.assertEqual(self.subjects(alice), ["created r3", "created r2"])
        self.assertEqual(self.counts(alice), (2, 2))

    def test_every_inbox_of_a_change_keeps_its_bound(self):
        readers = [f"{name}@example.com" for name in "abc"]
        self.put_hooks("/buckets/b", {**HOOK, "recipients": readers, "channels": ["web"]})
        self.create("r1", "r2")
        alice = user("a@example.com")
        [r2, _] = self.feed(alice)
        self.app.patch_json(f"{NOTIFICATIONS}/{r2['id']}", {"data": {"read": True}}, headers=alice)
        # One change past the bound of every inbox at once: a read one goes from one.
        self.create("r3")
        for reader in readers:
            with self.subTest(reader=reader):
                self.assertEqual(self.subjects(user(reader)), ["created r3", "created r2"])
                self.assertEqual(self.counts(user(reader)), (2, 1 if reader == readers[0] else 2))
        self.create("r4")
        for reader in readers:
            with self.subTest(reader=reader):
                self.assertEqual(self.subjects(user(reader)), ["created r4", "created r3"])
                self.assertEqual(self.counts(user(reader)), (2, 2))
        # Many changes in one transaction, past the bound of one inbox many times over.
        requests = [{"method": "PUT", "path": f"{RECORDS}/s{i}"} for i in range(5)]
        self.app.post_json("/batch", {"requests": requests}, headers=self.headers)
        self.mails()
        self.assertEqual(self.subjects(alice), ["created s4", "created s3"])
        self.assertEqual(self.counts(alice), (2, 2))

    def test_older_than_web_max_age_go(self):
        then = datetime.fromtimestamp(0, UTC)
        for reader in ("a@example.com", "b@example.com"):
            self.store(reader, "ancient", then, then)
        alice = user("a@example.com")
        self.assertEqual(self.subjects(alice), ["ancient"])
        self.put_hooks(
            "/buckets/b",
            {**HOOK, "recipients": ["a@example.com", "b@example.com"], "channels": ["web"]},
        )
        self.create("r1")
        for reader in ("a@example.com", "b@example.com"):
            with self.subTest(reader=reader):
                self.assertEqual(self.subjects(user(reader)), ["created r1"])
                self.assertEqual(self.counts(user(reader)), (1, 1))

    def test_the_oldest_kept_may_have_been_deleted(self):
        now = datetime.now(UTC)
        alice = user("a@example.com")
        self.store("a@example.com", "first", now - timedelta(days=80), now)
        self.store("a@example.com", "second", now - timedelta(days=70), now)
        [_, first] = self.feed(alice)
        self.app.delete(f"{NOTIFICATIONS}/{first['id']}", headers=alice)
        # Its time passed: no notification of that time is left, the next one stays.
        later = now + timedelta(days=15)
        self.store("a@example.com", "third", later, later)
        self.assertEqual(self.subjects(alice), ["third", "second"])
        self.assertEqual(self.counts(alice), (2, 2))
        # Until its own time passes.
        latest = now + timedelta(days=25)
        self.store("a@example.com", "fourth", latest, latest)
        self.assertEqual(self.subjects(alice), ["fourth", "third"])


class ScopesBoundTest(WebBase):
    extra_settings = {**WebBase.extra_settings, "emailer.max_scopes_per_recipient": "2"}

    def test_scopes_without_a_choice_make_room_for_new_ones(self):
        # A stranger's collections, each mailing the same address, must not grow its
        # preferences (read and written whenever it is notified) without end.
        alice = user("a@example.com")
        for name in ("c1", "c2", "c3", "c4"):
            self.app.put_json(f"/buckets/b/collections/{name}", headers=self.headers)
            self.put_hooks(f"/buckets/b/collections/{name}", {**BOTH, "channels": ["email"]})
            self.create_record(f"/buckets/b/collections/{name}/records")
            self.mails()
            if name == "c1":
                scopes = {"/buckets/b/collections/c1": "off"}
                self.app.patch_json(PREFERENCES, {"data": {"scopes": scopes}}, headers=alice)
        scopes = self.app.get(PREFERENCES, headers=alice).json["data"]["scopes"]
        self.assertEqual(
            sorted(scopes), ["/buckets/b/collections/c1", "/buckets/b/collections/c4"]
        )
        self.assertEqual(scopes["/buckets/b/collections/c1"]["email"]["choice"], "off")
        self.sink.clear()
        self.create_record("/buckets/b/collections/c1/records")
        self.create_record("/buckets/b/collections/c2/records")
        # The choice is kept; the scope forgotten mails as before, and is known again.
        [mail] = self.mails()
        self.assertIn("/buckets/b/collections/c2/records/", mail.body)
        scopes = self.app.get(PREFERENCES, headers=alice).json["data"]["scopes"]
        self.assertEqual(
            sorted(scopes), ["/buckets/b/collections/c1", "/buckets/b/collections/c2"]
        )


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


PREFERENCES = "/emailer/preferences"
BOTH = {**HOOK, "recipients": ["a@example.com"], "channels": ["email", "web"]}


def cells(email=None, web=None):
    """A scope of ``/v1/emailer/preferences`` as it reads: ``email`` and ``web`` are
    (default, locked, choice) of the cells there."""
    found = {}
    for channel, cell in (("email", email), ("web", web)):
        if cell is not None:
            default, locked, choice = cell
            value = default if locked or choice is None else choice
            found[channel] = dict(default=default, locked=locked, choice=choice, value=value)
    return found


class ChannelPreferencesTest(WebBase):
    """Per scope and channel, as Open edX's grid: an email cadence, and web on or off."""

    def choose(self, headers: dict[str, str], data: dict, status: int = 200, method="patch"):
        call = getattr(self.app, f"{method}_json")
        return call(PREFERENCES, {"data": data}, headers=headers, status=status).json

    def scopes(self, headers: dict[str, str]) -> dict:
        return self.app.get(PREFERENCES, headers=headers).json["data"]["scopes"]

    def mailed(self) -> list[str]:
        """The subjects mailed since the last call."""
        subjects = [mail.message["Subject"] for mail in self.mails()]
        self.sink.clear()
        return subjects

    def refused(self, headers: dict[str, str], data: dict, name: str, description: str):
        error = self.choose(headers, data, status=400)
        self.assertEqual(error["details"][0]["name"], name)
        self.assertIn(description, error["details"][0]["description"])

    def test_web_off_stops_web_notifications_and_no_email(self):
        self.put_hooks("/buckets/b", BOTH)
        self.create("r1")
        self.assertEqual(self.mailed(), ["created r1"])
        alice = user("a@example.com")
        chosen = self.choose(alice, {"scopes": {"/buckets/b": {"web": False}}})["data"]
        self.assertEqual(
            chosen["scopes"]["/buckets/b"],
            cells(email=("immediate", False, None), web=(True, False, False)),
        )
        self.create("r2")
        self.assertEqual(self.mailed(), ["created r2"])
        self.assertEqual(self.subjects(alice), ["created r1"])
        # null: back to the hooks' default, on.
        self.choose(alice, {"scopes": {"/buckets/b": {"web": None}}})
        self.create("r3")
        self.assertEqual(self.mailed(), ["created r3"])
        self.assertEqual(self.subjects(alice), ["created r3", "created r1"])

    def test_email_off_and_all_mail_stopped_leave_web_notifications(self):
        self.put_hooks("/buckets/b", BOTH)
        self.create("r1")
        self.mailed()
        alice = user("a@example.com")
        self.choose(alice, {"scopes": {"/buckets/b": {"email": "off"}}})
        self.create("r2")
        self.assertEqual(self.mailed(), [])
        self.assertEqual(self.scopes(alice)["/buckets/b"]["web"]["value"], True)
        # Email on again, but no mail at all from the server: the web still comes.
        self.choose(alice, {"scopes": {"/buckets/b": "daily"}, "suppressed": True})
        self.create("r3")
        self.assertEqual(self.mailed(), [])
        self.assertEqual(self.subjects(alice), ["created r3", "created r2", "created r1"])

    def test_each_channel_locked_on_its_own(self):
        alice = user("a@example.com")
        for bucket, locked in [("web", ["web"]), ("email", ["email"]), ("all", True)]:
            with self.subTest(non_editable=locked):
                scope = f"/buckets/{bucket}"
                self.app.put_json(scope, headers=self.headers)
                self.app.put_json(f"{scope}/collections/c", headers=self.headers)
                self.put_hooks(scope, {**BOTH, "non_editable": locked})
                self.app.put_json(f"{scope}/collections/c/records/r1", headers=self.headers)
                self.mailed()
                email_locked = locked is True or "email" in locked
                web_locked = locked is True or "web" in locked
                self.assertEqual(
                    self.scopes(alice)[scope],
                    cells(email=("immediate", email_locked, None), web=(True, web_locked, None)),
                )
                for channel, off, is_locked in [
                    ("email", "off", email_locked),
                    ("web", False, web_locked),
                ]:
                    data = {"scopes": {scope: {channel: off}}}
                    if is_locked:
                        self.refused(alice, data, f"data.scopes.{scope}.{channel}", "Locked")
                        # Choosing again what it holds changes nothing: it passes.
                        self.choose(alice, {"scopes": {scope: {channel: None}}})
                    else:
                        self.choose(alice, data)
                if email_locked:
                    data = {"scopes": {scope: "off"}}
                    self.refused(alice, data, f"data.scopes.{scope}", "email")
                before = len(self.feed(alice))
                self.app.put_json(f"{scope}/collections/c/records/r2", headers=self.headers)
                self.assertEqual(self.mailed(), ["created r2"] if email_locked else [])
                self.assertEqual(len(self.feed(alice)), before + web_locked)

    def test_preferences_stored_before_the_web_channel_read_unchanged(self):
        old = {
            "email": "a@example.com",
            "scopes": {"/buckets/b": {"default": "immediate", "locked": False, "choice": "off"}},
            "suppressed": False,
        }
        store_unchecked(self.registry, RESOURCE, PARENT, object_id("a@example.com"), old)
        alice = user("a@example.com")
        self.assertEqual(
            self.app.get(PREFERENCES, headers=alice).json["data"],
            {
                "email": "a@example.com",
                "scopes": {"/buckets/b": cells(email=("immediate", False, "off"))},
                "suppressed": False,
            },
        )
        self.put_hooks("/buckets/b", BOTH)
        self.create("r1")
        # Email stays off; web notifications, never chosen, are on.
        self.assertEqual(self.mailed(), [])
        self.assertEqual(self.subjects(alice), ["created r1"])
        self.choose(alice, {"scopes": {"/buckets/b": {"web": False}}})
        self.assertEqual(
            self.scopes(alice)["/buckets/b"],
            cells(email=("immediate", False, "off"), web=(True, False, False)),
        )

    def test_group_members_without_an_address_turn_web_notifications_off(self):
        alice = self.account("alice")
        bob_id = self.app.get("/", headers=BOB).json["user"]["id"]
        self.group("account:alice", bob_id)
        members = ["/buckets/b/groups/g"]
        hook = {**HOOK, "resource_name": "record", "recipients": members, "channels": ["web"]}
        self.put_hooks("/buckets/b", hook)
        self.create("r1")
        self.assertEqual(
            self.app.get(PREFERENCES, headers=alice).json["data"],
            {
                "email": None,
                "scopes": {"/buckets/b": cells(web=(True, False, None))},
                "suppressed": False,
            },
        )
        self.choose(alice, {"scopes": {"/buckets/b": {"web": False}}})
        self.create("r2")
        self.assertEqual(self.subjects(alice), ["created r1"])
        self.assertEqual(self.subjects(BOB), ["created r2", "created r1"])
        self.assertEqual(self.scopes(BOB)["/buckets/b"], cells(web=(True, False, None)))
        # No email comes to a principal: nothing to choose or stop there.
        self.refused(alice, {"scopes": {"/buckets/b": "daily"}}, "data.scopes./buckets/b", "email")
        self.refused(alice, {"suppressed": True}, "data.suppressed", "no mail to stop")
        # Their preferences go with their data.
        self.app.put_json("/buckets/alices", headers=alice)
        self.app.delete("/__user_data__/account:alice", headers=alice)
        store = PreferenceStore(self.registry.storage)
        with transaction.manager:
            self.assertEqual(store.read("account:alice").scopes, {})
            self.assertIn("/buckets/b", store.read(bob_id).scopes)

    def test_put_sets_every_choice(self):
        self.put_hooks("/buckets/b", BOTH)
        self.create("r1")
        alice = user("a@example.com")
        self.choose(alice, {"scopes": {"/buckets/b": {"email": "daily", "web": False}}})
        # What a PUT leaves out goes back to the hooks' default.
        put = self.choose(alice, {"scopes": {"/buckets/b": {"web": False}}}, method="put")
        self.assertEqual(
            put["data"]["scopes"]["/buckets/b"],
            cells(email=("immediate", False, None), web=(True, False, False)),
        )
        self.choose(alice, {"suppressed": True}, method="put")
        self.assertIs(self.app.get(PREFERENCES, headers=alice).json["data"]["suppressed"], True)
        everything = self.choose(alice, {}, method="put")["data"]
        self.assertIs(everything["suppressed"], False)
        self.assertEqual(
            everything["scopes"]["/buckets/b"],
            cells(email=("immediate", False, None), web=(True, False, None)),
        )

    def page(self) -> str:
        """The preferences page of the link of the last mail to a@example.com."""
        [mail] = [m for m in self.mails() if m.rcpt_tos == ["a@example.com"]]
        self.sink.clear()
        link = mail.text.split("Choose which emails you get: ", 1)[1].split()[0]
        return app_path(link).removeprefix("/v1")

    def web_box(self, page: str) -> str:
        [box] = re.findall(r'<input type="checkbox"[^>]*>', self.app.get(page).text)
        return box

    def test_the_page_turns_web_notifications_off_and_on(self):
        self.put_hooks("/buckets/b", BOTH)
        self.create("r1")
        page = self.page()
        box = self.web_box(page)
        self.assertIn('name="web:/buckets/b"', box)
        self.assertIn(" checked", box)
        # Unchecked, the box sends nothing: the hidden field of the form says it was there.
        self.app.post(page, {"/buckets/b": "immediate", "web:/buckets/b": "off"}, status=303)
        self.assertNotIn(" checked", self.web_box(page))
        self.create("r2")
        self.assertEqual(self.mailed(), ["created r2"])
        alice = user("a@example.com")
        self.assertEqual(self.subjects(alice), ["created r1"])
        # Web on again, email off.
        posted = [("/buckets/b", "off"), ("web:/buckets/b", "off"), ("web:/buckets/b", "on")]
        self.app.post(page, posted, status=303)
        self.assertIn(" checked", self.web_box(page))
        self.create("r3")
        self.assertEqual(self.mailed(), [])
        self.assertEqual(self.subjects(alice), ["created r3", "created r1"])
        # A form without the web column changes no web choice.
        self.app.post(page, {"/buckets/b": "immediate"}, status=303)
        self.assertIn(" checked", self.web_box(page))

    def test_the_page_shows_each_lock(self):
        alice = user("a@example.com")
        for locked in (["web"], ["email"]):
            with self.subTest(non_editable=locked):
                self.put_hooks("/buckets/b", {**BOTH, "non_editable": locked})
                self.create(f"{locked[0]}1")
                page = self.page()
                text = self.app.get(page).text
                radios = re.findall(r'<input type="radio"[^>]*>', text)
                self.assertEqual(len(radios), 4)
                email_locked = "email" in locked
                self.assertEqual([" disabled" in r for r in radios], [email_locked] * 4)
                self.assertEqual(" disabled" in self.web_box(page), not email_locked)
                note = "These notifications are locked" if locked == ["web"] else "mail is locked"
                self.assertIn(note, text)
                # Turning everything off changes only what is not locked.
                self.app.post(page, {"/buckets/b": "off", "web:/buckets/b": "off"}, status=303)
                before = len(self.feed(alice))
                self.create(f"{locked[0]}2")
                self.assertEqual(self.mailed(), [f"created {locked[0]}2"] if email_locked else [])
                self.assertEqual(len(self.feed(alice)), before + (not email_locked))
                self.app.put_json(PREFERENCES, {"data": {}}, headers=alice)

    def test_a_page_without_web_notifications_says_so(self):
        self.put_hooks("/buckets/b", {**BOTH, "channels": ["email"]})
        self.create("r1")
        text = self.app.get(self.page()).text
        self.assertNotIn('type="checkbox"', text)
        self.assertIn("None come from here.", text)


class ConcurrentChoicesTest(WebBase):
    """On the memory backend, where a choice can be saved between a worker's read of the
    preferences and its write; on PostgreSQL, the recipient's lock makes the choice wait."""

    def test_a_web_choice_saved_while_a_lock_of_email_is_recorded_is_kept(self):
        self.put_hooks("/buckets/b", BOTH)
        self.create("r1")
        self.put_hooks("/buckets/b", {**BOTH, "non_editable": ["email"]})
        alice = user("a@example.com")
        with sender_held_after_reading_preferences() as (read, chosen):
            # Works out r2 and records the new lock of the email cell.
            self.app.put_json(f"{RECORDS}/r2", headers=self.headers)
            self.assertTrue(read.wait(10))
            body = {"data": {"scopes": {"/buckets/b": {"web": False}}}}
            self.app.patch_json(PREFERENCES, body, headers=alice)
            chosen.set()
            self.mails()
        self.assertEqual(
            self.app.get(PREFERENCES, headers=alice).json["data"]["scopes"]["/buckets/b"],
            cells(email=("immediate", True, None), web=(True, False, False)),
        )
        self.create("r3")
        self.assertEqual(self.subjects(alice), ["created r2", "created r1"])
