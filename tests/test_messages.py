"""build() writes the bytes that an EmailMessage of the same draft serializes to."""

import operator
import unittest
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from email import message_from_bytes, policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from kinto_emailer import messages
from kinto_emailer.headers import header_value
from kinto_emailer.messages import POLICY, Draft, footer, thread_id
from kinto_emailer.recipients import Mailbox, parse_mailbox


# The reference: how build() wrote messages, through EmailMessage.
def set_header(message: EmailMessage, name: str, value: str | Mailbox) -> None:
    if isinstance(value, Mailbox):
        message[name] = Address(header_value(value.display_name), addr_spec=value.addr_spec)
    else:
        message[name] = header_value(value)


def reference_build(draft: Draft) -> messages.Outgoing:
    message = EmailMessage(policy=POLICY)
    set_header(message, "From", draft.sender)
    set_header(message, "To", draft.recipient)
    set_header(message, "Subject", draft.subject)
    set_header(message, "Date", format_datetime(draft.created))
    set_header(message, "Message-ID", f"<{draft.key[:32]}@{draft.sender.domain}>")
    reference = thread_id(draft.root_url, draft.uri)
    set_header(message, "In-Reply-To", reference)
    set_header(message, "References", reference)
    set_header(message, "Auto-Submitted", "auto-generated")
    body = draft.body
    if draft.unsubscribe_url:
        set_header(message, "List-Unsubscribe", f"<{draft.unsubscribe_url}>")
        set_header(message, "List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
    if draft.preferences_url:
        body = body.rstrip("\n") + "\n" + footer(draft)
    message.set_content(body, charset="utf-8")
    return messages.Outgoing(
        draft.sender.addr_spec, draft.recipient.addr_spec, message.as_bytes(policy=POLICY)
    )


def written(build: Callable[[Draft], messages.Outgoing], draft: Draft) -> bytes | type[Exception]:
    """The bytes of ``draft``, or the type of the error writing it raises."""
    try:
        return build(draft).as_bytes()
    except Exception as e:
        return type(e)


def make_draft(**fields: object) -> Draft:
    values = {
        "sender": parse_mailbox("Kinto <kinto@example.com>"),
        "recipient": parse_mailbox("Alice Smith <alice@example.com>"),
        "subject": "record created: Hello",
        "body": "Record r in b/c was created.\n",
        "uri": "/buckets/b/collections/c/records/r",
        "root_url": "https://kinto.example.com/v1/",
        "key": "0123456789abcdef" * 4,
        "created": datetime(2026, 11, 30, 5, 36, 7, tzinfo=UTC),
        **fields,
    }
    return Draft(**values)  # type: ignore[arg-type]


ADDRESSES = [
    "kinto@example.com",
    "zoe@example.com",
    "x@Example.COM",
    "o'brien+tag@sub.example.org",
    '"john doe"@example.com',
    '"a\\"b"@example.com',
    "a@[127.0.0.1]",
    "user@bücher.example",
]
# Around the longest line (998), where headers fold and bodies are encoded.
long_runs = st.builds(
    operator.mul, st.sampled_from(["a", "é", " ", "ab ", "€-", "\n"]), st.integers(0, 1100)
)
pieces = st.one_of(
    st.text(),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E)),
    st.sampled_from(
        ["=?", "?=", "=?utf-8?q?a=0D=0Ab?=", "\r\n", "\r", "\t", "\x00", "\x85", "\u2028"]
        + ["", " ", "é", "Zoë", '"', "\\", ".", ",", "<", ">", "@", ":", "(", "[", "From "]
    ),
)
# Folding a long value of many words takes the standard library seconds: one long run each.
texts = st.tuples(st.lists(pieces, max_size=4), st.one_of(st.just(""), long_runs)).map(
    lambda parts: "".join(parts[0]) + parts[1]
)
short_texts = st.lists(pieces, max_size=4).map("".join)
addresses = st.sampled_from(ADDRESSES)
# Which parse_mailbox() refuses, but a Mailbox made otherwise may hold.
UNPARSED = ["=?utf-8?q?x?=@example.com", "a.=?utf-8?q?x?=@example.com", "x@=?utf-8?q?x?=.com"]


@st.composite
def mailboxes(draw: st.DrawFn) -> Mailbox:
    """Parsed from text, as addresses are, or made of any display name."""
    addr_spec = parse_mailbox(draw(addresses)).addr_spec
    name = draw(short_texts)
    if draw(st.booleans()):
        return Mailbox(name, draw(st.sampled_from([addr_spec, *UNPARSED])))
    quoted = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    text = draw(st.sampled_from([addr_spec, f"{name} <{addr_spec}>", f"{quoted} <{addr_spec}>"]))
    try:
        return parse_mailbox(text)
    except ValueError:
        assume(False)
        raise


