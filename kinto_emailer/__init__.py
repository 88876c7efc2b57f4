"""kinto_emailer: send emails when Kinto data changes.

Enable with ``kinto.includes = kinto_emailer``. This module only wires the parts.
"""

import atexit
import logging
import threading
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING

from kinto.core.events import ResourceChanged
from kinto.core.metrics import listener_with_timer
from kinto.events import ServerFlushed
from pyramid.config import Configurator
from pyramid.events import ApplicationCreated, ContextFound, NewRequest
from pyramid.exceptions import ConfigurationError
from pyramid.registry import Registry
from pyramid_mailer import IMailer
from pyramid_mailer.mailer import Mailer

from kinto_emailer import digests, storagesql, validation
from kinto_emailer.delivery import (
    Delivery,
    Outbox,
    Transport,
    drain_on_sigterm,
    how_the_queue_runs,
    transport_from_settings,
    where_mail_goes,
)
from kinto_emailer.errors import InvalidInput
from kinto_emailer.inbox import InboxStore
from kinto_emailer.listener import (
    Expansion,
    build_notification,
    notices_by_change,
    send_notification,
)
from kinto_emailer.metrics import Counter, KintoMetrics
from kinto_emailer.migration import EmailerMigration
from kinto_emailer.settings import EmailerSettings, parse_settings, with_environment


if TYPE_CHECKING:
    from kinto_emailer.jobs import JobQueue, NoticesEach


__version__ = "5.0.0.dev0"
__all__ = ["build_notification", "send_notification", "includeme"]

DOCS_URL = "https://github.com/Kinto/kinto-emailer/"

logger = logging.getLogger(__name__)


def mailer_from_settings(settings: dict) -> Mailer:
    """pyramid_mailer's mailer, with a bad ``mail.*`` value reported as a startup error."""
    try:
        return Mailer.from_settings(settings)
    except (TypeError, ValueError) as e:
        raise ConfigurationError(f"Invalid mail.* setting: {e}") from e


def _job_queue(
    config: Configurator,
    settings: EmailerSettings,
    transport: Transport,
    count: Counter,
    notices: "NoticesEach",
) -> "JobQueue | None":
    """Jobs in PostgreSQL when Kinto stores its data there (and neither a Maildir queue
    nor the debug mailer, which the request itself fills, is set)."""
    backend = config.registry.storage
    if not storagesql.on_postgresql(backend) or settings.queue_path is not None or settings.debug:
        return None
    from kinto_emailer import jobs

    dsn = jobs.conninfo(config.get_settings()["storage_url"])
    return jobs.JobQueue(backend, dsn, settings, transport, count, notices)


def _on_first_request(config: Configurator, starts: list[Callable[[], None]]) -> None:
    """Threads start with the first request: commands such as `kinto migrate` start none."""
    started = threading.Lock()

    def start_once(event: NewRequest) -> None:
        if started.acquire(blocking=False):
            for start in starts:
                start()

    config.add_subscriber(start_once, NewRequest)


def send_digests(registry: Registry, at: datetime) -> int:
    """Queue the digests due at ``at``: by the scheduler thread and ``send-digests``."""
    registry.emailer_delivery.catch_up(registry.emailer_settings.drain_timeout)
    count = digests.send_digests(
        registry.storage, registry.emailer_settings, at, registry.emailer_delivery.schedule
    )
    registry.emailer_metrics("digests", count)
    return count


def includeme(config: Configurator) -> None:
    settings = with_environment(config.get_settings())
    emailer_settings = parse_settings(settings)
    mailer = mailer_from_settings(settings)

    registry = config.registry
    registry.emailer_settings = emailer_settings
    registry.registerUtility(mailer, IMailer)

    registry.emailer_metrics = count = KintoMetrics(registry)
    transport = transport_from_settings(emailer_settings, mailer)
    expand = partial(Expansion, storage=registry.storage, settings=emailer_settings, count=count)
    notices = partial(notices_by_change, storage=registry.storage, settings=emailer_settings)
    queue = _job_queue(config, emailer_settings, transport, count, notices)
    registry.emailer_outbox = Outbox(transport, emailer_settings, count, expand)
    registry.emailer_delivery = Delivery(emailer_settings, registry.emailer_outbox, queue)
    logger.info(
        "kinto-emailer %s: mail goes %s; %s",
        __version__,
        where_mail_goes(emailer_settings, mailer),
        how_the_queue_runs(emailer_settings, queue),
    )
    # Messages being sent or due when the process exits normally are not lost.
    atexit.register(registry.emailer_delivery.close, emailer_settings.drain_timeout)
    # Once every plugin is included: one that handles SIGTERM itself keeps its handler.
    config.add_subscriber(lambda event: drain_on_sigterm(), ApplicationCreated)
    # The queue's tables come with `kinto migrate`, and go with Kinto's data on a flush.
    config.add_migration(EmailerMigration())
    tables = queue if queue is not None else registry.emailer_outbox
    config.add_subscriber(lambda event: tables.flush(), ServerFlushed)
    inboxes = InboxStore(registry.storage, emailer_settings)
    config.add_subscriber(lambda event: inboxes.flush(), ServerFlushed)
    validation.guard(registry.storage, emailer_settings)

    if emailer_settings.worker:
        scheduler = digests.DigestScheduler(partial(send_digests, registry), emailer_settings)
        atexit.register(scheduler.stop)
        # One subscriber for both threads: it runs at every request.
        _on_first_request(
            config, [scheduler.start] + ([queue.start_worker] if queue is not None else [])
        )

    config.include("kinto_emailer.views")
    config.include("kinto_emailer.feed")
    config.include("kinto_emailer.inbox_page")
    config.include("kinto_emailer.logviews")
    config.include("kinto_emailer.preview_views")
    config.add_api_capability(
        "emailer",
        description="Send emails when records, collections or groups change.",
        url=DOCS_URL,
        version=__version__,
    )
    config.add_view(validation.invalid_input_view, context=InvalidInput)
    config.add_subscriber(
        listener_with_timer(config, "plugins.emailer", build_notification),
        ResourceChanged,
        for_resources=("record", "collection", "group"),
        for_actions=("create", "update", "delete"),
    )
    if queue is not None:
        registry.emailer_hooks_index = index = queue.hooks
        config.add_subscriber(index.on_new_request, NewRequest)
        config.add_subscriber(index.on_context_found, ContextFound)
        config.add_subscriber(
            index.on_metadata_changed, ResourceChanged, for_resources=("bucket", "collection")
        )
