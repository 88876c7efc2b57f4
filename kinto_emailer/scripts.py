"""Command line: ``kinto-send-email CONFIG RECIPIENT`` checks the mail settings end to end."""

import argparse
import sys
import uuid
from typing import Any

from pyramid.exceptions import ConfigurationError
from pyramid.paster import bootstrap, setup_logging

from kinto_emailer import messages, recipients
from kinto_emailer.errors import EmailerError


def _load(config: str) -> Any:
    """The registry of the Kinto app of ``config``; EmailerError with a clear reason if not."""
    try:
        setup_logging(config)
        env = bootstrap(config)
    except FileNotFoundError as e:
        raise EmailerError(f"Cannot read {config}: {e.strerror}") from e
    except (ConfigurationError, LookupError, ValueError) as e:
        raise EmailerError(f"Invalid configuration {config}: {e}") from e
    env["closer"]()
    registry = env["registry"]
    if not hasattr(registry, "emailer_settings"):
        raise EmailerError(f"{config} does not list kinto_emailer in kinto.includes")
    return registry


def send_test_email(config: str, recipient: str) -> str:
    """Send one message now, as the plugin would; return where it went."""
    registry = _load(config)
    settings = registry.emailer_settings
    if not settings.default_sender:
        raise EmailerError(f"{config} has no mail.default_sender to send from")
    try:
        to = recipients.parse_mailbox(recipient)
    except ValueError as e:
        raise EmailerError(f"Invalid recipient: {e}") from e
    sender = recipients.parse_mailbox(settings.default_sender)
    project = registry.settings.get("project_name", "Kinto")
    draft = messages.Draft(
        sender,
        to,
        f"[{project}] kinto-emailer test message",
        f"This message was sent by kinto-send-email with the settings of {config}.\n"
        "If you can read it, Kinto can send emails.",
        uri="/",
        root_url=f"http://{registry.settings.get('http_host') or 'localhost'}/",
        key=messages.idempotency_key("kinto-send-email", uuid.uuid4()),
    )
    transport = registry.emailer_outbox.transport
    failures = transport.send([messages.build(draft)])
    transport.close()
    if failures:
        raise EmailerError(f"Could not send to {to.addr_spec}: {failures[0].reason}")
    if settings.debug:
        return f"written to {settings.debug_directory}"
    return f"sent to {to.addr_spec}"


def send_email_main(args: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kinto-send-email",
        description="Send a test email with the mail settings of a Kinto configuration file.",
    )
    parser.add_argument("config", help="the Kinto .ini file")
    parser.add_argument("recipient", help="the address to send the test message to")
    options = parser.parse_args(args)
    try:
        where = send_test_email(options.config, options.recipient)
    except EmailerError as e:
        print(f"kinto-send-email: {e}", file=sys.stderr)
        return 1
    print(f"Test message {where}.")
    return 0
