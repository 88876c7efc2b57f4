"""What each recipient chose to receive, kept in Kinto's storage backend.

One object per recipient (resource ``emailer-preferences``), so that every Kinto node and
worker sees the same choices, on PostgreSQL as on the memory backend. A recipient is an
inbox key (see :func:`kinto_emailer.recipients.inbox_key`): an address, lowercased, or
the principal of a group member whose user id names no address (``account:bob``), who
gets web notifications only. For each scope (the bucket or collection holding the hooks)
that notified the recipient, it keeps one cell per channel the scope used, as Open edX's
grid of preferences: the hooks' default, whether the hooks lock it, and the recipient's
own choice, if any; and whether the address stopped all mail from the server
(``suppressed``).

Every writer changes an object through :meth:`PreferenceStore.update`, a read-modify-write
under a lock of the recipient: what a recipient chose while their notifications were
worked out is never written over. Workers only record their scopes' defaults and locks,
cell by cell, never a choice.
"""

import contextlib
import hashlib
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from kinto.core.storage import Filter
from kinto.core.storage.exceptions import ObjectNotFoundError
from kinto.core.utils import COMPARISON

from kinto_emailer import storagesql


RESOURCE = "emailer-preferences"
PARENT = "/emailer"
CADENCES = ("immediate", "daily", "weekly")
CHOICES = (*CADENCES, "off")
CHANNELS = ("email", "web")
"""Where notifications go: mail, and the feed of ``/v1/emailer/notifications``."""

Value = str | bool
"""What one channel brings: a cadence or ``off`` for email; on (true) or off for web."""
VALUES: dict[str, tuple[Value, ...]] = {"email": CHOICES, "web": (True, False)}
OFF: dict[str, Value] = {"email": "off", "web": False}
DEFAULTS: dict[str, Value] = {"email": "immediate", "web": True}
"""Of a channel whose hooks set nothing: hooks set the cadence of their email only."""


def valid(channel: str, value: object) -> bool:
    """Whether ``value`` is one of ``channel``'s (``1`` is not ``true``, nor ``"on"``)."""
    return any(type(value) is type(v) and value == v for v in VALUES[channel])


@dataclass(frozen=True)
class Cell:
    """One channel of one scope, for one recipient."""

    default: Value
    """What the hooks set: their cadence for email; on for web."""
    locked: bool = False
    """Set by ``non_editable`` hooks: the recipient's choice does not apply."""
    choice: Value | None = None
    """The recipient's own choice."""

    @property
    def value(self) -> Value:
        """What the recipient gets on this channel."""
        if self.locked or self.choice is None:
            return self.default
        return self.choice

    def to_json(self) -> dict[str, Any]:
        return {"default": self.default, "locked": self.locked, "choice": self.choice}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Cell":
        return cls(data["default"], bool(data["locked"]), data.get("choice"))


