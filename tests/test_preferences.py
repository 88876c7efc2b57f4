"""Recipients in control: signed links, one-click unsubscribe, preferences, digests, grouping."""

import base64
import html
import logging
import re
import time
import unittest
import unittest.mock
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

from kinto_emailer import digests, messages, send_digests, tokens
from kinto_emailer.errors import InvalidLink
from kinto_emailer.preferences import (
    Cell,
    LockedScope,
    NotSent,
    Preferences,
    Scope,
    choose,
    delivered,
    record_scopes,
)
from kinto_emailer.recipients import parse_mailbox
from kinto_emailer.settings import EmailerSettings
from tests.support import EmailerWebTest, sender_held_after_reading_preferences


SECRET = "a secret of sixteen characters"
HOOK = {
    "template": "{uri}",
    "subject": "{action}d {id}",
    "recipients": ["a@example.com", "b@example.com"],
    "resource_name": "record",
}
RECORDS = "/buckets/b/collections/c/records"
STOP_ALL = "Stop all mail from this server to me"
RESUME = "Receive mail from this server again"
ROW_B = '<th scope="row">/buckets/b</th>'


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

    def test_a_link_lasts_link_max_age_from_its_mail(self):
        created = datetime(2026, 11, 25, 23, 59, 30, tzinfo=UTC)
        mailbox = parse_mailbox("a@example.com")
        draft = messages.Draft(
            mailbox, mailbox, "s", "b", "/buckets/b", "https://k.example/v1/", "key", created
        )
        url = messages.with_links(draft, SECRET, ("/buckets/b",)).preferences_url
        token = parse_qs(urlsplit(url).query)["token"][0]
        sent = created.timestamp()
        tokens.verify(SECRET, token, max_age=60, now=sent + 59)
        with self.assertRaises(InvalidLink) as cm:
            tokens.verify(SECRET, token, max_age=60, now=sent + 61)
        self.assertTrue(cm.exception.expired)


class GridTest(unittest.TestCase):
    """Preferences per scope and channel, as pure functions."""

    def test_each_channel_obeys_its_own_cell(self):
        def prefs(email=None, web=None, suppressed=False):
            cells = {"email": Cell("immediate", choice=email), "web": Cell(True, choice=web)}
            return Preferences({"/b": Scope(cells)}, suppressed)

        free_mail, locked_mail = Cell("daily"), Cell("daily", locked=True)
        free_web, locked_web = Cell(True), Cell(True, locked=True)
        cases = [
            (prefs(), free_mail, free_web, "daily", True),
            (prefs(web=False), free_mail, free_web, "daily", None),
            (prefs(email="off"), free_mail, free_web, None, True),
            (prefs(email="weekly", web=False), free_mail, free_web, "weekly", None),
            (prefs(suppressed=True), free_mail, free_web, None, True),
            (
                prefs(email="off", web=False, suppressed=True),
                locked_mail,
                locked_web,
                "daily",
                True,
            ),
            (Preferences(), free_mail, free_web, "daily", True),
        ]
        for preferences, mail, web, email_gets, web_gets in cases:
            with self.subTest(preferences=preferences, mail=mail, web=web):
                self.assertEqual(delivered(preferences, "/b", "email", mail), email_gets)
                self.assertEqual(delivered(preferences, "/b", "web", web), web_gets)

    def test_recording_a_cell_keeps_the_others_and_every_choice(self):
        stored = Preferences(
            {
                "/b": Scope(
                    {"email": Cell("immediate", choice="off"), "web": Cell(True, choice=False)}
                )
            }
        )
        recorded = record_scopes({"/b": {"email": Cell("daily", locked=True)}}, 10, stored)
        self.assertEqual(
            recorded.scopes["/b"].cells,
            {"email": Cell("daily", True, "off"), "web": Cell(True, choice=False)},
        )
        added = record_scopes({"/c": {"web": Cell(True)}}, 10, recorded)
        self.assertEqual(added.scopes["/b"], recorded.scopes["/b"])
        self.assertEqual(added.scopes["/c"].cells, {"web": Cell(True)})

    def test_choices(self):
        scopes = {"/b": Scope({"email": Cell("immediate"), "web": Cell(True, locked=True)})}
        self.assertEqual(
            choose(scopes, "/b", "email", "weekly")["/b"].cells["email"],
            Cell("immediate", choice="weekly"),
        )
        self.assertEqual(choose(scopes, "/b", "web", None), scopes)
        for channel, choice, error in [
            ("web", False, LockedScope),
            ("email", True, ValueError),
            ("web", "off", ValueError),
            ("web", 0, ValueError),
        ]:
            with self.subTest(channel=channel, choice=choice), self.assertRaises(error):
                choose(scopes, "/b", channel, choice)
        with self.assertRaises(NotSent):
            choose(scopes, "/c", "email", "off")
        web_only = {"/b": Scope({"web": Cell(True)})}
        with self.assertRaises(NotSent):
            choose(web_only, "/b", "email", "off")
        # A signed link names a scope that mailed its address, known here or not.
        self.assertEqual(
            choose({}, "/c", "email", "off", known=False)["/c"],
            Scope({"email": Cell("immediate", choice="off")}),
        )

    def test_scopes_stored_before_the_web_channel_read_as_their_email_cell(self):
        old = {"default": "daily", "locked": True, "choice": "off"}
        scope = Scope.from_json(old)
        self.assertEqual(scope, Scope({"email": Cell("daily", True, "off")}))
        self.assertEqual(Scope.from_json(scope.to_json()), scope)


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


