"""The inbox page, /v1/emailer/inbox: opened from an email's link, or logged in."""

import base64
import html
import re
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import transaction

from kinto_emailer import inbox, send_digests, tokens
from kinto_emailer.inbox_page import MARK_ALL, MARK_ONE, PAGE_SIZE
from tests.support import EmailerWebTest
from tests.test_preferences import app_path, forms
from tests.test_web import RECORDS, WebBase, user


A, B = "a@example.com", "b@example.com"
HOOK = {
    "subject": "{action}d {id}",
    "template": "{action}d {uri}",
    "recipients": [A, B],
    "channels": ["email", "web"],
    "resource_name": "record",
}
INBOX = "/emailer/inbox"
FEED = "/emailer/notifications"
FOOTER_LINK = re.compile(r"^Your notifications on the web: (\S+)$", re.M)


def inbox_link(mail) -> str | None:
    """The footer's inbox link, as an app path."""
    found = FOOTER_LINK.search(mail.text)
    return app_path(found[1]).removeprefix("/v1") if found else None


def altered(token: str, old: str, new: str) -> str:
    raw = base64.urlsafe_b64decode(token + "==")
    return base64.urlsafe_b64encode(raw.replace(old.encode(), new.encode())).decode().rstrip("=")


def items(page) -> list[tuple[str, bool]]:
    """(heading text, unread) of each notification the page lists, in order."""
    return [
        (html.unescape(re.sub(r"<[^>]+>", "", heading)).removeprefix("Unread: "), unread)
        for unread, heading in (
            (bool(attributes), heading)
            for attributes, heading in re.findall(
                r'<li( class="unread")?><h2 id="[^"]+">(.*?)</h2>', page.text
            )
        )
    ]


class InboxPageBase(WebBase):
    def setUp(self):
        super().setUp()
        self.put_hooks("/buckets/b", HOOK)

    def mail_to(self, address: str):
        [mail] = [m for m in self.mails() if m.rcpt_tos == [address]]
        return mail

    def link_of(self, address: str) -> str:
        """The inbox link of the newest mail to ``address``."""
        [*_, mail] = [m for m in self.mails() if m.rcpt_tos == [address]]
        link = inbox_link(mail)
        self.assertIsNotNone(link, mail.text)
        assert link is not None
        return link

    def unread(self, headers: dict[str, str]) -> list[str]:
        return self.subjects(headers, "?unread=true")

    def post_form(self, page, button: str, headers: dict[str, str] | None = None):
        """Send the page's form of ``button`` as a browser would (its action, its fields)."""
        action, fields = forms(page.text)[button]
        return self.app.post(action.removeprefix("/v1"), fields, headers=headers, status=303)


