"""The plugin's own settings (``kinto.emailer.*`` in the ini), parsed once at startup."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pyramid.exceptions import ConfigurationError
from pyramid.settings import aslist

from kinto_emailer.recipients import parse_mailbox


Number = TypeVar("Number", int, float)

PREFIX = "emailer."
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0", ""}


@dataclass(frozen=True)
class EmailerSettings:
    allowed_domains: tuple[str, ...] = ()
    """Recipient domains allowed in hooks; empty means any domain."""
    max_recipients: int = 100
    """Recipients one hook may mail for one object, after group expansion."""
    smtp_timeout: float = 10.0
    """Seconds to wait for the SMTP server before giving up on a message."""
    retry_delays: tuple[float, ...] = (300.0, 600.0, 1200.0)
    """Seconds before each new attempt after a temporary SMTP failure."""
    max_age: float = 2 * 24 * 3600.0
    """Seconds after its change when a message that could not be sent is dropped."""
    drain_timeout: float = 10.0
    """Seconds the process waits, when it stops, for messages being sent or due."""
    worker: bool = True
    """With PostgreSQL storage: run a worker thread in the Kinto process."""
    stalled_timeout: float = 30.0
    """With PostgreSQL storage: seconds without heartbeat before a worker's jobs are retaken."""
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
    return domains


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
    "smtp_timeout": _positive(float, "number"),
    "retry_delays": _delays,
    "max_age": _positive(float, "number"),
    "drain_timeout": _positive(float, "number"),
    "worker": lambda key, value: _boolean(f"kinto.{key}", value),
    "stalled_timeout": _positive(float, "number"),
}


def parse_settings(settings: Mapping[str, Any]) -> EmailerSettings:
    """Read ``emailer.*`` and the ``mail.*`` keys the plugin itself uses.

    Unknown ``emailer.*`` keys are rejected so that a typo does not silently fall back
    to a default.
    """
    values: dict[str, Any] = {}
    for key, raw in settings.items():
        if not key.startswith(PREFIX):
            continue
        name = key[len(PREFIX) :]
        parser = _PARSERS.get(name)
        if parser is None:
            known = ", ".join(f"kinto.{PREFIX}{k}" for k in sorted(_PARSERS))
            raise ConfigurationError(f"Unknown setting 'kinto.{key}' (known: {known})")
        values[name] = parser(key, raw)

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
