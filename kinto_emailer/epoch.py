"""Moments as Kinto writes them (``last_modified``): whole milliseconds since the epoch."""

from datetime import datetime


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