@dataclass(frozen=True)
class Scope:
    """One source of notifications for one recipient: a cell per channel it used."""

    cells: Mapping[str, Cell] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {channel: cell.to_json() for channel, cell in self.cells.items()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Scope":
        if "default" in data:
            # Stored before the web channel: the email cell's fields, alone.
            return cls({"email": Cell.from_json(data)})
        return cls({c: Cell.from_json(data[c]) for c in CHANNELS if c in data})


Scopes = dict[str, Scope]


@dataclass(frozen=True)
class Preferences:
    """Everything one recipient chose."""

    scopes: Scopes = field(default_factory=dict)
    suppressed: bool = False
    """No mail at all but that of locked hooks, from any scope, known yet or not (web
    notifications are not mail)."""

    def cell(self, scope: str, channel: str) -> Cell | None:
        """The cell of ``scope`` and ``channel``; None where nothing came that way yet."""
        stored = self.scopes.get(scope)
        return None if stored is None else stored.cells.get(channel)

    def to_json(self) -> dict[str, Any]:
        return {
            "scopes": {uri: scope.to_json() for uri, scope in self.scopes.items()},
            "suppressed": self.suppressed,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Preferences":
        scopes = {uri: Scope.from_json(s) for uri, s in data["scopes"].items()}
        return cls(scopes, bool(data.get("suppressed", False)))


SUPPRESSED = "suppressed"
"""Why an email does not come: its recipient stopped all mail (see :func:`verdict`)."""


def verdict(preferences: Preferences, scope: str, channel: str, hook: Cell) -> Value:
    """What a hook (``hook``: its default and whether it locks ``channel``) brings the
    recipient of ``preferences`` from ``scope`` on ``channel``: a cadence for email, true
    for web; or why nothing: the channel's off value (``off``, false) when the recipient
    turned it off for the scope, :data:`SUPPRESSED` when they stopped all mail. A locked
    hook's always comes.

    Each channel obeys its own cell: web off stops no email, email off no web
    notification; stopping all mail (``suppressed``) stops email only.
    """
    stored = preferences.cell(scope, channel)
    value = replace(hook, choice=None if stored is None else stored.choice).value
    if value == OFF[channel]:
        return value
    if channel == "email" and preferences.suppressed and not hook.locked:
        return SUPPRESSED
    return value


def delivered(preferences: Preferences, scope: str, channel: str, hook: Cell) -> Value | None:
    """What :func:`verdict` brings; None when nothing comes."""
    value = verdict(preferences, scope, channel, hook)
    return None if value in (OFF[channel], SUPPRESSED) else value


def object_id(key: str) -> str:
    """The id of a recipient's object (addresses and principals are no valid Kinto ids).

    ``key`` as :func:`kinto_emailer.recipients.inbox_key` gives it: an address lowercased
    by the caller, a principal as it is (principals are case-sensitive)."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


Recorded = Mapping[str, Mapping[str, Cell]]
"""Cells as hooks set them (no choice), by scope and channel."""


def record_scopes(recorded: Recorded, max_scopes: int, preferences: Preferences) -> Preferences:
    """``preferences`` with the defaults and locks of ``recorded``'s cells; the recipient's
    choices, their other cells and suppression kept.

    Past ``max_scopes`` scopes, scopes where the recipient chose nothing, other than
    ``recorded``'s, are forgotten: anyone may make hooks that notify anyone, from as many
    scopes as they like. What a recipient chose stays; a scope forgotten is recorded
    again when it notifies again, and the links of its emails still work.
    """
    scopes = dict(preferences.scopes)
    for uri, cells in recorded.items():
        stored = scopes.get(uri, Scope())
        updated = dict(stored.cells)
        for channel, cell in cells.items():
            before = stored.cells.get(channel)
            updated[channel] = replace(cell, choice=None if before is None else before.choice)
        scopes[uri] = Scope(updated)
    excess = len(scopes) - max_scopes
    if excess > 0:
        unchosen = [
            uri
            for uri, scope in scopes.items()
            if uri not in recorded and all(c.choice is None for c in scope.cells.values())
        ]
        for uri in unchosen[:excess]:
            del scopes[uri]
    return replace(preferences, scopes=scopes)


class LockedScope(ValueError):
    """The hooks of this scope do not let recipients change what they get on a channel."""


class NotSent(LookupError):
    """Nothing came to the recipient from this scope, or not on this channel."""


def choose(
    scopes: Scopes, scope: str, channel: str, choice: Value | None, known: bool = True
) -> Scopes:
    """``scopes`` with ``choice`` for ``channel`` of ``scope`` (None: the hooks' default);
    ValueError for a value that is not the channel's, LockedScope for a change of a locked
    cell (choosing again what it holds changes nothing, and passes).

    A cell not in ``scopes`` is NotSent, unless ``known`` is False: a signed link names
    its scope (it did mail the address, whatever storage lost since).
    """
    if choice is not None and not valid(channel, choice):
        values = ", ".join(str(v).lower() for v in VALUES[channel])
        raise ValueError(f"{choice!r} is not one of {values}")
    current = scopes.get(scope, Scope())
    cell = current.cells.get(channel)
    if cell is None:
        if known:
            raise NotSent(scope, channel)
        cell = Cell(DEFAULTS[channel])
    if cell.locked and choice != cell.choice:
        raise LockedScope(scope, channel)
    return {**scopes, scope: Scope({**current.cells, channel: replace(cell, choice=choice)})}


def cleared(preferences: Preferences) -> Preferences:
    """``preferences`` with every choice that may change undone, and mail resumed: what
    the hooks set, as for a recipient who never chose."""
    scopes = {
        uri: Scope(
            {
                channel: cell if cell.locked else replace(cell, choice=None)
                for channel, cell in scope.cells.items()
            }
        )
        for uri, scope in preferences.scopes.items()
    }
    return Preferences(scopes, suppressed=False)


# Kinto's memory backend lives in one process: a process lock is enough there.
_MEMORY_LOCK = threading.Lock()
# A transaction lock of the recipient, held until commit; unlike a row lock, it also
# serializes the writers of a recipient that has no object yet.
KEY_LOCK = "SELECT pg_advisory_xact_lock(hashtext(%(key)s))"
# Several at once, in the order of the locks themselves (two recipients may share one).
KEY_LOCKS = """
SELECT pg_advisory_xact_lock(lock) FROM (
    SELECT DISTINCT hashtext(key) AS lock FROM unnest(%(keys)s::text[]) AS key
     ORDER BY lock OFFSET 0
) AS locks
"""
KEY_FIELD = "key"
"""The recipient's key, in its object; ``email`` in objects stored before the web channel."""


def _lock_key(key: str) -> str:
    return f"{RESOURCE}/{object_id(key)}"


class PreferenceStore:
    """Reads and writes preferences through Kinto's storage backend (its transaction).

    Recipients are named by their key (see :func:`object_id`).
    """

    def __init__(self, storage: Any) -> None:
        self.storage = storage

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        if not storagesql.on_postgresql(self.storage):
            with _MEMORY_LOCK:
                yield
            return
        storagesql.execute(self.storage, KEY_LOCK, {"key": _lock_key(key)})
        yield

    def lock(self, keys: Iterable[str]) -> None:
        """On PostgreSQL, hold the locks of ``keys`` until the transaction ends, taken at
        once: whatever order later updates come in, they wait for no one, and two
        transactions that lock this way never wait for each other in a cycle."""
        if storagesql.on_postgresql(self.storage):
            locks = sorted({_lock_key(k) for k in keys})
            storagesql.execute(self.storage, KEY_LOCKS, {"keys": locks})

    def read_many(self, keys: Iterable[str]) -> dict[str, Preferences]:
        """The preferences of each recipient that has any, in one query."""
        ids = [object_id(k) for k in keys]
        if len(ids) == 1:
            # The usual case, and a plain lookup: cheaper than a filtered listing.
            try:
                objects = [
                    self.storage.get(resource_name=RESOURCE, parent_id=PARENT, object_id=ids[0])
                ]
            except ObjectNotFoundError:
                objects = []
        else:
            objects = self.storage.list_all(
                resource_name=RESOURCE,
                parent_id=PARENT,
                filters=[Filter("id", ids, COMPARISON.IN)],
            )
        return {obj.get(KEY_FIELD) or obj["email"]: Preferences.from_json(obj) for obj in objects}

    def read(self, key: str) -> Preferences:
        return self.read_many([key]).get(key, Preferences())

    def update(self, key: str, change: Callable[[Preferences], Preferences]) -> Preferences:
        """Store ``change`` of what ``key`` has now, under the recipient's lock; the result.

        On PostgreSQL the lock is held until the current transaction ends: a transaction
        that updates several recipients takes their locks first, with :meth:`lock`.
        """
        with self._locked(key):
            current = self.read(key)
            updated = change(current)
            if updated != current:
                obj = {KEY_FIELD: key, **updated.to_json()}
                self.storage.update(
                    resource_name=RESOURCE, parent_id=PARENT, object_id=object_id(key), obj=obj
                )
        return updated

    def delete(self, key: str) -> None:
        """Forget everything ``key`` chose, and every scope that notified it."""
        with self._locked(key), contextlib.suppress(ObjectNotFoundError):
            self.storage.delete(
                resource_name=RESOURCE,
                parent_id=PARENT,
                object_id=object_id(key),
                with_deleted=False,
            )
