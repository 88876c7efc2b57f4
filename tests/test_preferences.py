"""Recipients in control: signed links, one-click unsubscribe, preferences, digests, grouping."""

import base64
import time
import unittest
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

from kinto_emailer import digests, send_digests, tokens
from kinto_emailer.errors import InvalidLink
from kinto_emailer.settings import EmailerSettings
from tests.support import EmailerWebTest


SECRET = "a secret of sixteen characters"
HOOK = {
    "template": "{uri}",
    "subject": "{action}d {id}",
    "recipients": ["a@example.com", "b@example.com"],
    "resource_name": "record",
}
RECORDS = "/buckets/b/collections/c/records"


class TokenTest(unittest.TestCase):
    def setUp(self):
        self.token = tokens.sign(SECRET, "A@Example.com", ("/buckets/b",), time.time())

    def test_a_token_names_the_recipient_and_scopes(self):
        grant = tokens.verify(SECRET, self.token, max_age=60)
        self.assertEqual((grant.recipient, grant.scopes), ("a@example.com", ("/buckets/b",)))

    def test_altered_forged_and_expired_tokens_are_refused(self):
        raw = base64.urlsafe_b64decode(self.token + "==")
        altered = raw.replace(b"/buckets/b", b"/buckets/x")
        cases = {
            "altered": base64.urlsafe_b64encode(altered).decode().rstrip("="),
            "forged": tokens.sign("another secret of sixteen", "a@example.com", (), time.time()),
            "cut": self.token[:-5],
            "garbage": "not a token",
        }
        for name, token in cases.items():
            with self.subTest(name), self.assertRaises(InvalidLink) as cm:
                tokens.verify(SECRET, token, max_age=60)
            self.assertFalse(cm.exception.expired)
        with self.assertRaises(InvalidLink) as cm:
            tokens.verify(SECRET, self.token, max_age=60, now=time.time() + 61)
        self.assertTrue(cm.exception.expired)


class WindowTest(unittest.TestCase):
    settings = EmailerSettings(digest_daily_hour=17, digest_weekly_day=0)

    def test_window_ends(self):
        # 2026-11-23 is a Monday.
        cases = [
            ("2026-11-25T17:00", "daily", "2026-11-25T17:00"),
            ("2026-11-25T16:59", "daily", "2026-11-24T17:00"),
            ("2026-11-25T23:00", "daily", "2026-11-25T17:00"),
            ("2026-11-23T17:00", "weekly", "2026-11-23T17:00"),
            ("2026-11-23T16:00", "weekly", "2026-11-16T17:00"),
            ("2026-11-29T18:00", "weekly", "2026-11-23T17:00"),
        ]
        for at, cadence, end in cases:
            with self.subTest(at=at, cadence=cadence):
                moment = datetime.fromisoformat(at).replace(tzinfo=UTC)
                expected = datetime.fromisoformat(end).replace(tzinfo=UTC)
                self.assertEqual(digests.window_end(moment, cadence, self.settings), expected)


def links(mail):
    """The unsubscribe and preferences links of a received mail, as app paths."""
    unsubscribe = mail.message["List-Unsubscribe"].strip("<>")
    preferences = mail.text.split("Choose which emails you get: ", 1)[1].split()[0]
    return tuple(
        urlsplit(u)._replace(scheme="", netloc="").geturl() for u in (unsubscribe, preferences)
    )


class RecipientTest(EmailerWebTest):
    extra_settings = {"emailer.secret": SECRET}
    hook = HOOK

    def setUp(self):
        super().setUp()
        self.app.put_json("/buckets/b", headers=self.headers)
        self.app.put_json("/buckets/b/collections/c", headers=self.headers)
        self.put_hooks("/buckets/b", self.hook)

    def create(self, *ids):
        for record_id in ids:
            self.app.put_json(f"{RECORDS}/{record_id}", headers=self.headers)
        return self.mails()

    def send(self, at):
        count = send_digests(self.registry, at)
        return count, self.mails()

    def recipients_of(self, mails):
        return sorted(to for mail in mails for to in mail.rcpt_tos)

    def page(self, url):
        return self.app.get(url.removeprefix("/v1"))

    def post(self, url, body="List-Unsubscribe=One-Click", status=200):
        return self.app.post(
            url.removeprefix("/v1"),
            body,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            status=status,
        )