def app_path(url):
    return urlsplit(url)._replace(scheme="", netloc="").geturl()


def links(mail):
    """The unsubscribe and preferences links of a received mail, as app paths."""
    unsubscribe = mail.message["List-Unsubscribe"].strip("<>")
    preferences = mail.text.split("Choose which emails you get: ", 1)[1].split()[0]
    return app_path(unsubscribe), app_path(preferences)


def token_of(url):
    return parse_qs(urlsplit(url).query)["token"][0]


def forms(page):
    """The POST forms of a page: {button text: (action as an app path, hidden fields)}."""
    found = {}
    for action, inside in re.findall(
        r'<form method="post" action="([^"]*)">(.*?)</form>', page, re.S
    ):
        fields = dict(re.findall(r'<input type="hidden" name="([^"]*)" value="([^"]*)">', inside))
        button = re.search(r"<button[^>]*>(.*?)</button>", inside, re.S)[1]
        found[html.unescape(button)] = (app_path(html.unescape(action)), fields)
    return found


class RecipientTest(EmailerWebTest):
    extra_settings = {"emailer.secret": SECRET}
    hook = HOOK

    def setUp(self):
        super().setUp()
        self.create_collection()
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
        self.assertIn("unsubscribed", self.post_link(unsubscribe).text)
        self.assertEqual(self.recipients_of(self.create("r3")), ["b@example.com"])
        # Replayed: nothing more happens, nothing breaks.
        self.post_link(unsubscribe)
        self.sink.clear()
        self.assertEqual(self.recipients_of(self.create("r4")), ["b@example.com"])

    def test_one_click_stops_the_scopes_of_its_mail_only(self):
        self.app.put_json("/buckets/b2", headers=self.headers)
        self.app.put_json("/buckets/b2/collections/c", headers=self.headers)
        self.put_hooks("/buckets/b2", self.hook)
        mail = next(m for m in self.create("r1") if m.rcpt_tos == ["a@example.com"])
        unsubscribe, _ = links(mail)
        self.assertIn("You are unsubscribed", self.post_link(unsubscribe).text)
        self.sink.clear()
        self.assertEqual(self.recipients_of(self.create("r2")), ["b@example.com"])
        self.sink.clear()
        self.app.put_json("/buckets/b2/collections/c/records/r2", headers=self.headers)
        self.assertEqual(self.recipients_of(self.mails()), ["a@example.com", "b@example.com"])

    def test_an_unsubscribe_saved_while_a_new_scope_is_recorded_is_kept(self):
        self.app.put_json("/buckets/b2", headers=self.headers)
        self.app.put_json("/buckets/b2/collections/c", headers=self.headers)
        self.put_hooks("/buckets/b2", self.hook)
        mail = next(m for m in self.create("r1") if m.rcpt_tos == ["a@example.com"])
        unsubscribe, _ = links(mail)
        self.sink.clear()
        # What sends b2's first mail reads a@'s preferences; the one-click unsubscribe of
        # /buckets/b commits before it records the new scope /buckets/b2.
        with sender_held_after_reading_preferences() as (read, unsubscribed):
            self.app.put_json("/buckets/b2/collections/c/records/r1", headers=self.headers)
            self.assertTrue(read.wait(10))
            self.assertIn("You are unsubscribed", self.post_link(unsubscribe).text)
            unsubscribed.set()
            self.assertEqual(self.recipients_of(self.mails()), ["a@example.com", "b@example.com"])
        self.sink.clear()
        self.assertEqual(self.recipients_of(self.create("r2")), ["b@example.com"])

    def test_bad_links_are_refused_and_change_nothing(self):
        [mail, _] = self.create("r1")
        unsubscribe, _ = links(mail)
        token = parse_qs(urlsplit(unsubscribe).query)["token"][0]
        old = tokens.sign(SECRET, "a@example.com", ("/buckets/b",), time.time() - 91 * 86400)
        forged = tokens.sign("another secret of sixteen", "a@example.com", ("/buckets/b",), 0)
        cases = [(token[:-3] + "xyz", 400), (forged, 400), (old, 410)]
        for bad, status in cases:
            with self.subTest(status=status):
                response = self.post_link(f"/emailer/unsubscribe?token={bad}", status=status)
                self.assertIn("This link", response.text)
                self.app.get(f"/emailer/page?token={bad}", status=status)
        self.sink.clear()
        self.assertEqual(self.recipients_of(self.create("r2")), ["a@example.com", "b@example.com"])


