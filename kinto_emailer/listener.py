"""From a Kinto event to the messages it causes.

A client's write only takes note of its change (:func:`change_of`): what the event says,
as JSON. Hooks, recipients, preferences and templates are worked out later, by whatever
sends the mail (:class:`Expansion`): the write never waits for them.
"""

import functools
import logging
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, NamedTuple, TypeVar

from kinto.core.events import AfterResourceChanged, ResourceChanged
from kinto.core.storage import Filter
from kinto.core.storage.exceptions import ObjectNotFoundError
from kinto.core.utils import COMPARISON

from kinto_emailer import (
    deliverylog,
    hooks,
    htmlbody,
    inbox,
    messages,
    quotas,
    recipients,
    templates,
)
from kinto_emailer.digests import DigestStore, Entry
from kinto_emailer.errors import RenderError
from kinto_emailer.headers import header_value
from kinto_emailer.hooks import Hook
from kinto_emailer.metrics import Counter
from kinto_emailer.preferences import (
    CHANNELS,
    DEFAULTS,
    Cell,
    Preferences,
    PreferenceStore,
    Value,
    delivered,
    record_scopes,
    verdict,
)
from kinto_emailer.quotas import Tally
from kinto_emailer.recipients import Mailbox
from kinto_emailer.settings import EmailerSettings


logger = logging.getLogger(__name__)

Who = TypeVar("Who", bound=Hashable)
"""A recipient: a mailbox, or the key of an inbox."""
Item = TypeVar("Item")
"""What a hook leaves for a recipient: a message's draft, or a web notification."""

_PAYLOAD_KEYS = frozenset(
    {"timestamp", "action", "uri", "user_id", "resource_name", "id"}
    | {f"{name}_id" for name in ("bucket", "collection", "record", "group")}
)


def event_names(event: object) -> tuple[str, ...]:
    """The names an ``event`` filter can match: its class path (as 4.x matched it), and
    those of a change or of a review (signer events answer to both their modules)."""
    cls = type(event)
    changed = isinstance(event, ResourceChanged | AfterResourceChanged)
    return names_of(f"{cls.__module__}.{cls.__qualname__}", changed)


def names_of(name: str, changed: bool) -> tuple[str, ...]:
    """The names of an event whose class path is ``name``: a change's (``changed``) or,
    for a review, the same class's in both signer modules."""
    if changed:
        aliases = hooks.RESOURCE_EVENTS
    else:
        aliases = tuple(
            n for n in hooks.REVIEW_EVENTS if n.rsplit(".", 1)[1] == name.rsplit(".", 1)[1]
        )
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


Scoped = tuple[str, tuple[Hook, ...]]
"""Hooks, and the URI of the bucket or collection that holds them."""


Change = dict[str, Any]
"""One event as JSON: the names it answers to, its placeholders, its impacted objects."""


