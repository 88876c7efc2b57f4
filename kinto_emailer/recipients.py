"""Email addresses and group URIs: parsed on save, expanded into mailboxes at event time."""

import functools
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from email.headerregistry import Address
from email.policy import default as default_policy

from kinto_emailer import caching, templates
from kinto_emailer.errors import InvalidHook
from kinto_emailer.headers import CONTROL, ENCODED_WORD_START, header_value


GROUP_URI = re.compile(r"\A/buckets/(?P<bucket_id>[^/]+)/groups/(?P<group_id>[^/]+)\Z")


@dataclass(frozen=True)
class Mailbox:
    display_name: str
    addr_spec: str

    @property
    def domain(self) -> str:
        return self.addr_spec.rpartition("@")[2].lower()

    @property
    def address(self) -> Address:
        return Address(display_name=self.display_name, addr_spec=self.addr_spec)

    @functools.cached_property
    def lowercase_address(self) -> str:
        """The address, lowercased: what tells recipients apart."""
        return self.addr_spec.lower()

    @functools.cached_property
    def _text(self) -> str:
        return str(self.address)

    def __str__(self) -> str:
        # Written for every message a mailbox is in: parsed mailboxes are shared (see
        # parse_mailbox), and formatting one costs as much as parsing it.
        return self._text


ADDRESSES_CACHE_CHARS = 2_000_000
"""Addresses kept parsed, in characters (each entry counting 256 more): about 6,000."""


@caching.sized_cache(ADDRESSES_CACHE_CHARS)
def parse_mailbox(text: str) -> Mailbox:
    """Parse ``address`` or ``Name <address>`` with the standard library's RFC 5322 parser.

    An internationalized domain is written in ASCII (IDNA), as SMTP carries it. Raises
    ValueError unless ``text`` holds exactly one complete address, that reads the same
    once written: what is saved is what is loaded at send time.
    """
    mailbox = _parse(text)
    if _parse(str(mailbox)) != mailbox:
        raise ValueError(f"{text!r} does not read the same once written")
    return mailbox


def address_of(text: str) -> str:
    """The address of ``address`` or ``Name <address>``, lowercased: what tells
    recipients apart. ValueError as :func:`parse_mailbox`."""
    return parse_mailbox(text).lowercase_address


def ascii_domain(domain: str) -> str:
    """``domain`` in IDNA (``xn--``) form; ValueError if it has none."""
    if domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError as e:
        raise ValueError(f"{domain!r} is not a valid internationalized domain") from e


def _parse(text: str) -> Mailbox:
    if any(c in text for c in "\r\n"):
        raise ValueError("an address cannot contain line breaks")
    try:
        header = default_policy.header_factory("To", text)
    except Exception as e:
        # The standard library's parser raises IndexError and others on odd input.
        raise ValueError(f"{text!r} is not a valid email address") from e
    addresses = header.addresses  # type: ignore[attr-defined]
    if len(addresses) != 1 or header.groups[0].display_name is not None:  # type: ignore[attr-defined]
        raise ValueError(f"{text!r} must hold exactly one email address")
    address = addresses[0]
    if header.defects or not address.username or "." not in address.domain:
        raise ValueError(f"{text!r} is not a valid email address")
    # The parser decodes encoded words (RFC 2047): what they hide is checked too.
    if CONTROL.search(address.display_name + address.addr_spec):
        raise ValueError(f"{text!r} holds control characters once decoded")
    if ENCODED_WORD_START in address.addr_spec:
        raise ValueError(f"{text!r} holds an encoded word in its address")
    addr_spec = f"{address.addr_spec.rpartition('@')[0]}@{ascii_domain(address.domain)}"
    mailbox = Mailbox(header_value(address.display_name), addr_spec)
    try:
        # Writing the address parses it again, more strictly (``a@.com`` fails there).
        str(mailbox)
    except Exception as e:
        raise ValueError(f"{text!r} is not a valid email address") from e
    return mailbox


def is_group_uri(recipient: str) -> bool:
    return recipient.startswith("/buckets/")


def check_recipient(
    recipient: str, path: str, bucket_id: str, allowed_domains: tuple[str, ...]
) -> None:
    """Raise :class:`InvalidHook` unless ``recipient`` is a usable address or group URI."""
    if is_group_uri(recipient):
        match = GROUP_URI.match(recipient)
        if match is None:
            raise InvalidHook(
                path, f"{recipient!r} is not a group URI such as /buckets/{bucket_id}/groups/<id>"
            )
        if match["bucket_id"] not in (bucket_id, "{bucket_id}"):
            raise InvalidHook(
                path,
                f"Group {recipient!r} must belong to bucket {bucket_id!r} "
                f"(/buckets/{bucket_id}/groups/<id>)",
            )
        templates.check(recipient, path)
        return
    try:
        mailbox = parse_mailbox(recipient)
    except ValueError as e:
        raise InvalidHook(
            path,
            f"{e}: write 'user@example.com', 'Name <user@example.com>' or a group URI",
        ) from e
    if not domain_allowed(mailbox, allowed_domains):
        raise InvalidHook(
            path, f"{mailbox.domain!r} is not an allowed domain ({', '.join(allowed_domains)})"
        )


