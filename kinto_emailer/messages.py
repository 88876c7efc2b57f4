"""RFC 5322 messages: one per recipient, ready for any SMTP server."""

import functools
import hashlib
import re
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from urllib.parse import quote, urlsplit

from kinto_emailer import htmlbody, tokens
from kinto_emailer.headers import ENCODED_WORD_START, header_value
from kinto_emailer.recipients import Mailbox, parse_mailbox


# Lines up to RFC 5322's limit: folding at 78 would encode a long List-Unsubscribe URL
# (RFC 2047), which mail providers then cannot read.
MAX_LINE_LENGTH = 998
POLICY = SMTP.clone(max_line_length=MAX_LINE_LENGTH)


@dataclass(frozen=True)
class Outgoing:
    """A message and its envelope."""

    sender: str
    recipient: str
    data: bytes

    def as_bytes(self) -> bytes:
        """The message as sent: CRLF line ends, long lines encoded."""
        return self.data


def thread_id(root_url: str, uri: str) -> str:
    """A stable ``Message-ID`` for the object at ``uri``, that its emails all refer to."""
    digest = hashlib.sha256(f"{root_url}{uri}".encode()).hexdigest()[:32]
    host = urlsplit(root_url).hostname or "kinto.invalid"
    return f"<{digest}.kinto-emailer@{host}>"


def idempotency_key(*parts: object) -> str:
    """One message's identity: the same change, hook and recipient give the same key."""
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()


@dataclass(frozen=True)
class Draft:
    """Everything a message says, decided inside the client's request.

    Building the RFC 5322 message is left to whoever sends it, off the request's path.
    ``key`` identifies the message (see :func:`idempotency_key`): it is never sent twice.
    """

    sender: Mailbox
    recipient: Mailbox
    subject: str
    body: str
    uri: str
    root_url: str
    key: str
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    unsubscribe_url: str = ""
    """One-click unsubscribe (RFC 8058) from the scopes this message came from."""
    preferences_url: str = ""
    """The recipient's preferences page."""
    html: str = ""
    """The HTML body (a hook's ``html_template``, rendered), sent beside the text."""
    inbox_url: str = ""
    """The recipient's web notifications (of the scopes this message came from)."""

    def to_json(self) -> dict[str, str]:
        return {
            "sender": str(self.sender),
            "recipient": str(self.recipient),
            "subject": self.subject,
            "body": self.body,
            "uri": self.uri,
            "root_url": self.root_url,
            "key": self.key,
            "created": self.created.isoformat(),
            "unsubscribe_url": self.unsubscribe_url,
            "preferences_url": self.preferences_url,
            "html": self.html,
            "inbox_url": self.inbox_url,
        }

    @classmethod
    def from_json(cls, data: dict[str, str]) -> "Draft":
        """The draft of :meth:`to_json`; ValueError (or KeyError) if ``data`` is not one."""
        created = datetime.fromisoformat(data["created"])
        if created.tzinfo is None:
            raise ValueError(f"created {data['created']!r} has no time zone")
        return cls(
            sender=parse_mailbox(data["sender"]),
            recipient=parse_mailbox(data["recipient"]),
            subject=data["subject"],
            body=data["body"],
            uri=data["uri"],
            root_url=data["root_url"],
            key=data["key"],
            created=created,
            unsubscribe_url=data.get("unsubscribe_url", ""),
            preferences_url=data.get("preferences_url", ""),
            html=data.get("html", ""),
            inbox_url=data.get("inbox_url", ""),
        )


def with_links(
    draft: Draft,
    secret: str,
    scopes: tuple[str, ...],
    unsubscribe: bool = True,
    inbox: bool = False,
    token: str | None = None,
) -> Draft:
    """``draft`` with its signed links, for mail that came from ``scopes``.

    Without ``unsubscribe`` (mail that recipients cannot turn off), no unsubscribe link;
    with ``inbox`` (mail of hooks that leave web notifications too), the inbox page's.
    Without a public URL (``draft.root_url``) or a secret, no links. ``token``: what the
    links carry instead of the signed token (a preview's placeholder, that works nowhere).
    """
    if not draft.root_url or not secret:
        return draft
    if token is None:
        issued = int(draft.created.timestamp())
        token = _token(secret, draft.recipient.addr_spec, scopes, issued)
    pages = f"{draft.root_url}emailer/"
    return replace(
        draft,
        unsubscribe_url=f"{pages}unsubscribe?token={token}" if unsubscribe else "",
        preferences_url=f"{pages}page?token={token}",
        inbox_url=f"{pages}inbox?token={token}" if inbox else "",
    )


