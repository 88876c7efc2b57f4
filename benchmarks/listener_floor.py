"""A Kinto plugin that listens to the same events as kinto_emailer and does nothing.

It measures what Kinto itself spends on a request once any plugin subscribes to
ResourceChanged: the floor of the plugin's cost on writes.
"""

from kinto.core.events import ResourceChanged
from pyramid.config import Configurator


def ignore(event: ResourceChanged) -> None:
    """Listens, and does nothing."""


def includeme(config: Configurator) -> None:
    config.add_subscriber(
        ignore,
        ResourceChanged,
        for_resources=("record", "collection", "group"),
        for_actions=("create", "update", "delete"),
    )
