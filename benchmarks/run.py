"""Benchmarks: the plugin's cost on client writes, and the speed of delivery.

Each comparison runs its variants interleaved, in one run, against a real SMTP server
(aiosmtpd, started here) and, for the PostgreSQL rows, the server on 127.0.0.1:5432 (the
database ``kinto_emailer_bench``, or ``KINTO_EMAILER_BENCH_DATABASE``). It prints one
table of ratios. Run with ``make bench``; ``make bench ROWS="flood writers"`` (or
``python benchmarks/run.py flood writers``) runs only the groups of rows named.
"""

import argparse
import collections
import contextlib
import csv
import io
import itertools
import json
import multiprocessing
import os
import smtplib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import types
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta

import transaction
import webtest
from kinto import main as kinto_main
from kinto.core import scripts
from kinto.core.metrics import NoOpMetricsService
from kinto.events import ServerFlushed


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.commit_clock import COMMITTED  # noqa: E402
from benchmarks.sink import CountingSink  # noqa: E402
from kinto_emailer import (  # noqa: E402
    digests,
    hooks,
    inbox,
    jobs,
    messages,
    send_digests,
    wakeups,
)
from kinto_emailer.metrics import KintoMetrics  # noqa: E402
from kinto_emailer.preferences import object_id  # noqa: E402
from kinto_emailer.recipients import parse_mailbox  # noqa: E402
from kinto_emailer.settings import EmailerSettings  # noqa: E402
from tests.support import (  # noqa: E402
    ALICE,
    POSTGRESQL_URL,
    SMTPSink,
    app_settings,
    postgresql_available,
)


ROUNDS = 30
CREATE_ROUNDS = 200
"""One create takes a millisecond or a few: more rounds keep its median steady."""
DELIVERY_ROUNDS = 5
CHANGE_ROUNDS = 15
"""Half a second each: the SMTP server's pace varies by half from one to the next."""
GROUPING_ROUNDS = 5
WEB_GROUP_ROUNDS = 15
"""A tenth of a second each, whose median moved by a quarter from one run of 5 to the next."""
DATABASE = os.environ.get(
    "KINTO_EMAILER_BENCH_DATABASE", POSTGRESQL_URL.rsplit("/", 1)[0] + "/kinto_emailer_bench"
)
HEADERS = {**ALICE, "Content-Type": "application/json"}
HOOK = {"template": "{action}d {uri}: {new[title]}", "recipients": ["a@example.com"]}
RECORD_HOOK = {**HOOK, "resource_name": "record"}
BOUNDS = {
    f"emailer.max_messages_per_{what}": "1000000000"
    for what in ("change", "bucket_hour", "recipient_hour")
}
"""Bounds high enough never to drop mail: the rows measure its cost, not its absence."""
RECORD = {"data": {"title": "benchmark"}}
FLOOR = {"listener": "does nothing"}
"""Instead of a hook: Kinto with an empty listener of the same events, not the plugin."""
QUIET = {"plugin": "no hooks"}
"""Instead of a hook: the plugin, and no hooks anywhere."""
SLOWEST_FILTER = "^(?:(?:a?){33}){15}z"
"""The slowest of the filters tried within the README's bounds, on ids of a's: 993 RE2
instructions, whose states grow with each "a" until RE2 leaves its DFA for its NFA
(``^(a+)+$``, hours with a backtracking engine, takes microseconds)."""


def records(bucket: str, collection: str = "c") -> str:
    return f"/buckets/{bucket}/collections/{collection}/records"


def batch(bucket: str, size: int) -> dict:
    return {
        "defaults": {"method": "POST", "path": records(bucket)},
        "requests": [{"body": RECORD} for _ in range(size)],
    }


def make_app(
    sink: SMTPSink | CountingSink,
    hook: dict | None,
    postgresql: bool = False,
    bucket: str = "b",
    worker: bool = True,
    initialize: bool = True,
    connections: int = 1,
    **extra: str,
) -> webtest.TestApp:
    """Kinto with the plugin (and ``hook`` on ``bucket``), or without it (``hook=None``),
    sending over ``connections`` SMTP connections, with ``extra`` settings;
    :data:`commit_clock` notes its commits.

    Apps on PostgreSQL share the database: each writes to a bucket of its own. Apps made
    at once by several processes leave the schema to the one made first
    (``initialize=False``).
    """
    settings = app_settings(
        sink.port,
        batch_max_requests=1000,
        includes="benchmarks.commit_clock kinto_emailer",
        **{
            "emailer.worker": str(worker).lower(),
            "emailer.smtp_connections": str(connections),
            **BOUNDS,
            **extra,
        },
    )
    if postgresql:
        for backend in ("storage", "permission"):
            settings[f"{backend}_backend"] = f"kinto.core.{backend}.postgresql"
            settings[f"{backend}_url"] = DATABASE
    if hook is None:
        settings["includes"] = ""
    elif hook == FLOOR:
        settings["includes"] = "benchmarks.listener_floor"
    # No lint: the delivery rows' clock runs while the client reads its response.
    app = webtest.TestApp(kinto_main({}, **settings), lint=False)
    registry = app.app.registry
    if initialize:
        scripts.migrate({"registry": registry})
    metadata = {"kinto-emailer": {"hooks": [hook]}} if hook and hook not in (FLOOR, QUIET) else {}
    app.put_json(f"/v1/buckets/{bucket}", {"data": metadata}, headers=HEADERS)
    app.put_json(f"/v1/buckets/{bucket}/collections/c", headers=HEADERS)
    return app


