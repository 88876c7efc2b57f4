# From mozilla/remote-settings at commit 493d7f59cea9445c6d082944271c9e3a61571e68,
# file kinto-slack/src/kinto_slack/__init__.py.
# Apache License 2.0 (functional/remote_settings/LICENSE); unchanged below.

import json
import logging
import os
import re
import time
from collections import defaultdict
from typing import Any

import requests
from kinto.core.errors import raise_invalid
from kinto.core.events import AfterResourceChanged, ResourceChanged
from kinto.core.utils import read_env


logger = logging.getLogger(__name__)


def qualname(obj: Any) -> str:
    return str(obj.__class__).split("'")[1]


def _match(pattern: str, value: str) -> bool:
    if pattern.startswith("^"):
        return re.match(pattern, value) is not None
    return pattern == value


def _get_slack_hooks(storage: Any, context: dict[str, Any]) -> list[dict[str, Any]]:
    bucket_id = context["bucket_id"]
    collection_id = context["collection_id"]
    bucket_uri = "/buckets/%s" % bucket_id

    if context["resource_name"] == "collection":
        metadata = next(
            impacted["old"] if context["action"] == "delete" else impacted["new"]
            for impacted in context["impacted_objects"]
        )
    else:
        metadata = storage.get(
            parent_id=bucket_uri, resource_name="collection", object_id=collection_id
        )

    if "kinto-slack" not in metadata:
        metadata = storage.get(
            parent_id="", resource_name="bucket", object_id=bucket_id
        )

    return metadata.get("kinto-slack", {}).get("hooks", [])


def get_messages(storage: Any, context: dict[str, Any]) -> list[dict[str, Any]]:
    hooks = _get_slack_hooks(storage, context)
    filters = ("action", "resource_name", "id", "record_id", "collection_id", "event")
    messages: list[dict[str, Any]] = []

    for hook in hooks:
        conditions_met = all(
            field not in hook
            or field not in context
            or _match(hook[field], context[field])
            for field in filters
        )
        if not conditions_met:
            continue

        messages.append(
            {
                "channel": hook.get("channel"),
                "text": hook["template"].format_map(defaultdict(str, context)),
            }
        )

    return messages


def build_notification(event: Any) -> None:
    resource_name = event.payload["resource_name"]
    storage = event.request.registry.storage
    context = dict(
        root_url=event.request.route_url("hello"),
        client_address=event.request.client_addr,
        impacted_objects=event.impacted_objects,
        event=qualname(event),
        **event.payload,
    )
    context["settings"] = {
        k: v
        for k, v in event.request.registry.settings.items()
        if k in ("project_name", "url", "project_version")
    }
    context.setdefault("record_id", "{record_id}")
    context.setdefault("collection_id", "{collection_id}")

    messages = []
    for impacted in event.impacted_objects:
        _context = context.copy()
        obj = impacted.get("new", impacted.get("old"))
        _context[resource_name + "_id"] = _context["id"] = obj["id"]
        messages += get_messages(storage, _context)

    existing = getattr(event.request, "_kinto_slack_messages", [])
    setattr(event.request, "_kinto_slack_messages", existing + messages)


def send_notification(event: Any) -> None:
    messages = getattr(event.request, "_kinto_slack_messages", [])
    if not messages:
        return

    settings = event.request.registry.settings
    # Get default webhook URL from .ini
    default_webhook_url = settings.get("slack.webhook_url")
    # Try to read it from env.
    default_webhook_url = read_env("kinto.slack.webhook_url", default_webhook_url)
    # Used for testing and debugging (similar to kinto-emailer).
    debug_dir = settings.get("slack.debug_dir")

    for msg in messages:
        channel_webhook_url = None
        if msg["channel"]:
            slack_channel = msg["channel"].replace("#", "")
            # Channel webhook URL from .ini
            settings_key = f"slack.{slack_channel}.webhook_url"
            channel_webhook_url = settings.get(settings_key)
            # Try to read it from env. See `read_env()`.
            # The env var must be `KINTO_SLACK_{CHANNEL}_WEBHOOK_URL
            # eg. KINTO_SLACK_FXMONITOR_ALERTS_WEBHOOK_URL
            channel_webhook_url = read_env(f"kinto.{settings_key}", channel_webhook_url)
            if not channel_webhook_url and default_webhook_url:
                logger.warning(
                    f"{settings_key} not found in config or environment. Fallback to default"
                )
        if not channel_webhook_url:
            channel_webhook_url = default_webhook_url
            if not channel_webhook_url and not debug_dir:
                logger.warning("No Slack Webhook URL or debug dir configured.")

        if debug_dir:
            os.makedirs(debug_dir, exist_ok=True)
            filename = os.path.join(debug_dir, f"{time.time_ns()}.json")
            with open(filename, "w") as f:
                json.dump(msg, f)

        if channel_webhook_url:
            try:
                resp = requests.post(channel_webhook_url, json=msg, timeout=5)
                resp.raise_for_status()
            except Exception:
                logger.exception("Could not send Slack notification")


def _validate_slack_settings(event: Any) -> None:
    for impacted in event.impacted_objects:
        if event.payload["action"] == "delete":
            continue
        obj = impacted.get("new", {})
        hooks = obj.get("kinto-slack", {}).get("hooks", [])
        for hook in hooks:
            if "template" not in hook:
                raise_invalid(
                    event.request,
                    name="kinto-slack",
                    description="Hook is missing 'template'",
                )


def includeme(config: Any) -> None:
    settings = config.get_settings()

    tmp_dir = settings.get("slack.debug_dir")
    tmp_dir = read_env("kinto.slack.debug_dir", tmp_dir)
    config.add_settings({"slack.debug_dir": tmp_dir})

    config.add_api_capability(
        "slack",
        "Slack notifications plugin for Kinto",
        "https://github.com/mozilla/remote-settings/blob/main/kinto-slack/",
    )

    config.add_subscriber(
        _validate_slack_settings,
        ResourceChanged,
        for_resources=("bucket", "collection"),
        for_actions=("create", "update"),
    )

    config.add_subscriber(
        build_notification, ResourceChanged, for_resources=("record", "collection")
    )
    config.add_subscriber(
        send_notification, AfterResourceChanged, for_resources=("record", "collection")
    )
