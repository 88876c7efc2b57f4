"""The plugin's own settings (``kinto.emailer.*`` in the ini), parsed once at startup."""

import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from kinto.plugins import accounts
from pyramid.exceptions import ConfigurationError
from pyramid.settings import aslist

from kinto_emailer.htmlbody import SLOT
from kinto_emailer.recipients import ascii_domain, parse_mailbox


logger = logging.getLogger(__name__)

Number = TypeVar("Number", int, float)

PREFIX = "emailer."
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0", ""}
MIN_SECRET_LENGTH = 16
PLACEHOLDER_SECRETS = frozenset(
    {
        "change-me-to-a-long-random-string",
        "make-run-local-secret-change-me",
        "at least sixteen characters",
    }
)
"""Values that files of this project showed as secrets at some point."""
_PRINCIPAL_PREFIX = re.compile(r"\A[\w.-]+\Z")


MAX_SMTP_CONNECTIONS = 32
"""More would be refused by most servers, which limit the connections of one client."""


@dataclass(frozen=True)
class EmailerSettings:
    allowed_domains: tuple[str, ...] = ()
    """Recipient domains allowed in hooks; empty means any domain."""
    max_recipients: int = 100
    """Recipients one hook may mail for one object, after group expansion."""
    max_hooks: int = 20
    """Hooks one bucket or collection may hold."""
    max_messages_per_change: int = 1000
    """Messages (digest entries and web notifications too) one change may cause; the rest
    are dropped."""
    max_messages_per_bucket_hour: int = 1000
    """Messages the hooks of one bucket may cause in an hour; the rest are dropped."""
    max_messages_per_recipient_hour: int = 100
    """Messages one address may get in an hour, from every bucket; the rest are dropped."""
    allowed_senders: tuple[str, ...] = ()
    """Addresses (or ``@domain``) a hook's ``sender`` may use, beside ``mail.default_sender``."""
    smtp_timeout: float = 10.0
    """Seconds to wait for the SMTP server before giving up on a message."""
    smtp_connections: int = 1
    """SMTP connections a process sends over at once."""
    retry_delays: tuple[float, ...] = (300.0, 600.0, 1200.0)
    """Seconds before each new attempt after a temporary SMTP failure."""
    max_age: float = 2 * 24 * 3600.0
    """Seconds after its change when a message that could not be sent is dropped."""
    drain_timeout: float = 10.0
    """Seconds the process waits, when it stops, for messages being sent or due."""
    worker: bool = True
    """With PostgreSQL storage: run a worker thread in the Kinto process."""
    stalled_timeout: float = 30.0
    """With PostgreSQL storage: seconds before a silent worker's messages go to the others."""
    secret: str = ""
    """Signs the links of unsubscribe and preference pages (else ``userid_hmac_secret``);
    empty: emails have no links."""
    verified_principals: tuple[str, ...] = ()
    """Principal prefixes whose user ids are addresses their users proved they own."""
    link_max_age: float = 90 * 24 * 3600.0
    """Seconds a link of an email stays valid."""
    web_max_age: float = 90 * 24 * 3600.0
    """Seconds a web notification is kept; older ones go when a newer one comes."""
    web_max_per_recipient: int = 1000
    """Web notifications kept for one recipient; the oldest go first."""
    max_scopes_per_recipient: int = 1000
    """Scopes whose preferences one recipient keeps; past it, scopes without a choice go."""
    log_max_age: float = 30 * 24 * 3600.0
    """Seconds an entry of the delivery log is kept, from the time of its message."""
    public_url: str = ""
    """The API root that the links of emails and ``{root_url}`` use, ending with ``/``
    (else from Kinto's ``http_scheme`` and ``http_host``); empty: emails have no links."""
    digest_daily_hour: int = 17
    """UTC hour when daily (and weekly) digests are sent."""
    digest_weekly_day: int = 0
    """Day of the week of weekly digests (0 is Monday)."""
    digest_max_items: int = 50
    """Changes listed in one digest; the others are counted ("and N more")."""
    group_threshold: int | None = None
    """More objects than this, for one hook and recipient in one event: one summary email."""
    html_layout: str | None = None
    """The HTML of the file ``kinto.emailer.html_layout`` names: every email gets an HTML
    part, its body in the layout's ``{body}``."""
    debug: bool = False
    """``mail.debug_mailer``: write ``.eml`` files instead of talking SMTP."""
    debug_directory: str = "mail"
    """``mail.top_level_directory``: where the debug mailer writes."""
    queue_path: str | None = None
    """``mail.queue_path``: a Maildir filled in the request's transaction."""
    default_sender: str | None = None
    """``mail.default_sender``: ``From`` when a hook has no ``sender``."""


