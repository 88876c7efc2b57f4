"""Kinto's storage backend as the plugin sees it.

Hooks are checked when bucket or collection metadata is saved. Kinto notifies
``ResourceChanged`` after the storage backend has written the object, and the memory
backend cannot roll a write back. So the check sits at the storage boundary, where the
final object (after a PATCH, a JSON-Patch or a merge) is known before anything is
written: rejected metadata is never stored, on any backend.

The plugin's own tables are created with Kinto's (``kinto migrate``) and emptied with
its data (``flush``).
"""

import copy
from typing import Any, Protocol

from kinto.core.errors import json_error_handler
from pyramid.httpexceptions import HTTPException
from pyramid.request import Request
from pyramid.threadlocal import get_current_request

from kinto_emailer import hooks
from kinto_emailer.errors import InvalidHook
from kinto_emailer.settings import EmailerSettings


_CHECKED = ("bucket", "collection")


class Tables(Protocol):
    """The plugin's own tables beside Kinto's, if any."""

    def install(self) -> None: ...

    def flush(self) -> None: ...


class EmailerStorage:
    """Kinto's storage backend, checking bucket and collection writes; the rest passes."""

    def __init__(
        self,
        backend: Any,
        settings: EmailerSettings,
        tables: Tables | None = None,
    ) -> None:
        self._backend = backend
        self._settings = settings
        self._tables = tables
        # Only the memory backend hands out objects that a PATCH can change in place.
        self._copies = type(backend).__module__ == "kinto.core.storage.memory"

    def initialize_schema(self, dry_run: bool = False) -> None:
        self._backend.initialize_schema(dry_run=dry_run)
        if self._tables is not None and not dry_run:
            self._tables.install()

    def flush(self) -> None:
        self._backend.flush()
        if self._tables is not None:
            self._tables.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def _check(self, resource_name: str, parent_id: str, object_id: str | None, obj: Any) -> None:
        if resource_name not in _CHECKED:
            return
        if resource_name == "bucket":
            bucket_id = object_id or obj.get("id", "")
        else:
            bucket_id = parent_id.rsplit("/", 1)[-1]
        hooks.validate(obj, bucket_id, self._settings)

    def get(self, resource_name: str, *args: Any, **kw: Any) -> Any:
        obj = self._backend.get(resource_name, *args, **kw)
        # The memory backend returns a shallow copy: a PATCH that merges into nested
        # metadata would change the stored object before the check could refuse it.
        if self._copies and resource_name in _CHECKED and _patching():
            return copy.deepcopy(obj)
        return obj

    def create(self, resource_name: str, parent_id: str, obj: Any, *args: Any, **kw: Any) -> Any:
        self._check(resource_name, parent_id, None, obj)
        return self._backend.create(resource_name, parent_id, obj, *args, **kw)

    def update(
        self, resource_name: str, parent_id: str, object_id: str, obj: Any, *args: Any, **kw: Any
    ) -> Any:
        self._check(resource_name, parent_id, object_id, obj)
        return self._backend.update(resource_name, parent_id, object_id, obj, *args, **kw)


def _patching() -> bool:
    request = get_current_request()
    return request is not None and request.method == "PATCH"


def invalid_hook_view(exc: InvalidHook, request: Request) -> HTTPException:
    """A 400 in Kinto's error format (as ``raise_invalid``), naming the bad value's JSON path."""
    request.errors.add("body", exc.path, exc.description)
    return json_error_handler(request)