class PreferencesPageTest(RecipientTest):
    def test_choices_are_saved_and_applied(self):
        mails = self.create("r1")
        _, preferences = links(next(m for m in mails if m.rcpt_tos == ["a@example.com"]))
        page = self.page(preferences)
        self.assertIn(ROW_B, page.text)
        self.assertRegex(page.text, r'value="immediate" checked')
        response = self.post_link(preferences, {"/buckets/b": "off"}, status=303)
        self.assertIn("saved=1", response.headers["Location"])
        self.assertRegex(self.page(preferences + "&saved=1").text, r'value="off" checked')
        self.sink.clear()
        self.assertEqual(self.recipients_of(self.create("r2")), ["b@example.com"])
        # Subscribed again from the same page.
        self.post_link(preferences, {"/buckets/b": "immediate"}, status=303)
        self.sink.clear()
        self.assertEqual(self.recipients_of(self.create("r3")), ["a@example.com", "b@example.com"])


class LockedTest(RecipientTest):
    hook = {**HOOK, "non_editable": True}

    def test_locked_mail_offers_no_unsubscribe(self):
        [mail, _] = self.create("r1")
        self.assertIsNone(mail.message["List-Unsubscribe"])
        self.assertIsNone(mail.message["List-Unsubscribe-Post"])
        self.assertNotIn("Unsubscribe", mail.text)
        preferences = mail.text.split("Choose which emails you get: ", 1)[1].split()[0]
        page = self.page(app_path(preferences)).text
        self.assertIn("locked", page)
        self.assertIn("disabled", page)
        self.post_link(app_path(preferences), {"/buckets/b": "off"}, status=303)
        self.sink.clear()
        self.assertEqual(self.recipients_of(self.create("r2")), ["a@example.com", "b@example.com"])

    def test_an_unsubscribe_link_of_locked_mail_says_it_changed_nothing(self):
        self.create("r1")
        # An email sent before its hook was locked.
        token = tokens.sign(SECRET, "a@example.com", ("/buckets/b",), time.time())
        page = self.page(f"/emailer/unsubscribe?token={token}").text
        self.assertIn("cannot be turned off", page)
        self.assertEqual(list(forms(page)), [STOP_ALL])
        response = self.post_link(f"/emailer/unsubscribe?token={token}", status=409)
        self.assertNotIn("unsubscribed", response.text)
        self.assertIn("cannot be turned off", response.text)
        self.sink.clear()
        self.assertEqual(self.recipients_of(self.create("r2")), ["a@example.com", "b@example.com"])


