"""What each recipient chose to receive, kept in Kinto's storage backend.

One object per address (resource ``emailer-preferences``), so that every Kinto node and
worker sees the same choices, on PostgreSQL as on the memory backend. For each scope
(the bucket or collection holding the hooks) that mailed the address, it keeps the
hooks' cadence, whether the hooks lock it, and the recipient's own choice, if any; and
whether the address stopped all mail from the server (``suppressed``).

Every writer changes an object through :meth:`PreferenceStore.update`, a read-modify-write
under a lock of the address: what a recipient chose while mail to them was worked out is
never written over. Workers only record their scopes' cadence and lock, never a choice.
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


RESOURCE = "emailer-preferences"
PARENT = "/emailer"
CADENCES = ("immediate", "daily", "weekly")
CHOICES = (*CADENCES, "off")


@dataclass(frozen=True)
class Scope:
    """One source of mail for one recipient."""

    default: str = "immediate"
    """The cadence the hooks set."""
    locked: bool = False
    """Set by a ``non_editable`` hook: the recipient's choice does not apply."""
    choice: str | None = None
    """The recipient's choice: a cadence, or ``off``."""

    @property
    def cadence(self) -> str:
        """What the recipient gets: a cadence, or ``off``."""
        if self.locked or self.choice is None:
            return self.default
        return self.choice

    def to_json(self) -> dict[str, Any]:
        return {"default": self.default, "locked": self.locked, "choice": self.choice}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Scope":
        return cls(str(data["default"]), bool(data["locked"]), data.get("choice"))


Scopes = dict[str, Scope]


@dataclass(frozen=True)
class Preferences:
    """Everything one address chose."""

    scopes: Scopes = field(default_factory=dict)
    suppressed: bool = False
    """No mail at all but that of locked hooks, from any scope, known yet or not."""

    def to_json(self) -> dict[str, Any]:
        return {
            "scopes": {uri: scope.to_json() for uri, scope in self.scopes.items()},
            "suppressed": self.suppressed,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Preferences":
        scopes = {uri: Scope.from_json(s) for uri, s in data["scopes"].items()}
        return cls(scopes, bool(data.get("suppressed", False)))


def web_wanted(preferences: Preferences, scope: str, locked: bool) -> bool:
    """Whether web notifications of ``scope`` reach an address with ``preferences``: what
    it chose for the scope's mail (``off``, or all mail stopped) applies to them too; a
    locked hook's always do."""
    if locked:
        return True
    stored = preferences.scopes.get(scope)
    return not preferences.suppressed and (stored is None or stored.choice != "off")


def object_id(address: str) -> str:
    """The id of an address's object: addresses are not valid Kinto ids."""
    return hashlib.sha256(address.lower().encode()).hexdigest()[:32]


def record_scopes(recorded: Mapping[str, Scope], preferences: Preferences) -> Preferences:
    """``preferences`` with the cadence and lock of ``recorded``'s scopes, as their hooks
    set them; the recipient's choices and suppression kept."""
    scopes = dict(preferences.scopes)
    for uri, scope in recorded.items():
        stored = scopes.get(uri)
        scopes[uri] = replace(scope, choice=stored.choice if stored else None)
    return replace(preferences, scopes=scopes)


class LockedScope(ValueError):
    """The hooks of this scope do not let recipients change what they get."""


def choose(scopes: Scopes, scope: str, choice: str | None, known: bool = True) -> Scopes:
    """``scopes`` with ``choice`` for ``scope``; LockedScope or ValueError if not allowed.

    A scope not in ``scopes`` is a KeyError, unless ``known`` is False: a signed link
    names it (it did mail the address, whatever storage lost since).
    """
    if choice is not None and choice not in CHOICES:
        raise ValueError(f"{choice!r} is not one of {', '.join(CHOICES)}")
    current = scopes.get(scope)
    if current is None:
        if known:
            raise KeyError(scope)
        current = Scope()
    if current.locked:
        raise LockedScope(scope)
    return {**scopes, scope: replace(current, choice=choice)}


# Kinto's memory backend lives in one process: a process lock is enough there.
_MEMORY_LOCK = threading.Lock()
# A transaction lock of the address, held until commit; unlike a row lock, it also
# serializes the writers of an address that has no object yet.
ADDRESS_LOCK = "SELECT pg_advisory_xact_lock(hashtext(%(key)s))"
# Several at once, in the order of the locks themselves (two addresses may share one).
ADDRESS_LOCKS = """
SELECT pg_advisory_xact_lock(lock) FROM (
    SELECT DISTINCT hashtext(key) AS lock FROM unnest(%(keys)s::text[]) AS key
     ORDER BY lock OFFSET 0
) AS locks
"""


def _lock_key(address: str) -> str:
    return f"{RESOURCE}/{object_id(address)}"


class PreferenceStore:
    """Reads and writes preferences through Kinto's storage backend (its transaction)."""

    def __init__(self, storage: Any) -> None:
        self.storage = storage

    def _on_postgresql(self) -> bool:
        return type(self.storage).__module__ == "kinto.core.storage.postgresql"

    def _execute(self, query: str, parameters: dict[str, Any]) -> None:
        with self.storage.client.connect() as session:
            connection = session.connection().connection.driver_connection
            with connection.cursor() as cursor:
                cursor.execute(query, parameters)

    @contextlib.contextmanager
    def _locked(self, address: str) -> Iterator[None]:
        if not self._on_postgresql():
            with _MEMORY_LOCK:
                yield
            return
        self._execute(ADDRESS_LOCK, {"key": _lock_key(address)})
        yield

    def lock(self, addresses: Iterable[str]) -> None:
        """On PostgreSQL, hold the locks of ``addresses`` until the transaction ends, taken
        at once: whatever order later updates come in, they wait for no one, and two
        transactions that lock this way never wait for each other in a cycle."""
        if self._on_postgresql():
            self._execute(ADDRESS_LOCKS, {"keys": sorted({_lock_key(a) for a in addresses})})

    def read_many(self, addresses: Iterable[str]) -> dict[str, Preferences]:
        """The preferences of each address that has any, in one query."""
        ids = [object_id(a) for a in addresses]
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
        return {obj["email"]: Preferences.from_json(obj) for obj in objects}

    def read(self, address: str) -> Preferences:
        return self.read_many([address]).get(address.lower(), Preferences())

    def update(self, address: str, change: Callable[[Preferences], Preferences]) -> Preferences:
        """Store ``change`` of what ``address`` has now, under the address's lock; the result.

        On PostgreSQL the lock is held until the current transaction ends: a transaction
        that updates several addresses takes their locks first, with :meth:`lock`.
        """
        with self._locked(address):
            current = self.read(address)
            updated = change(current)
            if updated != current:
                obj = {"email": address.lower(), **updated.to_json()}
                self.storage.update(
                    resource_name=RESOURCE, parent_id=PARENT, object_id=object_id(address), obj=obj
                )
        return updated

    def delete(self, address: str) -> None:
        """Forget everything ``address`` chose, and every scope that mailed it."""
        with self._locked(address), contextlib.suppress(ObjectNotFoundError):
            self.storage.delete(
                resource_name=RESOURCE,
                parent_id=PARENT,
                object_id=object_id(address),
                with_deleted=False,
            )
