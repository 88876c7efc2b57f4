"""A hook's preview: every message and web notification a hook would cause for objects of
a bucket, worked out as a change is, and sent, queued and stored nowhere.

The request names a hook (its JSON, checked as saving it would be, or the index of a
stored one), objects (stored ones by URI, or inline), an action and an event. The same
functions as for a change draft the messages (:func:`listener.notices_of`) and decide
what the recipients' preferences make of each (:func:`listener.decide`), which they only
read. What the answer shows is bounded, and tells nobody's secrets: links carry a
placeholder instead of a signed token, and group members whom the caller may not read
in Kinto are counted, never named (not even through a ``Message-ID``, which hashes the
address).
"""

import email
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from email import policy
from typing import Any

from kinto.core.events import ResourceChanged
from kinto.core.storage.exceptions import ObjectNotFoundError

from kinto_emailer import epoch, hooks, inbox, listener, messages, recipients, templates
from kinto_emailer.errors import InvalidInput, RenderError
from kinto_emailer.hooks import Hook
from kinto_emailer.listener import AnyNotice, EventStore, Notice, WebNotice
from kinto_emailer.preferences import Preferences, PreferenceStore
from kinto_emailer.recipients import Mailbox
from kinto_emailer.settings import EmailerSettings


TOKEN = "PREVIEW-TOKEN"
"""What the links of previews carry instead of a signed token: their shape, working
nowhere."""
MAX_OBJECTS = 100
"""Objects of one preview, as of one change."""
MAX_SHOWN = 50
"""Messages (and as many web notifications) whose text an answer holds; the others are
counted."""
MAX_SHOWN_CHARS = 1_000_000
"""Characters of the texts an answer holds, but for the first message's."""
SENT_TO_ME = 3
"""Messages that ``send_to_me`` mails."""
SUBJECT_MARK = "[Preview] "

FIELDS = ("hook", "object", "objects", "action", "event")
OBJECT_FIELDS = ("resource_name", "id", "collection_id", "data", "old")
CHANGED = f"{ResourceChanged.__module__}.{ResourceChanged.__qualname__}"
"""The class path of a change's event, as ``{event}`` shows it."""
MAX_URI = 1024
"""Characters of an object's URI: longer than any of Kinto's (its ids are short)."""
_ID = re.compile(r"\A[a-zA-Z0-9][a-zA-Z0-9_-]{0,254}\Z")
"""Ids of Kinto's objects (its default id generator's), at most 255 characters."""
_OBJECT_URI = re.compile(
    r"\A/buckets/(?P<bucket_id>[^/]+)"
    r"(?:/collections/(?P<collection_id>[^/]+)(?:/records/(?P<record_id>[^/]+))?"
    r"|/groups/(?P<group_id>[^/]+))\Z"
)


def scope_of(bucket_id: str, collection_id: str | None) -> str:
    """The URI of the bucket or collection whose hooks are previewed."""
    uri = f"/buckets/{bucket_id}"
    return uri if collection_id is None else f"{uri}/collections/{collection_id}"


@dataclass(frozen=True)
class Asked:
    """A preview's request, checked."""

    bucket_id: str
    collection_id: str | None
    hook: Hook
    index: int | None
    """Of a stored hook; None for a hook of the request."""
    resource_name: str
    object_collection_id: str | None
    """The collection of the objects (or the collection they are)."""
    action: str
    event: str
    """The event's class path, as ``{event}`` shows it."""
    names: tuple[str, ...]
    """The names an ``event`` filter matches (see :func:`listener.names_of`)."""
    impacted: list[dict[str, Any]]
    """As Kinto's events list them: each object after (``new``) and before (``old``)."""

    @property
    def scope(self) -> str:
        return scope_of(self.bucket_id, self.collection_id)

    def payload(self, user_id: str | None, timestamp: int) -> dict[str, Any]:
        """What the event of such a change would say (see :func:`listener.request_context`)."""
        return {
            "action": self.action,
            "resource_name": self.resource_name,
            "user_id": user_id,
            "bucket_id": self.bucket_id,
            "collection_id": self.object_collection_id,
            "timestamp": timestamp,
        }