def _positive(kind: Callable[[Any], Number], noun: str) -> Callable[[str, Any], Number]:
    """A parser of positive numbers of ``kind`` (``int`` or ``float``)."""

    def parse(key: str, value: Any) -> Number:
        try:
            number = kind(value)
        except (TypeError, ValueError):
            number = kind(-1)
        if isinstance(value, bool) or number <= 0:
            raise ConfigurationError(
                f"Setting 'kinto.{key}' must be a positive {noun}, not {value!r}"
            )
        return number

    return parse


def _ranged(low: int, high: int) -> Callable[[str, Any], int]:
    def parse(key: str, value: Any) -> int:
        if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
            return value
        if isinstance(value, str) and value.strip().isdigit() and low <= int(value) <= high:
            return int(value)
        raise ConfigurationError(
            f"Setting 'kinto.{key}' must be an integer from {low} to {high}, not {value!r}"
        )

    return parse


def _threshold(key: str, value: Any) -> int | None:
    if str(value).strip().lower() in _FALSE | {"none"}:
        return None
    return _positive(int, "integer (or 'off')")(key, value)


def _secret(key: str, value: Any) -> str:
    """A secret, unless it is short or a placeholder that anyone may have read."""
    text = str(value)
    if len(text) < MIN_SECRET_LENGTH:
        problem = f"must be at least {MIN_SECRET_LENGTH} characters long"
    elif text in PLACEHOLDER_SECRETS or "changeme" in re.sub(r"[\W_]", "", text.lower()):
        problem = "is a placeholder that signs links for anyone who read it"
    else:
        return text
    raise ConfigurationError(
        f"Setting 'kinto.{key}' {problem}: set a long random value, for example from the"
        f" environment (KINTO_{key.replace('.', '_').upper()})"
    )


def _prefixes(key: str, value: Any) -> tuple[str, ...]:
    prefixes = tuple(p.removesuffix(":") for p in aslist(str(value)))
    for prefix in prefixes:
        if not _PRINCIPAL_PREFIX.match(prefix):
            raise ConfigurationError(
                f"Setting 'kinto.{key}' must list principal prefixes such as 'ldap',"
                f" not {prefix!r}"
            )
    return prefixes


def _accounts_prefixes(settings: Mapping[str, Any]) -> set[str]:
    """The principal prefixes of Kinto's accounts: ``account``, or the name its policy has."""
    prefixes = {"account"}
    for key, value in settings.items():
        name = key.removeprefix("multiauth.policy.").removesuffix(".use")
        if (
            name != key
            and key.endswith(".use")
            and str(value).startswith("kinto.plugins.accounts")
        ):
            prefixes.add(name.lower())
    return prefixes


def _accounts_prove_addresses(settings: Mapping[str, Any]) -> bool:
    """Whether Kinto's accounts plugin makes users prove the address they are named by.

    Its account validation (``kinto.account_validation``, Kinto 13.1 to 19) mailed a
    link that a new account had to follow before it could log in; later Kintos create
    accounts of any name.
    """
    available = hasattr(accounts, "ACCOUNT_VALIDATION_CACHE_KEY")
    return available and _boolean("kinto.account_validation", settings.get("account_validation"))


def _is_root_url(text: str) -> bool:
    """Whether ``text`` is an absolute http(s) URL fit for a header and a line of text."""
    # Links stand in a header (List-Unsubscribe: <URL>) and in the text of every email.
    if any(c.isspace() or not c.isprintable() or c in '<>"' for c in text):
        return False
    try:
        parts = urlsplit(text)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:  # Not a number as the port, or bad brackets.
        return False
    return (
        parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and port_ok
        and not (parts.query or parts.fragment or parts.username is not None)
    )


MAX_LAYOUT_BYTES = 256 * 1024
"""Of the HTML layout: it goes into every message."""


