"""Links of emails come from the configuration, never from the Host header of a request."""

import logging
import time
import unittest
from urllib.parse import urlsplit

from kinto import main as kinto_main
from pyramid.exceptions import ConfigurationError

from kinto_emailer import tokens
from kinto_emailer.settings import parse_settings
from tests.support import EmailerWebTest, app_settings


HOOK = {
    "template": "See {root_url}",
    "subject": "{action}d {id}",
    "recipients": ["a@example.com"],
    "resource_name": "record",
}
RECORDS = "/buckets/b/collections/c/records"
EVIL = {"Host": "evil.example"}
SECRET = {"userid_hmac_secret": "a secret of Kinto's"}


class PublicUrlSettingTest(unittest.TestCase):
    def public_url(self, **settings):
        return parse_settings({**SECRET, **settings}).public_url

    def test_the_setting_else_kinto_host_else_none(self):
        cases = [
            (
                {"emailer.public_url": "https://kinto.example.com/v1/"},
                "https://kinto.example.com/v1/",
            ),
            (
                {"emailer.public_url": "https://example.com/kinto/v1"},
                "https://example.com/kinto/v1/",
            ),
            (
                {"emailer.public_url": "http://a.example/v1/", "http_host": "b.example"},
                "http://a.example/v1/",
            ),
            (
                {"http_scheme": "https", "http_host": "kinto.example.com"},
                "https://kinto.example.com/v1/",
            ),
            ({"http_host": "kinto.example.com:8888"}, "http://kinto.example.com:8888/v1/"),
            ({"http_host": "k.example", "http_api_version": "2.1"}, "http://k.example/v2/"),
            ({"http_scheme": "https"}, ""),
            ({"emailer.public_url": ""}, ""),
            ({}, ""),
        ]
        for settings, expected in cases:
            with self.subTest(settings=settings):
                self.assertEqual(self.public_url(**settings), expected)

    def test_a_bad_url_names_the_key(self):
        cases = [
            ({"emailer.public_url": "kinto.example.com/v1/"}, "'kinto.emailer.public_url'"),
            ({"emailer.public_url": "ftp://kinto.example.com/"}, "'kinto.emailer.public_url'"),
            ({"emailer.public_url": "https:///v1/"}, "'kinto.emailer.public_url'"),
            ({"emailer.public_url": "https://k.example/v1/?a=b"}, "'kinto.emailer.public_url'"),
            ({"emailer.public_url": "https://k.example/v1/#top"}, "'kinto.emailer.public_url'"),
            ({"emailer.public_url": "https://k.example/a b/"}, "'kinto.emailer.public_url'"),
            ({"emailer.public_url": "https://k.example/v1/>"}, "'kinto.emailer.public_url'"),
            ({"emailer.public_url": "https://k.example:port/"}, "'kinto.emailer.public_url'"),
            ({"http_host": "evil.example/x?"}, "'kinto.http_host'"),
        ]
        for settings, message in cases:
            with self.subTest(settings=settings):
                with self.assertRaises(ConfigurationError) as cm:
                    parse_settings({**SECRET, **settings})
                self.assertIn(message, str(cm.exception))

    def test_startup_without_any_warns_naming_the_settings(self):
        with self.assertLogs("kinto_emailer", logging.WARNING) as logs:
            kinto_main({}, **app_settings(25, **{"emailer.public_url": ""}))
        [warning] = logs.output
        for name in ("kinto.emailer.public_url", "kinto.http_scheme", "kinto.http_host"):
            self.assertIn(name, warning)