class Reads:
    """Buckets, collections and groups read, and the hooks loaded from them: shared by
    the changes worked out together, each is read and loaded once for all of them."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], Mapping[str, Any]] = {}
        # By the identity of the metadata they were loaded from, kept alive here: an id
        # is never that of another object while its entry lasts.
        self.hooks: dict[int, tuple[Mapping[str, Any], tuple[Hook, ...]]] = {}

    def prefetch(self, storage: Any, changes: Iterable[Change]) -> None:
        """Read the buckets of ``changes``, and the collections of their records, in one
        query per bucket: a flood of changes in many collections reads them at once."""
        wanted: dict[tuple[str, str], set[str]] = {}
        for change in changes:
            base = change["base"]
            bucket_id = base["bucket_id"]
            wanted.setdefault(("bucket", ""), set()).add(bucket_id)
            if base["resource_name"] == "record":
                parent = ("collection", f"/buckets/{bucket_id}")
                wanted.setdefault(parent, set()).add(base["collection_id"])
        for (resource_name, parent_id), ids in wanted.items():
            found = {
                obj["id"]: obj
                for obj in storage.list_all(
                    resource_name=resource_name,
                    parent_id=parent_id,
                    filters=[Filter("id", sorted(ids), COMPARISON.IN)],
                )
            }
            for object_id in ids:
                bucket_id = parent_id.rsplit("/", 1)[-1] if parent_id else object_id
                key = (bucket_id, resource_name, object_id)
                self.objects.setdefault(key, found.get(object_id, {}))


class EventStore:
    """What working out one change needs: its bucket, its time, and storage reads done
    once (hooks and group members).

    Hooks come from the collection's metadata, else from the bucket's (never merged).
    """

    def __init__(
        self,
        storage: Any,
        bucket_id: str,
        settings: EmailerSettings,
        made_at: datetime,
        reads: Reads | None = None,
    ) -> None:
        self.storage = storage
        self.bucket_id = bucket_id
        self.settings = settings
        self.made_at = made_at
        self._reads = Reads() if reads is None else reads
        self._members: dict[str, list[str]] = {}

    def _get(self, resource_name: str, object_id: str) -> Mapping[str, Any]:
        """A bucket or collection of the bucket, read once; {} if there is none."""
        key = (self.bucket_id, resource_name, object_id)
        stored = self._reads.objects
        if key not in stored:
            parent_id = "" if resource_name == "bucket" else f"/buckets/{self.bucket_id}"
            try:
                stored[key] = self.storage.get(
                    resource_name=resource_name, parent_id=parent_id, object_id=object_id
                )
            except ObjectNotFoundError:
                stored[key] = {}
        return stored[key]

    def place(self, context: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
        """The URI of the bucket or collection whose hooks apply to an object, and its
        metadata."""
        resource_name = context["resource_name"]
        if resource_name in ("collection", "record"):
            collection_id = context["collection_id"]
            if resource_name == "record":
                metadata = self._get("collection", collection_id)
            else:
                # The event holds the collection's metadata, even when it was just deleted.
                metadata = context["old"] if context["action"] == "delete" else context["new"]
            if hooks.METADATA_KEY in (metadata or {}):
                return f"/buckets/{self.bucket_id}/collections/{collection_id}", metadata
        return f"/buckets/{self.bucket_id}", self._get("bucket", self.bucket_id)

    def hooks_for(self, context: Mapping[str, Any]) -> Scoped:
        """The hooks that apply to an object, and their scope (where they are kept)."""
        scope, metadata = self.place(context)
        loaded = self._reads.hooks
        if id(metadata) not in loaded:
            hooks_of = hooks.load(metadata, self.bucket_id, self.settings, scope)
            loaded[id(metadata)] = (metadata, hooks_of)
        return scope, loaded[id(metadata)][1]

    def group_members(self, group_id: str) -> list[str]:
        if group_id not in self._members:
            group = self._get("group", group_id)
            self._members[group_id] = list(group.get("members", []))
        return self._members[group_id]

    def truncated(self, uri: str, found: int) -> None:
        """A hook for the object at ``uri`` has ``found`` recipients, more than the
        ``max_recipients`` it notifies."""
        logger.warning(
            "A hook for %s has %s recipients: notifying the first %s"
            " (kinto.emailer.max_recipients)",
            uri,
            found,
            self.settings.max_recipients,
        )

    def skipped(self, what: str, uri: str, error: RenderError) -> None:
        """``what`` (a hook, a summary) of the object at ``uri`` could not be rendered."""
        logger.error("Skipping %s for %s: %s", what, uri, error)


def change_of(event: Any) -> Change | None:
    """What a later sender needs of ``event``; None if no hook can be about it."""
    payload = event.payload
    if payload["resource_name"] not in hooks.RESOURCE_NAMES or not payload.get("bucket_id"):
        return None
    return {
        "names": event_names(event),
        "base": base_context(event),
        "impacted": event.impacted_objects,
        # Mail is dated, kept for digests and dropped after max_age by this time.
        "made_at": datetime.now(UTC).isoformat(),
    }


def hooks_apply(change: Change, storage: Any, settings: EmailerSettings) -> bool:
    """Whether any hook is stored now for an object of ``change``.

    Kinto notifies its events once the request's writes are done, in their transaction:
    hooks saved or removed by the same request (a batch) count as they will be stored. A
    change no hook applies to is not noted: nothing to work out, no worker to wake.
    """
    made_at = datetime.fromisoformat(change["made_at"])
    store = EventStore(storage, change["base"]["bucket_id"], settings, made_at)
    return any(
        hooks.declared(store.place(object_context(change["base"], impacted))[1])
        for impacted in change["impacted"]
    )


def base_context(event: Any) -> dict[str, Any]:
    """Placeholders shared by every object of ``event``."""
    cls = type(event)
    return request_context(event.request, event.payload, f"{cls.__module__}.{cls.__qualname__}")


def request_context(request: Any, payload: Mapping[str, Any], event: str) -> dict[str, Any]:
    """Placeholders shared by every object of an event (its class path: ``event``) of
    ``request``, whose ``payload`` says what changed."""
    settings = request.registry.settings
    # Extra payload keys, such as the comment of a review request.
    context: dict[str, Any] = {
        name: value
        for name, value in payload.items()
        if name not in _PAYLOAD_KEYS and isinstance(value, str | int | float | bool)
    }
    context.update(
        event=event,
        action=payload["action"],
        resource_name=payload["resource_name"],
        user_id=payload.get("user_id"),
        bucket_id=payload.get("bucket_id"),
        collection_id=payload.get("collection_id"),
        # From the configuration: a request's Host header is its sender's to choose.
        root_url=request.registry.emailer_settings.public_url,
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


def facts_of(context: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    facts = {
        field: (str(context[field]),)
        for field in hooks.FILTER_FIELDS
        if context.get(field) is not None
    }
    facts["event"] = names
    return facts


@functools.lru_cache(maxsize=256)
def _refused_sender(scope: str, address: str) -> None:
    # Once per hook's bucket and address in a process, not at every message.
    logger.warning(
        "Hooks of %s send from %s, which is not an allowed sender: mailing from"
        " mail.default_sender instead (kinto.emailer.allowed_senders)",
        scope,
        address,
    )


def _hook_sender(sender: str, context: Mapping[str, Any]) -> Mailbox | None:
    """A hook's sender for one object; None if it renders empty.

    Only the name holds placeholders (checked on save): it is rendered on its own, so that
    data (``Smith, John``) is a name and never breaks the address apart.
    """
    try:
        address = recipients.parse_mailbox(templates.render_line(sender, {}))
    except ValueError:
        address = None  # Stored before the check: placeholders in the address too.
    if address is not None and "<" in sender:
        name = templates.render_line(sender[: sender.rindex("<")], context).strip('" ')
        return Mailbox(header_value(name), address.addr_spec)
    text = templates.render_line(sender, context)
    if not text:
        return None
    try:
        return recipients.parse_mailbox(text)
    except ValueError as e:
        raise RenderError(f"sender: {e}") from e


def _sender(hook: Hook, context: Mapping[str, Any], settings: EmailerSettings) -> Mailbox:
    """The hook's sender if the operator allows it, else ``mail.default_sender``."""
    mailbox = _hook_sender(hook.sender, context) if hook.sender else None
    if mailbox is not None:
        if recipients.sender_allowed(mailbox, settings.default_sender, settings.allowed_senders):
            return mailbox
        _refused_sender(f"/buckets/{context['bucket_id']}", mailbox.addr_spec)
    if not settings.default_sender:
        raise RenderError("no sender: set mail.default_sender")
    return recipients.parse_mailbox(settings.default_sender)


