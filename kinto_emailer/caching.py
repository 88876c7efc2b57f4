"""A least-recently-used cache bounded by the size of what it holds, not by a count.

``functools.lru_cache`` bounds the number of entries only: 1,024 hooks of 1 MB
templates each would stay in memory for good. Here each entry counts the characters of
its arguments' texts plus :data:`ENTRY_OVERHEAD`, the entries add up to at most
``max_chars``, and an entry above ``max_chars // 8`` is worked out at each call rather
than allowed to push out everything else.
"""

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, ParamSpec, TypeVar


P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class CacheInfo:
    hits: int
    misses: int
    entries: int
    chars: int
    max_chars: int


ENTRY_OVERHEAD = 256
"""What an entry costs besides its texts (the key, the result's objects), in characters."""


def _size(args: tuple[Hashable, ...]) -> int:
    """The texts among the arguments (what the result grows with), plus the overhead."""
    return ENTRY_OVERHEAD + sum(len(arg) for arg in args if isinstance(arg, str))


class SizedCache(Generic[P, R]):
    """``function`` with its results kept while their arguments' texts fit ``max_chars``.

    Hashable arguments, keyword ones included; thread-safe. Results are computed outside the lock:
    two threads may compute the same entry once each, never block each other.
    """

    def __init__(self, function: Callable[P, R], max_chars: int) -> None:
        self.function = function
        self.max_chars = max_chars
        self.max_entry_chars = max_chars // 8
        self._entries: OrderedDict[tuple[Hashable, ...], tuple[R, int]] = OrderedDict()
        self._chars = 0
        self._hits = 0
        self._misses = 0
        self._lock = threading.Lock()
        self.__doc__ = function.__doc__
        self.__wrapped__ = function

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        key: tuple[Hashable, ...] = (*args, *sorted(kwargs.items()))
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                self._hits += 1
                return found[0]
            self._misses += 1
        result = self.function(*args, **kwargs)
        size = _size(key)
        if size <= self.max_entry_chars:
            with self._lock:
                if key not in self._entries:
                    self._entries[key] = (result, size)
                    self._chars += size
                while self._chars > self.max_chars:
                    _, (_, dropped) = self._entries.popitem(last=False)
                    self._chars -= dropped
        return result

    def cache_info(self) -> CacheInfo:
        with self._lock:
            return CacheInfo(
                self._hits, self._misses, len(self._entries), self._chars, self.max_chars
            )

    def cache_clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._chars = self._hits = self._misses = 0


def sized_cache(max_chars: int) -> Callable[[Callable[P, R]], SizedCache[P, R]]:
    """Decorator: :class:`SizedCache` of ``max_chars`` characters."""
    return lambda function: SizedCache(function, max_chars)