class MixedScopeTest(RecipientTest):
    """One bucket holds a locked hook and a hook that recipients may turn off."""

    hook = {**HOOK, "recipients": ["a@example.com"], "action": "update"}

    def setUp(self):
        super().setUp()
        locked = {**self.hook, "action": "create", "non_editable": True}
        self.put_hooks("/buckets/b", self.hook, locked)

    def test_the_unsubscribe_link_of_free_mail_works_whatever_mailed_last(self):
        self.create("r1")
        self.sink.clear()
        [mail] = self.create("r1")
        unsubscribe, preferences = links(mail)
        # The locked hook mails last, before the recipient clicks.
        self.sink.clear()
        self.assertEqual(self.recipients_of(self.create("r2")), ["a@example.com"])
        self.assertNotIn("disabled", self.page(preferences).text)
        self.assertIn("You are unsubscribed", self.post_link(unsubscribe).text)
        self.sink.clear()
        self.assertEqual(self.create("r2"), [])
        # Locked mail goes on.
        self.assertEqual(self.recipients_of(self.create("r3")), ["a@example.com"])


class TokenScopeTest(RecipientTest):
    hook = {**HOOK, "recipients": ["a@example.com"]}

    def setUp(self):
        super().setUp()
        self.app.put_json("/buckets/b/collections/d", headers=self.headers)
        # Two scopes: the collection d has hooks of its own.
        self.put_hooks("/buckets/b/collections/d", self.hook)

    def test_a_link_shows_and_changes_only_its_own_scopes(self):
        [mail] = self.create("r1")
        unsubscribe, preferences = links(mail)
        self.app.put_json("/buckets/b/collections/d/records/r1", headers=self.headers)
        self.assertEqual(len(self.mails()), 2)
        page = self.page(preferences).text
        self.assertIn(ROW_B, page)
        self.assertNotIn("/buckets/b/collections/d", page)
        self.post_link(preferences, {"/buckets/b": "off", "/buckets/b/collections/d": "off"}, 303)
        self.sink.clear()
        self.create("r2")
        self.app.put_json("/buckets/b/collections/d/records/r2", headers=self.headers)
        [mail] = self.mails()
        self.assertEqual(mail.body, "/buckets/b/collections/d/records/r2")

    def test_the_pages_link_to_the_public_url_whatever_the_host(self):
        [mail] = self.create("r1")
        unsubscribe, preferences = links(mail)
        evil = {"Host": "evil.example"}
        for url in (unsubscribe, preferences):
            page = self.app.get(url.removeprefix("/v1"), headers=evil).text
            self.assertNotIn("evil.example", page)
            self.assertIn('action="http://localhost/v1/emailer/', page)
        response = self.app.post(
            preferences.removeprefix("/v1"), {"/buckets/b": "daily"}, headers=evil, status=303
        )
        self.assertTrue(response.headers["Location"].startswith("http://localhost/v1/emailer/"))


class KeptDigestTest(RecipientTest):
    """Digest entries kept before their recipient turned the mail off."""

    hook = {**HOOK, "cadence": "daily"}

    def setUp(self):
        super().setUp()
        self.app.put_json("/buckets/l", headers=self.headers)
        self.app.put_json("/buckets/l/collections/c", headers=self.headers)
        self.put_hooks("/buckets/l", {**self.hook, "non_editable": True})

    def test_a_digest_leaves_out_what_its_recipient_turned_off_since(self):
        self.create("r1", "r2")
        self.app.put_json("/buckets/l/collections/c/records/r1", headers=self.headers)
        self.assertEqual(self.mails(), [])
        now = time.time()
        a_token = tokens.sign(SECRET, "a@example.com", ("/buckets/b",), now)
        self.post_link(f"/emailer/suppress?token={a_token}", {"suppressed": "true"}, status=303)
        b_token = tokens.sign(SECRET, "b@example.com", ("/buckets/b",), now)
        self.post_link(f"/emailer/unsubscribe?token={b_token}")
        _, sent = self.send(datetime.now(UTC) + timedelta(days=1))
        self.assertEqual(self.recipients_of(sent), ["a@example.com", "b@example.com"])
        for mail in sent:
            with self.subTest(recipient=mail.rcpt_tos):
                self.assertEqual(mail.message["Subject"], "Daily digest: 1 change(s)")
                self.assertIn("/buckets/l/collections/c/records/r1", mail.body)
                self.assertNotIn("/buckets/b/", mail.body)


