"""``GET /v1/buckets/<bucket>/emailer/log``: the delivery log of a bucket's objects, for
those who may write the bucket (see :mod:`kinto_emailer.deliverylog`).

Kinto's own authorization decides, as for a ``PATCH`` of the bucket: a reader gets 403,
an anonymous request 401, whether the bucket exists or not. Lists follow Kinto's
conventions: ``_limit`` (at most ``storage_max_fetch_size``, ``paginate_by`` by
default), ``Next-Page`` with a ``_token``, and ``HEAD`` for the count, in
``Total-Records`` (and ``Total-Objects``).
"""

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Any

from kinto.core import Service
from kinto.core.errors import raise_invalid
from pyramid.request import Request
from pyramid.response import Response

from kinto_emailer import recipients
from kinto_emailer.deliverylog import STATES, Query, micros
from kinto_emailer.permissions import Writers


ROUTE = "emailer-log"
PATH = "/buckets/{bucket_id}/emailer/log"
MAX_URI = 1024
"""Characters of a ``uri`` filter: longer than any URI of an object (Kinto's ids are
short), shorter than what would make a costly query."""
FILTERS = ("recipient", "uri", "state")
PAGING = ("_limit", "_token")
LATEST = micros(datetime(9999, 12, 31, tzinfo=UTC))
"""The latest time a page token may hold (as every time, in microseconds)."""
MAX_KEY = 256


def _invalid(request: Request, name: str, description: str) -> None:
    raise_invalid(request, location="querystring", name=name, description=description)


def _limit(request: Request) -> int:
    settings = request.registry.settings
    most = int(settings["storage_max_fetch_size"])
    text = request.GET.get("_limit")
    if text is None:
        return min(int(settings.get("paginate_by") or most), most)
    if not text.isdigit() or int(text) < 1:
        _invalid(request, "_limit", "A positive integer.")
    return min(int(text), most)


def _token(position: tuple[int, str]) -> str:
    text = json.dumps({"time": position[0], "key": position[1]})
    return base64.urlsafe_b64encode(text.encode()).decode()


def _position(request: Request) -> tuple[int, str] | None:
    token = request.GET.get("_token")
    if token is None:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        moment, key = data["time"], data["key"]
    except (ValueError, TypeError, KeyError, binascii.Error):
        moment = key = None
    if not (
        type(moment) is int
        and 0 <= moment <= LATEST
        and isinstance(key, str)
        and len(key) <= MAX_KEY
    ):
        _invalid(request, "_token", "_token has invalid content: use the Next-Page header.")
    return moment, key


def _query(request: Request) -> Query:
    """The entries asked for; 400 naming the first parameter that is wrong or unknown."""
    for name in request.GET:
        if name not in FILTERS + PAGING:
            _invalid(request, name, f"Unknown parameter: use {', '.join(FILTERS + PAGING)}.")
    recipient = request.GET.get("recipient")
    if recipient is not None:
        try:
            recipient = recipients.address_of(recipient)
        except ValueError as e:
            _invalid(request, "recipient", str(e))
    uri = request.GET.get("uri")
    if uri is not None and len(uri) > MAX_URI:
        _invalid(request, "uri", f"At most {MAX_URI} characters.")
    states = None
    if "state" in request.GET:
        states = frozenset(request.GET["state"].split(","))
        if not states <= set(STATES):
            _invalid(request, "state", f"States separated by commas, of {', '.join(STATES)}.")
    return Query(
        bucket=request.matchdict["bucket_id"],
        recipient=recipient,
        uri=uri,
        states=states,
        limit=_limit(request),
        before=_position(request),
    )


def log_get(request: Request) -> Any:
    """The entries, newest first, a page at a time (Pyramid routes ``HEAD`` here too)."""
    if request.method == "HEAD":
        return log_head(request)
    query = _query(request)
    page = request.registry.emailer_delivery.log.page(query)
    if page.more:
        arguments = {**request.GET, "_limit": str(query.limit)}
        arguments["_token"] = _token(page.entries[-1].position)
        request.response.headers["Next-Page"] = request.current_route_url(_query=arguments)
    return {"data": [entry.to_json() for entry in page.entries]}


def log_head(request: Request) -> Response:
    """How many entries there are (as on Kinto's lists: counting costs more than a page)."""
    total = str(request.registry.emailer_delivery.log.count(_query(request)))
    return Response(headerlist=[("Total-Records", total), ("Total-Objects", total)])


log = Service(
    name=ROUTE,
    path=PATH,
    description="What became of the messages about a bucket's objects",
    factory=Writers,
    # As Kinto's lists: scripts of other origins read the pages and the count.
    cors_headers=("Next-Page", "Total-Records", "Total-Objects"),
)
log.add_view("GET", log_get, permission="write")


def includeme(config: Any) -> None:
    config.add_cornice_service(log)