def asked(
    body: Any,
    bucket_id: str,
    collection_id: str | None,
    storage: Any,
    settings: EmailerSettings,
    now: datetime,
) -> Asked:
    """The preview that ``body`` asks for, of the hooks of a bucket or of one of its
    collections; InvalidInput naming the JSON path of its first problem (of the hook,
    that of saving it)."""
    if not isinstance(body, Mapping):
        raise InvalidInput("body", "A JSON object: hook, object (or objects), action, event.")
    for name in body:
        if name not in FIELDS:
            raise InvalidInput(str(name), f"Unknown field: use {', '.join(FIELDS)}.")
    action = body.get("action")
    if not isinstance(action, str) or action not in hooks.ACTIONS:
        raise InvalidInput("action", "create, update or delete.")
    action = hooks.ACTIONS[action]
    event, names = _event(body.get("event"))
    hook, index = _hook(body.get("hook"), bucket_id, collection_id, storage, settings)
    reader = _Objects(bucket_id, collection_id, storage, action, epoch.ms(now))
    if ("object" in body) == ("objects" in body):
        raise InvalidInput("object", "One object (or a list of them as objects).")
    if "object" in body:
        found = [reader.read(body["object"], "object")]
    else:
        listed = body["objects"]
        if not isinstance(listed, list) or not 0 < len(listed) <= MAX_OBJECTS:
            raise InvalidInput("objects", f"A list of 1 to {MAX_OBJECTS} objects.")
        found = [reader.read(value, f"objects.{i}") for i, value in enumerate(listed)]
        for i, (resource_name, collection, _) in enumerate(found):
            if (resource_name, collection) != found[0][:2]:
                raise InvalidInput(
                    f"objects.{i}",
                    "The objects of one change are of one kind, and records of one"
                    " collection, as the first one.",
                )
    return Asked(
        bucket_id,
        collection_id,
        hook,
        index,
        found[0][0],
        found[0][1],
        action,
        event,
        names,
        [impacted for _, _, impacted in found],
    )


def _event(value: Any) -> tuple[str, tuple[str, ...]]:
    """The class path of the event asked for (a change's by default), and its names."""
    if value is None:
        return CHANGED, listener.names_of(CHANGED, True)
    if not isinstance(value, str) or not hooks.is_event_class(value):
        raise InvalidInput(
            "event",
            f"One of {', '.join(hooks.KNOWN_EVENTS)}, or the path of another module's event"
            " class, such as 'mylib.events.Published'.",
        )
    changed = value in hooks.RESOURCE_EVENTS
    name = CHANGED if changed else value
    return name, listener.names_of(name, changed)


def _hook(
    value: Any,
    bucket_id: str,
    collection_id: str | None,
    storage: Any,
    settings: EmailerSettings,
) -> tuple[Hook, int | None]:
    """The hook asked for: its JSON, checked as saving it as the first hook of the scope
    (its 400 names ``data.kinto-emailer.hooks.0...``, as the save's), or the index of a
    stored hook, as it is used."""
    if isinstance(value, Mapping):
        return hooks.parse_new(value, 0, bucket_id, settings), None
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInput(
            "hook", "A hook (as in data.kinto-emailer.hooks), or the index of a stored one."
        )
    scope = scope_of(bucket_id, collection_id)
    if collection_id is None:
        metadata = _get(storage, "bucket", "", bucket_id) or {}
    else:
        metadata = _get(storage, "collection", scope.rsplit("/", 2)[0], collection_id) or {}
    stored = (metadata.get(hooks.METADATA_KEY) or {}).get("hooks")
    count = len(stored) if isinstance(stored, list) else 0
    if not 0 <= value < count:
        held = f"hooks 0 to {count - 1}" if count else "no hooks"
        raise InvalidInput("hook", f"{scope} holds {held}.")
    if value >= settings.max_hooks:
        raise InvalidInput(
            "hook",
            f"Only the first {settings.max_hooks} hooks of {scope} are used"
            " (setting kinto.emailer.max_hooks).",
        )
    try:
        return hooks.parse_stored(stored[value], value, bucket_id, settings), value
    except InvalidInput as e:
        raise InvalidInput(
            e.path, f"{e.description} (this stored hook is skipped when used: save it again)"
        ) from e


