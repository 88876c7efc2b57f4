# From mozilla/remote-settings at commit 493d7f59cea9445c6d082944271c9e3a61571e68,
# file kinto-remote-settings/src/kinto_remote_settings/changes/views.py.
# Apache License 2.0 (functional/remote_settings/LICENSE); unchanged below.

import logging
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode

import colander
import kinto.core
from kinto.authorization import RouteFactory
from kinto.core import Service, resource
from kinto.core import utils as core_utils
from kinto.core.cornice.validators import colander_validator
from kinto.core.storage import Filter, Sort
from kinto.core.storage import exceptions as storage_exceptions
from kinto.core.storage.memory import extract_object_set
from kinto.core.utils import COMPARISON, instance_uri
from pyramid import httpexceptions
from pyramid.security import NO_PERMISSION_REQUIRED, IAuthorizationPolicy
from zope.interface import implementer

from . import (
    BROADCASTER_ID,
    CHANGES_COLLECTION,
    CHANGES_COLLECTION_PATH,
    CHANGES_RECORDS_PATH,
    CHANGESET_PATH,
    CHANNEL_ID,
    MONITOR_BUCKET,
)
from .utils import bound_limit, change_entry_id, monitored_timestamps


DAY_IN_SECONDS = 24 * 60 * 60
POSTGRESQL_MAX_INTEGER_VALUE = 2**63
JANUARY_1ST_2100 = 4102444800000
positive_big_integer = colander.Range(min=0, max=POSTGRESQL_MAX_INTEGER_VALUE)
timestamp_range = colander.Range(min=0, max=JANUARY_1ST_2100)


logger = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class ChangesModel(object):
    id_field = "id"
    modified_field = "last_modified"
    deleted_field = "deleted"
    permissions_field = "__permissions__"

    def __init__(self, request: Any):
        self.request = request
        self.storage = request.registry.storage

        self.__entries: list[dict[str, Any]] | None = None

    def timestamp(self) -> int:
        if not self._entries():
            return core_utils.msec_time()
        max_value = max([e["last_modified"] for e in self._entries()])
        return max_value

    def get_objects(
        self,
        filters: list[Filter] | None = None,
        sorting: list[Sort] | None = None,
        pagination_rules: list[Any] | None = None,
        limit: int | None = None,
        include_deleted: bool = False,
        parent_id: str | None = None,
    ) -> list[dict[str, Any]]:
        objs, _ = extract_object_set(
            objects=self._entries(),
            filters=filters,
            sorting=sorting,
            pagination_rules=pagination_rules,
            limit=limit,
        )
        return objs

    def _entries(self) -> list[dict[str, Any]]:
        http_host = self.request.registry.settings.get("http_host") or ""

        if self.__entries is None:
            entries = [
                dict(
                    id=change_entry_id(self.request, http_host, bid, cid),
                    last_modified=timestamp,
                    bucket=bid,
                    collection=cid,
                    host=http_host,
                )
                for bid, cid, timestamp in monitored_timestamps(self.request)
            ]
            self.__entries = entries
        return self.__entries


class ChangesSchema(resource.ResourceSchema):
    host = colander.SchemaNode(colander.String())
    bucket = colander.SchemaNode(colander.String())
    collection = colander.SchemaNode(colander.String())

    class Options:
        preserve_unknown = False


@implementer(IAuthorizationPolicy)
class AnonymousRoute(RouteFactory):
    def check_permission(self, principals: Any, bound_perms: Any) -> bool:
        # Bypass permissions check on /buckets/monitor.
        return True


@resource.register(
    name="changes",
    description="List of changes",
    plural_path=CHANGES_RECORDS_PATH,
    object_path=None,
    plural_methods=("GET",),
    factory=AnonymousRoute,
)
class Changes(resource.Resource):
    """
    This Kinto **resource** gets hit by old clients (Firefox <88)
    See https://bugzilla.mozilla.org/show_bug.cgi?id=1666511

    Recent clients reach the `/changeset` endpoints (see Kinto **service** below).
    """

    schema = ChangesSchema

    def __init__(self, request: Any, context: Any = None):
        # Reject requests with stale expected value
        _handle_stale_expected(request)
        # Bypass call to storage if _since is too old.
        _handle_old_since_redirect(request)
        # Inject custom model.
        self.model = ChangesModel(request)
        super().__init__(request, context)

    def plural_get(self) -> Any:
        try:
            result = super().plural_get()
        except httpexceptions.HTTPNotModified:
            # Since the Google Cloud Platform CDN does not cache ``304 Not Modified``
            # responses, we return a ``200 Ok`` with an empty list of changes to the
            # clients. The two are strictly equivalent in the client implementation:
            # https://searchfox.org/mozilla-esr78/rev/3c633b1a0994f380032/services/settings/Utils.jsm#170-208
            result = self.postprocess([])

        _handle_cache_expires(self.request, MONITOR_BUCKET, CHANGES_COLLECTION)
        return result


