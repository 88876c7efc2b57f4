"""Header values: data never becomes a header of its own, whatever the Python version.

The standard library decodes RFC 2047 encoded words when a header value is set, and
Python 3.11's folder writes decoded line breaks out raw: record data such as
``=?utf-8?q?Hi=0D=0AReply-To:...?=`` in a subject would add headers and replace the body.
"""

import base64
import re
import unittest
from email import message_from_bytes, policy
from email.header import decode_header, make_header

from hypothesis import given, settings
from hypothesis import strategies as st

from kinto_emailer import headers, messages, templates
from kinto_emailer.recipients import parse_mailbox
from tests.support import EmailerWebTest


def encoded_word(text: str, encoding: str = "q") -> str:
    """``text`` as one RFC 2047 encoded word, every byte encoded."""
    data = text.encode()
    if encoding == "b":
        return f"=?utf-8?b?{base64.b64encode(data).decode()}?="
    return "=?utf-8?q?" + "".join(f"={byte:02X}" for byte in data) + "?="


INJECTION = "=?utf-8?q?Hi=0D=0AReply-To:_attacker@evil.com=0D=0A=0D=0AEvil_body?="
PAYLOADS = {
    "encoded line breaks": INJECTION,
    "nested, q": encoded_word(INJECTION),
    "nested, b": encoded_word(INJECTION, "b"),
    "nested twice": encoded_word(encoded_word(INJECTION, "b")),
    "inside a word": f"x{INJECTION}y",
    "upper case": INJECTION.replace("utf-8?q", "UTF-8?Q"),
    "NUL": "=?utf-8?q?a=00b?=",
    "C1 control": "=?utf-8?q?a=C2=85Bcc:_eve@evil.com?=",
    "line separator": encoded_word("a\u2028Bcc: eve@evil.com", "b"),
    "unknown charset": "=?x-unknown?q?a=0D=0ABcc:_eve@evil.com?=",
    "raw line breaks": "a\r\nBcc: eve@evil.com\n\nbody",
}
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
HEADERS = {
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
    "Auto-Submitted",
    "Content-Type",
    "Content-Transfer-Encoding",
    "MIME-Version",
}

header_texts = st.lists(
    st.sampled_from(["=?", "?=", "utf-8", "?q?", "?b?", "=0D", "=0A", "_", ":", " ", "<", ">"])
    | st.sampled_from(["Reply-To:", "\r\n", "\x00", "é", "\u2028", "=3D", "=3F", "a@b.c"])
    | st.text(max_size=3),
    max_size=20,
).map("".join)
"""Text made of the pieces of encoded words, line breaks and addresses."""


def as_read(value: str) -> list[str]:
    """What readers that decode encoded words, once or again and again, make of ``value``."""
    seen = [value]
    while True:
        decoded = str(make_header(decode_header(seen[-1])))
        if decoded in seen:
            return seen
        seen.append(decoded)


