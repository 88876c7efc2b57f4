"""From a Kinto event to the messages it causes: one list per event, never shared."""

import logging
from collections.abc import Iterator, Mapping
from typing import Any

from kinto.core.events import AfterResourceChanged, ResourceChanged
from kinto.core.storage.exceptions import ObjectNotFoundError
from pyramid.registry import Registry

from kinto_emailer import hooks, messages, recipients, templates
from kinto_emailer.errors import RenderError
from kinto_emailer.hooks import Hook
from kinto_emailer.settings import EmailerSettings


logger = logging.getLogger(__name__)

_PAYLOAD_KEYS = frozenset(
    {"timestamp", "action", "uri", "user_id", "resource_name", "id"}
    | {f"{name}_id" for name in ("bucket", "collection", "record", "group")}
)


def event_names(event: object) -> tuple[str, ...]:
    """The names an ``event`` filter can match; signer events answer to both their modules."""
    if isinstance(event, ResourceChanged | AfterResourceChanged):
        return hooks.RESOURCE_EVENTS
    cls = type(event)
    name = f"{cls.__module__}.{cls.__qualname__}"
    aliases = tuple(n for n in hooks.REVIEW_EVENTS if n.rsplit(".", 1)[1] == cls.__name__)
    return (name, *(a for a in aliases if a != name))


def object_uri(resource_name: str, ids: Mapping[str, str]) -> str:
    uri = f"/buckets/{ids['bucket_id']}"
    if resource_name == "group":
        return f"{uri}/groups/{ids['group_id']}"
    if resource_name in ("collection", "record"):
        uri += f"/collections/{ids['collection_id']}"
    if resource_name == "record":
        uri += f"/records/{ids['record_id']}"
    return uri


class EventStore:
    """The storage reads of one event, each done once: hooks and group members.

    Hooks come from the collection's metadata, else from the bucket's (never merged).
    """

    def __init__(self, storage: Any, bucket_id: str, settings: EmailerSettings) -> None:
        self.storage = storage
        self.bucket_id = bucket_id
        self.settings = settings
        self._bucket_hooks: tuple[Hook, ...] | None = None
        self._collection_hooks: dict[str, tuple[Hook, ...]] = {}
        self._members: dict[str, list[str]] = {}

    def _get(self, resource_name: str, parent_id: str, object_id: str) -> Mapping[str, Any]:
        try:
            return self.storage.get(
                resource_name=resource_name, parent_id=parent_id, object_id=object_id
            )
        except ObjectNotFoundError:
            return {}

    def _bucket(self) -> tuple[Hook, ...]:
        if self._bucket_hooks is None:
            bucket = self._get("bucket", "", self.bucket_id)
            self._bucket_hooks = hooks.load(bucket, self.bucket_id, self.settings)
        return self._bucket_hooks

    def _collection(self, metadata: Mapping[str, Any]) -> tuple[Hook, ...]:
        if hooks.METADATA_KEY in metadata:
            return hooks.load(metadata, self.bucket_id, self.settings)
        return self._bucket()

    def _stored_collection(self, collection_id: str) -> tuple[Hook, ...]:
        if collection_id not in self._collection_hooks:
            metadata = self._get("collection", f"/buckets/{self.bucket_id}", collection_id)
            self._collection_hooks[collection_id] = self._collection(metadata)
        return self._collection_hooks[collection_id]

    def hooks_for(self, context: Mapping[str, Any]) -> tuple[Hook, ...]:
        resource_name = context["resource_name"]
        if resource_name == "collection":
            # The event holds the collection's metadata, even when it was just deleted.
            metadata = context["old"] if context["action"] == "delete" else context["new"]
            return self._collection(metadata or {})
        if resource_name == "record":
            return self._stored_collection(context["collection_id"])
        return self._bucket()

    def group_members(self, group_id: str) -> list[str]:
        if group_id not in self._members:
            group = self._get("group", f"/buckets/{self.bucket_id}", group_id)
            self._members[group_id] = list(group.get("members", []))
        return self._members[group_id]