class TokenLifetimeTest(RecipientTest):
    extra_settings = {**RecipientTest.extra_settings, "emailer.link_max_age": "30"}

    def test_a_link_works_for_link_max_age_from_its_own_mail(self):
        [mail, _] = self.create("r1")
        _, preferences = links(mail)
        issued = tokens.verify(SECRET, token_of(preferences), max_age=30).issued
        self.assertAlmostEqual(issued, time.time(), delta=5)
        self.assertIn(ROW_B, self.page(preferences).text)


class TokenLogTest(RecipientTest):
    def test_tokens_are_not_in_kintos_request_logs(self):
        mails = self.create("r1")
        mail = next(m for m in mails if m.rcpt_tos == ["a@example.com"])
        unsubscribe, preferences = links(mail)
        token = token_of(preferences)
        with self.assertLogs("request.summary", logging.INFO) as logs:
            self.page(unsubscribe)
            self.page(preferences + "&saved=1")
            self.post_link(preferences, {"/buckets/b": "daily"}, status=303)
            self.post_link(unsubscribe)
            suppress, fields = forms(self.page(preferences).text)[STOP_ALL]
            self.post_link(suppress, fields, status=303)
            self.app.put(unsubscribe.removeprefix("/v1"), status=404)
            self.app.get(f"/emailer/page/?token={token}", status=307)
        self.assertEqual(len(logs.records), 8)
        for record in logs.records:
            self.assertNotIn(token, repr(vars(record)))
            self.assertEqual(record.querystring["token"], "[redacted]")
        self.assertEqual(logs.records[1].querystring["saved"], "1")

    def test_a_token_sent_elsewhere_is_not_logged_either(self):
        token = tokens.sign(SECRET, "a@example.com", ("/buckets/b",), time.time())
        with self.assertLogs("request.summary", logging.INFO) as logs:
            # A link cut or mangled by a mail client, sent to the API, to any route.
            self.app.get(f"/emailer/pagex?token={token}", status=404)
            self.app.get(f"/emailer/page;x?token={token}", status=404)
            self.app.get(f"/emailer/preferences?token={token}", status=401)
            self.app.get(f"/buckets?token={token}", status=401)
        self.assertEqual(len(logs.records), 4)
        for record in logs.records:
            self.assertNotIn(token, repr(vars(record)))

    def test_a_bad_link_in_a_batch_is_its_own_error(self):
        requests = [{"method": "GET", "path": "/emailer/page?token=forged"}]
        response = self.app.post_json("/batch", {"requests": requests}, headers=self.headers)
        self.assertEqual(response.json["responses"][0]["status"], 400)