def settle(app: webtest.TestApp) -> None:
    """Untimed: let background sending finish, so it does not slow the next variant.

    On PostgreSQL the write benchmarks run no worker: writes only queue their mail.
    """
    delivery = getattr(app.app.registry, "emailer_delivery", None)
    if delivery is not None and delivery.queue is None:
        delivery.join()


def queued() -> int:
    """Messages waiting in the PostgreSQL queue."""
    with jobs.session(DATABASE) as connection:
        [(count,)] = jobs.execute(connection, "SELECT count(*) FROM kinto_emailer_jobs")
    return int(count)


def empty_queue() -> None:
    with jobs.session(DATABASE) as connection:
        jobs.execute(connection, "TRUNCATE kinto_emailer_changes, kinto_emailer_jobs")


def compare(
    variants: dict[str, tuple[webtest.TestApp, Callable[[], object]]], rounds: int = ROUNDS
) -> list[float]:
    """Median seconds of each variant, run interleaved.

    The order turns at each round: a variant right after one that sends mail in the
    background (a worker thread on PostgreSQL) is slowed by it, whichever it is.
    """
    samples: dict[str, list[float]] = {label: [] for label in variants}
    labels = list(variants)
    for round_number in range(rounds):
        turn = round_number % len(labels)
        for label in labels[turn:] + labels[:turn]:
            app, action = variants[label]
            started = time.perf_counter()
            action()
            samples[label].append(time.perf_counter() - started)
            settle(app)
    return [statistics.median(s) for s in samples.values()]


def post(app: webtest.TestApp, path: str, body: dict) -> Callable[[], object]:
    return lambda: app.post_json(f"/v1{path}", body, headers=HEADERS)


def close(*apps: webtest.TestApp) -> None:
    for app in apps:
        delivery = getattr(app.app.registry, "emailer_delivery", None)
        if delivery is not None:
            delivery.close(timeout=10)


def write_rows(sink: SMTPSink, slow_sink: SMTPSink, postgresql: bool) -> list[tuple]:
    where = "PostgreSQL" if postgresql else "memory"
    on = make_app(sink, HOOK, postgresql, bucket="on", worker=False)
    off = make_app(sink, None, postgresql, bucket="off", worker=False)
    nothing = make_app(
        sink, {**HOOK, "record_id": "never"}, postgresql, bucket="nothing", worker=False
    )
    floor = make_app(sink, FLOOR, postgresql, bucket="floor", worker=False)
    on_seconds, floor_seconds, off_seconds = compare(
        {
            "on": (on, post(on, records("on"), RECORD)),
            "floor": (floor, post(floor, records("floor"), RECORD)),
            "off": (off, post(off, records("off"), RECORD)),
        },
        rounds=CREATE_ROUNDS,
    )
    rows = [
        (
            f"one create, matching hook / plugin disabled ({where})",
            "<= 1.10",
            on_seconds,
            off_seconds,
        ),
        (
            f"for reference: one create, empty listener of the same events / none ({where})",
            "",
            floor_seconds,
            off_seconds,
        ),
        (
            f"batch of 100 creates, matching hook / hook matching nothing ({where})",
            "<= 1.25",
            *compare(
                {
                    "on": (on, post(on, "/batch", batch("on", 100))),
                    "nothing": (nothing, post(nothing, "/batch", batch("nothing", 100))),
                }
            ),
        ),
    ]
    if not postgresql:
        slow = make_app(slow_sink, HOOK, bucket="slow")
        fast = make_app(sink, HOOK, bucket="fast")
        rows.insert(
            1,
            (
                "one create, SMTP taking 200 ms / instant SMTP (memory)",
                "<= 1.10",
                *compare(
                    {
                        "slow": (slow, post(slow, records("slow"), RECORD)),
                        "fast": (fast, post(fast, records("fast"), RECORD)),
                    },
                    rounds=CREATE_ROUNDS,
                ),
            ),
        )
        close(slow, fast)
    close(on, off, nothing, floor)
    if postgresql:
        empty_queue()  # Recorded, not worked out: the delivery rows start from an empty queue.
    return rows


def long_ids() -> Callable[[], str]:
    """A new 500-character id at each call, of a's but for its end: no DFA state is reused."""
    numbers = itertools.count()
    return lambda: f"{'a' * 490}-{next(numbers):09d}"