def _handle_cache_expires(request: Any, bid: str, cid: str) -> None:
    # If the client sends cache busting query parameters, then we can cache more
    # aggressively.
    settings = request.registry.settings
    prefix = f"{bid}.{cid}.record_cache"
    default_expires = settings.get(f"{prefix}_expires_seconds")
    minimum_expires = settings.get(f"{prefix}_minimum_expires_seconds", default_expires)
    maximum_expires = settings.get(f"{prefix}_maximum_expires_seconds", default_expires)

    if cache_bust_value := request.GET.get("_expected"):
        # If cache busting value is "0", or starts with "9999" (random cache busts values
        # in our libraries), then we reduce the CDN cache TTL. This should help our users
        # when QA'ing their changes.
        #
        # Important:
        # - `_expected=0` is used in the Rust client when polling changes:
        #   https://github.com/mozilla/application-services/blob/3c2907c0d/components/remote_settings/src/client.rs#L657-L662
        # - `_expected=0` is used in Desktop client on `.get()` with an empty DB
        #   https://searchfox.org/firefox-main/rev/fa20ce29b1a82b/services/settings/RemoteSettingsClient.sys.mjs#496
        #   https://searchfox.org/firefox-main/rev/fa20ce29b1a82b/services/settings/RemoteSettingsClient.sys.mjs#658-666
        if cache_bust_value == "0" or cache_bust_value.startswith("9999"):
            cache_expires = minimum_expires
        else:
            cache_expires = maximum_expires
    else:
        # If cache busting is not present, we use the default expires value.
        # This can only happen in the /records endpoint since _expected is mandatory in /changeset.
        cache_expires = default_expires

    if cache_expires is not None:
        request.response.cache_expires(seconds=int(cache_expires))

    elif bucket_expires := settings.get(f"{bid}.record_cache_expires_seconds"):
        request.response.cache_expires(seconds=int(bucket_expires))

    elif global_expires := settings.get("record_cache_expires_seconds"):
        request.response.cache_expires(seconds=int(global_expires))


def _handle_stale_expected(request: Any) -> None:
    try:
        # `request.validated` is not populated yet (resource was not instantiated yet,
        # we want to bypass storage).
        qs_since_str = request.GET.get("_since", "")
        qs_since = int(qs_since_str.strip('"'))
        qs_expected_str = request.GET.get("_expected", "0")
        qs_expected = int(qs_expected_str.strip('"'))
    except ValueError:
        # The resource and its schema will raise 400 later.
        return

    # Check if client is trying to go back in time, return 400 response
    if qs_expected > 0 and qs_expected < qs_since:
        response = httpexceptions.HTTPNoContent()
        cache_seconds = int(
            request.registry.settings.get(
                "changes.since_max_age_redirect_ttl_seconds", 86400
            )
        )
        if cache_seconds >= 0:
            response.cache_expires(cache_seconds)
        raise response


def _handle_old_since_redirect(request: Any) -> None:
    """
    In order to limit the number of possible combinations
    of `_since` and `_expected` querystring parameters,
    and thus maximize the effect of caching, we redirect the clients
    that arrive here with a very old `_since` value.

    This simply means that these clients will have to iterate
    and compare the local timestamps of the whole list of changes
    instead of a filtered subset.

    https://searchfox.org/mozilla-central/rev/b58ca450/services/settings/remote-settings.js#299

    See https://bugzilla.mozilla.org/show_bug.cgi?id=1529685
    and https://bugzilla.mozilla.org/show_bug.cgi?id=1665319#c2
    """
    try:
        # request.validated is not populated yet (resource was not instantiated yet,
        # we want to bypass storage).
        qs_since_str = request.GET.get("_since", "")
        qs_since = int(qs_since_str.strip('"'))
    except ValueError:
        # Will fail later during resource querystring validation.
        return

    settings = request.registry.settings
    max_age_since = int(settings.get("changes.since_max_age_days", 21))
    if max_age_since < 0:
        # Redirect is disabled.
        return

    min_since_dt = datetime.now() - timedelta(days=max_age_since)
    min_since = min_since_dt.timestamp() * 1000

    if qs_since >= min_since:
        # Since value is recent. No redirect.
        return

    http_scheme = settings.get("http_scheme") or "https"
    http_host = settings.get(
        "changes.http_host", request.registry.settings.get("http_host")
    )
    host_uri = f"{http_scheme}://{http_host}"
    redirect = host_uri + request.matched_route.generate(request.matchdict)

    queryparams = request.GET.copy()
    del queryparams["_since"]
    if queryparams:
        redirect += "?" + urlencode(queryparams)

    # Serve a redirection, with optional cache control headers.
    response = httpexceptions.HTTPTemporaryRedirect(redirect)
    cache_seconds = int(
        settings.get("changes.since_max_age_redirect_ttl_seconds", 86400)
    )
    if cache_seconds >= 0:
        response.cache_expires(cache_seconds)
    raise response