def _get(storage: Any, resource_name: str, parent_id: str, object_id: str) -> Any:
    try:
        return storage.get(resource_name=resource_name, parent_id=parent_id, object_id=object_id)
    except ObjectNotFoundError:
        return None


@dataclass(frozen=True)
class _Objects:
    """Reads the objects of a preview: inline, or stored, as the action would see them."""

    bucket_id: str
    collection_id: str | None
    storage: Any
    action: str
    now: int
    """Epoch milliseconds: the time of tombstones and of inline objects."""

    def read(self, value: Any, path: str) -> tuple[str, str | None, dict[str, Any]]:
        """The resource name of ``value``, its collection, and what the event would list
        of it."""
        if isinstance(value, str):
            resource_name, collection_id, stored = self._stored(value, path)
            new, old = stored, stored
        elif isinstance(value, Mapping):
            resource_name, collection_id, new, old = self._inline(value, path)
        else:
            raise InvalidInput(
                path, "The URI of a stored object, or an object: resource_name, id..."
            )
        if self.action == "create":
            old = None
        elif self.action == "delete":
            old = new if old is None else old
            new = {"id": new["id"], "last_modified": self.now, "deleted": True}
        return resource_name, collection_id, {"new": new, "old": old}

    def _within(self, resource_name: str, collection_id: str | None, path: str) -> None:
        """Hooks of a collection are about it and its records only."""
        if self.collection_id is None or (
            resource_name != "group" and collection_id == self.collection_id
        ):
            return
        raise InvalidInput(
            path,
            f"The hooks of {scope_of(self.bucket_id, self.collection_id)} are about that"
            " collection and its records only.",
        )

    def _stored(self, uri: str, path: str) -> tuple[str, str | None, dict[str, Any]]:
        match = _OBJECT_URI.match(uri.removeprefix("/v1")) if len(uri) <= MAX_URI else None
        if match is None or match["bucket_id"] != self.bucket_id:
            raise InvalidInput(
                path,
                f"The URI of a record, collection or group of /buckets/{self.bucket_id}.",
            )
        collection_id = match["collection_id"]
        if match["record_id"] is not None:
            resource_name, object_id = "record", match["record_id"]
            parent_id = f"/buckets/{self.bucket_id}/collections/{collection_id}"
        else:
            resource_name = "group" if match["group_id"] is not None else "collection"
            object_id = match["group_id"] or collection_id
            parent_id = f"/buckets/{self.bucket_id}"
        self._within(resource_name, collection_id, path)
        stored = _get(self.storage, resource_name, parent_id, object_id)
        if stored is None:
            raise InvalidInput(path, f"No {resource_name} is stored at {uri}.")
        return resource_name, collection_id, dict(stored)

    def _inline(
        self, value: Mapping[str, Any], path: str
    ) -> tuple[str, str | None, dict[str, Any], dict[str, Any] | None]:
        for name in value:
            if name not in OBJECT_FIELDS:
                raise InvalidInput(
                    f"{path}.{name}", f"Unknown field: use {', '.join(OBJECT_FIELDS)}."
                )
        resource_name = value.get("resource_name")
        if resource_name not in hooks.RESOURCE_NAMES:
            raise InvalidInput(f"{path}.resource_name", "record, collection or group.")
        object_id = value.get("id")
        if not isinstance(object_id, str) or _ID.match(object_id) is None:
            raise InvalidInput(f"{path}.id", "An id: letters, digits, - and _, 255 at most.")
        collection_id = None
        if resource_name == "collection":
            collection_id = object_id
        elif resource_name == "record":
            collection_id = value.get("collection_id", self.collection_id)
            if not isinstance(collection_id, str) or _ID.match(collection_id) is None:
                raise InvalidInput(f"{path}.collection_id", "The id of the record's collection.")
        if resource_name != "record" and "collection_id" in value:
            raise InvalidInput(f"{path}.collection_id", "Records only have a collection_id.")
        self._within(resource_name, collection_id, path)
        data = value.get("data", {})
        if not isinstance(data, Mapping):
            raise InvalidInput(f"{path}.data", "An object: the fields of the object.")
        old = value.get("old")
        if old is not None and not isinstance(old, Mapping):
            raise InvalidInput(f"{path}.old", "An object: the fields of the object before.")
        if old is not None and self.action == "create":
            raise InvalidInput(f"{path}.old", "A created object has no old version.")
        modified = data.get("last_modified")
        new = {**data, "id": object_id}
        new["last_modified"] = modified if isinstance(modified, int) else self.now
        if old is not None:
            old = {**old, "id": object_id}
        return resource_name, collection_id, new, old