def filter_rows(sink: SMTPSink) -> list[tuple]:
    """The slowest accepted regular expression against an exact filter, on 500-character ids.

    Neither filter matches: what is measured is the write and the decision, without mail.
    """
    new_id = long_ids()
    exact_value = new_id()
    apps = {
        "slowest": make_app(sink, {**HOOK, "record_id": SLOWEST_FILTER}, bucket="slowest"),
        "exact": make_app(sink, {**HOOK, "record_id": exact_value}, bucket="exact"),
    }

    def create_and_decide(label: str) -> Callable[[], object]:
        app = apps[label]

        def action() -> None:
            app.put_json(f"/v1{records(label)}/{new_id()}", RECORD, headers=HEADERS)
            app.app.registry.emailer_delivery.join()

        return action

    slowest, exact = compare({label: (apps[label], create_and_decide(label)) for label in apps})
    close(*apps.values())
    sink.clear()
    matching = {
        label: hooks.parse_filter("record_id", value, "data")
        for label, value in (("slowest", SLOWEST_FILTER), ("exact", exact_value))
    }
    filter_seconds: dict[str, list[float]] = {label: [] for label in matching}
    for _ in range(ROUNDS):
        for label, one in matching.items():
            value = (new_id(),)
            started = time.perf_counter()
            one.matches(value)
            filter_seconds[label].append(time.perf_counter() - started)
    slowest_filter, exact_filter = (statistics.median(s) for s in filter_seconds.values())
    return [
        (
            f"one create with a 500-character id and its mail decided, slowest accepted filter"
            f" {SLOWEST_FILTER} / exact filter (memory)",
            "<= 10",
            slowest,
            exact,
        ),
        (
            f"for reference: the filter alone, {slowest_filter * 1e6:.0f} us"
            f" / {exact_filter * 1e6:.2f} us",
            "",
            slowest_filter,
            exact_filter,
        ),
    ]


def grouping_row(sink: SMTPSink, postgresql: bool) -> tuple:
    """A batch of 1000 creates with grouping on, against a hook matching nothing."""
    where = "PostgreSQL" if postgresql else "memory"
    everyone = ["a@example.com", "b@example.com", "c@example.com"]
    grouped = {**HOOK, "recipients": everyone, "group_threshold": 10}
    on = make_app(sink, grouped, postgresql, bucket="grouped", worker=False)
    nothing = make_app(
        sink, {**grouped, "record_id": "never"}, postgresql, bucket="none", worker=False
    )
    on_seconds, nothing_seconds = compare(
        {
            "on": (on, post(on, "/batch", batch("grouped", 1000))),
            "nothing": (nothing, post(nothing, "/batch", batch("none", 1000))),
        },
        rounds=GROUPING_ROUNDS,
    )
    sink.clear()
    if postgresql:
        empty_queue()
    post(on, "/batch", batch("grouped", 1000))()
    started = time.perf_counter()
    if postgresql:
        # What a worker does with the batch's change: its messages, queued.
        on.app.registry.emailer_delivery.queue.expand_all()
    else:
        settle(on)
    worked_out = time.perf_counter() - started
    mails = queued() if postgresql else len(sink.received)
    close(on, nothing)
    if postgresql:
        empty_queue()
    return (
        f"batch of 1000 creates, grouping on / hook matching nothing ({where}): "
        f"{mails} emails {'queued' if postgresql else 'sent'} for {len(everyone)} recipients"
        f" {worked_out * 1000:.0f} ms after",
        "<= 1.25",
        on_seconds,
        nothing_seconds,
    )


REVIEWER = "reviewer@example.com"
FLOODED = 100_000
FLOOD_TIMEOUT = 120.0


def wait_for_reviewer(sink: SMTPSink, started: float, timeout: float) -> tuple[float, int]:
    """Seconds from ``started`` until the reviewer's mail reached ``sink`` (``timeout`` at
    most), and how many mails reached it first."""
    received: list[str] = []
    while REVIEWER not in received and time.perf_counter() - started < timeout:
        time.sleep(0.001)
        received = [m.rcpt_tos[0] for m in list(sink.received)]
    elapsed = time.perf_counter() - started
    return elapsed, received.index(REVIEWER) if REVIEWER in received else len(received)


def reviewer_row(storage: str, count: int, elapsed: float, before: int, detail: str = "") -> tuple:
    """The row of a reviewer's mail under another bucket's flood, against the 5 s target."""
    return (
        f"a reviewer's one mail while {count} of another bucket are queued ({storage}):"
        f" {before} of those sent before it{detail}",
        "<= 5 s",
        elapsed,
        None,
        None,
    )


