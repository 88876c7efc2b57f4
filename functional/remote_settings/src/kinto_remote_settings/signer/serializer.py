# From mozilla/remote-settings at commit 493d7f59cea9445c6d082944271c9e3a61571e68,
# file kinto-remote-settings/src/kinto_remote_settings/signer/serializer.py.
# Apache License 2.0 (functional/remote_settings/LICENSE); unchanged below.

import operator
from typing import Iterable

import canonicaljson


def canonical_json(records: Iterable[dict], last_modified: int) -> str:
    records = (r for r in records if not r.get("deleted", False))
    records = sorted(records, key=operator.itemgetter("id"))

    payload = {"data": records, "last_modified": "%s" % last_modified}

    dump = canonicaljson.dumps(payload)  # ty: ignore[unresolved-attribute]

    return dump
