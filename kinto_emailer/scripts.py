"""Command line.

``kinto-send-email CONFIG RECIPIENT`` checks the mail settings end to end;
``kinto-emailer check CONFIG`` lists the stored hooks that saving would refuse today;
``kinto-emailer COMMAND CONFIG`` works on the mail queue of a Kinto on PostgreSQL;
``kinto-emailer log CONFIG`` prints what became of its messages.
"""

import argparse
import gc
import itertools
import json
import signal
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import transaction
from pyramid.exceptions import ConfigurationError
from pyramid.paster import bootstrap, setup_logging

from kinto_emailer import __version__, hooks, listing, messages, recipients, send_digests
from kinto_emailer.deliverylog import STATES, Entry, Query
from kinto_emailer.errors import EmailerError
from kinto_emailer.migration import EmailerMigration
from kinto_emailer.settings import EmailerSettings


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
    failure = transport.send(messages.build(draft, settings.html_layout))
    transport.close()
    if failure is not None:
        raise EmailerError(f"Could not send to {to.addr_spec}: {failure.reason}")
    if settings.debug:
        return f"written to {settings.debug_directory}"
    return f"sent to {to.addr_spec}"


def _version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")


def send_email_main(args: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kinto-send-email",
        description="Send a test email with the mail settings of a Kinto configuration file.",
    )
    _version(parser)
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


NO_QUEUE = "mail is sent by each Kinto process and there is no queue to work on"


def _queue(config: str, without: str = NO_QUEUE) -> Any:
    """The mail queue of ``config``; EmailerError saying ``without`` when there is none."""
    registry = _load(config)
    queue = registry.emailer_delivery.queue
    if queue is None:
        raise EmailerError(f"{config} does not store Kinto's data in PostgreSQL: {without}")
    return queue


def run_worker(config: str) -> int:
    """Work out committed changes and send the queued mail until SIGINT or SIGTERM; run as
    many as needed."""
    queue = _queue(config)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    print(f"kinto-emailer worker: mailing about the changes of {config}", flush=True)
    # Kinto's objects live as long as the worker: the garbage collector's full passes
    # need not walk them again (about 0.2 s each, in which no mail goes out).
    gc.freeze()
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


def _when(moment: datetime | None) -> str:
    return "?" if moment is None else f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S}"


def _details(entry: Entry) -> str:
    """What the log says of an entry's state, in words."""
    if entry.state == "sent":
        return f"sent {_when(entry.at)}"
    if entry.state == "retrying":
        return f"next attempt {_when(entry.at)}, after {entry.attempts}: {entry.detail}"
    if entry.state == "failed":
        return f"failed {_when(entry.at)}, after {entry.attempts} attempt(s): {entry.detail}"
    if entry.state == "digest":
        return f"kept for the {entry.detail} digest"
    return entry.detail


PAGE = 1000
"""Entries, or objects, read at once: Kinto's backends cap one listing
(``storage_max_fetch_size``)."""


def show_log(config: str, query: Query, most: int) -> int:
    """Print the newest ``most`` entries of ``query``, one a line, and how many more."""
    log = _queue(
        config,
        "each Kinto process keeps its own delivery log, that"
        " GET /v1/buckets/<bucket>/emailer/log shows",
    ).log
    shown = 0
    while shown < most:
        page = log.page(replace(query, limit=min(PAGE, most - shown)))
        for entry in page.entries:
            print(
                f"{_when(entry.time)}  {entry.state:<8}  {entry.recipient}  {entry.uri}"
                f"  {json.dumps(entry.subject, ensure_ascii=False)}  {entry.key}"
                f"  {_details(entry)}".rstrip()
            )
        shown += len(page.entries)
        if not page.more:
            return 0
        query = replace(query, before=page.entries[-1].position)
    print(f"... and {log.count(query) - shown} older (--limit)")
    return 0


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}")
    return int(text)


def _log_query(options: argparse.Namespace) -> Query:
    recipient = None
    if options.recipient is not None:
        try:
            recipient = recipients.address_of(options.recipient)
        except ValueError as e:
            raise EmailerError(f"--recipient: {e}") from e
    return Query(
        bucket=options.bucket,
        recipient=recipient,
        uri=options.uri,
        states=None if options.state is None else frozenset([options.state]),
    )


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


def install_tables(config: str) -> int:
    """The plugin's own migrations, as ``kinto migrate`` runs them with Kinto's."""
    queue = _queue(config)
    EmailerMigration().initialize_schema(queue.storage.client)
    print("The mail queue tables are installed")
    return 0


def _every(storage: Any, resource_name: str, parent_id: str) -> Iterator[dict[str, Any]]:
    for page in listing.pages(storage, resource_name, parent_id, PAGE):
        yield from page


def stored_refusals(
    storage: Any, settings: EmailerSettings
) -> Iterator[tuple[str, hooks.Refusal]]:
    """The URI of each bucket and collection whose stored hooks saving would refuse, and
    each reason, as :func:`kinto_emailer.hooks.validate` gives them to a new object."""
    for bucket in _every(storage, "bucket", ""):
        bucket_uri = f"/buckets/{bucket['id']}"
        collections = (
            (f"{bucket_uri}/collections/{c['id']}", c)
            for c in _every(storage, "collection", bucket_uri)
        )
        for uri, metadata in itertools.chain([(bucket_uri, bucket)], collections):
            for refusal in hooks.refusals(metadata, bucket["id"], settings):
                yield uri, refusal


def check_hooks(config: str) -> int:
    """List the stored hooks that saving would refuse today; 1 if any, else 0."""
    registry = _load(config)
    count = 0
    with transaction.manager:
        for uri, (index, problem) in stored_refusals(registry.storage, registry.emailer_settings):
            count += 1
            print(f"{uri}  {'hooks' if index is None else f'hook {index}'}  {problem}")
    if count:
        print(f"{count} stored hook problem(s): saving these hooks would fail")
        return 1
    print("Every stored hook passes today's checks")
    return 0


def emailer_main(args: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kinto-emailer",
        description="Check stored hooks; work on the mail queue of a Kinto on PostgreSQL.",
    )
    _version(parser)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in [
        ("worker", "work out changes and send queued mail until stopped (SIGINT, SIGTERM)"),
        ("status", "count queued, scheduled, sent, retried, failed and dropped mail"),
        ("failed", "list the messages given up, with their last error"),
        ("resend", "queue failed messages again (all, or those of the keys given)"),
        ("migrate", "create or upgrade the queue's tables (kinto migrate does it too)"),
        ("send-digests", "send the daily and weekly digests due now (or --at)"),
        ("check", "list the stored hooks that saving would refuse today, and why"),
        ("log", "print what became of the messages, newest first (the delivery log)"),
    ]:
        command = commands.add_parser(name, help=text, description=text)
        command.add_argument("config", help="the Kinto .ini file")
        if name == "log":
            command.add_argument("--bucket", help="of the objects of this bucket only")
            command.add_argument("--recipient", help="to this address only")
            command.add_argument("--uri", help="about this object only")
            command.add_argument("--state", choices=STATES, help="in this state only")
            command.add_argument(
                "--limit", type=_positive, default=100, help="entries printed at most (100)"
            )
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
        if options.command == "log":
            return show_log(options.config, _log_query(options), options.limit)
        return install_tables(options.config)
    except EmailerError as e:
        print(f"kinto-emailer: {e}", file=sys.stderr)
        return 1
