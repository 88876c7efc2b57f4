"""Counts and timings for dashboards, through Kinto's metrics (statsd, Prometheus)."""

from typing import Protocol

from pyramid.registry import Registry


class Counter(Protocol):
    """Kinto's metrics, under ``plugins.emailer.``."""

    def __call__(self, name: str, n: int) -> None:
        """``n`` more under a name (``sent``, ``failed``...)."""

    def timing(self, name: str, seconds: float) -> None:
        """One more duration under a name."""


class KintoMetrics:
    """:class:`Counter` for ``registry.metrics``, looked up at each call: a metrics plugin
    may be included after this one."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def __call__(self, name: str, n: int) -> None:
        self.registry.metrics.count(f"plugins.emailer.{name}", count=n)

    def timing(self, name: str, seconds: float) -> None:
        self.registry.metrics.timer(f"plugins.emailer.{name}", value=seconds)