def _handle_quoted_expected_redirect(request: Any) -> None:
    """
    Redirect requests with quoted _expected values to unquoted ones,
    to maximize caching.
    """
    settings = request.registry.settings
    qs_expected = request.GET.get("_expected")
    if qs_expected and (unquoted := qs_expected.replace('"', "")) != qs_expected:
        # Only redirect if unquoting changes the value
        queryparams = request.GET.copy()
        queryparams["_expected"] = unquoted
        http_scheme = settings.get("http_scheme") or "https"
        http_host = settings.get(
            "changes.http_host", request.registry.settings.get("http_host")
        )
        host_uri = f"{http_scheme}://{http_host}"
        redirect = (
            host_uri
            + request.matched_route.generate(request.matchdict)
            + "?"
            + urlencode(queryparams)
        )
        response = httpexceptions.HTTPTemporaryRedirect(redirect)
        raise response


@implementer(IAuthorizationPolicy)
class ChangeSetRoute(RouteFactory):
    """The changeset endpoint should have the same permissions as the collection
    metadata.

    The permission to read records is implicit when metadata are readable.
    """

    def __init__(self, request: Any):
        super().__init__(request)
        bid = request.matchdict["bucket_id"]
        cid = request.matchdict["collection_id"]
        collection_uri = instance_uri(request, "collection", bucket_id=bid, id=cid)
        # This route context will be the same as when reaching the collection URI.
        self.permission_object_id = collection_uri
        self.required_permission = "read"

    def check_permission(self, principals: Any, bound_perms: Any) -> bool:
        # The monitor/changes changeset endpoint is publicly accessible.
        if self.permission_object_id == CHANGES_COLLECTION_PATH:
            return True
        # Otherwise rely on the collection permissions.
        return super().check_permission(principals, bound_perms)


changeset = kinto.core.Service(
    name="collection-changeset", path=CHANGESET_PATH, factory=ChangeSetRoute
)


class QuotedTimestamp(colander.SchemaNode):  # ty: ignore[unsupported-base]
    """Integer with optional quotes used in _since querystring."""

    schema_type = colander.String
    error_message = "The value should be integer, optionally between double quotes."
    validator = colander.Regex(
        '^"([0-9]+?)"(?!\n)$|^([0-9]+?)(?!\n)$', msg=error_message
    )

    def deserialize(self, cstruct: Any = colander.null) -> Any:
        param = super(QuotedTimestamp, self).deserialize(cstruct)
        if param is colander.drop:
            return param
        value = int(param.strip('"'))
        # Reject values that would be meaningless timestamps.
        timestamp_range(self, value)
        return value


class ChangeSetQuerystring(colander.MappingSchema):
    _since = QuotedTimestamp(missing=colander.drop)
    _expected = colander.SchemaNode(colander.String())
    _limit = colander.SchemaNode(
        colander.Integer(), missing=colander.drop, validator=positive_big_integer
    )
    # Query parameters used on monitor/changes endpoint.
    bucket = colander.SchemaNode(colander.String(), missing=colander.drop)
    collection = colander.SchemaNode(colander.String(), missing=colander.drop)


class ChangeSetSchema(colander.MappingSchema):
    querystring = ChangeSetQuerystring()