def outbox_flood_row(count: int = FLOODED) -> tuple:
    """Seconds from a reviewer's write to its one mail while another bucket's change of
    ``count`` messages is being sent, on memory storage, against the 5 s target.

    The flood is one batch of creates mailing 100 readers each: the outbox works it out
    as it sends it. Its own SMTP server, stopped afterwards: the rest of the flood waits
    for a retry (the outbox then works out no more of it) instead of slowing later rows.
    """
    readers = [f"reader{i}@example.com" for i in range(100)]
    sink = SMTPSink().start()
    app = make_app(sink, {**HOOK, "recipients": readers}, bucket="flood")
    hooks = {"kinto-emailer": {"hooks": [{**HOOK, "recipients": [REVIEWER]}]}}
    app.put_json("/v1/buckets/review", {"data": hooks}, headers=HEADERS)
    app.put_json("/v1/buckets/review/collections/c", headers=HEADERS)
    settle(app)
    outbox = app.app.registry.emailer_outbox
    queued_before = outbox.counts["queued"]
    sink.clear()
    post(app, "/batch", batch("flood", count // len(readers)))()
    sink.wait_for(1)  # The flood is under way.
    app.post_json(f"/v1{records('review')}", RECORD, headers=HEADERS)
    elapsed, before = wait_for_reviewer(sink, time.perf_counter(), timeout=60)
    worked_out = outbox.counts["queued"] - queued_before
    sink.stop()
    return reviewer_row("memory", count, elapsed, before, f", {worked_out} worked out")


def queue_digest_entries(recipients: int, per_recipient: int) -> None:
    """``recipients`` x ``per_recipient`` digest entries, copied into Kinto's objects table.

    The rows are those DigestStore.add writes, made in bulk: writing 100,000 of them one
    storage call at a time would take minutes.
    """
    sender = parse_mailbox("Kinto <kinto@example.com>")
    created = datetime.now(UTC) - timedelta(hours=1)
    columns = "id, parent_id, resource_name, last_modified, data, deleted"
    rows = io.StringIO()
    copy = csv.writer(rows)
    for n in range(recipients):
        recipient = parse_mailbox(f"user{n}@example.com")
        address = recipient.addr_spec
        index = json.dumps({"recipient": address})
        copy.writerow(
            (
                object_id(address),
                digests.index_parent("daily"),
                digests.INDEX,
                created + timedelta(milliseconds=n),
                index,
                False,
            )
        )
        for i in range(per_recipient):
            uri = f"/buckets/b/collections/c{i % 3}/records/r{n}-{i}"
            draft = messages.Draft(
                sender,
                recipient,
                f"Record r{n}-{i} created",
                f"created {uri}",
                uri,
                "http://localhost/v1/",
                key=messages.idempotency_key("bench-digest", n, i),
                created=created,
            )
            entry = digests.Entry(draft, "/buckets/b", uri.rsplit("/", 2)[0])
            copy.writerow(
                (
                    draft.key[:32],
                    digests.entries_parent("daily", address),
                    digests.ENTRY,
                    # Kinto's objects table wants one timestamp per object of a parent.
                    created + timedelta(milliseconds=i),
                    json.dumps(entry.to_json()),
                    False,
                )
            )
    rows.seek(0)
    with jobs.session(DATABASE) as connection, connection.cursor() as cursor:
        cursor.copy_expert(f"COPY objects ({columns}) FROM STDIN WITH (FORMAT csv)", rows)


def digest_run(sink: SMTPSink, recipients: int, traced: bool) -> tuple[float, int, int, int]:
    """Seconds and peak traced bytes of sending the daily digests, how many were queued,
    and the bytes of all their entries as stored."""
    app = make_app(sink, HOOK, postgresql=True, bucket="digests", worker=False)
    registry = app.app.registry
    queue_digest_entries(recipients, 10)
    with jobs.session(DATABASE) as connection:
        [(stored,)] = jobs.execute(
            connection,
            "SELECT sum(octet_length(data::text)) FROM objects WHERE resource_name = %s",
            (digests.ENTRY,),
        )
    at = datetime.now(UTC) + timedelta(days=1)
    if traced:
        tracemalloc.start()
    started = time.perf_counter()
    count = send_digests(registry, at)
    elapsed = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] if traced else 0
    tracemalloc.stop()
    with jobs.session(DATABASE) as connection:
        jobs.execute(connection, "TRUNCATE kinto_emailer_jobs")
    close(app)
    return elapsed, peak, count, int(stored)


def digest_rows(sink: SMTPSink) -> list[tuple]:
    seconds, _, count, stored = digest_run(sink, 10_000, traced=False)
    small_peak = digest_run(sink, 1_000, traced=True)[1]
    large_peak = digest_run(sink, 10_000, traced=True)[1]
    return [
        (
            f"daily digests of 10000 recipients x 10 changes: {count} digests queued",
            "(printed)",
            seconds,
            None,
            None,
        ),
        (
            "peak traced memory while making them: 10000 recipients / 1000 recipients",
            "memory ~1",
            large_peak,
            small_peak,
        ),
        (
            "peak traced memory, 10000 recipients / their 100000 entries as stored (JSON)",
            "memory << 1",
            large_peak,
            stored,
        ),
    ]


def drafts(count: int, bucket: str = "b") -> list[messages.Draft]:
    sender, recipient = parse_mailbox("Kinto <kinto@example.com>"), parse_mailbox("a@example.com")
    return [
        messages.Draft(
            sender,
            recipient,
            f"Record {i} created",
            f"created /buckets/{bucket}/collections/c/records/{i}",
            f"/buckets/{bucket}/collections/c/records/{i}",
            "http://localhost/v1/",
            key=messages.idempotency_key("bench", time.time_ns(), i),
        )
        for i in range(count)
    ]


def queue_drafts(items: list[messages.Draft], per_event: int) -> None:
    """Jobs as writes make them (one per event of ``per_event`` messages), in one
    transaction, that wakes the workers as it commits."""
    with jobs.session(DATABASE, autocommit=False) as connection:
        for start in range(0, len(items), per_event):
            jobs.defer(connection, items[start : start + per_event])
        jobs.execute(connection, f"NOTIFY {wakeups.CHANNEL}")


def worker_config(directory: str, port: int, connections: int = 1) -> str:
    with open(os.path.join(ROOT, "tests", "config", "kinto.ini")) as f:
        text = f.read().replace("kinto.core.storage.memory", "kinto.core.storage.postgresql")
    settings = {
        "storage_url": DATABASE,
        "emailer.worker": "false",
        "emailer.smtp_connections": connections,
        **BOUNDS,
    }
    extra = "\n".join(f"kinto.{key} = {value}" for key, value in settings.items())
    path = os.path.join(directory, f"kinto-{connections}.ini")
    with open(path, "w") as f:
        f.write(text.format(port=port, extra=extra))
    return path


def drain(
    sink: SMTPSink | CountingSink,
    config: str,
    workers: int,
    count: int,
    fill: Callable[[], float],
    queue: object,
) -> float:
    """Seconds from the commit of ``count`` messages' jobs or changes, which ``fill``
    writes in one transaction and whose ``perf_counter`` it returns, until the SMTP
    server got them from ``workers`` processes.

    The processes start first, so that their start-up is not counted: workers see
    nothing until the commit.
    """
    command = [os.path.join(os.path.dirname(sys.executable), "kinto-emailer"), "worker", config]
    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for _ in range(workers)
    ]
    for process in processes:
        process.stdout.readline()  # type: ignore[union-attr]
    time.sleep(1)
    started = fill()
    sink.wait_for(count, timeout=1800)
    elapsed = time.perf_counter() - started
    queue.join(60)  # type: ignore[attr-defined]
    for process in processes:
        process.terminate()
        process.wait()
        process.stdout.close()  # type: ignore[union-attr]
    return elapsed