def _layout(key: str, value: Any) -> str:
    """The HTML of the layout file ``value``, with one ``{body}`` slot."""
    path = str(value)
    try:
        with open(path, encoding="utf-8") as f:
            layout = f.read(MAX_LAYOUT_BYTES + 1)
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigurationError(f"Setting 'kinto.{key}': cannot read {path!r}: {e}") from e
    if len(layout.encode()) > MAX_LAYOUT_BYTES:
        raise ConfigurationError(
            f"Setting 'kinto.{key}': {path!r} is larger than {MAX_LAYOUT_BYTES} bytes"
        )
    if layout.count(SLOT) != 1:
        raise ConfigurationError(
            f"Setting 'kinto.{key}': {path!r} must hold {SLOT} once, where each message's"
            f" body goes (it holds it {layout.count(SLOT)} times)"
        )
    return layout


def _public_url(key: str, value: Any) -> str:
    text = str(value).strip()
    if text and not _is_root_url(text):
        raise ConfigurationError(
            f"Setting 'kinto.{key}' must be the API's root URL, such as"
            f" 'https://kinto.example.com/v1/', not {value!r}"
        )
    return text if not text or text.endswith("/") else f"{text}/"


def _kinto_url(settings: Mapping[str, Any]) -> str:
    """The root URL from Kinto's ``http_scheme`` and ``http_host``; empty without a host."""
    host = settings.get("http_host")
    if not host:
        return ""
    # Kinto's route prefix: the major version of its HTTP API.
    version = str(settings.get("http_api_version") or "1").split(".")[0]
    url = f"{settings.get('http_scheme') or 'http'}://{host}/v{version}/"
    if not _is_root_url(url) or urlsplit(url).path != f"/v{version}/":
        raise ConfigurationError(
            f"Settings 'kinto.http_scheme' and 'kinto.http_host' make no URL: {url!r}"
        )
    return url


def _boolean(key: str, value: Any) -> bool:
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigurationError(f"Setting '{key}' must be true or false, not {value!r}")


def _domains(key: str, value: Any) -> tuple[str, ...]:
    domains = tuple(d.lower().lstrip("@") for d in aslist(str(value)))
    for domain in domains:
        if "." not in domain or "@" in domain:
            raise ConfigurationError(
                f"Setting 'kinto.{key}' must list domains such as 'example.com', not {domain!r}"
            )
    try:
        # Compared with the addresses' domains, which are in ASCII.
        return tuple(ascii_domain(domain) for domain in domains)
    except ValueError as e:
        raise ConfigurationError(f"Setting 'kinto.{key}': {e}") from e


def _senders(key: str, value: Any) -> tuple[str, ...]:
    senders = []
    for sender in (s.lower() for s in aslist(str(value))):
        domain = sender[1:] if sender.startswith("@") else None
        try:
            # In ASCII, as the addresses they are compared with.
            if domain is None:
                senders.append(parse_mailbox(sender).addr_spec)
            elif "." not in domain or "@" in domain:
                raise ValueError(f"{sender!r} is not a domain such as '@example.com'")
            else:
                senders.append(f"@{ascii_domain(domain)}")
        except ValueError as e:
            raise ConfigurationError(
                f"Setting 'kinto.{key}' must list addresses or domains such as"
                f" 'news@example.com @example.org': {e}"
            ) from e
    return tuple(senders)


def _delays(key: str, value: Any) -> tuple[float, ...]:
    seconds = _positive(float, "number")
    try:
        return tuple(seconds(key, delay) for delay in aslist(str(value)))
    except ConfigurationError as e:
        raise ConfigurationError(
            f"Setting 'kinto.{key}' must list positive numbers of seconds, not {value!r}"
        ) from e


_PARSERS = {
    "allowed_domains": _domains,
    "max_recipients": _positive(int, "integer"),
    "max_hooks": _positive(int, "integer"),
    "max_messages_per_change": _positive(int, "integer"),
    "max_messages_per_bucket_hour": _positive(int, "integer"),
    "max_messages_per_recipient_hour": _positive(int, "integer"),
    "allowed_senders": _senders,
    "smtp_timeout": _positive(float, "number"),
    "smtp_connections": _ranged(1, MAX_SMTP_CONNECTIONS),
    "retry_delays": _delays,
    "max_age": _positive(float, "number"),
    "drain_timeout": _positive(float, "number"),
    "worker": lambda key, value: _boolean(f"kinto.{key}", value),
    "stalled_timeout": _positive(float, "number"),
    "secret": _secret,
    "verified_principals": _prefixes,
    "link_max_age": _positive(float, "number"),
    "web_max_age": _positive(float, "number"),
    "web_max_per_recipient": _positive(int, "integer"),
    "max_scopes_per_recipient": _positive(int, "integer"),
    "log_max_age": _positive(float, "number"),
    "public_url": _public_url,
    "digest_daily_hour": _ranged(0, 23),
    "digest_weekly_day": _ranged(0, 6),
    "digest_max_items": _positive(int, "integer"),
    "group_threshold": _threshold,
    "html_layout": _layout,
}