@changeset.get(
    schema=ChangeSetSchema(), permission="read", validators=(colander_validator,)
)
def get_changeset(request: Any) -> dict[str, Any]:
    bid = request.matchdict["bucket_id"]
    cid = request.matchdict["collection_id"]

    storage = request.registry.storage

    queryparams = request.validated["querystring"]
    limit = bound_limit(request.registry.settings, queryparams.get("_limit"))
    filters = []
    include_deleted = False
    if "_since" in queryparams:
        filters = [Filter("last_modified", queryparams["_since"], COMPARISON.GT)]
        # Include tombstones when querying with _since
        include_deleted = True

    if (bid, cid) == (MONITOR_BUCKET, CHANGES_COLLECTION):
        # Redirect quoted _expected values, to simplify caching.
        _handle_quoted_expected_redirect(request)
        # Reject requests with stale expected value
        _handle_stale_expected(request)
        # Redirect old since, on monitor/changes only.
        _handle_old_since_redirect(request)

        if "bucket" in queryparams:
            filters.append(Filter("bucket", queryparams["bucket"], COMPARISON.EQ))

        if "collection" in queryparams:
            filters.append(
                Filter("collection", queryparams["collection"], COMPARISON.EQ)
            )

        model = ChangesModel(request)
        metadata = {}
        records_timestamp = model.timestamp()
        last_modified = (
            records_timestamp  # The collection 'monitor/changes' is virtual.
        )
        # Mimic records endpoint and sort by timestamp desc.
        sorting = [Sort("last_modified", -1)]
        changes = model.get_objects(
            filters=filters,
            limit=limit,
            include_deleted=include_deleted,
            sorting=sorting,
        )

    else:
        bucket_uri = instance_uri(request, "bucket", id=bid)
        collection_uri = instance_uri(request, "collection", bucket_id=bid, id=cid)

        try:
            # We'll make sure that data isn't changed while we read metadata, changes,
            # etc.
            before = storage.resource_timestamp(
                resource_name="record", parent_id=collection_uri
            )
            # Fetch collection metadata.
            metadata = storage.get(
                resource_name="collection", parent_id=bucket_uri, object_id=cid
            )

        except storage_exceptions.ObjectNotFoundError:
            raise httpexceptions.HTTPNotFound()

        except storage_exceptions.BackendError as e:
            # The call to `resource_timestamp()` on an empty collection will try
            # initialize it. If the instance is read-only, it fails with a backend
            # error. Raise 404 in this case otherwise raise the original backend error.
            if "when running in readonly" in str(e):
                raise httpexceptions.HTTPNotFound()
            raise

        # Fetch list of changes.
        changes = storage.list_all(
            resource_name="record",
            parent_id=collection_uri,
            filters=filters,
            limit=limit,
            id_field="id",
            modified_field="last_modified",
            deleted_field="deleted",
            sorting=[Sort("last_modified", -1)],
            include_deleted=include_deleted,
        )
        # Fetch current collection timestamp.
        records_timestamp = storage.resource_timestamp(
            resource_name="record", parent_id=collection_uri
        )
        # We use the timestamp from the collection metadata, because we want it to
        # be bumped when the signature is refreshed. Indeed, the CDN will revalidate
        # the origin's response, only if the `Last-Modified` header has changed.
        # Side note: We are sure that the collection timestamp is always higher
        # than the records timestamp, because we have fields like `last_edit_date`
        # in the collection metadata that are automatically bumped when records change.
        last_modified = metadata["last_modified"]

        # Do not serve inconsistent data.
        if before != records_timestamp:  # pragma: no cover
            raise storage_exceptions.IntegrityError(message="Inconsistent data. Retry.")

    # Cache control.
    _handle_cache_expires(request, bid, cid)

    # Set Last-Modified response header (Pyramid takes care of converting).
    request.response.last_modified = last_modified / 1000.0

    # Log when ``?_expected`` doesn't match the served value.
    try:
        expected = int(
            request.validated["querystring"].get("_expected", "0").strip('"')
        )
    except ValueError:
        expected = -1
    if (
        expected
        and expected > 0
        and expected != last_modified
        # Also exclude cache bust values (999xxx) from our clients.
        # See https://github.com/mozilla-extensions/remote-settings-devtools/blob/70ec104fb3/extension/experiments/remotesettings/api.js#L114
        # and https://github.com/Kinto/kinto-http.py/blob/1182c295f/src/kinto_http/client.py#L950
        and not str(expected).startswith("999")
    ):
        logger.info(
            f"Client expected {expected} on {bid}/{cid} but was served {last_modified} timestamp",
            extra={
                "expected": expected,
                "timestamps": last_modified,
                "bucket": bid,
                "collection": cid,
            },
        )

    data = {
        "metadata": {
            **metadata,
            "bucket": bid,
        },
        "timestamp": records_timestamp,
        "changes": changes,
    }
    return data


class BroadcastResponseSchema(colander.MappingSchema):
    body = colander.SchemaNode(colander.Mapping())