def queued_drafts(items: list[messages.Draft], per_event: int) -> Callable[[], float]:
    def fill() -> float:
        queue_drafts(items, per_event)
        return time.perf_counter()

    return fill


def changes(app: webtest.TestApp, bucket: str, count: int) -> Callable[[], float]:
    """``count`` changes of one record each, in one transaction: when it committed.

    A batch makes one change of its writes to one collection: a record goes to each of
    ``count`` collections.
    """
    app.post_json(
        "/v1/batch",
        {
            "defaults": {"method": "PUT"},
            "requests": [{"path": f"/buckets/{bucket}/collections/c{i}"} for i in range(count)],
        },
        headers=HEADERS,
    )
    creates = {
        "defaults": {"method": "POST", "body": RECORD},
        "requests": [{"path": records(bucket, f"c{i}")} for i in range(count)],
    }

    def fill() -> float:
        COMMITTED.clear()
        app.post_json("/v1/batch", creates, headers=HEADERS)
        return COMMITTED[0]

    return fill


def raw_send(sink: SMTPSink | CountingSink, items: list[messages.Draft]) -> float:
    """Seconds for smtplib to send ``items``, built beforehand, over one connection: the
    practical limit."""
    built = [messages.build(draft) for draft in items]
    started = time.perf_counter()
    connection = smtplib.SMTP("127.0.0.1", sink.port)
    for outgoing in built:
        connection.sendmail(outgoing.sender, [outgoing.recipient], outgoing.as_bytes())
    connection.quit()
    elapsed = time.perf_counter() - started
    sink.wait_for(len(items), timeout=60)
    sink.clear()
    return elapsed


CHANGES = 500
CONNECTIONS = (1, 4)


def change_rows(
    where: str, seconds: dict[int, list[float]], raw_seconds: list[float]
) -> list[tuple]:
    raw = statistics.median(raw_seconds)
    return [
        (
            f"delivery of {CHANGES} one-recipient changes ({where}, {n} SMTP connection(s))"
            " / raw smtplib, one connection (throughput)",
            ">= 1.0" if n > 1 else "",
            statistics.median(seconds[n]),
            raw,
            raw / statistics.median(seconds[n]),
        )
        for n in CONNECTIONS
    ]


def memory_delivery_rows() -> list[tuple]:
    """From the commit of the changes until the SMTP server (its own process) got their
    mail, from the Kinto process's outbox."""
    counting = CountingSink()
    apps = {n: make_app(counting, RECORD_HOOK, bucket=f"d{n}", connections=n) for n in CONNECTIONS}
    fills = {n: changes(app, f"d{n}", CHANGES) for n, app in apps.items()}
    for app in apps.values():
        app.app.registry.emailer_delivery.join()  # The collections' changes: no mail.
    seconds: dict[int, list[float]] = {n: [] for n in CONNECTIONS}
    raw_seconds = []
    for _ in range(CHANGE_ROUNDS):
        raw_seconds.append(raw_send(counting, drafts(CHANGES)))
        for n, app in apps.items():
            started = fills[n]()
            counting.wait_for(CHANGES, timeout=600)
            seconds[n].append(time.perf_counter() - started)
            app.app.registry.emailer_delivery.join()
            counting.clear()
    close(*apps.values())
    counting.stop()
    return change_rows("memory", seconds, raw_seconds)


