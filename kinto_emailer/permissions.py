"""Who may use the emailer's views of a bucket or collection: Kinto's own authorization,
as for a ``PATCH`` of it (its inheritance: a bucket's writers write its collections;
and the settings' ``<resource>_<permission>_principals``). A reader gets 403, an
anonymous request 401, whether the object exists or not.
"""

from kinto.authorization import RouteFactory
from pyramid.request import Request

from kinto_emailer.preview import scope_of


class Permission(RouteFactory):  # type: ignore[misc]
    """A ``permission`` on the object at ``uri``, as Kinto checks it."""

    def __init__(self, request: Request, resource_name: str, uri: str, permission: str) -> None:
        super().__init__(request)
        self.resource_name = resource_name
        self.required_permission = permission
        self.permission_object_id = uri
        # Known: Kinto then checks the permission on it, never read on its parent.
        self.current_object = {}


def scope(request: Request) -> tuple[str, str | None]:
    """The bucket id and, under a collection, the collection id of the path."""
    return request.matchdict["bucket_id"], request.matchdict.get("collection_id")


class Writers(Permission):
    """``write`` on the bucket or collection of the path: may change its hooks, see what
    they send (the preview) and what became of it (the delivery log)."""

    def __init__(self, request: Request) -> None:
        bucket_id, collection_id = scope(request)
        resource_name = "bucket" if collection_id is None else "collection"
        super().__init__(request, resource_name, scope_of(bucket_id, collection_id), "write")