def hook_mailboxes(hook: Hook, context: Mapping[str, Any], store: EventStore) -> list[Mailbox]:
    """Who a hook mails about one object; RenderError if it cannot be rendered."""
    settings = store.settings
    mailboxes = recipients.expand(
        hook.recipients,
        lambda uri: templates.render(uri, context),
        store.bucket_id,
        store.group_members,
        settings.allowed_domains,
    )
    return _first_recipients(mailboxes, context, store)


def _first_recipients(
    found: list[Who], context: Mapping[str, Any], store: EventStore
) -> list[Who]:
    """The first ``max_recipients`` of a hook's recipients for one object."""
    most = store.settings.max_recipients
    if len(found) > most:
        store.truncated(context["uri"], len(found))
    return found[:most]


def hook_inbox_keys(hook: Hook, context: Mapping[str, Any], store: EventStore) -> list[str]:
    """Whose inboxes a hook's web notifications about one object go to (see
    :func:`recipients.inbox_keys`), bounded as its mail; RenderError if it cannot be
    rendered."""
    settings = store.settings
    keys = recipients.inbox_keys(
        hook.recipients,
        lambda uri: templates.render(uri, context),
        store.bucket_id,
        store.group_members,
        settings.allowed_domains,
        settings.verified_principals,
    )
    return _first_recipients(keys, context, store)


def web_link(root_url: str, uri: str) -> str:
    """Where people see an object on the web; empty without a public URL."""
    return f"{root_url.rstrip('/')}{uri}" if root_url else ""


