"""Kinto plugins that the tests include beside kinto_emailer.

``failing`` makes a write fail after kinto_emailer prepared its emails, as another
plugin's check would. ``review`` fires review events shaped like those of Kinto's
signer (and ``Published``, another plugin's), from a before-commit hook as the signer
does, and subscribes ``kinto_emailer.send_notification`` to them as the signer does.
``recording_metrics`` keeps the counts and timers sent to Kinto's metrics. ``tracking``
marks a collection ``work-in-progress`` through the storage backend when one of its
records changes, as Remote Settings' signer does. ``migrating`` registers a migration of
its own, as kinto-attachment does. ``ForwardedEmailPolicy`` authenticates as Kinto does
behind a proxy that proved the user's address (oauth2-proxy's ``X-Forwarded-Email``).
"""

import functools
from typing import Any

import transaction
from kinto.core.events import ResourceChanged
from kinto.core.metrics import IMetricsService, NoOpMetricsService, NoOpTimer
from kinto.core.storage.postgresql import PostgreSQLPluginMigration
from kinto.core.utils import sqlalchemy as sa
from pyramid.authentication import CallbackAuthenticationPolicy
from pyramid.config import Configurator
from pyramid.interfaces import IAuthenticationPolicy
from zope.interface import implementer

from kinto_emailer import send_notification


class BaseEvent:
    def __init__(self, request, payload, impacted_objects, resource, original_event):
        self.request = request
        self.payload = payload
        self.impacted_objects = impacted_objects
        self.resource = resource
        self.original_event = original_event


class ReviewRequested(BaseEvent):
    def __init__(self, changes_count, changes_size_bytes, comment, **kwargs):
        super().__init__(**kwargs)
        self.payload["comment"] = comment
        self.payload["changes_count"] = changes_count
        self.payload["changes_size_bytes"] = changes_size_bytes


class ReviewApproved(BaseEvent):
    pass


class Published(BaseEvent):
    """An event of another plugin, that hooks name by its class path."""


def fail_on_flagged_records(event: Any) -> None:
    if any((o.get("new") or {}).get("fail") for o in event.impacted_objects):
        raise RuntimeError("refused by another plugin")


def failing(config: Configurator) -> None:
    config.add_subscriber(fail_on_flagged_records, ResourceChanged, for_resources=("record",))


def _send_review_events(event: Any) -> None:
    for impacted in event.impacted_objects:
        status = impacted["new"].get("status")
        payload = {**event.payload, "collection_id": impacted["new"]["id"]}
        common = dict(
            request=event.request,
            payload=payload,
            impacted_objects=[impacted],
            resource=None,
            original_event=event,
        )
        if status == "to-review":
            review = ReviewRequested(
                changes_count=3, changes_size_bytes=120, comment="please look", **common
            )
        elif status == "to-sign":
            review = ReviewApproved(**common)
        elif status == "published":
            review = Published(**common)
        else:
            continue
        event.request.registry.notify(review)


def on_collection_changed(event: Any) -> None:
    transaction.get().addBeforeCommitHook(_send_review_events, args=(event,))


def review(config: Configurator) -> None:
    config.add_subscriber(
        on_collection_changed,
        ResourceChanged,
        for_resources=("collection",),
        for_actions=("update",),
    )
    config.add_subscriber(send_notification, ReviewRequested)
    config.add_subscriber(send_notification, ReviewApproved)
    config.add_subscriber(send_notification, Published)


class RecordingMetrics(NoOpMetricsService):
    """Kinto's metrics interface, keeping the counts it is given and the timers it runs."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.timed: list[tuple[str, tuple]] = []

    def count(self, key: str, count: int = 1, unique: Any = None) -> None:
        self.counts[key] = self.counts.get(key, 0) + count

    def timer(self, key: str, value: Any = None, labels: list = []) -> NoOpTimer:  # noqa: B006
        timed = self.timed

        class Timer(NoOpTimer):
            def __call__(self, f: Any) -> Any:
                @functools.wraps(f)
                def timed_call(*args: Any, **kwargs: Any) -> Any:
                    timed.append((key, tuple(labels)))
                    return f(*args, **kwargs)

                return timed_call

            def __enter__(self) -> None:
                timed.append((key, tuple(labels)))

        return Timer()


def recording_metrics(config: Configurator) -> None:
    config.registry.registerUtility(RecordingMetrics(), IMetricsService)


def _mark_work_in_progress(event: Any) -> None:
    storage = event.request.registry.storage
    parent_id = f"/buckets/{event.payload['bucket_id']}"
    collection = storage.get(
        resource_name="collection",
        parent_id=parent_id,
        object_id=event.payload["collection_id"],
    )
    storage.update(
        resource_name="collection",
        parent_id=parent_id,
        object_id=collection["id"],
        obj={**collection, "status": "work-in-progress"},
    )


def tracking(config: Configurator) -> None:
    config.add_subscriber(_mark_work_in_progress, ResourceChanged, for_resources=("record",))


class TestsPluginMigration(PostgreSQLPluginMigration):
    name = "tests_plugin"
    schema_version = 2

    def migrate_schema(self, start_version: int, dry_run: bool = False) -> None:
        if dry_run:
            return
        with self.client.connect(force_commit=True) as connection:
            connection.execute(
                sa.text("INSERT INTO metadata (name, value) VALUES (:name, '2')"),
                {"name": f"{self.name}_schema_version"},
            )


def migrating(config: Configurator) -> None:
    config.add_migration(TestsPluginMigration())


@implementer(IAuthenticationPolicy)
class ForwardedEmailPolicy(CallbackAuthenticationPolicy):
    """The user id is the address that the proxy in front of Kinto proved."""

    def unauthenticated_userid(self, request: Any) -> str | None:
        return request.headers.get("X-Forwarded-Email")

    def remember(self, request: Any, userid: Any, **kw: Any) -> list:
        return []

    def forget(self, request: Any) -> list:
        return []