@functools.lru_cache(maxsize=256)
def _token(secret: str, address: str, scopes: tuple[str, ...], issued: int) -> str:
    # Issued at the second of the mail's change, as tokens say: the mails of one second
    # to one recipient are signed once.
    return quote(tokens.sign(secret, address, scopes, issued))


def footer(draft: Draft) -> str:
    lines = [f"Choose which emails you get: {draft.preferences_url}"]
    if draft.inbox_url:
        lines.append(f"Your notifications on the web: {draft.inbox_url}")
    if draft.unsubscribe_url:
        lines.append(f"Unsubscribe: {draft.unsubscribe_url}")
    return "\n-- \n" + "\n".join(lines) + "\n"


# Writing a message the way EmailMessage does (parse each header, fold it, serialize) costs
# milliseconds. build() writes the same bytes itself: a value the standard library would
# write back unchanged is written as it is; any other goes through the standard library.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_DOT_ATOM = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_DISPLAY_NAME = re.compile(r"(?:[!#-\[\]-~]+(?: [!#-\[\]-~]+)*)?")
"""Printable ASCII but the quote and the backslash, which quoting would escape."""
_SPECIALS = re.compile(r"[(),.:;<>@\[\]]")
"""Which a display name is quoted for."""
_ADDR_SPEC = re.compile(rf"{_DOT_ATOM}@{_DOT_ATOM}")
_TEXT = re.compile(r"[!-~]+(?: [!-~]+)*")
_VERBATIM = {
    # Unstructured: the parser keeps every character of printable ASCII but encoded words.
    "Subject": _TEXT,
    "In-Reply-To": _TEXT,
    "References": _TEXT,
    "Auto-Submitted": _TEXT,
    "List-Unsubscribe": _TEXT,
    "List-Unsubscribe-Post": _TEXT,
    # Written again with format_datetime() once parsed: the same, for the value that
    # build() has it write, unless its year is below 1000 (parsed as 19xx or 20xx) or its
    # offset has seconds.
    "Date": re.compile(
        r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d "
        r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [1-9]\d{3} "
        r"\d\d:\d\d:\d\d [+-]\d{4}"
    ),
    "Message-ID": re.compile(rf"<{_DOT_ATOM}@{_DOT_ATOM}>"),
}
"""The values of each header that its parser and folder leave as they are."""


def _line(name: str, text: str) -> bytes:
    """The ``name`` header line of ``text``, as EmailMessage writes it."""
    value = header_value(text)
    pattern = _VERBATIM.get(name)
    line = _verbatim(name, value) if pattern is not None and pattern.fullmatch(value) else None
    return line or _folded(name, value)


_shared_line = functools.lru_cache(maxsize=1024)(_line)
"""For the lines that the messages of a change share (Subject), or of a thread."""


@functools.lru_cache(maxsize=64)
def _date_line(second: datetime) -> bytes:
    """The Date line of the messages of changes made in ``second``: it has no fraction."""
    return _line("Date", format_datetime(second))


@functools.lru_cache(maxsize=1024)
def _mailbox_line(name: str, mailbox: Mailbox) -> bytes:
    """The ``name`` header line of ``mailbox``, as EmailMessage writes it.

    Cached: From is the same for every message of a change, To for a recipient's messages.
    """
    display_name = header_value(mailbox.display_name)
    line = None
    if _DISPLAY_NAME.fullmatch(display_name) and _ADDR_SPEC.fullmatch(mailbox.addr_spec):
        phrase = f'"{display_name}"' if _SPECIALS.search(display_name) else display_name
        value = f"{phrase} <{mailbox.addr_spec}>" if phrase else mailbox.addr_spec
        line = _verbatim(name, value)
    return line or _folded(name, Address(display_name, addr_spec=mailbox.addr_spec))