def base_context(event: Any) -> dict[str, Any]:
    """Placeholders shared by every object of ``event``."""
    request = event.request
    payload = event.payload
    settings = request.registry.settings
    # Extra payload keys, such as the comment of a review request.
    context: dict[str, Any] = {
        name: value
        for name, value in payload.items()
        if name not in _PAYLOAD_KEYS and isinstance(value, str | int | float | bool)
    }
    context.update(
        event=f"{type(event).__module__}.{type(event).__qualname__}",
        action=payload["action"],
        resource_name=payload["resource_name"],
        user_id=payload.get("user_id"),
        bucket_id=payload.get("bucket_id"),
        collection_id=payload.get("collection_id"),
        root_url=request.route_url("hello"),
        client_address=request.client_addr,
        user_agent=request.user_agent,
        timestamp=payload.get("timestamp"),
        settings={key: settings.get(key) for key in templates.SETTINGS_KEYS},
    )
    return context


def object_context(base: Mapping[str, Any], impacted: Mapping[str, Any]) -> dict[str, Any]:
    """Placeholders for one impacted object: its own id, URI, timestamp, new and old values."""
    context = dict(base)
    new, old = impacted.get("new"), impacted.get("old")
    current = new or old
    resource_name = base["resource_name"]
    context.update(id=current["id"], new=new, old=old)
    context[f"{resource_name}_id"] = current["id"]
    context["timestamp"] = (new or {}).get("last_modified", base["timestamp"])
    context["uri"] = object_uri(resource_name, context)
    return context


def _facts(context: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    facts = {
        field: (str(context[field]),)
        for field in hooks.FILTER_FIELDS
        if context.get(field) is not None
    }
    facts["event"] = names
    return facts


def hook_drafts(hook: Hook, context: Mapping[str, Any], store: EventStore) -> list[messages.Draft]:
    """The messages of one hook for one object; RenderError if it cannot be rendered."""
    settings = store.settings
    sender_text = templates.render_line(hook.sender, context) if hook.sender else None
    sender_text = sender_text or settings.default_sender
    if not sender_text:
        raise RenderError("no sender: set the hook's sender or mail.default_sender")
    try:
        sender = recipients.parse_mailbox(sender_text)
    except ValueError as e:
        raise RenderError(f"sender: {e}") from e
    subject = templates.render_line(hook.subject, context)
    body = templates.render(hook.template, context)

    mailboxes = recipients.expand(
        hook.recipients,
        lambda uri: templates.render(uri, context),
        store.bucket_id,
        store.group_members,
        settings.allowed_domains,
    )
    if len(mailboxes) > settings.max_recipients:
        logger.warning(
            "A hook for %s has %s recipients: mailing the first %s (kinto.emailer.max_recipients)",
            context["uri"],
            len(mailboxes),
            settings.max_recipients,
        )
    return [
        messages.Draft(
            sender,
            mailbox,
            subject,
            body,
            context["uri"],
            context["root_url"],
            key=messages.idempotency_key(
                context["root_url"],
                context["uri"],
                context["timestamp"],
                context["event"],
                hook.fingerprint,
                mailbox.addr_spec.lower(),
            ),
        )
        for mailbox in mailboxes[: settings.max_recipients]
    ]


def drafts_for_event(event: Any, registry: Registry) -> Iterator[messages.Draft]:
    """Every message of one event, in order; a hook that cannot be rendered is skipped."""
    payload = event.payload
    if payload["resource_name"] not in hooks.RESOURCE_NAMES or not payload.get("bucket_id"):
        return
    names = event_names(event)
    base = base_context(event)
    store = EventStore(registry.storage, base["bucket_id"], registry.emailer_settings)
    for impacted in event.impacted_objects:
        context = object_context(base, impacted)
        facts = _facts(context, names)
        for hook in store.hooks_for(context):
            if not hook.matches(facts):
                continue
            try:
                yield from hook_drafts(hook, context, store)
            except RenderError as e:
                logger.error("Skipping a hook for %s: %s", context["uri"], e)


def build_notification(event: Any) -> None:
    """Subscriber: prepare the emails of ``event``; they leave once its transaction commits.

    Kinto's signer subscribes this function (as ``send_notification``) to its review
    events. Nothing here ever fails the client's write: problems are logged.
    """
    registry = event.request.registry
    delivery = getattr(registry, "emailer_delivery", None)
    if delivery is None:
        logger.warning("kinto_emailer is not in kinto.includes: no email for %r", event)
        return
    try:
        delivery.schedule(list(drafts_for_event(event, registry)))
    except Exception:
        logger.exception("Could not prepare the emails of %r", event)


send_notification = build_notification
"""The name Kinto's signer imports."""
