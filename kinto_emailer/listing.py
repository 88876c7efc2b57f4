"""Every object of a Kinto storage listing, a page at a time: backends cap what one
listing returns (``storage_max_fetch_size``), and pages keep memory bounded."""

from collections.abc import Iterator
from typing import Any

from kinto.core.storage import Filter, Sort
from kinto.core.utils import COMPARISON


def pages(
    storage: Any, resource_name: str, parent_id: str, size: int
) -> Iterator[list[dict[str, Any]]]:
    """The objects of ``parent_id`` in the order of their ids, ``size`` at most a page,
    one query a page."""
    last = None
    while True:
        page = storage.list_all(
            resource_name=resource_name,
            parent_id=parent_id,
            sorting=[Sort("id", 1)],
            pagination_rules=[[Filter("id", last, COMPARISON.GT)]] if last else None,
            limit=size,
        )
        if page:
            yield page
        if len(page) < size:
            return
        last = page[-1]["id"]