class SignedLinkTest(InboxPageBase):
    def test_the_link_of_an_email_opens_its_recipients_inbox(self):
        self.create("r1", "r2")
        link = self.link_of(A)
        page = self.app.get(link)
        self.assertEqual(page.content_type, "text/html")
        self.assertIn("default-src 'none'", page.headers["Content-Security-Policy"])
        self.assertEqual(page.headers["Cache-Control"], "no-store")
        self.assertEqual(page.headers["Referrer-Policy"], "no-referrer")
        self.assertEqual(items(page), [("created r2", True), ("created r1", True)])
        self.assertIn(f"2 unread of 2 notifications for <strong>{A}</strong>", page.text)
        # Each links to its object, on the public URL.
        self.assertIn(f'<a href="http://localhost/v1{RECORDS}/r2">created r2</a>', page.text)
        # B's link opens B's inbox, never A's.
        self.assertIn(f"<strong>{B}</strong>", self.app.get(self.link_of(B)).text)
        self.assertNotIn(A, self.app.get(self.link_of(B)).text)

    def test_mail_of_email_only_hooks_has_no_inbox_link(self):
        self.put_hooks("/buckets/b", {**HOOK, "channels": ["email"]})
        self.create("r1")
        mail = self.mail_to(A)
        self.assertIsNone(inbox_link(mail))
        self.assertIn("Choose which emails you get: ", mail.text)

    def test_no_inbox_link_for_whom_turned_the_scopes_web_off(self):
        self.create("r1")
        body = {"data": {"scopes": {"/buckets/b": {"web": False}}}}
        self.app.patch_json("/emailer/preferences", body, headers=user(A))
        self.sink.clear()
        self.create("r2")
        self.assertIsNone(inbox_link(self.mail_to(A)))
        self.assertIsNotNone(inbox_link(self.mail_to(B)))
        # A hook that locks the web on links to it, whatever the choice.
        self.put_hooks("/buckets/b", {**HOOK, "non_editable": ["web"]})
        self.create("r3")
        self.assertEqual(items(self.app.get(self.link_of(A)))[0], ("created r3", True))

    def test_the_html_part_links_to_the_inbox_too(self):
        self.put_hooks("/buckets/b", {**HOOK, "html_template": "<p>{id}</p>"})
        self.create("r1")
        mail = self.mail_to(A)
        html_part = mail.message.get_body(("html",)).get_content()
        link = FOOTER_LINK.search(mail.text)[1]
        self.assertIn(
            f'<a href="{html.escape(link)}">Your notifications on the web</a>', html_part
        )

    def test_a_link_shows_the_notifications_of_its_own_scopes_only(self):
        self.app.put_json("/buckets/b2", headers=self.headers)
        self.app.put_json("/buckets/b2/collections/c", headers=self.headers)
        self.put_hooks("/buckets/b2", {**HOOK, "channels": ["web"]})
        self.app.put_json("/buckets/b2/collections/c/records/elsewhere", headers=self.headers)
        self.create("r1")
        page = self.app.get(self.link_of(A))
        self.assertEqual(items(page), [("created r1", True)])
        self.assertIn("<li>/buckets/b</li>", page.text)
        self.post_form(page, MARK_ALL)
        # What the link does not show, it does not mark: logged in, A sees both.
        self.assertEqual(self.unread(user(A)), ["created elsewhere"])
        self.assertEqual(len(self.feed(user(A))), 2)

    def test_a_digest_links_to_the_inbox_when_some_of_its_mail_does(self):
        def digest(record_id: str, days: int):
            self.create(record_id)
            self.sink.clear()
            # A window of its own: one digest per recipient and window.
            send_digests(self.registry, datetime.now(UTC) + timedelta(days=days))
            return self.mail_to(A)

        self.put_hooks("/buckets/b", {**HOOK, "cadence": "daily", "channels": ["email"]})
        self.assertIsNone(inbox_link(digest("r1", 1)))
        self.put_hooks("/buckets/b", {**HOOK, "cadence": "daily"})
        page = self.app.get(inbox_link(digest("r2", 2)))
        self.assertEqual(items(page), [("created r2", True)])

    def test_forged_altered_expired_and_cut_links_are_refused(self):
        self.create("r1")
        token = parse_qs(urlsplit(self.link_of(B)).query)["token"][0]
        secret = self.registry.emailer_settings.secret
        cases = [
            (tokens.sign("another secret of sixteen", A, ("/buckets/b",), time.time()), 400),
            (token[:-3] + "xyz", 400),
            # B's link, made to name A.
            (altered(token, B, A), 400),
            (tokens.sign(secret, A, ("/buckets/b",), time.time() - 91 * 86400), 410),
        ]
        for bad, status in cases:
            with self.subTest(token=bad, status=status):
                page = self.app.get(INBOX, {"token": bad}, status=status)
                self.assertEqual(page.content_type, "text/html")
                self.assertIn("This link", page.text)
                self.assertNotIn("created r1", page.text)
                self.app.post(f"{INBOX}?token={bad}", {"read": "all"}, status=status)
        self.assertEqual(self.unread(user(A)), ["created r1"])

    def test_mark_one_then_all_read_through_the_pages_forms(self):
        self.create("r1", "r2", "r3")
        page = self.app.get(self.link_of(A))
        action, fields = forms(page.text)[MARK_ALL]
        self.assertEqual(fields, {"read": "all"})
        # Each unread notification has its own button, named by its heading.
        buttons = re.findall(r'<button type="submit" aria-describedby="([^"]+)">', page.text)
        self.assertEqual(len(buttons), 3)
        for heading in buttons:
            self.assertIn(f'<h2 id="{heading}">', page.text)
        [r3, r2, r1] = self.feed(user(A))
        self.app.post(action.removeprefix("/v1"), {"read": r2["id"]}, status=303)
        self.assertEqual(self.unread(user(A)), ["created r3", "created r1"])
        back = self.app.get(self.link_of(A))
        self.assertEqual(
            items(back), [("created r3", True), ("created r2", False), ("created r1", True)]
        )
        self.assertEqual(len(re.findall(MARK_ONE, back.text)), 2)

        response = self.post_form(back, MARK_ALL)
        self.assertEqual(urlsplit(response.location).path, "/v1/emailer/inbox")
        self.assertEqual(parse_qs(urlsplit(response.location).query)["marked"], ["1"])
        self.assertEqual(self.unread(user(A)), [])
        after = self.app.get(app_path(response.location).removeprefix("/v1"))
        self.assertIn('<p role="status">Marked read.</p>', after.text)
        self.assertNotIn(MARK_ALL, after.text)
        self.assertEqual(self.unread(user(B)), ["created r3", "created r2", "created r1"])

    def test_another_recipients_notification_is_not_found(self):
        self.create("r1")
        [bs] = self.feed(user(B))
        page = self.app.get(self.link_of(A))
        action, _ = forms(page.text)[MARK_ALL]
        for which in (bs["id"], "never-was"):
            with self.subTest(which=which):
                self.app.post(action.removeprefix("/v1"), {"read": which}, status=404)
        self.assertEqual(self.unread(user(B)), ["created r1"])
        for bad in ({"read": "<x>"}, {"read": "a" * 65}, {}):
            with self.subTest(form=bad):
                self.app.post(action.removeprefix("/v1"), bad, status=400)
        self.assertEqual(self.unread(user(A)), ["created r1"])

    def test_a_hostile_hook_injects_nothing(self):
        hostile = '<script>alert("s")</script><img src=x onerror=alert(1)>'
        self.put_hooks(
            "/buckets/b",
            {**HOOK, "subject": f"{hostile} {{id}}", "template": f"{hostile}</p></li>{{uri}}"},
        )
        self.create("r1")
        with transaction.manager:
            inbox.InboxStore(self.registry.storage, self.registry.emailer_settings).add(
                [
                    inbox.Notification(
                        A,
                        "scheme",
                        "",
                        "/x",
                        "javascript:alert(1)",
                        "/buckets/b",
                        datetime.now(UTC),
                    )
                ],
                datetime.now(UTC),
            )
        page = self.app.get(self.link_of(A))
        self.assertNotIn("<script", page.text)
        self.assertNotIn("<img", page.text)
        self.assertNotIn("javascript:", page.text)
        self.assertIn(html.escape(hostile), page.text)
        self.assertEqual([subject for subject, _ in items(page)], ["scheme", f"{hostile} r1"])
        self.assertEqual(page.text.count("<li"), 3)  # The link's scope, and two notifications.


