"""kinto_emailer: send emails when Kinto data changes.

Enable with ``kinto.includes = kinto_emailer``. This module only wires the parts.
"""

import atexit

from kinto.core import metrics
from kinto.core.events import ResourceChanged
from pyramid.config import Configurator
from pyramid.exceptions import ConfigurationError
from pyramid_mailer import IMailer
from pyramid_mailer.mailer import Mailer

from kinto_emailer.delivery import Delivery, Outbox, transport_from_settings
from kinto_emailer.errors import InvalidHook
from kinto_emailer.listener import build_notification, send_notification
from kinto_emailer.settings import parse_settings
from kinto_emailer.validation import ValidatingStorage, invalid_hook_view


__version__ = "5.0.0.dev0"
__all__ = ["build_notification", "send_notification", "includeme"]

DOCS_URL = "https://github.com/Kinto/kinto-emailer/"


def mailer_from_settings(settings: dict) -> Mailer:
    """pyramid_mailer's mailer, with a bad ``mail.*`` value reported as a startup error."""
    try:
        return Mailer.from_settings(settings)
    except (TypeError, ValueError) as e:
        raise ConfigurationError(f"Invalid mail.* setting: {e}") from e


def includeme(config: Configurator) -> None:
    settings = config.get_settings()
    emailer_settings = parse_settings(settings)
    mailer = mailer_from_settings(settings)

    registry = config.registry
    registry.emailer_settings = emailer_settings
    registry.registerUtility(mailer, IMailer)
    registry.emailer_outbox = Outbox(
        transport_from_settings(emailer_settings, mailer),
        emailer_settings,
        # Looked up at each count: a metrics plugin may be included after this one.
        count=lambda name, n: registry.metrics.count(f"plugins.emailer.{name}", count=n),
    )
    # Messages being sent or due when the process exits normally are not lost.
    atexit.register(registry.emailer_outbox.close, emailer_settings.drain_timeout)
    registry.emailer_delivery = Delivery(emailer_settings, registry.emailer_outbox)
    registry.storage = ValidatingStorage(registry.storage, emailer_settings)

    config.add_api_capability(
        "emailer",
        description="Send emails when records, collections or groups change.",
        url=DOCS_URL,
        version=__version__,
    )
    config.add_view(invalid_hook_view, context=InvalidHook)
    config.add_subscriber(
        metrics.listener_with_timer(config, "plugins.emailer", build_notification),
        ResourceChanged,
        for_resources=("record", "collection", "group"),
        for_actions=("create", "update", "delete"),
    )
