"""Signed links of emails: who they were sent to and which scopes they came from.

A token is what the link of an email carries instead of a login: the recipient's
address, the scopes (bucket or collection URIs holding the hooks) the mail came from,
and when it was issued, signed with HMAC-SHA256 (WebOb's ``SignedSerializer``) under
the plugin's secret. The forms of a logged-in reader's pages carry a token of their
own (:func:`form_token`), under another salt.
"""

import functools
import hmac
import time
from dataclasses import dataclass

from webob.cookies import SignedSerializer

from kinto_emailer.errors import InvalidLink


SALT = "kinto-emailer.link"
FORM_SALT = "kinto-emailer.form"


@dataclass(frozen=True)
class Grant:
    """What a valid token lets its holder do: manage ``recipient``'s mail of ``scopes``."""

    recipient: str
    scopes: tuple[str, ...]
    issued: int


@functools.lru_cache(maxsize=4)
def _serializer(secret: str, salt: str = SALT) -> SignedSerializer:
    # Made once per secret: making one derives its key.
    return SignedSerializer(secret, salt, hashalg="sha256")


def sign(secret: str, recipient: str, scopes: tuple[str, ...], issued: float) -> str:
    payload = {"r": recipient.lower(), "s": list(scopes), "t": int(issued)}
    return _serializer(secret).dumps(payload).decode()


def verify(secret: str, token: str, max_age: float, now: float | None = None) -> Grant:
    """The grant of ``token``; InvalidLink if it was forged, altered or is too old."""
    try:
        payload = _serializer(secret).loads(token.encode())
        grant = Grant(str(payload["r"]), tuple(map(str, payload["s"])), int(payload["t"]))
    except (ValueError, TypeError, KeyError, UnicodeError) as e:
        raise InvalidLink("This link is not valid: it was changed or cut.") from e
    if (time.time() if now is None else now) - grant.issued > max_age:
        raise InvalidLink("This link has expired: use the one of a more recent email.", True)
    return grant


def form_token(secret: str, reader: str) -> str:
    """What the forms of ``reader``'s pages carry, that a page of another site cannot
    know: the reader (a principal or an address, as it is), signed."""
    return _serializer(secret, FORM_SALT).dumps(reader).decode()


def form_token_valid(secret: str, token: str, reader: str) -> bool:
    return hmac.compare_digest(form_token(secret, reader).encode(), token.encode())
