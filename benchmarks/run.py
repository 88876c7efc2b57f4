"""Benchmarks: the cost of kinto_emailer on a client's writes, measured side by side.

Each scenario runs its variants interleaved, in one process, against a real SMTP
server, and prints the ratio of their median times. Run with ``make bench``.
"""

import os
import statistics
import sys
import time
from collections.abc import Callable

import webtest
from kinto import main as kinto_main


sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.support import ALICE, SMTPSink, app_settings  # noqa: E402


ROUNDS = 30
HOOK = {"template": "{action}d {uri}: {new[title]}", "recipients": ["a@example.com"]}


def make_app(sink: SMTPSink, with_plugin: bool, hook: dict) -> webtest.TestApp:
    settings = app_settings(sink.port, batch_max_requests=1000)
    if not with_plugin:
        settings["includes"] = ""
    app = webtest.TestApp(kinto_main({}, **settings))
    headers = {**ALICE, "Content-Type": "application/json"}
    hooks = {"kinto-emailer": {"hooks": [hook]}} if with_plugin else {}
    app.put_json("/v1/buckets/b", {"data": hooks}, headers=headers)
    app.put_json("/v1/buckets/b/collections/c", headers=headers)
    return app


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def compare(
    name: str, variants: dict[str, Callable[[], object]], settle: Callable[[], None]
) -> tuple[str, list[float]]:
    """Median time of each variant; ``settle`` (untimed) lets background sending finish,
    so that it does not slow the next variant's write."""
    samples: dict[str, list[float]] = {label: [] for label in variants}
    for _ in range(ROUNDS):
        for label, action in variants.items():
            samples[label].append(timed(action))
            settle()
    medians = [statistics.median(s) for s in samples.values()]
    return name, medians


def main() -> int:
    sink = SMTPSink().start()
    headers = {**ALICE, "Content-Type": "application/json"}
    try:
        on = make_app(sink, True, HOOK)
        off = make_app(sink, False, HOOK)
        nothing = make_app(sink, True, {**HOOK, "record_id": "never"})
        record = {"data": {"title": "benchmark"}}
        batch = {
            "defaults": {"method": "POST", "path": "/buckets/b/collections/c/records"},
            "requests": [{"body": record} for _ in range(100)],
        }
        settle = on.app.registry.emailer_outbox.join
        rows = [
            compare(
                "one record create: matching hook vs plugin disabled",
                {
                    "hook": lambda: on.post_json(
                        "/v1/buckets/b/collections/c/records", record, headers=headers
                    ),
                    "off": lambda: off.post_json(
                        "/v1/buckets/b/collections/c/records", record, headers=headers
                    ),
                },
                settle,
            ),
            compare(
                "batch of 100 creates: matching hook vs hook matching nothing",
                {
                    "hook": lambda: on.post_json("/v1/batch", batch, headers=headers),
                    "nothing": lambda: nothing.post_json("/v1/batch", batch, headers=headers),
                },
                settle,
            ),
        ]
    finally:
        sink.stop()

    print(f"{'scenario':<62} {'median A':>10} {'median B':>10} {'A/B':>6}")
    for name, (a, b) in rows:
        print(f"{name:<62} {a * 1000:>8.2f}ms {b * 1000:>8.2f}ms {a / b:>6.2f}")
    print(f"({ROUNDS} interleaved rounds each; {len(sink.received)} emails received)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
