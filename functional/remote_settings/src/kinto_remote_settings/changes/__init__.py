# From mozilla/remote-settings at commit 493d7f59cea9445c6d082944271c9e3a61571e68,
# file kinto-remote-settings/src/kinto_remote_settings/changes/__init__.py.
# Apache License 2.0 (functional/remote_settings/LICENSE); unchanged below.

from pyramid.config import Configurator
from pyramid.settings import aslist

from .. import __version__


MONITOR_BUCKET = "monitor"
MONITOR_BUCKET_PATH = "/buckets/{}".format(MONITOR_BUCKET)
CHANGES_COLLECTION = "changes"
CHANGES_COLLECTION_PATH = "{}/collections/{}".format(
    MONITOR_BUCKET_PATH, CHANGES_COLLECTION
)
CHANGES_RECORDS_PATH = "{}/records".format(CHANGES_COLLECTION_PATH)
CHANGESET_PATH = "/buckets/{bucket_id}/collections/{collection_id}/changeset"

BROADCASTER_ID = "remote-settings"
CHANNEL_ID = "monitor_changes"


def includeme(config: Configurator) -> None:
    settings = config.get_settings()
    collections = settings.get("changes.resources", [])

    config.add_api_capability(
        "changes",
        description="Track modifications of records in Kinto and store"
        " the collection timestamps into a specific bucket"
        " and collection.",
        url="http://kinto.readthedocs.io/en/latest/tutorials/"
        "synchronisation.html#polling-for-remote-changes",
        version=__version__,
        collections=aslist(collections),
    )

    config.scan("kinto_remote_settings.changes.views")