class UnsubscribeTest(RecipientTest):
    def test_every_mail_has_one_click_unsubscribe_headers(self):
        [mail, _] = self.create("r1")
        self.assertTrue(mail.message["List-Unsubscribe"].startswith("<http://localhost/v1/"))
        self.assertEqual(mail.message["List-Unsubscribe-Post"], "List-Unsubscribe=One-Click")

    def test_get_changes_nothing_post_unsubscribes_from_that_scope_only(self):
        mails = self.create("r1")
        mail = next(m for m in mails if m.rcpt_tos == ["a@example.com"])
        unsubscribe, _ = links(mail)
        page = self.page(unsubscribe)
        self.assertIn('<form method="post"', page.text)
        self.assertIn("/buckets/b", page.text)
        self.sink.clear()
        self.assertEqual(self.recipients_of(self.create("r2")), ["a@example.com", "b@example.com"])

        self.sink.clear()
        self.assertIn("unsubscribed", self.post(unsubscribe).text)
        self.assertEqual(self.recipients_of(self.create("r3")), ["b@example.com"])
        # Replayed: nothing more happens, nothing breaks.
        self.post(unsubscribe)
        self.sink.clear()
        self.assertEqual(self.recipients_of(self.create("r4")), ["b@example.com"])

    def test_bad_links_are_refused_and_change_nothing(self):
        [mail, _] = self.create("r1")
        unsubscribe, _ = links(mail)
        token = parse_qs(urlsplit(unsubscribe).query)["token"][0]
        old = tokens.sign(SECRET, "a@example.com", ("/buckets/b",), time.time() - 91 * 86400)
        forged = tokens.sign("another secret of sixteen", "a@example.com", ("/buckets/b",), 0)
        cases = [(token[:-3] + "xyz", 400), (forged, 400), (old, 410)]
        for bad, status in cases:
            with self.subTest(status=status):
                response = self.post(f"/emailer/unsubscribe?token={bad}", status=status)
                self.assertIn("This link", response.text)
                self.app.get(f"/emailer/page?token={bad}", status=status)
        self.sink.clear()
        self.assertEqual(self.recipients_of(self.create("r2")), ["a@example.com", "b@example.com"])


class PreferencesPageTest(RecipientTest):
    def test_choices_are_saved_and_applied(self):
        mails = self.create("r1")
        _, preferences = links(next(m for m in mails if m.rcpt_tos == ["a@example.com"]))
        page = self.page(preferences)
        self.assertIn("<legend>/buckets/b</legend>", page.text)
        self.assertRegex(page.text, r'value="immediate" checked')
        response = self.post(preferences, {"/buckets/b": "off"}, status=303)
        self.assertIn("saved=1", response.headers["Location"])
        self.assertRegex(self.page(preferences + "&saved=1").text, r'value="off" checked')
        self.sink.clear()
        self.assertEqual(self.recipients_of(self.create("r2")), ["b@example.com"])
        # Subscribed again from the same page.
        self.post(preferences, {"/buckets/b": "immediate"}, status=303)
        self.sink.clear()
        self.assertEqual(self.recipients_of(self.create("r3")), ["a@example.com", "b@example.com"])


class LockedTest(RecipientTest):
    hook = {**HOOK, "non_editable": True}

    def test_locked_mail_cannot_be_turned_off(self):
        [mail, _] = self.create("r1")
        unsubscribe, preferences = links(mail)
        page = self.page(preferences).text
        self.assertIn("locked", page)
        self.assertIn("disabled", page)
        self.assertIn("cannot be turned off", self.post(unsubscribe).text)
        self.post(preferences, {"/buckets/b": "off"}, status=303)
        self.sink.clear()
        self.assertEqual(self.recipients_of(self.create("r2")), ["a@example.com", "b@example.com"])