def domain_allowed(mailbox: Mailbox, allowed_domains: tuple[str, ...]) -> bool:
    return not allowed_domains or mailbox.domain in allowed_domains


def sender_allowed(
    mailbox: Mailbox, default_sender: str | None, allowed_senders: tuple[str, ...]
) -> bool:
    """Whether mail may come from ``mailbox``: the default sender's address, or one the
    operator allows (an address, or ``@domain``)."""
    address = mailbox.lowercase_address
    if default_sender and address == address_of(default_sender):
        return True
    return address in allowed_senders or f"@{mailbox.domain}" in allowed_senders


def member_mailbox(principal: str) -> Mailbox | None:
    """The mailbox of a group member such as ``account:alice@example.com``, if it has one."""
    candidate = principal.split(":", 1)[-1]
    try:
        return parse_mailbox(candidate)
    except ValueError:
        return None


def _named(
    recipients: Iterable[str],
    rendered_group: Callable[[str], str],
    bucket_id: str,
    group_members: Callable[[str], list[str]],
) -> Iterator[tuple[str, bool]]:
    """Each recipient of a hook for one object, group members in place of their group
    URI; with whether it is a member's principal (else an address of the hook)."""
    for recipient in recipients:
        if not is_group_uri(recipient):
            yield recipient, False
            continue
        match = GROUP_URI.match(rendered_group(recipient))
        if match is not None and match["bucket_id"] == bucket_id:
            yield from ((member, True) for member in group_members(match["group_id"]))


def expand(
    recipients: Iterable[str],
    rendered_group: Callable[[str], str],
    bucket_id: str,
    group_members: Callable[[str], list[str]],
    allowed_domains: tuple[str, ...],
) -> list[Mailbox]:
    """Addresses of a hook for one object, group members included, de-duplicated.

    ``rendered_group`` renders a group URI template for the object; ``group_members``
    returns the principals of a group of ``bucket_id`` (empty when it does not exist).
    Duplicates are found case-insensitively; the first spelling wins.
    """
    found: dict[str, Mailbox] = {}
    for name, member in _named(recipients, rendered_group, bucket_id, group_members):
        mailbox = member_mailbox(name) if member else parse_mailbox(name)
        if mailbox is not None and domain_allowed(mailbox, allowed_domains):
            found.setdefault(mailbox.lowercase_address, mailbox)
    return list(found.values())


class UnverifiedPrincipal(ValueError):
    """The prefix of a principal is not one whose user ids are proven addresses."""


def principal_address(principal: str, verified_principals: tuple[str, ...]) -> str:
    """The address, lowercased, that a prefixed principal (``ldap:bob@example.com``)
    names; UnverifiedPrincipal unless its prefix is in ``verified_principals`` (elsewhere
    anyone may be named after anyone's address), ValueError if it names no address."""
    prefix, _, candidate = principal.partition(":")
    if prefix not in verified_principals:
        raise UnverifiedPrincipal(f"{prefix!r} is not a verified principal prefix")
    return address_of(candidate)


def inbox_key(principal: str, verified_principals: tuple[str, ...]) -> str:
    """Whose web notifications a principal (a group member, a reader's user id) stands
    for: the address it names, if verified (see :func:`principal_address`); else itself."""
    try:
        return principal_address(principal, verified_principals)
    except ValueError:
        return principal


def inbox_keys(
    recipients: Iterable[str],
    rendered_group: Callable[[str], str],
    bucket_id: str,
    group_members: Callable[[str], list[str]],
    allowed_domains: tuple[str, ...],
    verified_principals: tuple[str, ...],
) -> list[str]:
    """The inboxes of a hook's web notifications for one object, de-duplicated: an
    address of the hook, lowercased; for a group member, :func:`inbox_key`.

    Members that are no user id (``system.Everyone``, another group's URI) are left out:
    no one reads their inbox. As for mail, addresses must be of ``allowed_domains``.
    """
    found: dict[str, None] = {}
    for name, member in _named(recipients, rendered_group, bucket_id, group_members):
        if member:
            if ":" not in name or is_group_uri(name):
                continue
            key = inbox_key(name, verified_principals)
            address = None if key == name else key
        else:
            address = key = address_of(name)
        if address is None or domain_allowed(parse_mailbox(address), allowed_domains):
            found.setdefault(key)
    return list(found)
