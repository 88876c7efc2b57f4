"""RFC 5322 messages: one per recipient, ready for any SMTP server."""

import functools
import hashlib
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from urllib.parse import quote, urlsplit

from kinto_emailer import tokens
from kinto_emailer.headers import header_value
from kinto_emailer.recipients import Mailbox, parse_mailbox


# Lines up to RFC 5322's limit: folding at 78 would encode a long List-Unsubscribe URL
# (RFC 2047), which mail providers then cannot read.
POLICY = SMTP.clone(max_line_length=998)


@dataclass(frozen=True)
class Outgoing:
    """A message and its envelope."""

    sender: str
    recipient: str
    message: EmailMessage

    def as_bytes(self) -> bytes:
        """The message as sent: CRLF line ends, long lines encoded."""
        return self.message.as_bytes(policy=POLICY)


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
        )


def with_links(
    draft: Draft, secret: str, scopes: tuple[str, ...], unsubscribe: bool = True
) -> Draft:
    """``draft`` with its signed links, for mail that came from ``scopes``.

    Without ``unsubscribe`` (mail that recipients cannot turn off), the preferences link
    only. Without a public URL (``draft.root_url``) or a secret, no links.
    """
    if not draft.root_url or not secret:
        return draft
    token = _token(secret, draft.recipient.addr_spec, scopes, draft.created.timestamp())
    pages = f"{draft.root_url}emailer/"
    return replace(
        draft,
        unsubscribe_url=f"{pages}unsubscribe?token={token}" if unsubscribe else "",
        preferences_url=f"{pages}page?token={token}",
    )


@functools.lru_cache(maxsize=256)
def _token(secret: str, address: str, scopes: tuple[str, ...], issued: float) -> str:
    # Issued at the mail's own time, which the mails of one change share: a batch's
    # mails to one recipient are signed once.
    return quote(tokens.sign(secret, address, scopes, issued))


def footer(draft: Draft) -> str:
    lines = [f"Choose which emails you get: {draft.preferences_url}"]
    if draft.unsubscribe_url:
        lines.append(f"Unsubscribe: {draft.unsubscribe_url}")
    return "\n-- \n" + "\n".join(lines) + "\n"


def set_header(message: EmailMessage, name: str, value: str | Mailbox) -> None:
    """Set a header from values that data, or a request, may have made.

    Text and display names go through :func:`header_value`: the standard library would
    decode their encoded words, and write what they hide as headers of their own.
    """
    if isinstance(value, Mailbox):
        message[name] = Address(header_value(value.display_name), addr_spec=value.addr_spec)
    else:
        message[name] = header_value(value)


def build(draft: Draft) -> Outgoing:
    """The message of ``draft``."""
    message = EmailMessage(policy=POLICY)
    set_header(message, "From", draft.sender)
    set_header(message, "To", draft.recipient)
    set_header(message, "Subject", draft.subject)
    set_header(message, "Date", format_datetime(draft.created))
    # Derived from the key: were a message ever sent twice, mail clients would see one.
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
    return Outgoing(draft.sender.addr_spec, draft.recipient.addr_spec, message)