class AccountsTest(RecipientTest):
    """Kinto accounts named by email addresses: anyone may create one, for any address."""

    extra_settings = {
        **RecipientTest.extra_settings,
        "includes": "kinto_emailer kinto.plugins.accounts",
        "multiauth.policies": "account basicauth",
        "multiauth.policy.account.use": "kinto.plugins.accounts.authentication."
        "AccountsAuthenticationPolicy",
        "account_create_principals": "system.Everyone",
    }

    def account(self, name):
        password = "s3cret-enough"
        self.app.put_json(f"/accounts/{name}", {"data": {"password": password}})
        token = base64.b64encode(f"{name}:{password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def test_a_user_id_does_not_prove_an_address(self):
        self.create("r1")
        # Not a.example.com's owner: whoever first created an account of that name.
        squatter = self.account("a@example.com")
        for method, body in (("get", None), ("patch_json", {"data": {"scopes": {}}})):
            with self.subTest(method):
                call = getattr(self.app, method)
                args = ("/emailer/preferences",) + ((body,) if body else ())
                response = call(*args, headers=squatter, status=403)
                self.assertIn("links at the end of the emails", response.json["message"])
        self.sink.clear()
        self.assertEqual(self.recipients_of(self.create("r2")), ["a@example.com", "b@example.com"])


class VerifiedTest(RecipientTest):
    """Users authenticated by a proxy that proved their address (declared verified)."""

    extra_settings = {
        **RecipientTest.extra_settings,
        "multiauth.policies": "proxy basicauth",
        "multiauth.policy.proxy.use": "tests.plugins.ForwardedEmailPolicy",
        "emailer.verified_principals": "proxy",
    }

    def user(self, address):
        return {"X-Forwarded-Email": address}


class PreferencesApiTest(VerifiedTest):
    def test_users_see_and_change_only_their_own_preferences(self):
        alice = self.user("a@example.com")
        bob = self.user("B@example.com")
        self.create("r1")
        scopes = self.app.get("/emailer/preferences", headers=alice).json["data"]["scopes"]
        self.assertEqual(scopes["/buckets/b"]["cadence"], "immediate")

        body = {"data": {"scopes": {"/buckets/b": "daily"}}}
        changed = self.app.patch_json("/emailer/preferences", body, headers=alice)
        self.assertEqual(changed.json["data"]["scopes"]["/buckets/b"]["cadence"], "daily")
        # Bob's own preferences are untouched, and he cannot reach Alice's.
        bob_view = self.app.get("/emailer/preferences", headers=bob).json["data"]
        self.assertEqual(bob_view["email"], "b@example.com")
        self.assertEqual(bob_view["scopes"]["/buckets/b"]["cadence"], "immediate")
        self.sink.clear()
        self.assertEqual(self.recipients_of(self.create("r2")), ["b@example.com"])

    def test_errors(self):
        alice = self.user("a@example.com")
        self.create("r1")
        self.app.get("/emailer/preferences", status=401)
        # Basic auth is not declared verified; a verified user id must be an address.
        response = self.app.get("/emailer/preferences", headers=self.headers, status=403)
        self.assertIn("links at the end of the emails", response.json["message"])
        response = self.app.get("/emailer/preferences", headers=self.user("alice"), status=403)
        self.assertIn("email address", response.json["message"])
        cases = [
            ({"/buckets/b": "hourly"}, "data.scopes./buckets/b"),
            ({"/buckets/other": "off"}, "data.scopes./buckets/other"),
        ]
        for scopes, name in cases:
            with self.subTest(name):
                response = self.app.patch_json(
                    "/emailer/preferences", {"data": {"scopes": scopes}}, headers=alice, status=400
                )
                self.assertEqual(response.json["details"][0]["name"], name)


class LockedApiTest(VerifiedTest):
    hook = {**HOOK, "non_editable": True}

    def test_a_locked_scope_cannot_be_changed(self):
        alice = self.user("a@example.com")
        self.create("r1")
        body = {"data": {"scopes": {"/buckets/b": "off"}}}
        response = self.app.patch_json("/emailer/preferences", body, headers=alice, status=400)
        self.assertEqual(response.json["details"][0]["name"], "data.scopes./buckets/b")
        scope = self.app.get("/emailer/preferences", headers=alice).json["data"]["scopes"]
        self.assertEqual(
            scope["/buckets/b"],
            {"default": "immediate", "locked": True, "choice": None, "cadence": "immediate"},
        )


class DigestTest(RecipientTest):
    hook = {**HOOK, "cadence": "daily", "recipients": ["a@example.com"]}

    def test_one_digest_per_window_grouped_by_collection_newest_first(self):
        self.app.put_json("/buckets/b/collections/d", headers=self.headers)
        self.assertEqual(self.create("r1", "r2"), [])
        self.app.put_json("/buckets/b/collections/d/records/r3", headers=self.headers)
        now = datetime.now(UTC)
        # The window that ended before these changes has nothing to send.
        self.assertEqual(self.send(now), (0, []))
        count, [digest] = self.send(digests.next_window_end(now, self.registry.emailer_settings))
        self.assertEqual(count, 1)
        self.assertEqual(digest.message["Subject"], "Daily digest: 3 change(s)")
        body = digest.body
        self.assertLess(body.index("/buckets/b/collections/d\n"), body.index("collections/c\n"))
        self.assertLess(body.index("records/r2"), body.index("records/r1"))
        self.assertTrue(digest.message["List-Unsubscribe"])
        self.sink.clear()
        # Once per window, however often it runs.
        later = digests.next_window_end(now, self.registry.emailer_settings)
        self.assertEqual(self.send(later), (0, []))

    def test_past_the_cap_and_n_more(self):
        self.registry.emailer_settings = EmailerSettings(
            **{**vars(self.registry.emailer_settings), "digest_max_items": 2}
        )
        self.create("r1", "r2", "r3", "r4", "r5")
        _, [digest] = self.send(datetime.now(UTC) + timedelta(days=1))
        self.assertIn("and 3 more", digest.body)
        self.assertIn("records/r5", digest.body)
        self.assertNotIn("records/r1", digest.body)


class WeeklyDigestTest(RecipientTest):
    hook = {**HOOK, "cadence": "weekly", "recipients": ["a@example.com"]}

    def test_one_digest_at_the_end_of_the_week(self):
        self.create("r1")
        settings = self.registry.emailer_settings
        moment = datetime.now(UTC)
        # The daily windows of the week pass without a weekly digest.
        while True:
            moment = digests.next_window_end(moment, settings)
            if moment.weekday() == settings.digest_weekly_day:
                break
            self.assertEqual(self.send(moment), (0, []))
        count, [digest] = self.send(moment)
        self.assertEqual(digest.message["Subject"], "Weekly digest: 1 change(s)")


class GroupingTest(RecipientTest):
    hook = {**HOOK, "recipients": ["a@example.com"], "group_threshold": 3}

    def batch(self, *ids):
        requests = [{"method": "PUT", "path": f"{RECORDS}/{i}"} for i in ids]
        self.app.post_json("/batch", {"requests": requests}, headers=self.headers)
        return self.mails()

    def test_past_the_threshold_one_summary(self):
        [summary] = self.batch("r1", "r2", "r3", "r4", "r5", "r6", "r7")
        self.assertEqual(summary.message["Subject"], "7 records created in b/c")
        self.assertIn("created r1", summary.body)
        self.assertIn("and 2 more", summary.body)
        self.sink.clear()
        self.assertEqual(len(self.batch("s1", "s2", "s3")), 3)


class DefaultThresholdTest(GroupingTest):
    extra_settings = {**RecipientTest.extra_settings, "emailer.group_threshold": "3"}
    hook = {**HOOK, "recipients": ["a@example.com"]}