class LoggedInTest(InboxPageBase):
    def test_a_logged_in_user_sees_their_whole_inbox(self):
        alice = self.account("alice")
        self.group("account:alice", "proxy:c@example.com")
        self.put_hooks("/buckets/b", {**HOOK, "recipients": [A, "/buckets/b/groups/g"]})
        self.create("r1")
        page = self.app.get(INBOX, headers=user(A))
        self.assertEqual(items(page), [("created r1", True)])
        self.assertIn(f"<strong>{A}</strong>", page.text)
        for headers, key in [(alice, "account:alice"), (user("c@example.com"), "c@example.com")]:
            with self.subTest(key=key):
                page = self.app.get(INBOX, headers=headers)
                self.assertIn(f"<strong>{key}</strong>", page.text)
                self.assertEqual(items(page), [("created r1", True)])
        self.assertEqual(items(self.app.get(INBOX, headers=user(B))), [])

    def test_anonymous_requests_get_a_page_saying_how_to_get_in(self):
        self.create("r1")
        page = self.app.get(INBOX, status=401)
        self.assertEqual(page.content_type, "text/html")
        self.assertIn("link at the end of one of your emails", page.text)
        self.assertIn("Basic", page.headers["WWW-Authenticate"])
        self.app.post(INBOX, {"read": "all"}, status=401)
        self.assertEqual(self.unread(user(A)), ["created r1"])

    def test_mark_one_and_all_read(self):
        self.create("r1", "r2")
        alice = user(A)
        page = self.app.get(INBOX, headers=alice)
        [r2, r1] = self.feed(alice)
        action, fields = forms(page.text)[MARK_ALL]
        self.assertEqual(action, "/v1/emailer/inbox")
        self.app.post(INBOX, {**fields, "read": r1["id"]}, headers=alice, status=303)
        self.assertEqual(self.unread(alice), ["created r2"])
        self.post_form(page, MARK_ALL, alice)
        self.assertEqual(self.unread(alice), [])
        self.assertEqual(self.unread(user(B)), ["created r2", "created r1"])

    def test_another_sites_forms_change_nothing(self):
        self.create("r1")
        alice, bob = user(A), user(B)
        _, bobs = forms(self.app.get(INBOX, headers=bob).text)[MARK_ALL]
        # Credentials that a browser sends with any form, without the page's token.
        for fields in (
            {"read": "all"},
            {**bobs, "read": "all"},
            {"read": "all", "form_token": ""},
        ):
            with self.subTest(fields=fields):
                page = self.app.post(INBOX, fields, headers=alice, status=403)
                self.assertIn("Nothing was changed", page.text)
        self.assertEqual(self.unread(alice), ["created r1"])

    def test_pages_of_a_long_inbox(self):
        store = inbox.InboxStore(self.registry.storage, self.registry.emailer_settings)
        start = datetime.now(UTC) - timedelta(hours=1)
        with transaction.manager:
            store.add(
                [
                    inbox.Notification(A, f"n{i}", "", "/x", "", "/buckets/b", start)
                    for i in range(PAGE_SIZE + 3)
                ],
                start,
            )
        alice = user(A)
        first = self.app.get(INBOX, headers=alice)
        self.assertEqual(len(items(first)), PAGE_SIZE)
        [older] = re.findall(r'<a href="([^"]+)" rel="next">', first.text)
        second = self.app.get(app_path(html.unescape(older)).removeprefix("/v1"), headers=alice)
        self.assertEqual(len(items(second)), 3)
        self.assertNotIn('rel="next"', second.text)
        # Newest first, as the feed: the pages hold each notification once.
        feed = [n["subject"] for n in self.feed(alice, "?_limit=100")]
        self.assertEqual([s for s, _ in items(first) + items(second)], feed)
        # Marking all read from the second page marks all, and comes back to it.
        response = self.post_form(second, MARK_ALL, alice)
        self.assertIn("before=", response.location)
        self.assertEqual(self.unread(alice), [])
        for before in ("x", "1:", ":a", "1:a/b", "9" * 16 + ":a"):
            with self.subTest(before=before):
                self.app.get(INBOX, {"before": before}, headers=alice, status=400)


class NoSecretTest(EmailerWebTest):
    extra_settings = {"userid_hmac_secret": ""}

    def test_no_inbox_page(self):
        token = tokens.sign("", A, ("/buckets/b",), time.time())
        for method in ("get", "post"):
            with self.subTest(method=method):
                page = getattr(self.app, method)(f"{INBOX}?token={token}", status=404)
                self.assertIn("/v1/emailer/notifications", page.text)