MAIL_KEYS = (
    "host",
    "port",
    "username",
    "password",
    "tls",
    "ssl",
    "keyfile",
    "certfile",
    "queue_path",
    "debug",
    "default_sender",
    "debug_mailer",
    "top_level_directory",
)
"""The ``mail.*`` keys of pyramid_mailer and of its debug mailer."""


def with_environment(
    settings: Mapping[str, Any], environ: Mapping[str, str] = os.environ
) -> dict[str, Any]:
    """``settings`` with the variables of the keys the ini file leaves out.

    Kinto reads the environment only for keys its ini file or defaults hold: without
    this, ``KINTO_EMAILER_MAX_HOOKS`` or ``MAIL_PORT`` for a key left out of the file (the
    bounds, commented in the shipped files; the SMTP server of ``config/kinto.ini``)
    would be silently ignored. As Kinto does, ``KINTO_MAIL_PORT`` counts too.
    """
    names = [f"{PREFIX}{name}" for name in _PARSERS] + [f"mail.{key}" for key in MAIL_KEYS]
    found = {}
    for key in names:
        variable = key.replace(".", "_").upper()
        for candidate in (f"KINTO_{variable}", variable):
            if candidate in environ:
                found[key] = environ[candidate]
                break
    return {**found, **settings}


def parse_settings(
    settings: Mapping[str, Any], environ: Mapping[str, str] = os.environ
) -> EmailerSettings:
    """Read ``emailer.*`` and the ``mail.*`` keys the plugin itself uses.

    Unknown ``emailer.*`` keys are rejected so that a typo does not silently fall back
    to a default.
    """
    values: dict[str, Any] = {}
    settings = with_environment(settings, environ)
    for key, raw in settings.items():
        if not key.startswith(PREFIX):
            continue
        name = key[len(PREFIX) :]
        parser = _PARSERS.get(name)
        if parser is None:
            known = ", ".join(f"kinto.{PREFIX}{k}" for k in sorted(_PARSERS))
            raise ConfigurationError(f"Unknown setting 'kinto.{key}' (known: {known})")
        values[name] = parser(key, raw)

    if "secret" not in values:
        fallback = settings.get("userid_hmac_secret")
        if fallback:
            values["secret"] = _secret("userid_hmac_secret", fallback)
        else:
            # As kinto-emailer 4.x, whose mail had no links: such configurations still start.
            logger.warning(
                "Emails will have no unsubscribe or preferences links (nor List-Unsubscribe):"
                " set 'kinto.emailer.secret' or 'kinto.userid_hmac_secret' to a long random"
                " value that signs them, for example from the environment:"
                " KINTO_USERID_HMAC_SECRET"
            )
    accounts_listed = sorted(
        _accounts_prefixes(settings) & set(values.get("verified_principals", ()))
    )
    if accounts_listed and not _accounts_prove_addresses(settings):
        raise ConfigurationError(
            f"Setting 'kinto.emailer.verified_principals' lists {', '.join(accounts_listed)!r},"
            " Kinto's accounts, which do not prove an address: anyone may create the account"
            " of any address. It needs Kinto's account validation"
            " (kinto.account_validation = true), which Kinto 20 removed."
        )
    values["public_url"] = values.get("public_url") or _kinto_url(settings)
    if not values["public_url"]:
        logger.warning(
            "Emails will have no unsubscribe or preferences links, and {root_url} will be"
            " empty: set 'kinto.emailer.public_url' (or 'kinto.http_scheme' and"
            " 'kinto.http_host') to the server's public address"
        )
    values["debug"] = _boolean("mail.debug_mailer", settings.get("mail.debug_mailer", False))
    if settings.get("mail.top_level_directory"):
        values["debug_directory"] = str(settings["mail.top_level_directory"])
    if settings.get("mail.queue_path"):
        values["queue_path"] = str(settings["mail.queue_path"])
    if settings.get("mail.default_sender"):
        sender = str(settings["mail.default_sender"])
        try:
            parse_mailbox(sender)
        except ValueError as e:
            raise ConfigurationError(f"Setting 'mail.default_sender': {e}") from e
        values["default_sender"] = sender
    return EmailerSettings(**values)
