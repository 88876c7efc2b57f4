"""Per-user limits on requests that cost: previews, and previews mailed.

Counts live in Kinto's cache backend, which every Kinto process shares when it is shared
(PostgreSQL, memcached, Redis), for a fixed window from the first request counted. A
lock of the process makes each count exact within a process; two processes counting the
same user at the same instant may both let one more through.
"""

import hashlib
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RateLimit:
    """At most ``limit`` requests of one user every ``period`` seconds."""

    name: str
    limit: int
    period: float
    _lock: threading.Lock = field(default_factory=threading.Lock, compare=False)

    def take(self, cache: Any, user: str, now: float | None = None) -> int | None:
        """Count one request of ``user``: None if it is within the limit, else the seconds
        to wait before the next one is (and nothing is counted)."""
        now = time.time() if now is None else now
        key = f"emailer-limit-{self.name}-{hashlib.sha256(user.encode()).hexdigest()[:32]}"
        with self._lock:
            window = cache.get(key)
            if not isinstance(window, dict) or window.get("until", 0) <= now:
                window = {"count": 0, "until": now + self.period}
            if window["count"] >= self.limit:
                return max(1, math.ceil(window["until"] - now))
            window = {**window, "count": window["count"] + 1}
            cache.set(key, window, ttl=math.ceil(window["until"] - now))
        return None
