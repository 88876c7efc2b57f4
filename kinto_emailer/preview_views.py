"""``POST /v1/buckets/<bucket>/emailer/preview`` (and the same under a collection): a
hook's preview (see :mod:`kinto_emailer.preview`), for those who may write the bucket
or collection, that is its hooks.

Kinto's own authorization decides, as for a ``PATCH`` of the bucket or collection (its
inheritance: a bucket's writers write its collections): a reader gets 403, an anonymous
request 401, whether it exists or not; a writer, 404 when it does not exist. Group
members are shown to those who may read their group in Kinto (a bucket's writers read
its groups; a collection's writers, only the groups shared with them).
"""

import functools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kinto.core.errors import ERRORS, http_error, raise_invalid
from kinto.core.storage.exceptions import ObjectNotFoundError
from pyramid.httpexceptions import (
    HTTPForbidden,
    HTTPNotFound,
    HTTPRequestEntityTooLarge,
    HTTPTooManyRequests,
)
from pyramid.request import Request

from kinto_emailer import epoch, listener, preview, views
from kinto_emailer.permissions import Permission, Writers, scope
from kinto_emailer.ratelimit import RateLimit


ROUTES = {
    "emailer-preview-bucket": "/buckets/{bucket_id}/emailer/preview",
    "emailer-preview-collection": (
        "/buckets/{bucket_id}/collections/{collection_id}/emailer/preview"
    ),
}
MAX_BODY_BYTES = 1024 * 1024
"""Of a preview's request: its objects' data, a hook's templates and some room."""
PREVIEWS = RateLimit("preview", limit=30, period=60)
"""Previews of one user a minute: the largest (100 objects, 100 recipients, both
channels) drafts 20,000 messages and notifications, about half a second of a core."""
MAILED = RateLimit("preview-mailed", limit=3, period=60)
"""Previews that one user has mailed (``send_to_me``) a minute."""


def _readable(request: Request) -> Callable[[str], bool]:
    """Whether the caller may read the group at a URI, in Kinto."""

    @functools.cache
    def readable(uri: str) -> bool:
        return bool(request.has_permission("read", Permission(request, "group", uri, "read")))

    return readable


def _not_found(request: Request) -> None:
    """404, as Kinto answers its writers, unless the bucket or collection exists."""
    bucket_id, collection_id = scope(request)
    resource_name, parent_id, object_id = "bucket", "", bucket_id
    if collection_id is not None:
        resource_name, parent_id, object_id = "collection", f"/buckets/{bucket_id}", collection_id
    try:
        request.registry.storage.get(
            resource_name=resource_name, parent_id=parent_id, object_id=object_id
        )
    except ObjectNotFoundError:
        raise http_error(
            HTTPNotFound(),
            errno=ERRORS.MISSING_RESOURCE,
            message=f"{resource_name} not found",
            details={"id": object_id, "resource_name": resource_name},
        ) from None


def _send_to_me(request: Request) -> bool:
    for name in request.GET:
        if name != "send_to_me":
            raise_invalid(
                request,
                location="querystring",
                name=name,
                description="Unknown parameter: use send_to_me.",
            )
    value = request.GET.get("send_to_me", "false")
    if value not in ("true", "false"):
        raise_invalid(
            request, location="querystring", name="send_to_me", description="true or false."
        )
    return value == "true"


def _limited(limit: RateLimit, request: Request, user: str, what: str) -> None:
    """429 with ``Retry-After`` when ``user`` is past ``limit``; else one more counted."""
    wait = limit.take(request.registry.cache, user)
    if wait is not None:
        error = http_error(
            HTTPTooManyRequests(),
            errno=ERRORS.CLIENT_REACHED_CAPACITY,
            message=f"At most {limit.limit} {what} a minute: try again in {wait} seconds.",
        )
        error.headers["Retry-After"] = str(wait)
        raise error


def _my_address(request: Request) -> str:
    """The caller's address, as ``/v1/emailer/preferences`` knows it; 403 without one."""
    address = views.reader(request)[1]
    if address is None:
        raise http_error(
            HTTPForbidden(),
            errno=ERRORS.FORBIDDEN,
            message="send_to_me mails previews to your own address only, and your user id"
            f" ({request.prefixed_userid}) names no address this server trusts: only those"
            " of the principal prefixes of kinto.emailer.verified_principals do.",
        )
    return address


def _body(request: Request) -> Any:
    length = request.content_length
    if (length or 0) > MAX_BODY_BYTES or len(request.body) > MAX_BODY_BYTES:
        raise http_error(
            HTTPRequestEntityTooLarge(),
            errno=ERRORS.REQUEST_TOO_LARGE,
            message=f"A preview's request holds at most {MAX_BODY_BYTES} bytes.",
        )
    try:
        return request.json_body
    except ValueError:
        raise_invalid(request, name="body", description="Not valid JSON.")


def preview_post(request: Request) -> dict[str, Any]:
    registry = request.registry
    settings = registry.emailer_settings
    bucket_id, collection_id = scope(request)
    send = _send_to_me(request)
    _not_found(request)
    user = request.prefixed_userid or f"anonymous {request.client_addr}"
    _limited(PREVIEWS, request, user, "previews")
    address = _my_address(request) if send else None
    now = datetime.now(UTC)
    body = _body(request)
    asked = preview.asked(body, bucket_id, collection_id, registry.storage, settings, now)
    if address is not None:
        _limited(MAILED, request, user, "previews mailed (send_to_me)")
    payload = asked.payload(request.prefixed_userid, epoch.ms(now))
    base = listener.request_context(request, payload, asked.event)
    result = preview.work_out(asked, base, registry.storage, settings, _readable(request), now)
    answer = result.answer
    if address is not None:
        drafts = preview.for_me(result, address, now)
        # As other mail: queued, sent, logged and counted.
        registry.emailer_delivery.schedule(drafts)
        answer["sent_to_me"] = {"to": address, "messages": len(drafts)}
    return {"data": answer}


def includeme(config: Any) -> None:
    for route, path in ROUTES.items():
        config.add_route(route, path, factory=Writers)
        config.add_view(
            preview_post,
            route_name=route,
            request_method="POST",
            permission="write",
            renderer="json",
        )