def delivery_rows(sink: SMTPSink) -> list[tuple]:
    # The queue of a Kinto without its own worker: the worker processes do the sending.
    counting = CountingSink()
    apps = {
        n: make_app(counting, RECORD_HOOK, postgresql=True, bucket=f"d{n}", worker=False)
        for n in CONNECTIONS
    }
    fills = {n: changes(app, f"d{n}", CHANGES) for n, app in apps.items()}
    queue = apps[1].app.registry.emailer_delivery.queue
    queue.expand_all()  # The collections' changes: no mail.
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        configs = {n: worker_config(directory, counting.port, n) for n in CONNECTIONS}
        seconds: dict[int, list[float]] = {n: [] for n in CONNECTIONS}
        raw_seconds = []
        for _ in range(CHANGE_ROUNDS):
            raw_seconds.append(raw_send(counting, drafts(CHANGES)))
            for n in CONNECTIONS:
                seconds[n].append(drain(counting, configs[n], 1, CHANGES, fills[n], queue))
                counting.clear()
        rows += change_rows("PostgreSQL, one worker", seconds, raw_seconds)

        count = 1000
        for per_event in (100, 1):
            worker_seconds, raw_seconds = [], []
            for _ in range(DELIVERY_ROUNDS):
                raw_seconds.append(raw_send(counting, drafts(count)))
                fill = queued_drafts(drafts(count), per_event)
                worker_seconds.append(drain(counting, configs[1], 1, count, fill, queue))
                counting.clear()
            worker, raw = statistics.median(worker_seconds), statistics.median(raw_seconds)
            rows.append(
                (
                    f"delivery of {count} queued messages in events of {per_event}, one worker,"
                    " one connection / raw smtplib (throughput)",
                    ">= 0.80",
                    worker,
                    raw,
                    raw / worker,
                )
            )

        count = 10_000
        sink.clear()
        config = worker_config(directory, sink.port)
        seconds_all = drain(sink, config, 2, count, queued_drafts(drafts(count), 100), queue)
        per_key = collections.Counter(m.message["Message-ID"] for m in sink.received)
        lost = count - len(per_key)
        duplicated = sum(n - 1 for n in per_key.values())
        ours, theirs = queue_floor(drafts(1000)), procrastinate_floor()
        rows.append(
            (
                "queue cost per message, no SMTP: this queue / procrastinate (no-op jobs)",
                "< 1 (README)",
                ours,
                theirs,
            )
        )
        rows.append(
            (
                f"{count} queued messages (events of 100) drained by two workers: "
                f"{lost} lost, {duplicated} duplicated",
                "0 lost, 0 dup.",
                seconds_all,
                None,
                None,
            )
        )
    close(*apps.values())
    counting.stop()
    return rows


class Accepting:
    """A transport whose server accepts every message at once."""

    def send(self, outgoing: messages.Outgoing) -> None:
        return None

    def send_all(self, outgoings: Iterable[messages.Outgoing]) -> Iterator[None]:
        return map(self.send, outgoings)

    def close(self) -> None:
        pass


def queue_floor(items: list[messages.Draft]) -> float:
    """Seconds per message of this queue's worker (claims, keys), SMTP left out."""
    # Messages only, queued beforehand: no change to work out.
    # A registry whose metrics count nothing: the row measures the queue alone.
    metrics = KintoMetrics(types.SimpleNamespace(metrics=NoOpMetricsService()))
    worker = jobs.Worker(DATABASE, Accepting(), EmailerSettings(), metrics, lambda: 0)
    with jobs.session(DATABASE, autocommit=False) as connection:
        jobs.defer(connection, items)
    stop = threading.Event()
    started = time.perf_counter()
    while worker.work(stop):
        pass
    elapsed = time.perf_counter() - started
    worker.close()
    return elapsed / len(items)


def procrastinate_floor(count: int = 1000) -> float:
    """Seconds per job of a procrastinate worker running jobs that do nothing."""
    import asyncio

    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=DATABASE))
    done: list[int] = []

    @app.task(name="kinto_emailer_bench.noop", queue="kinto_emailer_bench")
    def noop(i: int) -> None:
        done.append(i)

    async def run() -> float:
        async with app.open_async():
            installed = await app.connector.execute_query_one_async(
                "SELECT to_regclass('procrastinate_jobs') IS NOT NULL AS installed"
            )
            if not installed["installed"]:
                await app.schema_manager.apply_schema_async()
            await noop.batch_defer_async(*({"i": i} for i in range(count)))
            started = time.perf_counter()
            worker = asyncio.create_task(
                app.run_worker_async(
                    queues=["kinto_emailer_bench"],
                    install_signal_handlers=False,
                    delete_jobs="successful",
                )
            )
            while len(done) < count:
                await asyncio.sleep(0.01)
            elapsed = time.perf_counter() - started
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        return elapsed / count

    return asyncio.run(run())


WRITERS = 8
WRITER_ROUNDS = 30
WRITES = 10
"""Records each writer creates in a round."""


def writer(index: int, port: int, start: object, done: object) -> None:
    """One of the concurrent writers: ``WRITES`` records per round, with the plugin on
    even rounds and without it on odd ones, in buckets without hooks."""
    sink = SMTPSink(port=port)  # Its port only: no mail is sent.
    names = ("quiet", "off")
    apps = [
        make_app(sink, hook, True, bucket=f"{name}{index}", worker=False, initialize=False)
        for name, hook in zip(names, (QUIET, None), strict=True)
    ]

    def write(round_number: int) -> None:
        name, app = names[round_number % 2], apps[round_number % 2]
        for _ in range(WRITES):
            app.post_json(f"/v1{records(f'{name}{index}')}", RECORD, headers=HEADERS)

    # Untimed: a round of each, once the plugin's process listens to hook changes (its
    # steady state, where it keeps what it read).
    index_of_hooks = apps[0].app.registry.emailer_hooks_index
    while index_of_hooks.generation() is None:
        time.sleep(0.01)
    write(0)
    write(1)
    for round_number in range(WRITER_ROUNDS):
        start.wait()  # type: ignore[attr-defined]
        write(round_number)
        done.wait()  # type: ignore[attr-defined]
    close(*apps)