class LinksTest(EmailerWebTest):
    """Anyone may write (``system.Everyone``): the Host header is the writer's to choose."""

    def setUp(self):
        super().setUp()
        self.app.put_json("/buckets/b", headers=self.headers)
        self.app.put_json(
            "/buckets/b/collections/c",
            {"permissions": {"record:create": ["system.Everyone"]}},
            headers=self.headers,
        )
        self.put_hooks("/buckets/b", HOOK)

    def anonymous_writes(self):
        """A POST and a PUT, each with ``Host: evil.example``."""
        self.app.post_json(RECORDS, {"data": {}}, headers=EVIL, status=201)
        self.app.put_json(f"{RECORDS}/r1", {"data": {}}, headers=EVIL, status=201)
        mails = self.mails()
        self.assertEqual(len(mails), 2)
        return mails


class PublicUrlTest(LinksTest):
    extra_settings = {"emailer.public_url": "https://kinto.example.com/v1/"}
    root = "https://kinto.example.com/v1/"

    def test_links_point_at_the_configured_host(self):
        for mail in self.anonymous_writes():
            self.assertNotIn(b"evil.example", mail.data)
            self.assertEqual(mail.body, f"See {self.root}")
            self.assertTrue(
                mail.message["List-Unsubscribe"].startswith(
                    f"<{self.root}emailer/unsubscribe?token="
                )
            )
            self.assertIn(
                f"Choose which emails you get: {self.root}emailer/page?token=", mail.text
            )
            self.assertIn(f"Unsubscribe: {self.root}emailer/unsubscribe?token=", mail.text)

    def test_the_thread_of_an_object_does_not_depend_on_the_request(self):
        self.app.put_json(f"{RECORDS}/r1", {"data": {}}, headers=self.headers)
        self.app.put_json(f"{RECORDS}/r1", {"data": {"a": 1}}, headers={**self.headers, **EVIL})
        first, second = self.mails()
        self.assertEqual(first.message["References"], second.message["References"])
        self.assertTrue(first.message["References"].endswith(f"@{urlsplit(self.root).hostname}>"))


class KintoHostTest(PublicUrlTest):
    """Without ``kinto.emailer.public_url``, Kinto's own settings."""

    extra_settings = {
        "emailer.public_url": "",
        "http_scheme": "https",
        "http_host": "kinto.example.org",
    }
    root = "https://kinto.example.org/v1/"


class NoLinksTest(LinksTest):
    extra_settings = {"emailer.public_url": ""}

    def test_mail_has_no_links(self):
        for mail in self.anonymous_writes():
            self.assertNotIn(b"evil.example", mail.data)
            self.assertNotIn(b"localhost", mail.data)
            self.assertEqual(mail.text.strip(), "See")
            self.assertIsNone(mail.message["List-Unsubscribe"])
            self.assertIsNone(mail.message["List-Unsubscribe-Post"])


class NoSecretTest(LinksTest):
    """Neither ``kinto.emailer.secret`` nor ``kinto.userid_hmac_secret`` (Remote Settings'
    testing configuration): mail goes out without links, and the pages sign nothing."""

    extra_settings = {"userid_hmac_secret": ""}

    def test_mail_has_no_links_but_its_root_url(self):
        for mail in self.anonymous_writes():
            self.assertEqual(mail.text.strip(), "See http://localhost/v1/")
            self.assertIsNone(mail.message["List-Unsubscribe"])
            self.assertIsNone(mail.message["List-Unsubscribe-Post"])

    def test_the_pages_of_links_are_not_found_and_change_nothing(self):
        # Signed with the empty secret: what a forger would try first.
        token = tokens.sign("", "a@example.com", ("/buckets/b",), time.time())
        for method, page in [
            ("GET", "unsubscribe"),
            ("POST", "unsubscribe"),
            ("GET", "page"),
            ("POST", "page"),
            ("POST", "suppress"),
        ]:
            with self.subTest(method=method, page=page):
                url = f"/emailer/{page}?token={token}"
                if method == "GET":
                    response = self.app.get(url, status=404)
                else:
                    form = {"suppressed": "true", "/buckets/b": "off"}
                    response = self.app.post(url, form, status=404)
                self.assertEqual(response.content_type, "text/html")
                self.assertIn("no links", response.text)
        self.assertEqual(len(self.anonymous_writes()), 2)
