"""RFC 5322 messages: one per recipient, ready for any SMTP server."""

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from urllib.parse import urlsplit

from kinto_emailer.recipients import Mailbox


@dataclass(frozen=True)
class Outgoing:
    """A message and its envelope."""

    sender: str
    recipient: str
    message: EmailMessage
    uri: str

    def as_bytes(self) -> bytes:
        """The message as sent: CRLF line ends, long lines encoded."""
        return self.message.as_bytes(policy=SMTP)


def thread_id(root_url: str, uri: str) -> str:
    """A stable ``Message-ID`` for the object at ``uri``, that its emails all refer to."""
    digest = hashlib.sha256(f"{root_url}{uri}".encode()).hexdigest()[:32]
    host = urlsplit(root_url).hostname or "kinto.invalid"
    return f"<{digest}.kinto-emailer@{host}>"


def build(
    sender: Mailbox,
    recipient: Mailbox,
    subject: str,
    body: str,
    *,
    uri: str,
    root_url: str,
    now: datetime | None = None,
) -> Outgoing:
    """``subject`` must already be one line; every header value is checked by ``email``."""
    message = EmailMessage(policy=SMTP)
    message["From"] = sender.address
    message["To"] = recipient.address
    message["Subject"] = subject
    message["Date"] = format_datetime(now or datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain=sender.domain)
    reference = thread_id(root_url, uri)
    message["In-Reply-To"] = reference
    message["References"] = reference
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(body, charset="utf-8")
    return Outgoing(sender.addr_spec, recipient.addr_spec, message, uri)