class PreviewStore(EventStore):
    """An :class:`EventStore` whose problems go to the preview's answer, not the log."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.problems: list[str] = []

    def truncated(self, uri: str, found: int) -> None:
        self.problems.append(
            f"A hook for {uri} has {found} recipients: it notifies the first"
            f" {self.settings.max_recipients} (kinto.emailer.max_recipients)."
        )

    def skipped(self, what: str, uri: str, error: RenderError) -> None:
        self.problems.append(f"Skipping {what} for {uri}: {error}")


@dataclass
class Preview:
    """What a preview found: its answer (JSON), and the messages it shows, for
    ``send_to_me``."""

    answer: dict[str, Any]
    drafts: list[messages.Draft] = field(default_factory=list)


def work_out(
    asked: Asked,
    base: Mapping[str, Any],
    storage: Any,
    settings: EmailerSettings,
    readable: Callable[[str], bool],
    made_at: datetime,
) -> Preview:
    """What ``asked`` would cause, for a change whose shared placeholders are ``base``.

    ``readable`` says whether the caller may read a group (by its URI): members of the
    groups they may not read are counted, never shown.
    """
    store = PreviewStore(storage, asked.bucket_id, settings, made_at)
    matches: list[listener.Match] = []
    unmatched = []
    for impacted in asked.impacted:
        context = listener.object_context(base, impacted)
        failed = _failed(asked, context, store)
        if failed:
            unmatched.append({"uri": context["uri"], "failed": failed})
        else:
            matches.append((asked.scope, asked.hook, context, asked.hook.non_editable))
    notices = list(listener.notices_of(matches, store))
    keys = {notice.recipient for notice in notices}
    chosen = PreferenceStore(storage).read_many(keys) if keys else {}
    shown, unseen = _audience(asked.hook, [m[2] for m in matches], store, readable)
    answer = _Answer(settings, {m[2]["uri"] for m in matches}, unseen)
    for notice in notices:
        if notice.recipient in shown:
            answer.add(notice, chosen.get(notice.recipient, Preferences()))
        else:
            answer.hide(notice)
    return Preview(
        {
            "scope": asked.scope,
            "hook": asked.index,
            "action": asked.action,
            "event": asked.event,
            "matches": bool(matches),
            "matched": [m[2]["uri"] for m in matches],
            "unmatched": unmatched,
            **answer.to_json(),
            "problems": store.problems,
        },
        answer.drafts,
    )


def _failed(asked: Asked, context: Mapping[str, Any], store: EventStore) -> list[dict[str, Any]]:
    """Why the hook does not fire for the object of ``context``: each filter it fails,
    with the hook's value and the change's."""
    facts = listener.facts_of(context, asked.names)
    failed = []
    if asked.collection_id is None:
        # A collection whose metadata holds hooks uses its own, never the bucket's.
        place, _ = store.place(context)
        if place != asked.scope:
            failed.append({"filter": "scope", "hook": asked.scope, "change": [place]})
    for problem in asked.hook.failed(facts):
        change = list(facts.get(problem.field, ()))
        failed.append({"filter": problem.field, "hook": problem.value, "change": change})
    return failed


Unseen = dict[str, dict[str, set[str]]]
"""By group URI, the recipients that each of its members stands for."""


def _audience(
    hook: Hook,
    contexts: Iterable[Mapping[str, Any]],
    store: EventStore,
    readable: Callable[[str], bool],
) -> tuple[set[str], Unseen]:
    """Whom the caller may know that ``hook`` reaches about the objects of ``contexts``:
    the recipients (lowercased addresses and inbox keys) of its own addresses and of
    the groups they may read; and, member by member, those of the groups they may not
    read."""
    shown: set[str] = set()
    unseen: Unseen = {}
    for context in contexts:
        for recipient in hook.recipients:
            reached = _reached(recipient, context, store)
            if not recipients.is_group_uri(recipient):
                shown |= reached
                continue
            try:
                uri = templates.render(recipient, context)
            except RenderError:
                continue
            match = recipients.GROUP_URI.match(uri)
            if match is None or match["bucket_id"] != store.bucket_id:
                continue  # Reaches nobody.
            if readable(uri):
                shown |= reached
                continue
            members = unseen.setdefault(uri, {})
            for member in store.group_members(match["group_id"]):
                alone = _reached(recipient, context, store, lambda _, m=member: [m])
                members.setdefault(member, set()).update(alone)
    return shown, unseen


def _reached(
    recipient: str,
    context: Mapping[str, Any],
    store: EventStore,
    group_members: Callable[[str], list[str]] | None = None,
) -> set[str]:
    """Whom one recipient of a hook reaches about one object, by mail and on the web;
    ``group_members``: a group's members, if not those stored."""
    settings = store.settings
    group_members = group_members or store.group_members

    def rendered(uri: str) -> str:
        return templates.render(uri, context)

    try:
        mailboxes = recipients.expand(
            [recipient], rendered, store.bucket_id, group_members, settings.allowed_domains
        )
        keys = recipients.inbox_keys(
            [recipient],
            rendered,
            store.bucket_id,
            group_members,
            settings.allowed_domains,
            settings.verified_principals,
        )
    except (RenderError, ValueError):
        return set()
    return {m.lowercase_address for m in mailboxes} | set(keys)


