"""How long a reviewer's one mail takes while another bucket has messages queued.

Usage: ``python benchmarks/flood.py [QUEUED]`` (default 100,000), against the PostgreSQL
server on 127.0.0.1:5432 and a real SMTP server started here. The flooding bucket's
messages are queued in bulk, as its writes would have left them; the reviewer's change
is a write through Kinto; then one worker starts, and the time until the reviewer's mail
reaches the SMTP server is printed, with the number of the other bucket's mails sent
before it.
"""

import os
import sys
import time

import webtest
from kinto import main as kinto_main


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.run import drafts  # noqa: E402
from kinto_emailer import jobs  # noqa: E402
from tests.support import ALICE, POSTGRESQL_URL, SMTPSink, app_settings  # noqa: E402


DATABASE = os.environ.get(
    "KINTO_EMAILER_FLOOD_DATABASE", POSTGRESQL_URL.rsplit("/", 1)[0] + "/kinto_emailer_flood"
)
REVIEWER = "reviewer@example.com"
TIMEOUT = 120.0


def create_database() -> None:
    server, name = DATABASE.rsplit("/", 1)
    with jobs.session(f"{server}/postgres") as connection:
        if not jobs.execute(connection, "SELECT 1 FROM pg_database WHERE datname = %s", (name,)):
            jobs.execute(connection, f'CREATE DATABASE "{name}"')


def make_app(port: int) -> webtest.TestApp:
    settings = app_settings(port, **{"emailer.worker": "false"})
    for backend in ("storage", "permission"):
        settings[f"{backend}_backend"] = f"kinto.core.{backend}.postgresql"
        settings[f"{backend}_url"] = DATABASE
    app = webtest.TestApp(kinto_main({}, **settings))
    app.app.registry.storage.initialize_schema()
    app.app.registry.permission.initialize_schema()
    app.app.registry.emailer_delivery.queue.install()
    app.app.registry.storage.flush()
    hook = {"template": "{uri}", "recipients": [REVIEWER], "resource_name": "record"}
    app.put_json(
        "/v1/buckets/review", {"data": {"kinto-emailer": {"hooks": [hook]}}}, headers=ALICE
    )
    app.put_json("/v1/buckets/review/collections/c", headers=ALICE)
    return app


def flood(count: int) -> None:
    items = drafts(count, bucket="flood")
    with jobs.session(DATABASE, autocommit=False) as connection:
        for start in range(0, count, 1000):
            jobs.defer(connection, items[start : start + 1000])
    with jobs.session(DATABASE) as connection:
        jobs.execute(connection, "VACUUM ANALYZE kinto_emailer_jobs")


def main() -> int:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    create_database()
    sink = SMTPSink().start()
    app = make_app(sink.port)
    queue = app.app.registry.emailer_delivery.queue
    try:
        queue.expand_all()
        flood(count)
        app.put_json("/v1/buckets/review/collections/c/records/r", headers=ALICE)
        started = time.monotonic()
        queue.start_worker()
        while time.monotonic() - started < TIMEOUT:
            recipients = [m.rcpt_tos[0] for m in list(sink.received)]
            if REVIEWER in recipients:
                print(
                    f"{count} queued in another bucket: the reviewer's mail reached the SMTP"
                    f" server after {time.monotonic() - started:.2f} s,"
                    f" {recipients.index(REVIEWER)} of the other bucket's before it"
                )
                return 0
            time.sleep(0.01)
        print(
            f"{count} queued in another bucket: no reviewer's mail after {TIMEOUT:.0f} s"
            f" ({len(sink.received)} of the other bucket's sent)"
        )
        return 1
    finally:
        queue.stop_worker()
        queue.flush()
        sink.stop()


if __name__ == "__main__":
    sys.exit(main())