def hook_notifications(
    hook: Hook, scope: str, context: Mapping[str, Any], store: EventStore, keys: list[str]
) -> list[inbox.Notification]:
    """The web notifications of one hook for one object, rendered once for all ``keys``."""
    subject = templates.render_line(hook.subject, context)
    body = templates.render(hook.template, context)
    link = web_link(context["root_url"], context["uri"])
    return [
        inbox.Notification(key, subject, body, context["uri"], link, scope, store.made_at)
        for key in keys
    ]


def hook_drafts(
    hook: Hook, context: Mapping[str, Any], store: EventStore, mailboxes: list[Mailbox]
) -> list[messages.Draft]:
    """The messages of one hook for one object; RenderError if it cannot be rendered."""
    sender = _sender(hook, context, store.settings)
    subject = templates.render_line(hook.subject, context)
    body = templates.render(hook.template, context)
    markup = htmlbody.render(hook.html_template, context) if hook.html_template else ""
    return [
        messages.Draft(
            sender,
            mailbox,
            subject,
            body,
            context["uri"],
            context["root_url"],
            created=store.made_at,
            html=markup,
            key=messages.idempotency_key(
                context["root_url"],
                context["uri"],
                context["timestamp"],
                context["event"],
                hook.fingerprint,
                mailbox.lowercase_address,
            ),
        )
        for mailbox in mailboxes
    ]


SUMMARY_LISTED = 5


def summary_text(
    hook: Hook, contexts: list[Mapping[str, Any]], store: EventStore
) -> tuple[str, str, str]:
    """The URI, subject and body of one summary of many objects of one event."""
    first = contexts[0]
    if first["resource_name"] == "record":
        location = first["uri"].rsplit("/", 2)[0]
    else:
        location = f"/buckets/{store.bucket_id}"
    what = f"{len(contexts)} {first['resource_name']}s {first['action']}d"
    lines = [f"{what} in {location.removeprefix('/buckets/').replace('/collections/', '/')}:", ""]
    for context in contexts[:SUMMARY_LISTED]:
        try:
            title = templates.render_line(hook.subject, context)
        except RenderError:
            title = context["id"]
        lines.append(f"- {title}: {context['root_url'].rstrip('/')}{context['uri']}")
    if len(contexts) > SUMMARY_LISTED:
        lines.append(f"- and {len(contexts) - SUMMARY_LISTED} more")
    return location, lines[0].rstrip(":"), "\n".join(lines) + "\n"


def summary_notification(
    hook: Hook, scope: str, contexts: list[Mapping[str, Any]], store: EventStore, key: str
) -> inbox.Notification:
    """One web notification about many objects of one event, instead of one each."""
    uri, subject, body = summary_text(hook, contexts, store)
    link = web_link(contexts[0]["root_url"], uri)
    return inbox.Notification(key, subject, body, uri, link, scope, store.made_at)


def summary_draft(
    hook: Hook, contexts: list[Mapping[str, Any]], store: EventStore, mailbox: Mailbox
) -> messages.Draft:
    """One message about many objects of one event, instead of one message each."""
    first = contexts[0]
    location, subject, body = summary_text(hook, contexts, store)
    return messages.Draft(
        _sender(hook, first, store.settings),
        mailbox,
        subject,
        body,
        location,
        first["root_url"],
        created=store.made_at,
        key=messages.idempotency_key(
            first["root_url"],
            location,
            first["timestamp"],
            first["event"],
            hook.fingerprint,
            mailbox.lowercase_address,
            *(c["uri"] for c in contexts),
        ),
    )


class Routed:
    """What a notice of either channel owes its hook and scope, for preferences."""

    channel: ClassVar[str]
    hook: Hook
    scope_locked: bool
    """Every hook of the scope locks the notice's channel: its recipients can change
    nothing there."""

    @property
    def default(self) -> Value:
        return DEFAULTS[self.channel]

    @property
    def hook_cell(self) -> Cell:
        """What its hook sets on its channel: the default, and whether it is locked."""
        return Cell(self.default, self.channel in self.hook.non_editable)

    @property
    def scope_cell(self) -> Cell:
        """What the recipient's preferences show of its scope on its channel."""
        return Cell(self.default, self.scope_locked)


@dataclass(frozen=True)
class Notice(Routed):
    """A message a hook decided on, before its recipient's preferences apply."""

    channel: ClassVar[str] = "email"
    draft: messages.Draft
    scope: str
    hook: Hook
    scope_locked: bool = False

    @property
    def recipient(self) -> str:
        """Whom the bounds count it for, and whose preferences apply."""
        return self.draft.recipient.lowercase_address

    @property
    def default(self) -> Value:
        return self.hook.cadence

    @property
    def size(self) -> int:
        return draft_size(self.draft)


