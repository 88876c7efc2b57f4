"""The web channel's API: ``/v1/emailer/notifications``, each user's own inbox.

A Kinto resource, so that paging (``_limit``, ``Next-Page``), counts (``Total-Objects``
on ``HEAD``), ``ETag``/``If-None-Match``, ``_since`` and filters work as on records. Its
parent is the reader's inbox, never taken from the request: another user's ids answer
404, as ids that never were. Readers may only mark a notification read (or unread), or
delete it.
"""

from typing import Any

from kinto.core import resource
from kinto.core.authorization import PRIVATE
from kinto.core.errors import ERRORS, http_error, raise_invalid
from kinto.core.resource.model import Model
from kinto.core.resource.viewset import ViewSet
from kinto.core.storage import Filter, KintoObject, Sort
from kinto.core.storage.exceptions import ObjectNotFoundError
from kinto.core.utils import COMPARISON, native_value
from pyramid.httpexceptions import HTTPUnsupportedMediaType
from pyramid.request import Request
from pyramid.security import NO_PERMISSION_REQUIRED

from kinto_emailer import inbox, recipients
from kinto_emailer.preferences import PreferenceStore
from kinto_emailer.views import reader


PATH = "/emailer/notifications"
READ_ALL_ROUTE = "emailer-notifications-read"
USER_DATA_ROUTE = "user-data-object"
"""Kinto's ``DELETE /v1/__user_data__/<principal>``."""
WRITABLE = inbox.READ
"""The one field readers change."""
_ABSENT = object()


def reader_key(request: Request) -> str:
    """The inbox of the authenticated user (see :func:`views.reader`); 401 for anonymous
    requests."""
    return reader(request)[0]


class FeedViewSet(ViewSet):
    # Every authenticated user reaches only their own inbox: no permission rows.
    default_arguments = {**ViewSet.default_arguments, "permission": PRIVATE}


@resource.register(
    name=inbox.RESOURCE,
    plural_path=PATH,
    object_path=f"{PATH}/{{{{id}}}}",
    plural_methods=("HEAD", "GET"),
    object_methods=("GET", "PATCH", "DELETE"),
    viewset=FeedViewSet(),
)
class Feed(resource.Resource):
    def default_model(self, **kwargs: Any) -> Model:  # type: ignore[override]
        # Kinto names storage after the class: the inbox module names it.
        store = inbox.InboxStore(
            self.request.registry.storage, self.request.registry.emailer_settings
        )
        return FeedModel(
            store, reader_key(self.request), **{**kwargs, "resource_name": inbox.RESOURCE}
        )

    def get_parent_id(self, request: Request) -> str:
        return inbox.parent_id(reader_key(request))

    def _extract_sorting(self, limit: int) -> list[Sort]:
        if not self.request.validated["querystring"].get("_sort"):
            # Ids are unique: Kinto's last_modified after them, which no index of
            # notifications holds, would order nothing.
            return inbox.NEWEST_FIRST
        return super()._extract_sorting(limit)  # type: ignore[no-any-return]

    def patch(self) -> dict[str, Any]:
        try:
            return super().patch()  # type: ignore[no-any-return]
        except ObjectNotFoundError:
            # Deleted (or pruned) since it was read: as if it had been before.
            raise self._404_for_object(self.object_id) from None

    def _extract_filters(self) -> list[Filter]:
        unread = self.request.validated["querystring"].pop("unread", None)
        filters: list[Filter] = super()._extract_filters()
        if unread is not None:
            unread = native_value(unread)
            if not isinstance(unread, bool):
                raise_invalid(
                    self.request,
                    location="querystring",
                    name="unread",
                    description="true or false",
                )
            filters.append(Filter(WRITABLE, not unread, COMPARISON.EQ))
        return filters

    def process_object(self, new: KintoObject, old: KintoObject | None = None) -> KintoObject:
        """Only ``read`` changes, to true or false; the rest is the server's."""
        new = super().process_object(new, old)
        before = old or {}
        permissions = self.model.permissions_field
        if _granted(new.get(permissions)) != _granted(before.get(permissions)):
            raise_invalid(self.request, name="permissions", description="Only read may change.")
        for field in sorted(new.keys() | before.keys()):
            if field in (WRITABLE, permissions):
                continue
            # The server's own time, unless the client sent one: that never passes.
            if field == self.model.modified_field and field not in new:
                continue
            if new.get(field, _ABSENT) != before.get(field, _ABSENT):
                raise_invalid(
                    self.request, name=f"data.{field}", description="Only read may change."
                )
        if not isinstance(new.get(WRITABLE), bool):
            raise_invalid(self.request, name=f"data.{WRITABLE}", description="true or false.")
        return new