def concurrent_writes_row(sink: SMTPSink) -> tuple:
    """``WRITERS`` processes creating records at once, in buckets without hooks: how much
    longer a round takes with the plugin, which notes nothing and wakes no worker there."""
    context = multiprocessing.get_context("spawn")
    # A writer that fails breaks the barriers: the others stop instead of waiting forever.
    start, done = (context.Barrier(WRITERS + 1, timeout=600) for _ in range(2))
    processes = [
        context.Process(target=writer, args=(i, sink.port, start, done)) for i in range(WRITERS)
    ]
    for process in processes:
        process.start()
    seconds: list[list[float]] = [[], []]
    for round_number in range(WRITER_ROUNDS):
        start.wait()
        started = time.perf_counter()
        done.wait()
        seconds[round_number % 2].append(time.perf_counter() - started)
    for process in processes:
        process.join()
    on, off = (statistics.median(s) for s in seconds)
    return (
        f"{WRITERS} concurrent writers x {WRITES} creates, buckets without hooks:"
        " plugin on / off (PostgreSQL)",
        "<= 1.05",
        on,
        off,
    )


def flood_row(sink: SMTPSink, count: int = FLOODED) -> tuple:
    """Seconds until a reviewer's one mail reaches the SMTP server, while another bucket
    has ``count`` messages queued (as its writes would have left them) and one worker
    starts; and how many of the other bucket's went out before it."""
    hook = {"template": "{uri}", "recipients": [REVIEWER], "resource_name": "record"}
    app = make_app(sink, hook, postgresql=True, bucket="review", worker=False)
    queue = app.app.registry.emailer_delivery.queue
    queue.expand_all()
    items = drafts(count, bucket="flood")
    with jobs.session(DATABASE, autocommit=False) as connection:
        for start in range(0, count, 1000):
            jobs.defer(connection, items[start : start + 1000])
    with jobs.session(DATABASE) as connection:
        jobs.execute(connection, "VACUUM ANALYZE kinto_emailer_jobs")
    sink.clear()
    app.put_json("/v1/buckets/review/collections/c/records/r", headers=HEADERS)
    started = time.perf_counter()
    queue.start_worker()
    elapsed, before = wait_for_reviewer(sink, started, FLOOD_TIMEOUT)
    queue.stop_worker()
    queue.flush()
    close(app)
    sink.clear()
    return reviewer_row("PostgreSQL", count, elapsed, before)


def flush(app: webtest.TestApp) -> None:
    """Kinto's data gone, and the plugin's with it, as Kinto's flush endpoint does."""
    registry = app.app.registry
    registry.storage.flush()
    registry.notify(ServerFlushed(None))


def empty_database(sink: SMTPSink) -> None:
    """The benchmark's database, with Kinto's and the queue's tables, and no data."""
    app = make_app(sink, HOOK, postgresql=True, bucket="setup")
    flush(app)
    close(app)
    # Dead rows of earlier runs slow job fetching down: start compact.
    with jobs.session(DATABASE) as connection:
        jobs.execute(connection, "VACUUM FULL kinto_emailer_changes, kinto_emailer_jobs")
        if jobs.execute(connection, "SELECT to_regclass('procrastinate_jobs')")[0][0]:
            jobs.execute(connection, "VACUUM FULL procrastinate_jobs")


HELD = 10_000
"""Web notifications of one reader, and records of one collection, in the feed rows."""


def create_many(app: webtest.TestApp, resource_name: str, parent_id: str, objects: list) -> None:
    """``objects`` stored in one transaction, past the API: the rows measure reading them."""
    storage = app.app.registry.storage
    with transaction.manager:
        for obj in objects:
            storage.create(resource_name=resource_name, parent_id=parent_id, obj=obj)


def feed_row(sink: SMTPSink, postgresql: bool) -> tuple:
    """A reader's newest 20 web notifications and unread count, against 20 records of a
    collection, each out of ``HELD``."""
    where = "PostgreSQL" if postgresql else "memory"
    bucket = "feed"
    app = make_app(
        sink, QUIET, postgresql, bucket=bucket, **{"emailer.web_max_per_recipient": str(HELD)}
    )
    reader = app.get("/v1/", headers=HEADERS).json["user"]["id"]
    notification = inbox.Notification(
        reader, "A subject", "A body", "/buckets/b", "", "/buckets/b", datetime.now(UTC)
    )
    registry = app.app.registry
    # Written as workers write them: ids, counts.
    with transaction.manager:
        store = inbox.InboxStore(registry.storage, registry.emailer_settings)
        store.add([notification] * HELD, datetime.now(UTC))
    records_path = records(bucket)
    create_many(app, "record", records_path.removesuffix("/records"), [RECORD["data"]] * HELD)

    def feed() -> tuple[webtest.TestResponse, webtest.TestResponse]:
        return (
            app.get("/v1/emailer/notifications?_limit=20", headers=HEADERS),
            app.head("/v1/emailer/notifications?read=false", headers=HEADERS),
        )

    def twenty_records() -> webtest.TestResponse:
        return app.get(f"/v1{records_path}?_limit=20", headers=HEADERS)

    # Both sides read what they claim to: 20 objects out of HELD, and HELD unread.
    page, unread = feed()
    records_total = app.head(f"/v1{records_path}", headers=HEADERS).headers["Total-Objects"]
    assert (len(page.json["data"]), unread.headers["Total-Objects"]) == (20, str(HELD))
    assert (len(twenty_records().json["data"]), records_total) == (20, str(HELD))

    feed_seconds, records_seconds = compare(
        {
            "feed": (app, feed),
            "records": (app, twenty_records),
        }
    )
    flush(app)
    close(app)
    return (
        f"newest 20 of {HELD} web notifications and the unread count / 20 of {HELD}"
        f" records ({where})",
        "<= 1.5",
        feed_seconds,
        records_seconds,
    )