@dataclass(frozen=True)
class WebNotice(Routed):
    """A web notification a hook decided on, before its recipient's preferences apply."""

    channel: ClassVar[str] = "web"
    notification: inbox.Notification
    scope: str
    hook: Hook
    scope_locked: bool = False

    @property
    def recipient(self) -> str:
        """Its inbox's key: an address, or a principal, whose preferences apply."""
        return self.notification.key

    @property
    def size(self) -> int:
        notification = self.notification
        return len(notification.subject) + len(notification.body) + 200


AnyNotice = Notice | WebNotice


def _fresh(
    whos: list[Who], uri: str, name: Callable[[Who], str], seen: set[tuple[str, str]]
) -> list[Who]:
    """``whos`` that nothing was decided for yet about ``uri``; they are now."""
    fresh = [who for who in whos if (uri, name(who)) not in seen]
    seen.update((uri, name(who)) for who in fresh)
    return fresh


def _grouped(
    decided: list[tuple[str, Hook, dict[str, Any], list[Who]]],
) -> dict[tuple[str, Hook, Who], list[dict[str, Any]]]:
    """The objects of each hook and recipient past the hook's ``group_threshold``."""
    per_recipient: dict[tuple[str, Hook, Who], list[dict[str, Any]]] = {}
    for scope, hook, context, whos in decided:
        if hook.group_threshold is not None:
            for who in whos:
                per_recipient.setdefault((scope, hook, who), []).append(context)
    return {
        key: contexts
        for key, contexts in per_recipient.items()
        if len(contexts) > (key[1].group_threshold or 0)
    }


Match = tuple[str, Hook, dict[str, Any], frozenset[str]]
"""A hook matching an object: its scope, the hook, the object's context, and the channels
that all the scope's hooks of each channel lock."""


def _matches(change: Change, store: EventStore) -> list[Match]:
    """Every hook matching an object of ``change``."""
    names = tuple(change["names"])
    base = change["base"]
    matches = []
    for impacted in change["impacted"]:
        context = object_context(base, impacted)
        facts = facts_of(context, names)
        scope, scoped_hooks = store.hooks_for(context)
        locked = frozenset(
            channel
            for channel in CHANNELS
            if all(channel in h.non_editable for h in scoped_hooks if channel in h.channels)
        )
        matches += [(scope, hook, context, locked) for hook in scoped_hooks if hook.matches(facts)]
    return matches


def notices_for_change(
    change: Change, storage: Any, settings: EmailerSettings, reads: Reads | None = None
) -> Iterator[AnyNotice]:
    """Every message and web notification of one change, in order; a hook that cannot be
    rendered is skipped.

    Hooks are those stored when the change is worked on (those ``reads`` read first,
    for changes worked out together). Past a hook's ``group_threshold`` of objects for
    one recipient, that recipient gets one summary instead of one each, on each channel.
    """
    made_at = datetime.fromisoformat(change["made_at"])
    store = EventStore(storage, change["base"]["bucket_id"], settings, made_at, reads)
    yield from notices_of(_matches(change, store), store)


def notices_of(matches: Iterable[Match], store: EventStore) -> Iterator[AnyNotice]:
    """Every message and web notification of ``matches`` (of one change), in order; a
    hook that cannot be rendered is skipped (see :meth:`EventStore.skipped`)."""
    mailed: list[tuple[str, Hook, dict[str, Any], list[Mailbox]]] = []
    posted: list[tuple[str, Hook, dict[str, Any], list[str]]] = []
    # One message per address and object, however many hooks name the address; one web
    # notification per inbox and object.
    addressed: set[tuple[str, str]] = set()
    inboxed: set[tuple[str, str]] = set()
    locked_scopes: dict[str, frozenset[str]] = {}
    for scope, hook, context, scope_locked in matches:
        locked_scopes[scope] = scope_locked
        try:
            if "email" in hook.channels:
                mailboxes = hook_mailboxes(hook, context, store)
                fresh = _fresh(mailboxes, context["uri"], lambda m: m.lowercase_address, addressed)
                mailed.append((scope, hook, context, fresh))
            if "web" in hook.channels:
                keys = _fresh(hook_inbox_keys(hook, context, store), context["uri"], str, inboxed)
                posted.append((scope, hook, context, keys))
        except RenderError as e:
            store.skipped("a hook", context["uri"], e)
    for scope, hook, draft in _each_or_summary(
        store,
        mailed,
        lambda hook, scope, context, alone: hook_drafts(hook, context, store, alone),
        lambda hook, scope, contexts, mailbox: summary_draft(hook, contexts, store, mailbox),
    ):
        yield Notice(draft, scope, hook, "email" in locked_scopes[scope])
    for scope, hook, notification in _each_or_summary(
        store,
        posted,
        lambda hook, scope, context, alone: hook_notifications(hook, scope, context, store, alone),
        lambda hook, scope, contexts, key: summary_notification(hook, scope, contexts, store, key),
    ):
        yield WebNotice(notification, scope, hook, "web" in locked_scopes[scope])