offsets = st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23))
drafts = st.builds(
    Draft,
    sender=mailboxes(),
    recipient=mailboxes(),
    subject=texts,
    body=texts,
    uri=st.one_of(st.just("/buckets/b/collections/c/records/r"), short_texts),
    root_url=st.sampled_from(["https://kinto.example.com/v1/", "http://localhost/v1/", ""]),
    key=st.one_of(st.just("0123456789abcdef" * 4), short_texts),
    created=st.datetimes(
        min_value=datetime(1, 1, 1), timezones=st.builds(timezone, offsets) | st.just(UTC)
    ),
    unsubscribe_url=st.one_of(st.just(""), texts),
    preferences_url=st.one_of(st.just(""), texts),
)


class BuildTest(unittest.TestCase):
    @settings(max_examples=400, deadline=None)
    @given(drafts)
    @example(make_draft(created=datetime(99, 1, 1, tzinfo=UTC)))
    @example(make_draft(created=datetime(2026, 1, 1, tzinfo=timezone(timedelta(seconds=61)))))
    def test_as_email_message(self, draft):
        self.assertEqual(written(messages.build, draft), written(reference_build, draft))

    def test_lines_around_the_longest(self):
        # Headers fold, and bodies are encoded, past 998 characters a line.
        for length in range(990, 1002):
            words = ("word " * length)[:length]
            for draft in (
                make_draft(subject="x" * length, body="y" * length),
                make_draft(subject=words, body=words, unsubscribe_url=words.replace(" ", "/")),
                make_draft(
                    sender=Mailbox(words, "kinto@example.com"),
                    recipient=Mailbox("x" * length, "alice@example.com"),
                    key=words.replace(" ", "."),
                ),
            ):
                with self.subTest(length=length):
                    self.assertEqual(
                        messages.build(draft).as_bytes(), reference_build(draft).as_bytes()
                    )

    def test_ascii(self):
        draft = messages.with_links(make_draft(), "secret", ("b",))
        raw = messages.build(draft).as_bytes()
        self.assertEqual(raw, reference_build(draft).as_bytes())
        head, body = raw.split(b"\r\n\r\n", 1)
        self.assertEqual(
            [line.split(b":", 1)[0] for line in head.split(b"\r\n")],
            [
                b"From",
                b"To",
                b"Subject",
                b"Date",
                b"Message-ID",
                b"In-Reply-To",
                b"References",
                b"Auto-Submitted",
                b"List-Unsubscribe",
                b"List-Unsubscribe-Post",
                b"Content-Type",
                b"Content-Transfer-Encoding",
                b"MIME-Version",
            ],
        )
        self.assertIn(b"\r\nFrom: Kinto <kinto@example.com>\r\n", b"\r\n" + head + b"\r\n")
        self.assertIn(b"\r\nSubject: record created: Hello\r\n", head)
        self.assertIn(b"\r\nDate: Mon, 30 Nov 2026 05:36:07 +0000\r\n", head)
        self.assertIn(b"\r\nContent-Transfer-Encoding: 7bit\r\n", head)
        self.assertTrue(body.startswith(b"Record r in b/c was created.\r\n\r\n-- \r\n"))

    def test_non_ascii(self):
        draft = make_draft(
            sender=parse_mailbox("Kïnto <kinto@example.com>"),
            recipient=parse_mailbox('"Zoë, Ñúñez" <zoe@example.com>'),
            subject="créé : «Bonjour» =?utf-8?q?x?=",
            body="L'enregistrement a été créé.\n",
        )
        raw = messages.build(draft).as_bytes()
        self.assertEqual(raw, reference_build(draft).as_bytes())
        self.assertTrue(raw.isascii() is False and b"=?utf-8?" in raw)
        message = message_from_bytes(raw, policy=policy.default)
        self.assertEqual(message["Subject"], "créé : «Bonjour» = ?utf-8?q?x?=")
        self.assertEqual(message["From"].addresses[0].display_name, "Kïnto")
        self.assertEqual(message["To"].addresses[0].display_name, "Zoë, Ñúñez")
        self.assertEqual(message["Content-Transfer-Encoding"], "8bit")
        self.assertEqual(
            message.get_content().replace("\r\n", "\n"), "L'enregistrement a été créé.\n"
        )

    def test_long_line_body(self):
        for line, encoding in (("é" * 600, "base64"), ("a" * 1200, "quoted-printable")):
            with self.subTest(encoding=encoding):
                draft = make_draft(body=f"short\n{line}\n")
                raw = messages.build(draft).as_bytes()
                self.assertEqual(raw, reference_build(draft).as_bytes())
                message = message_from_bytes(raw, policy=policy.default)
                self.assertEqual(message["Content-Transfer-Encoding"], encoding)
                content = message.get_content().replace("\r\n", "\n")
                self.assertEqual(content, f"short\n{line}\n")
                self.assertLessEqual(max(map(len, raw.split(b"\r\n"))), 998)