def web_group_row(sink: SMTPSink) -> tuple:
    """What a worker spends on one change whose hook names a group of 1,000 members: web
    notifications against emails."""
    members = [f"account:member{i}@example.com" for i in range(1000)]
    apps = {}
    for channel in ("web", "email"):
        hook = {**RECORD_HOOK, "recipients": [f"/buckets/{channel}/groups/g"]}
        app = make_app(
            sink,
            {**hook, "channels": [channel]},
            postgresql=True,
            bucket=channel,
            worker=False,
            **{"emailer.max_recipients": "1000"},
        )
        group = {"data": {"members": members}}
        app.put_json(f"/v1/buckets/{channel}/groups/g", group, headers=HEADERS)
        apps[channel] = app
    queue = apps["web"].app.registry.emailer_delivery.queue
    queue.expand_all()

    def change(channel: str) -> Callable[[], object]:
        def work_out() -> None:
            app = apps[channel]
            app.post_json(f"/v1{records(channel)}", RECORD, headers=HEADERS)
            started = time.perf_counter()
            queue.expand_all()
            seconds[channel].append(time.perf_counter() - started)
            empty_queue()

        return work_out

    seconds: dict[str, list[float]] = {"web": [], "email": []}
    for _ in range(WEB_GROUP_ROUNDS):
        for channel in ("web", "email"):
            change(channel)()
    close(*apps.values())
    return (
        "one change to a group of 1000 members, worked out by a worker: web / email (PostgreSQL)",
        "<= 1.25",
        statistics.median(seconds["web"]),
        statistics.median(seconds["email"]),
    )


GROUPS: dict[str, tuple[bool, Callable[[SMTPSink, SMTPSink], list[tuple]]]] = {
    # name: (needs PostgreSQL, rows)
    "writes": (False, lambda sink, slow: write_rows(sink, slow, postgresql=False)),
    "filters": (False, lambda sink, slow: filter_rows(sink)),
    "grouping": (False, lambda sink, slow: [grouping_row(sink, postgresql=False)]),
    "outbox-flood": (False, lambda sink, slow: [outbox_flood_row()]),
    "pg-writes": (True, lambda sink, slow: write_rows(sink, slow, postgresql=True)),
    "writers": (True, lambda sink, slow: [concurrent_writes_row(sink)]),
    "delivery": (False, lambda sink, slow: memory_delivery_rows()),
    "pg-delivery": (True, lambda sink, slow: delivery_rows(sink)),
    "pg-grouping": (True, lambda sink, slow: [grouping_row(sink, postgresql=True)]),
    "digests": (True, lambda sink, slow: digest_rows(sink)),
    "flood": (True, lambda sink, slow: [flood_row(sink)]),
    "web": (False, lambda sink, slow: [feed_row(sink, postgresql=False)]),
    "pg-web": (True, lambda sink, slow: [feed_row(sink, postgresql=True), web_group_row(sink)]),
}


def print_rows(rows: list[tuple]) -> None:
    print(f"\n{'measure':<96} {'target':>14} {'A':>10} {'B':>10} {'ratio':>7}")
    for name, target, a, b, *ratio in rows:
        value = ratio[0] if ratio else a / b
        if "memory" in target:
            unit, scale = "MiB", 1 / 2**20
        elif target.endswith(" s"):
            unit, scale = "s", 1
        else:
            unit, scale = "ms", 1000
        b_text = f"{b * scale:>7.1f}{unit:<3}" if b is not None else f"{'':>10}"
        r_text = f"{value:>7.2f}" if value is not None else f"{'':>7}"
        print(f"{name:<96} {target:>14} {a * scale:>7.1f}{unit:<3} {b_text} {r_text}")


def main(args: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("groups", nargs="*", help=f"groups of rows to run: {', '.join(GROUPS)}")
    groups = parser.parse_args(args).groups or list(GROUPS)
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        parser.error(f"unknown groups {', '.join(unknown)}: choose among {', '.join(GROUPS)}")
    sink = SMTPSink().start()
    slow_sink = SMTPSink(delay=0.2).start()
    rows: list[tuple] = []
    try:
        postgresql = any(GROUPS[g][0] for g in groups) and postgresql_available(DATABASE)
        if postgresql:
            empty_database(sink)
        for group in groups:
            needs_postgresql, make_rows = GROUPS[group]
            if needs_postgresql and not postgresql:
                print(f"No PostgreSQL at {DATABASE}: the rows of {group} are left out.")
                continue
            rows += make_rows(sink, slow_sink)
    finally:
        sink.stop()
        slow_sink.stop()

    print_rows(rows)
    print(
        f"\nA and B: medians of {ROUNDS} interleaved rounds ({CREATE_ROUNDS} for one create,"
        f" {DELIVERY_ROUNDS} for the delivery of 1000 messages, {CHANGE_ROUNDS} for"
        f" {CHANGES} changes, {GROUPING_ROUNDS} for batches"
        f" of 1000, {WEB_GROUP_ROUNDS} for a change to a group of 1000, {WRITER_ROUNDS} for"
        " the concurrent writers; the 10000 messages are"
        " drained once, the digests made once each, the flood measured once)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