def _each_or_summary(
    store: EventStore,
    decided: list[tuple[str, Hook, dict[str, Any], list[Who]]],
    each: Callable[[Hook, str, dict[str, Any], list[Who]], list[Item]],
    summary: Callable[[Hook, str, list[dict[str, Any]], Who], Item],
) -> Iterator[tuple[str, Hook, Item]]:
    """What ``decided`` hooks leave, with their scope and hook, on one channel: one item
    per recipient and object (``each``), or one ``summary`` per recipient past the
    hook's ``group_threshold``. A hook that cannot be rendered is skipped (see
    :meth:`EventStore.skipped`)."""
    grouped = _grouped(decided)
    for scope, hook, context, whos in decided:
        alone = [who for who in whos if (scope, hook, who) not in grouped]
        if not alone:
            continue
        try:
            items = each(hook, scope, context, alone)
        except RenderError as e:
            store.skipped("a hook", context["uri"], e)
            continue
        yield from ((scope, hook, item) for item in items)
    for (scope, hook, who), contexts in grouped.items():
        try:
            item = summary(hook, scope, contexts, who)
        except RenderError as e:
            store.skipped("a summary", contexts[0]["uri"], e)
            continue
        yield scope, hook, item


def gets_web_too(notice: Notice, preferences: Preferences) -> bool:
    """Whether the recipient of ``notice``'s mail gets its hook's web notifications too:
    the hook has the channel, and ``preferences`` leave it on for the scope."""
    hook = notice.hook
    if "web" not in hook.channels:
        return False
    cell = Cell(DEFAULTS["web"], "web" in hook.non_editable)
    return delivered(preferences, notice.scope, "web", cell) is not None


def linked(
    notice: Notice, preferences: Preferences, secret: str, token: str | None = None
) -> messages.Draft:
    """``notice``'s mail as sent now, with its links (see :func:`messages.with_links`):
    none to unsubscribe from mail that cannot be turned off, and the inbox page's when its
    recipient gets the hook's web notifications too."""
    return messages.with_links(
        notice.draft,
        secret,
        (notice.scope,),
        unsubscribe=not notice.hook_cell.locked,
        inbox=gets_web_too(notice, preferences),
        token=token,
    )


NOW = "now"
DELIVERED = (NOW, "daily", "weekly")
"""The states of :func:`decide` in which a notice reaches its recipient."""


def decide(notice: AnyNotice, preferences: Preferences) -> str:
    """What becomes of ``notice`` by its recipient's ``preferences``, written nowhere: sent
    (or kept in its inbox) ``now``, kept for the ``daily`` or ``weekly`` digest, turned
    ``off`` by its recipient for its scope and channel, or ``suppressed`` (its recipient
    stopped all mail)."""
    value = verdict(preferences, notice.scope, notice.channel, notice.hook_cell)
    if value is True or value == "immediate":
        return NOW
    if value is False:
        return "off"
    return str(value)


Bound = Callable[[list[AnyNotice]], list[quotas.Refusal | None]]
"""Whether each notice, in order, is within the bounds of mail (None), or why not (see
:mod:`.quotas`)."""


class Routing(NamedTuple):
    """What routing made of notices, for their caller to write together."""

    mail: list[messages.Draft]
    """To send now."""
    notifications: list[inbox.Notification]
    """To keep in their inboxes."""
    log: list[deliverylog.Entry]
    """What became of the other mail (kept for a digest, turned off, dropped), for the
    delivery log."""