class SuppressionTest(RecipientTest):
    """Stop all mail to an address, from every bucket, but for locked hooks."""

    def setUp(self):
        super().setUp()
        for bucket in ("b2", "b3"):
            self.app.put_json(f"/buckets/{bucket}", headers=self.headers)
            self.app.put_json(f"/buckets/{bucket}/collections/c", headers=self.headers)
        self.put_hooks("/buckets/b3", {**self.hook, "non_editable": True})

    def create_in(self, bucket, record_id):
        self.sink.clear()
        self.app.put_json(
            f"/buckets/{bucket}/collections/c/records/{record_id}", headers=self.headers
        )
        return self.recipients_of(self.mails())

    def test_stop_all_from_either_page_and_undo(self):
        mail = next(m for m in self.create("r1") if m.rcpt_tos == ["a@example.com"])
        unsubscribe, preferences = links(mail)
        for page in (unsubscribe, preferences):
            with self.subTest(page=page):
                stop, fields = forms(self.page(page).text)[STOP_ALL]
                response = self.post_link(stop, fields, status=303)
                after = self.page(app_path(response.headers["Location"])).text
                self.assertIn("Your choices are saved", after)
                self.assertIn(RESUME, forms(after))
                self.assertNotIn(STOP_ALL, forms(after))
                self.assertEqual(self.create_in("b", "r2"), ["b@example.com"])
                # A bucket that never mailed the address before: its hooks obey too.
                self.put_hooks("/buckets/b2", self.hook)
                self.assertEqual(self.create_in("b2", "r2"), ["b@example.com"])
                # Locked mail goes on.
                self.assertEqual(self.create_in("b3", "r2"), ["a@example.com", "b@example.com"])

                resume, fields = forms(self.page(page).text)[RESUME]
                self.post_link(resume, fields, status=303)
                self.assertEqual(self.create_in("b", "r3"), ["a@example.com", "b@example.com"])
                self.assertEqual(self.create_in("b2", "r3"), ["a@example.com", "b@example.com"])
                self.put_hooks("/buckets/b2")

    def test_the_main_button_stops_only_the_scopes_of_the_link(self):
        mail = next(m for m in self.create("r1") if m.rcpt_tos == ["a@example.com"])
        unsubscribe, _ = links(mail)
        page = forms(self.page(unsubscribe).text)
        self.assertEqual(page["Unsubscribe"][0], unsubscribe)
        self.assertNotEqual(page[STOP_ALL][0], unsubscribe)
        self.post_link(unsubscribe)
        self.put_hooks("/buckets/b2", self.hook)
        self.assertEqual(self.create_in("b2", "r2"), ["a@example.com", "b@example.com"])


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
        # Not a.example.com's owner: whoever first created an account of that name. They
        # reach the preferences of their principal's web notifications, never the address's.
        squatter = self.account("a@example.com")
        mine = {"email": None, "scopes": {}, "suppressed": False}
        self.assertEqual(self.app.get("/emailer/preferences", headers=squatter).json["data"], mine)
        for data, name in [
            ({"scopes": {"/buckets/b": "off"}}, "data.scopes./buckets/b"),
            ({"scopes": {"/buckets/b": {"web": False}}}, "data.scopes./buckets/b.web"),
            ({"suppressed": True}, "data.suppressed"),
        ]:
            with self.subTest(data=data):
                response = self.app.patch_json(
                    "/emailer/preferences", {"data": data}, headers=squatter, status=400
                )
                self.assertEqual(response.json["details"][0]["name"], name)
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
        self.assertEqual(scopes["/buckets/b"]["email"]["value"], "immediate")

        body = {"data": {"scopes": {"/buckets/b": "daily"}}}
        changed = self.app.patch_json("/emailer/preferences", body, headers=alice)
        self.assertEqual(changed.json["data"]["scopes"]["/buckets/b"]["email"]["value"], "daily")
        # Bob's own preferences are untouched, and he cannot reach Alice's.
        bob_view = self.app.get("/emailer/preferences", headers=bob).json["data"]
        self.assertEqual(bob_view["email"], "b@example.com")
        self.assertEqual(bob_view["scopes"]["/buckets/b"]["email"]["value"], "immediate")
        self.sink.clear()
        self.assertEqual(self.recipients_of(self.create("r2")), ["b@example.com"])

    def test_stop_all_and_undo(self):
        alice = self.user("a@example.com")
        self.create("r1")
        self.assertIs(
            self.app.get("/emailer/preferences", headers=alice).json["data"]["suppressed"], False
        )
        body = {"data": {"suppressed": True}}
        changed = self.app.patch_json("/emailer/preferences", body, headers=alice).json["data"]
        self.assertIs(changed["suppressed"], True)
        self.app.put_json("/buckets/b2", headers=self.headers)
        self.app.put_json("/buckets/b2/collections/c", headers=self.headers)
        self.put_hooks("/buckets/b2", self.hook)
        self.sink.clear()
        self.create("r2")
        self.app.put_json("/buckets/b2/collections/c/records/r2", headers=self.headers)
        self.assertEqual(self.recipients_of(self.mails()), ["b@example.com", "b@example.com"])
        self.assertIs(
            self.app.get("/emailer/preferences", headers=alice).json["data"]["suppressed"], True
        )
        body = {"data": {"suppressed": False}}
        self.app.patch_json("/emailer/preferences", body, headers=alice)
        self.sink.clear()
        self.assertEqual(self.recipients_of(self.create("r3")), ["a@example.com", "b@example.com"])

    def test_errors(self):
        alice = self.user("a@example.com")
        self.create("r1")
        self.app.get("/emailer/preferences", status=401)
        # Basic auth is not declared verified; a verified user id must be an address: both
        # have the preferences of their principal (web notifications), and no address.
        for headers in (self.headers, self.user("alice")):
            with self.subTest(headers=headers):
                data = self.app.get("/emailer/preferences", headers=headers).json["data"]
                self.assertEqual(data, {"email": None, "scopes": {}, "suppressed": False})
        scope = "data.scopes./buckets/b"
        cases = [
            ({"scopes": {"/buckets/b": "hourly"}}, scope, "is not one of"),
            ({"scopes": {"/buckets/other": "off"}}, "data.scopes./buckets/other", "Nothing came"),
            ({"scopes": ["/buckets/b"]}, "data.scopes", "An object"),
            ({"scopes": {"/buckets/b": {}}}, scope, "An object of channels"),
            ({"scopes": {"/buckets/b": ["web"]}}, scope, "An object of channels"),
            ({"scopes": {"/buckets/b": {"sms": True}}}, f"{scope}.sms", "Not a channel"),
            ({"scopes": {"/buckets/b": {"email": True}}}, f"{scope}.email", "is not one of"),
            # The hooks of /buckets/b send no web notification.
            ({"scopes": {"/buckets/b": {"web": False}}}, f"{scope}.web", "No web notifications"),
            ({"suppressed": "yes"}, "data.suppressed", "true or false"),
            ({"suppressed": None}, "data.suppressed", "true or false"),
            ({}, "data", "scopes or suppressed"),
        ]
        for data, name, description in cases:
            for method in ("patch_json", "put_json"):
                if method == "put_json" and not data:
                    continue  # The whole of a user's choices: none at all is one.
                with self.subTest(data=data, method=method):
                    response = getattr(self.app, method)(
                        "/emailer/preferences", {"data": data}, headers=alice, status=400
                    )
                    self.assertEqual(response.json["details"][0]["name"], name)
                    self.assertIn(description, response.json["details"][0]["description"])


