"""Addresses and group URIs."""

import base64
import unittest

from hypothesis import given
from hypothesis import strategies as st

from kinto_emailer import recipients
from kinto_emailer.errors import InvalidHook
from tests.test_headers import CONTROL, header_texts


class ParseMailboxTest(unittest.TestCase):
    def test_valid(self):
        cases = {
            "a@example.com": ("", "a@example.com"),
            "Joe Doe <joe@example.com>": ("Joe Doe", "joe@example.com"),
            '"Doe, Joe" <joe@example.com>': ("Doe, Joe", "joe@example.com"),
            "Zoë <zoe@example.com>": ("Zoë", "zoe@example.com"),
            "<a@example.com>": ("", "a@example.com"),
        }
        for text, (name, addr) in cases.items():
            with self.subTest(text=text):
                mailbox = recipients.parse_mailbox(text)
                self.assertEqual((mailbox.display_name, mailbox.addr_spec), (name, addr))

    def test_invalid(self):
        for text in (
            "",
            "nope",
            "a@b",
            "a@example.com, b@example.com",
            "x:;",
            "a@@example.com",
            "a@example.com\r\nBcc: b@example.com",
            "@example.com",
            "a b@example.com",
        ):
            with self.subTest(text=text), self.assertRaises(ValueError):
                recipients.parse_mailbox(text)

    def test_what_encoded_words_hide_is_checked(self):
        for text in (
            "=?utf-8?q?Eve=0D=0ABcc:_x@evil.com?= <a@example.com>",
            '"=?utf-8?q?Eve=0D=0ABcc:_x@evil.com?=" <a@example.com>',
            "=?utf-8?q?Eve=00?= <a@example.com>",
            "=?utf-8?b?RXZlwoU=?= <a@example.com>",
            "=?utf-8?q?a=0D=0A?=@example.com",
            "=?utf-8?q?a?=@example.com",
        ):
            with self.subTest(text=text), self.assertRaises(ValueError):
                recipients.parse_mailbox(text)

    def test_an_encoded_word_in_an_encoded_word_is_not_decoded_again(self):
        inner = "=?utf-8?q?Eve=0D=0ABcc:_x@evil.com?="
        text = "=?utf-8?b?" + base64.b64encode(inner.encode()).decode() + "?= <a@example.com>"
        mailbox = recipients.parse_mailbox(text)
        self.assertEqual(mailbox.display_name, "= ?utf-8?q?Eve=0D=0ABcc:_x@evil.com?=")
        self.assertEqual(recipients.parse_mailbox(str(mailbox)), mailbox)

    @given(st.text() | header_texts.map(lambda name: f"{name} <a@example.com>"))
    def test_parser_never_crashes(self, text):
        try:
            mailbox = recipients.parse_mailbox(text)
        except ValueError:
            return
        self.assertNotRegex(str(mailbox), r"[\r\n]")
        self.assertEqual(mailbox.addr_spec.count("@"), 1)
        self.assertNotRegex(mailbox.display_name + mailbox.addr_spec, CONTROL)
        self.assertNotIn("=?", str(mailbox))
        self.assertEqual(recipients.parse_mailbox(str(mailbox)), mailbox)


class ExpandTest(unittest.TestCase):
    def test_groups_members_and_duplicates(self):
        groups = {"g": ["account:A@example.com", "ldap:b@example.com", "basicauth:123"]}
        found = recipients.expand(
            [
                "a@example.com",
                "/buckets/b/groups/g",
                "/buckets/other/groups/g",
                "/buckets/b/groups/missing",
            ],
            lambda uri: uri,
            "b",
            lambda group_id: groups.get(group_id, []),
            (),
        )
        self.assertEqual([m.addr_spec for m in found], ["a@example.com", "b@example.com"])

    def test_allowed_domains(self):
        found = recipients.expand(
            ["a@example.com", "b@example.org"], lambda u: u, "b", lambda g: [], ("example.org",)
        )
        self.assertEqual([m.addr_spec for m in found], ["b@example.org"])

    def test_check_recipient(self):
        recipients.check_recipient("/buckets/{bucket_id}/groups/g", "p", "b", ())
        recipients.check_recipient("/buckets/b/groups/{collection_id}", "p", "b", ())
        for bad in ("/buckets/bb/groups/g", "/buckets/b/groups/", "/buckets/b/collections/c"):
            with self.subTest(recipient=bad), self.assertRaises(InvalidHook):
                recipients.check_recipient(bad, "p", "b", ())


class InboxKeyTest(unittest.TestCase):
    """Who reads a web notification: a verified address, else the principal itself."""

    def test_keys_of_principals(self):
        verified = ("ldap",)
        cases = {
            "ldap:Bob@Example.com": "bob@example.com",
            "ldap:bob": "ldap:bob",
            "account:alice": "account:alice",
            # Anyone may name an account after anyone's address: kept by principal.
            "account:a@example.com": "account:a@example.com",
        }
        for principal, key in cases.items():
            with self.subTest(principal=principal):
                self.assertEqual(recipients.inbox_key(principal, verified), key)

    def test_keys_of_a_hook(self):
        members = {
            "g": [
                "account:alice",
                "ldap:C@example.com",
                "system.Everyone",
                "/buckets/b/groups/other",
                "ldap:c@example.com",
                "ldap:d@other.example",
                "account:e@other.example",
            ]
        }
        keys = recipients.inbox_keys(
            ["A@Example.com", "/buckets/b/groups/g", "/buckets/x/groups/g"],
            lambda uri: uri,
            "b",
            members.__getitem__,
            ("example.com",),
            ("ldap",),
        )
        self.assertEqual(
            keys, ["a@example.com", "account:alice", "c@example.com", "account:e@other.example"]
        )