class FeedModel(Model):
    """The notifications of the reader's inbox (Kinto never names another parent here):
    the inbox's counts answer the counts they can, and follow each change of a
    notification, made under the inbox's lock."""

    def __init__(self, store: inbox.InboxStore, key: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.store = store
        self.key = key
        self._timestamp: int | None = None

    def timestamp(self, parent_id: str | None = None) -> int:
        """The inbox's timestamp, read once until a notification changes: Kinto asks for
        it again to announce a read, which changed nothing."""
        if parent_id is not None:
            return super().timestamp(parent_id)  # type: ignore[no-any-return]
        if self._timestamp is None:
            self._timestamp = super().timestamp()
        return self._timestamp

    def count_objects(
        self, filters: list[Filter] | None = None, parent_id: str | None = None
    ) -> int:
        if parent_id is None:
            counted = self.store.counts(self.key).selected(filters or [])
            if counted is not None:
                return counted
        return super().count_objects(filters, parent_id)  # type: ignore[no-any-return]

    def _current(self, obj: KintoObject) -> KintoObject:
        """``obj`` as stored now; ObjectNotFoundError if it is gone."""
        return self.storage.get(  # type: ignore[no-any-return]
            resource_name=self.resource_name,
            parent_id=self.parent_id,
            object_id=obj[self.id_field],
        )

    def update_object(self, obj: KintoObject, parent_id: str | None = None) -> KintoObject:
        with self.store.locked([self.key]):
            before = self._current(obj)
            updated: KintoObject = super().update_object(obj, parent_id)
            self.store.changed(self.key, before, updated)
        self._timestamp = None
        return updated

    def delete_object(
        self, obj: KintoObject, parent_id: str | None = None, last_modified: int | None = None
    ) -> KintoObject:
        with self.store.locked([self.key]):
            before = self._current(obj)
            deleted: KintoObject = super().delete_object(obj, parent_id, last_modified)
            self.store.changed(self.key, before, None)
        self._timestamp = None
        return deleted


def _granted(permissions: Any) -> dict[str, set[str]]:
    """The principals each permission grants, however a patch spelled none."""
    return {
        name: set(principals) for name, principals in (permissions or {}).items() if principals
    }


def read_all(request: Request) -> dict[str, Any]:
    """``POST /v1/emailer/notifications/read``: mark every unread notification read.

    JSON only: a form of another site, which a browser may send with the credentials it
    keeps, cannot do it.
    """
    key = reader_key(request)
    if request.content_type != "application/json":
        raise http_error(
            HTTPUnsupportedMediaType(),
            errno=ERRORS.INVALID_PARAMETERS,
            message="Send it as JSON (Content-Type: application/json).",
        )
    store = inbox.InboxStore(request.registry.storage, request.registry.emailer_settings)
    return {"data": {"marked": store.mark_all_read(key)}}


def forget(registry: Any, principal: str) -> None:
    """Delete the notifications and preferences of ``principal``: those kept for it, and
    those of the address it names (if verified: see :func:`recipients.inbox_key`)."""
    key = recipients.inbox_key(principal, registry.emailer_settings.verified_principals)
    store = inbox.InboxStore(registry.storage, registry.emailer_settings)
    preferences = PreferenceStore(registry.storage)
    for inbox_of in sorted({principal, key}):
        store.delete(inbox_of)
        preferences.delete(inbox_of)


def forgetting_user_data(view: Any, info: Any) -> Any:
    """View deriver: Kinto's ``DELETE /v1/__user_data__/<principal>`` deletes the user's
    notifications and preferences too, in its transaction, once it was allowed."""
    if info.options.get("route_name") != USER_DATA_ROUTE:
        return view

    def deleting(context: Any, request: Request) -> Any:
        response = view(context, request)
        if request.method == "DELETE":
            forget(request.registry, request.matchdict["principal"])
        return response

    return deleting


def includeme(config: Any) -> None:
    # Before the resource's routes: "read" is no notification's id.
    config.add_route(READ_ALL_ROUTE, f"{PATH}/read")
    config.add_view(
        read_all,
        route_name=READ_ALL_ROUTE,
        request_method="POST",
        renderer="json",
        permission=NO_PERMISSION_REQUIRED,
    )
    config.scan("kinto_emailer.feed")
    config.add_view_deriver(forgetting_user_data)