def route(
    notices: list[AnyNotice],
    storage: Any,
    settings: EmailerSettings,
    known: dict[str, Preferences],
    bound: Bound,
) -> Routing:
    """Apply preferences, then bounds: mail to send now, web notifications to keep, and
    the delivery log's entries of the rest; digest entries kept; mail turned off, or over
    a bound, dropped.

    ``known`` holds the preferences read so far, by recipient (an address, or an inbox's
    key). What each recipient gets from each scope, on each channel, is recorded on the
    way, for their page. Each channel obeys the recipient's choice for it only (see
    :func:`decide`). An address that stopped all mail gets none but that of locked
    hooks, from any scope, known to it yet or not. What a recipient turned off counts
    against no bound: a stranger's hooks cannot use up the hourly mail of someone who
    unsubscribed from them.
    """
    if not notices:
        return Routing([], [], [])
    store = PreferenceStore(storage)
    missing = {n.recipient for n in notices} - known.keys()
    if missing:
        found = store.read_many(missing)
        known.update({key: found.get(key, Preferences()) for key in missing})
    recorded: dict[str, dict[str, dict[str, Cell]]] = {}
    wanted: list[tuple[AnyNotice, str]] = []
    logged: list[deliverylog.Entry] = []
    for notice in notices:
        key, channel = notice.recipient, notice.channel
        preferences = known[key]
        stored = preferences.cell(notice.scope, channel)
        # A scope's cell is locked for its page only when all its hooks of the channel
        # are: a locked hook beside others must not take their unsubscribe link away.
        cell = notice.scope_cell
        if stored is None or (stored.default, stored.locked) != (cell.default, cell.locked):
            recorded.setdefault(key, {}).setdefault(notice.scope, {})[channel] = cell
        state = decide(notice, preferences)
        if state in DELIVERED:
            wanted.append((notice, state))
        elif isinstance(notice, Notice):
            # Turned off for its scope, or all mail stopped.
            logged.append(deliverylog.Entry.of(notice.draft, "off"))
    digests = DigestStore(storage)
    immediate = []
    posted = []
    within = bound([notice for notice, _ in wanted])
    for (notice, state), refusal in zip(wanted, within, strict=True):
        if refusal is not None:
            if refusal.noted and isinstance(notice, Notice):
                reason = f"over {refusal.setting}"
                logged.append(deliverylog.Entry.of(notice.draft, "dropped", detail=reason))
            continue
        if isinstance(notice, WebNotice):
            posted.append(notice.notification)
        elif state == NOW:
            immediate.append(linked(notice, known[notice.recipient], settings.secret))
        else:
            collection = notice.draft.uri
            if "/records/" in collection:
                collection = collection.rsplit("/", 2)[0]
            # Its recipient gets the web notification too: the digest links to their inbox.
            web = gets_web_too(notice, known[notice.recipient])
            locked = notice.hook_cell.locked
            digests.add(state, Entry(notice.draft, notice.scope, collection, locked, web))
            logged.append(deliverylog.Entry.of(notice.draft, "digest", detail=state))
    # Always in the same order: two senders writing the same recipients cannot deadlock.
    for key in sorted(recorded):
        record = functools.partial(record_scopes, recorded[key], settings.max_scopes_per_recipient)
        known[key] = store.update(key, record)
    return Routing(immediate, posted, logged)


def bound_of(change: Change, settings: EmailerSettings, tally: Tally) -> Bound:
    """The bounds of ``change``'s mail and web notifications: per change, per bucket and
    per recipient an hour.

    The change's own usage is kept between calls: its notices may be bounded in parts.
    """
    used = quotas.Usage()
    return lambda notices: quotas.admit(
        [n.recipient for n in notices],
        change["base"]["bucket_id"],
        datetime.fromisoformat(change["made_at"]),
        settings,
        tally,
        used,
    )


def usage_of(change: Change, notices: list[AnyNotice]) -> tuple[datetime, list[str]]:
    """The hourly usage that ``notices`` may count against (see :func:`bound_of`): its
    window, and its keys."""
    return quotas.keys_of(
        [n.recipient for n in notices],
        change["base"]["bucket_id"],
        datetime.fromisoformat(change["made_at"]),
    )


def describe(change: Change) -> str:
    """``change`` in a few words, for logs; whatever it holds."""
    base = change.get("base", {})
    return (
        f"a {base.get('resource_name', '?')} {base.get('action', '?')}"
        f" in bucket {base.get('bucket_id', '?')}"
    )


