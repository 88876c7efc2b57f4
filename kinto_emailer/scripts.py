"""Command line.

``kinto-send-email CONFIG RECIPIENT`` checks the mail settings end to end;
``kinto-emailer COMMAND CONFIG`` works on the mail queue of a Kinto on PostgreSQL, and
checks the stored hooks.
"""

import argparse
import signal
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import transaction
from pyramid.exceptions import ConfigurationError
from pyramid.paster import bootstrap, setup_logging

from kinto_emailer import hooks, messages, recipients, send_digests
from kinto_emailer.errors import EmailerError
from kinto_emailer.migration import EmailerMigration


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
    failure = transport.send(messages.build(draft))
    transport.close()
    if failure is not None:
        raise EmailerError(f"Could not send to {to.addr_spec}: {failure.reason}")
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


def _queue(config: str) -> Any:
    registry = _load(config)
    queue = registry.emailer_delivery.queue
    if queue is None:
        raise EmailerError(
            f"{config} does not store Kinto's data in PostgreSQL: mail is sent by each Kinto "
            "process and there is no queue to work on"
        )
    return queue


def run_worker(config: str) -> int:
    """Work out committed changes and send the queued mail until SIGINT or SIGTERM; run as
    many as needed."""
    queue = _queue(config)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    print(f"kinto-emailer worker: mailing about the changes of {config}", flush=True)
    queue.make_worker().run(stop)
    return 0


def show_status(config: str) -> int:
    for name, value in _queue(config).status().items():
        print(f"{name:<10} {value}")
    return 0


def show_failed(config: str) -> int:
    for row in _queue(config).failed():
        draft = row["draft"]
        print(
            f"{row['key']}  {row['failed_at']:%Y-%m-%d %H:%M:%S}  {draft['recipient']}  "
            f"{draft['uri']}  ({row['attempts']} attempts) {row['last_error']}"
        )
    return 0


def resend_failed(config: str, keys: list[str]) -> int:
    count = _queue(config).resend(keys or None)
    print(f"{count} failed message(s) queued again")
    return 0


def send_due_digests(config: str, at: str | None) -> int:
    """The digests due at ``at`` (else now), queued with the mail; several runs send one each."""
    try:
        moment = datetime.fromisoformat(at) if at else datetime.now(UTC)
    except ValueError as e:
        raise EmailerError(f"--at: {e}") from e
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    registry = _load(config)
    count = send_digests(registry, moment)
    # On the memory backend the digests go from this process: let them out.
    registry.emailer_delivery.close(registry.emailer_settings.drain_timeout)
    print(f"{count} digest(s) queued")
    return 0


def stored_metadata(storage: Any) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """The URI, bucket id and data of every bucket and collection in ``storage``."""
    for bucket in storage.list_all(resource_name="bucket", parent_id=""):
        uri = f"/buckets/{bucket['id']}"
        yield uri, bucket["id"], bucket
        for collection in storage.list_all(resource_name="collection", parent_id=uri):
            yield f"{uri}/collections/{collection['id']}", bucket["id"], collection


def check_hooks(config: str) -> int:
    """List every stored hook that would be refused if written today, with why; 1 if any."""
    registry = _load(config)
    count = 0
    with transaction.manager:
        for uri, bucket_id, metadata in stored_metadata(registry.storage):
            for problem in hooks.refused(metadata, bucket_id, registry.emailer_settings):
                print(f"{uri}: {problem}")
                count += 1
    if not count:
        print("No stored hook would be refused.")
        return 0
    print(
        f"{count} stored hooks would be refused if written today, and are skipped when used:"
        " write them again corrected."
    )
    return 1


def install_tables(config: str) -> int:
    """The plugin's own migrations, as ``kinto migrate`` runs them with Kinto's."""
    queue = _queue(config)
    EmailerMigration().initialize_schema(queue.storage.client)
    print("The mail queue tables are installed")
    return 0


def emailer_main(args: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kinto-emailer",
        description="Work on the mail queue of a Kinto on PostgreSQL; check the stored hooks.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in [
        ("worker", "work out changes and send queued mail until stopped (SIGINT, SIGTERM)"),
        ("status", "count queued, scheduled, sent, retried, failed and dropped mail"),
        ("failed", "list the messages given up, with their last error"),
        ("resend", "queue failed messages again (all, or those of the keys given)"),
        ("migrate", "create or upgrade the queue's tables (kinto migrate does it too)"),
        ("send-digests", "send the daily and weekly digests due now (or --at)"),
        ("check", "list the stored hooks that would be refused if written today, with why"),
    ]:
        command = commands.add_parser(name, help=text, description=text)
        command.add_argument("config", help="the Kinto .ini file")
        if name == "resend":
            command.add_argument("keys", nargs="*", help="keys shown by 'failed'")
        if name == "send-digests":
            command.add_argument("--at", help="an ISO 8601 moment (UTC unless it says)")
    options = parser.parse_args(args)
    try:
        if options.command == "worker":
            return run_worker(options.config)
        if options.command == "status":
            return show_status(options.config)
        if options.command == "failed":
            return show_failed(options.config)
        if options.command == "resend":
            return resend_failed(options.config, options.keys)
        if options.command == "send-digests":
            return send_due_digests(options.config, options.at)
        if options.command == "check":
            return check_hooks(options.config)
        return install_tables(options.config)
    except EmailerError as e:
        print(f"kinto-emailer: {e}", file=sys.stderr)
        return 1