class LockedApiTest(VerifiedTest):
    hook = {**HOOK, "non_editable": True}

    def test_a_locked_scope_cannot_be_changed(self):
        alice = self.user("a@example.com")
        self.create("r1")
        body = {"data": {"scopes": {"/buckets/b": "off"}}}
        response = self.app.patch_json("/emailer/preferences", body, headers=alice, status=400)
        self.assertEqual(response.json["details"][0]["name"], "data.scopes./buckets/b")
        scope = self.app.get("/emailer/preferences", headers=alice).json["data"]["scopes"]
        email = {"default": "immediate", "locked": True, "choice": None, "value": "immediate"}
        self.assertEqual(scope["/buckets/b"], {"email": email})


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


class LockedDigestTest(RecipientTest):
    hook = {**HOOK, "cadence": "daily", "non_editable": True, "recipients": ["a@example.com"]}

    def test_a_digest_of_locked_mail_offers_no_unsubscribe(self):
        self.create("r1")
        _, [digest] = self.send(datetime.now(UTC) + timedelta(days=1))
        self.assertIsNone(digest.message["List-Unsubscribe"])
        self.assertIsNone(digest.message["List-Unsubscribe-Post"])
        self.assertNotIn("Unsubscribe", digest.text)
        self.assertIn("Choose which emails you get: http://localhost/v1/emailer/page", digest.text)


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