def shown_message(draft: messages.Draft, layout: str | None) -> dict[str, Any]:
    """A message as it would be sent: its headers, its text and its HTML (or None)."""
    parsed = email.message_from_bytes(messages.build(draft, layout).data, policy=policy.default)
    text = parsed.get_body(("plain",))
    markup = parsed.get_body(("html",))
    return {
        "uri": draft.uri,
        "from": str(draft.sender),
        "to": str(draft.recipient),
        "subject": draft.subject,
        "headers": {name: str(value) for name, value in parsed.items()},
        "text": _content(text),
        "html": None if markup is None else _content(markup),
    }


def _content(part: Any) -> str:
    return str(part.get_content()).replace("\r\n", "\n")


def _shown_notification(notification: inbox.Notification) -> dict[str, Any]:
    return {
        "subject": notification.subject,
        "body": notification.body,
        "uri": notification.uri,
        "link": notification.link,
        "scope": notification.scope,
    }


class _Answer:
    """The messages and notifications of a preview, within its bounds."""

    def __init__(self, settings: EmailerSettings, uris: set[str], unseen: Unseen) -> None:
        self.settings = settings
        self.uris = uris
        """Of the objects."""
        self.unseen = unseen
        self.states: dict[str, dict[str, int]] = {"email": {}, "web": {}}
        self.shown: dict[str, list[dict[str, Any]]] = {"email": [], "web": []}
        self.omitted = {"email": 0, "web": 0}
        self.chars = 0
        self.drafts: list[messages.Draft] = []
        self.hidden: set[str] = set()
        """Recipients of the notices not shown."""
        self.samples: dict[str, dict[str, Any]] = {}

    def _linked(self, notice: Notice, preferences: Preferences) -> messages.Draft:
        return listener.linked(notice, preferences, self.settings.secret, token=TOKEN)

    def _room(self, channel: str, size: int) -> bool:
        shown = self.shown[channel]
        if shown and (len(shown) >= MAX_SHOWN or self.chars + size > MAX_SHOWN_CHARS):
            self.omitted[channel] += 1
            return False
        self.chars += size
        return True

    def add(self, notice: AnyNotice, preferences: Preferences) -> None:
        state = listener.decide(notice, preferences)
        channel = notice.channel
        self.states[channel][state] = self.states[channel].get(state, 0) + 1
        if not self._room(channel, notice.size):
            return
        who = "inbox" if isinstance(notice, WebNotice) else "recipient"
        # A notice about another URI than the objects' is a summary of them.
        entry = {who: notice.recipient, "state": state, "grouped": _uri(notice) not in self.uris}
        if isinstance(notice, WebNotice):
            entry.update(_shown_notification(notice.notification))
        else:
            # Mail kept for a digest goes in the digest's email, with its links.
            draft = self._linked(notice, preferences) if state == listener.NOW else notice.draft
            entry.update(shown_message(draft, self.settings.html_layout))
            self.drafts.append(draft)
        self.shown[channel].append(entry)

    def hide(self, notice: AnyNotice) -> None:
        """A notice to a member of groups that the caller may not read: its members are
        counted, and the first notice of each group on each channel shown, addressed to
        no one."""
        self.hidden.add(notice.recipient)
        for uri, members in self.unseen.items():
            if not any(notice.recipient in reached for reached in members.values()):
                continue
            sample = self.samples.setdefault(uri, {})
            if isinstance(notice, WebNotice):
                sample.setdefault("notification", _shown_notification(notice.notification))
            elif "message" not in sample:
                anyone = Mailbox(f"A member of {uri}", "member@example.invalid")
                # Linked as for a recipient who chose nothing: theirs are not shown.
                draft = replace(
                    self._linked(notice, Preferences()),
                    recipient=anyone,
                    key=messages.idempotency_key(TOKEN, uri, uuid.uuid4()),
                )
                sample["message"] = shown_message(draft, self.settings.html_layout)
                self.drafts.append(draft)

    def to_json(self) -> dict[str, Any]:
        hidden = []
        for uri, members in self.unseen.items():
            count = sum(1 for reached in members.values() if reached & self.hidden)
            if count:
                hidden.append({"group": uri, "members": count, **self.samples.get(uri, {})})
        return {
            "states": self.states,
            "messages": self.shown["email"],
            "notifications": self.shown["web"],
            "omitted": {"messages": self.omitted["email"], "notifications": self.omitted["web"]},
            "hidden": hidden,
        }


def _uri(notice: AnyNotice) -> str:
    return notice.notification.uri if isinstance(notice, WebNotice) else notice.draft.uri


def for_me(preview: Preview, address: str, made_at: datetime) -> list[messages.Draft]:
    """The first messages of ``preview``, to ``address`` only, marked as previews."""
    mailbox = recipients.parse_mailbox(address)
    return [
        replace(
            draft,
            recipient=mailbox,
            subject=SUBJECT_MARK + draft.subject,
            created=made_at,
            # Each its own message: a preview mailed again is mailed again.
            key=messages.idempotency_key(TOKEN, address, uuid.uuid4()),
        )
        for draft in preview.drafts[:SENT_TO_ME]
    ]