broadcasts_response_schemas = {
    "200": BroadcastResponseSchema(
        description="Return the current version number to be broadcasted via Push."
    )
}


broadcasts = Service(name="broadcast", path="/__broadcasts__", description="broadcast")


@broadcasts.get(
    permission=NO_PERMISSION_REQUIRED,
    tags=["Utilities"],
    operation_id="broadcast_view",
    response_schemas=broadcasts_response_schemas,
)
def broadcasts_view(request: Any) -> dict[str, Any]:
    """
    Implement the old Megaphone broadcast endpoint,that the Push service will pull.

    See https://github.com/mozilla-services/megaphone?tab=readme-ov-file#get-v1broadcasts
    """
    settings = request.registry.settings
    min_debounce_interval = int(
        settings.get(
            "push_broadcast_min_debounce_interval_seconds", "300"
        )  # 5 min by default.
    )

    def get_rs_timestamp() -> int:
        # We want to filter out preview entries, because we don't want to notify all clients
        # when a review is requested.
        # Note: This will also filter out the `nimbus-preview` collection which isn't directly
        # consumed by clients and therefore doesn't need to trigger a broadcast when it changes.
        return max(
            ts
            for bid, cid, ts in monitored_timestamps(request)
            if "-preview" not in f"{bid}/{cid}"
        )

    # First, get the current value from cache.
    cache_key = f"{BROADCASTER_ID}/{CHANNEL_ID}/timestamp"
    last_published_timestamp = request.registry.cache.get(cache_key)
    debounced_timestamp = last_published_timestamp

    if last_published_timestamp is None:
        # If no timestamp was published ever, we use the current timestamp.
        debounced_timestamp = get_rs_timestamp()
        logger.info(
            "No previous timestamp found in cache. Publishing current timestamp."
        )
    else:
        # If the last published timestamp is recent, we don't publish a new one yet.
        last_timestamp_age_seconds = int(
            (
                utcnow()
                - datetime.fromtimestamp(last_published_timestamp / 1000, timezone.utc)
            ).total_seconds()
        )
        current_rs_timestamp = None

        # Avoid publishing too many Push notifications in a short time:
        # if changes are published too close together (eg. < 5min), then
        # we don't update the exposed timestamp
        if last_timestamp_age_seconds > min_debounce_interval:
            # Let's see if a new change is available.
            current_rs_timestamp = get_rs_timestamp()
            if current_rs_timestamp > last_published_timestamp:
                log_msg = "A new change is available. "
                # Check if it's too close to the last published change.
                current_timestamp_diff_seconds = int(
                    (current_rs_timestamp - last_published_timestamp) / 1000
                )
                current_timestamp_age_seconds = (
                    utcnow()
                    - datetime.fromtimestamp(current_rs_timestamp / 1000, timezone.utc)
                ).total_seconds()
                # We publish only if more than `min_debounce_interval` seconds have passed since the last published change.
                # or if the current timestamp is already older than the debounce interval.
                # (eg. in case of a change that happened a while ago but we haven't published yet).
                if current_timestamp_diff_seconds > min_debounce_interval:
                    log_msg += (
                        f"Last is {current_timestamp_diff_seconds}s old. Publish!"
                    )
                    debounced_timestamp = current_rs_timestamp
                elif current_timestamp_age_seconds > min_debounce_interval:
                    log_msg += f"Last is {current_timestamp_age_seconds}s old. Publish!"
                    debounced_timestamp = current_rs_timestamp
                else:
                    log_msg += f"It's too close to previously broadcasted {current_timestamp_diff_seconds}s ago."
            else:
                log_msg = "Nothing to do. No new change since last published timestamp."
        else:
            log_msg = f"Nothing to do. A change was published very recently, {last_timestamp_age_seconds}s ago."

        logger.info(
            log_msg,
            extra={
                "min_debounce_interval": min_debounce_interval,
                "last_published_timestamp": last_published_timestamp,
                "last_timestamp_age_seconds": last_timestamp_age_seconds,
                "current_rs_timestamp": current_rs_timestamp,
            },
        )

    # Store the published timestamp in the cache for next calls (skip write if unchanged).
    if debounced_timestamp != last_published_timestamp:
        request.registry.cache.set(cache_key, debounced_timestamp, ttl=DAY_IN_SECONDS)
    # Expose it for the Push service to pull.
    return {
        "broadcasts": {f"{BROADCASTER_ID}/{CHANNEL_ID}": f'"{debounced_timestamp}"'},
        "code": 200,
    }