def _verbatim(name: str, value: str) -> bytes | None:
    """``name: value`` for a value that the folder writes as it is, unless too long to fit
    on one line (or holding the ``=?`` of an encoded word, that the parser would decode)."""
    line = f"{name}: {value}"
    if len(line) > MAX_LINE_LENGTH or ENCODED_WORD_START in value:
        return None
    return f"{line}\r\n".encode("ascii")


def _folded(name: str, value: str | Address) -> bytes:
    # EmailMessage parses a header when it is set and folds it when the message is written.
    return (
        POLICY.header_factory(name, value).fold(policy=POLICY).encode("ascii", "surrogateescape")
    )


_MIME_VERSION = b"\r\nMIME-Version: 1.0\r\n\r\n"


def _encoded(body: str, subtype: str = "plain") -> tuple[bytes, bytes]:
    """The Content-Type and Content-Transfer-Encoding lines that
    EmailMessage.set_content(body, subtype, charset="utf-8") writes, and the encoded body."""
    lines = body.encode("utf-8").splitlines()
    if all(len(line) <= MAX_LINE_LENGTH for line in lines):
        data = b"\r\n".join(lines) + b"\r\n"
        cte = "7bit" if data.isascii() else "8bit"
        content = f'Content-Type: text/{subtype}; charset="utf-8"\r\nContent-Transfer-Encoding: '
        return (content + cte).encode(), data
    # Quoted-printable or base64, whichever the standard library finds shorter.
    part = EmailMessage(policy=POLICY)
    part.set_content(body, subtype=subtype, charset="utf-8")
    headers, _, data = part.as_bytes().partition(_MIME_VERSION)
    return headers, data


def _content(body: str) -> bytes:
    """The headers that EmailMessage.set_content(body, charset="utf-8") adds, and the body
    (the last part of the message)."""
    headers, data = _encoded(body)
    return headers + _MIME_VERSION + data


def _alternative(text: str, markup: str, key: str) -> bytes:
    """A ``multipart/alternative`` of ``text`` and the HTML ``markup`` (the last part of
    the message): mail clients show the one they can."""
    parts = [_encoded(text), _encoded(markup, "html")]
    boundary = f"=_{key[:32]}"
    while any(boundary.encode() in data for _, data in parts):  # Unless an editor tried.
        boundary = f"=_{uuid.uuid4().hex}"
    delimiter = f"--{boundary}\r\n".encode()
    lines = [f'Content-Type: multipart/alternative; boundary="{boundary}"'.encode()]
    lines.append(_MIME_VERSION)
    for headers, data in parts:
        lines += [delimiter, headers, b"\r\n\r\n", data]
    lines.append(f"--{boundary}--\r\n".encode())
    return b"".join(lines)


def build(draft: Draft, layout: str | None = None) -> Outgoing:
    """The message of ``draft``: its text, and its HTML in ``layout`` (the operator's
    ``kinto.emailer.html_layout``), if it has HTML or there is a layout."""
    reference = thread_id(draft.root_url, draft.uri)
    lines = [
        _mailbox_line("From", draft.sender),
        _mailbox_line("To", draft.recipient),
        _shared_line("Subject", draft.subject),
        _date_line(draft.created.replace(microsecond=0)),
        # Derived from the key: were a message ever sent twice, mail clients would see one.
        # Not cached, as a message's own lines would push out the shared ones.
        _line("Message-ID", f"<{draft.key[:32]}@{draft.sender.domain}>"),
        _shared_line("In-Reply-To", reference),
        _shared_line("References", reference),
        _shared_line("Auto-Submitted", "auto-generated"),
    ]
    body = draft.body
    markup = draft.html or (htmlbody.paragraphs(body) if layout is not None else "")
    if draft.unsubscribe_url:
        lines.append(_line("List-Unsubscribe", f"<{draft.unsubscribe_url}>"))
        lines.append(_shared_line("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
    if draft.preferences_url:
        body = body.rstrip("\n") + "\n" + footer(draft)
        if markup:
            markup += htmlbody.footer(
                draft.preferences_url, draft.unsubscribe_url, draft.inbox_url
            )
    if markup:
        lines.append(_alternative(body, htmlbody.document(markup, layout), draft.key))
    else:
        lines.append(_content(body))
    return Outgoing(draft.sender.addr_spec, draft.recipient.addr_spec, b"".join(lines))