def draft_size(draft: messages.Draft) -> int:
    """About the characters ``draft`` holds (200 for its addresses, key and dates), to
    bound how many are kept at once."""
    texts = (
        draft.subject,
        draft.body,
        draft.html,
        draft.unsubscribe_url,
        draft.preferences_url,
        draft.inbox_url,
    )
    return sum(map(len, texts)) + 200


class Expansion:
    """The mail of one change, worked out a part at a time (:meth:`take`): a change that
    causes 100,000 messages never has them all in memory, and another bucket's mail can
    go out between its parts. Each message counts once against the bounds.

    ``known``: preferences read so far, by recipient, and ``reads``: buckets, collections
    and groups read so far, both shared by the caller's changes.
    """

    def __init__(
        self,
        change: Change,
        tally: Tally,
        storage: Any,
        settings: EmailerSettings,
        count: Counter,
        known: dict[str, Preferences] | None = None,
        reads: Reads | None = None,
    ) -> None:
        self.change = change
        self.storage = storage
        self.settings = settings
        self.count = count
        self.done = False
        self.notices = 0
        """Notices taken so far."""
        self._known = {} if known is None else known
        self._bound = bound_of(change, settings, tally)
        self._notices = notices_for_change(change, storage, settings, reads)

    def take(self, count: int | None = None, size: int | None = None) -> Routing:
        """The mail to send now of the change's next ``count`` notices (or fewer, ``size``
        characters at most, but for the first one), all by default, and the log's entries
        of the rest; web notifications, digest entries and preferences are stored on the
        way. :attr:`done` once no notice is left, or once the change could not be worked
        out (the error is raised: the rest has no mail).
        """
        notices: list[AnyNotice] = []
        taken = 0
        try:
            for notice in self._notices:
                notices.append(notice)
                self.notices += 1
                taken += notice.size
                if (count is not None and len(notices) >= count) or (
                    size is not None and taken >= size
                ):
                    break
            else:
                self.done = True
            routed = route(notices, self.storage, self.settings, self._known, self._bound)
            inbox.InboxStore(self.storage, self.settings).add(
                routed.notifications, datetime.now(UTC)
            )
            if routed.notifications:
                self.count("web", len(routed.notifications))
            return routed
        except Exception:
            self.done = True
            raise


def notices_by_change(
    changes: Iterable[Change], storage: Any, settings: EmailerSettings
) -> Iterator[tuple[Change, list[AnyNotice]]]:
    """Each of ``changes`` in turn, with the messages its hooks decide on (see
    :func:`route` for what becomes of them); an error is raised for a change that cannot
    be worked out. Lazy: a caller that stops early leaves the remaining changes unworked.

    Each bucket and collection is read once for all of ``changes``, which are worked out
    as of the first read.
    """
    changes = list(changes)
    reads = Reads()
    reads.prefetch(storage, changes)
    for change in changes:
        yield change, list(notices_for_change(change, storage, settings, reads))


def routed(
    change: Change,
    notices: list[AnyNotice],
    tally: Tally,
    storage: Any,
    settings: EmailerSettings,
    known: dict[str, Preferences],
) -> Routing:
    """The mail to send now, the web notifications to keep and the log's entries of the
    rest of ``change``'s ``notices``; digest entries and preferences are stored on the way
    (see :func:`route`). ``tally`` keeps the hourly usage of the bounds.
    """
    return route(notices, storage, settings, known, bound_of(change, settings, tally))


def build_notification(event: Any) -> None:
    """Subscriber: take note of ``event``; its emails follow once its transaction commits.

    Kinto's signer subscribes this function (as ``send_notification``) to its review
    events. Nothing here ever fails the client's write: problems are logged.
    """
    registry = event.request.registry
    delivery = getattr(registry, "emailer_delivery", None)
    if delivery is None:
        logger.warning("kinto_emailer is not in kinto.includes: no email for %r", event)
        return
    try:
        change = change_of(event)
        # On PostgreSQL, what each process keeps of the hooks (see kinto_emailer.hookindex).
        index = getattr(registry, "emailer_hooks_index", None)
        storage = registry.storage if index is None else index.reader(event.request)
        if change is not None and hooks_apply(change, storage, registry.emailer_settings):
            delivery.record(change)
    except Exception:
        logger.exception("Could not take note of %r", event)


send_notification = build_notification
"""The name Kinto's signer imports."""