def header_names(raw: bytes) -> set[str]:
    """The names of the headers on the wire, before any parser is lenient about them."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii", "replace")
    return {line.split(":", 1)[0] for line in head.split("\r\n") if line[:1] not in " \t"}


class HeaderValueTest(unittest.TestCase):
    def test_no_encoded_word_and_no_control_character_comes_out(self):
        for name, payload in PAYLOADS.items():
            with self.subTest(name):
                value = headers.header_value(payload)
                self.assertNotIn("=?", value)
                self.assertNotRegex(value, CONTROL)
                self.assertEqual(headers.header_value(value), value)

    def test_plain_text_is_kept(self):
        for text in ("Hello", "Créé: naïve", "a = b? c", "50%=?"[:-1], "x == y"):
            with self.subTest(text):
                self.assertEqual(headers.header_value(text), text)
        self.assertEqual(headers.header_value("  a\r\n\tb  \x00 c "), "a b c")


def draft(text: str, **fields: object) -> messages.Draft:
    values = {
        "sender": parse_mailbox("Kinto <kinto@example.com>"),
        "recipient": parse_mailbox("Zoë <zoe@example.com>"),
        "subject": text,
        "body": "The template's body.",
        "uri": "/buckets/b",
        "root_url": "http://localhost/v1/",
        "key": "k" * 64,
        **fields,
    }
    return messages.Draft(**values)  # type: ignore[arg-type]


class BuildTest(unittest.TestCase):
    """Drafts stored before these checks, or made by any code path, are written safely."""

    def assert_safe(self, raw: bytes, subject: str) -> None:
        self.assertEqual(header_names(raw), HEADERS)
        message = message_from_bytes(raw, policy=policy.default)
        self.assertEqual(message["Subject"], headers.header_value(subject))
        wire = re.search(rb"\r\nSubject:(.*?)\r\n(?![ \t])", raw, re.S)[1].decode()
        for reading in as_read(wire.replace("\r\n", "")):
            self.assertNotRegex(reading, CONTROL)
        self.assertEqual(message.get_content().strip(), "The template's body.")

    def test_subjects(self):
        for name, payload in PAYLOADS.items():
            with self.subTest(name):
                self.assert_safe(messages.build(draft(payload)).as_bytes(), payload)

    def test_display_names(self):
        for name, payload in PAYLOADS.items():
            with self.subTest(name):
                names = {"display_name": payload}
                outgoing = messages.build(
                    draft(
                        "Subject",
                        sender=messages.Mailbox(**names, addr_spec="kinto@example.com"),
                        recipient=messages.Mailbox(**names, addr_spec="zoe@example.com"),
                    )
                )
                raw = outgoing.as_bytes()
                self.assert_safe(raw, "Subject")
                message = message_from_bytes(raw, policy=policy.default)
                self.assertEqual(
                    [a.addr_spec for a in message["To"].addresses], ["zoe@example.com"]
                )
                for field in ("From", "To"):
                    self.assertNotRegex(message[field].addresses[0].display_name, CONTROL)

    @settings(max_examples=300, deadline=None)
    @given(header_texts)
    def test_any_subject(self, subject):
        self.assert_safe(messages.build(draft(subject)).as_bytes(), subject)


HOOK = {
    "resource_name": "record",
    "subject": "{new[title]}",
    "template": "{uri} was created.",
    "recipients": ["a@example.com"],
}
RECORDS = "/buckets/b/collections/c/records"


class HeaderInjectionTest(EmailerWebTest):
    """Record data and request headers, over HTTP, mailed through a real SMTP server."""

    def setUp(self):
        super().setUp()
        self.create_collection()

    def assert_one_safe_mail(self, mail, uri):
        names = header_names(mail.data)
        self.assertFalse(names & {"Reply-To", "Bcc", "Cc"}, names)
        message = mail.message
        self.assertNotIn("Reply-To", message)
        self.assertNotRegex(message["Subject"], CONTROL)
        self.assertEqual(mail.body, f"{uri} was created.")
        self.assertEqual(mail.rcpt_tos, ["a@example.com"])

    def safe_mail_of_each_payload(self, hook):
        """Per payload as a record's title, in a subtest: its one mail, checked safe."""
        self.put_hooks("/buckets/b", hook)
        for name, payload in PAYLOADS.items():
            with self.subTest(name):
                self.sink.clear()
                record = self.create_record(RECORDS, {"title": payload}).json["data"]
                [mail] = self.mails()
                self.assert_one_safe_mail(mail, f"{RECORDS}/{record['id']}")
                yield payload, mail

    def test_record_data_in_the_subject(self):
        for payload, mail in self.safe_mail_of_each_payload(HOOK):
            subject = templates.render_line(HOOK["subject"], {"new": {"title": payload}})
            self.assertEqual(mail.message["Subject"], subject)

    def test_record_data_in_the_sender(self):
        hook = {**HOOK, "sender": "{new[title]} <kinto@example.com>", "subject": "New"}
        # Data is only ever the sender's name: the mail goes, with nothing decoded.
        for _, mail in self.safe_mail_of_each_payload(hook):
            [sender] = mail.message["From"].addresses
            self.assertNotRegex(sender.display_name, CONTROL)
            self.assertEqual(sender.addr_spec, "kinto@example.com")

    def test_display_names_of_recipients(self):
        bad = f"{INJECTION} <a@example.com>"
        response = self.put_hooks("/buckets/b", {**HOOK, "recipients": [bad]}, status=400)
        self.assertEqual(
            response.json["details"][0]["name"], "data.kinto-emailer.hooks.0.recipients.0"
        )
        self.put_hooks(
            "/buckets/b",
            {
                **HOOK,
                "subject": "New",
                "recipients": [f"{PAYLOADS['nested, b']} <a@example.com>", "/buckets/b/groups/g"],
            },
        )
        members = [
            f"ldap:{INJECTION} <b@example.com>",
            f"ldap:{encoded_word(INJECTION)} <c@x.com>",
        ]
        self.app.put_json(
            "/buckets/b/groups/g", {"data": {"members": members}}, headers=self.headers
        )
        self.sink.clear()
        record = self.create_record(RECORDS).json["data"]
        mails = self.mails()
        # The member whose name decodes to line breaks is not mailed.
        self.assertEqual(sorted(m.rcpt_tos[0] for m in mails), ["a@example.com", "c@x.com"])
        for mail in mails:
            names = header_names(mail.data)
            self.assertFalse(names & {"Reply-To", "Bcc", "Cc"}, names)
            self.assertNotRegex(mail.message["To"].addresses[0].display_name, CONTROL)
            self.assertEqual(mail.body, f"{RECORDS}/{record['id']} was created.")

    def test_host_of_the_request(self):
        # The host is in the links of the mail (List-Unsubscribe).
        self.put_hooks("/buckets/b", {**HOOK, "subject": "New"})
        host = "=?utf-8?q?x=0D=0ABcc:_eve@evil.com=0D=0A?="
        response = self.app.post_json(
            RECORDS, {"data": {}}, headers={**self.headers, "Host": host}, status=201
        )
        [mail] = self.mails()
        self.assert_one_safe_mail(mail, f"{RECORDS}/{response.json['data']['id']}")
