"""The PostgreSQL mail queue with real worker processes (``kinto-emailer worker``)."""

import collections
import contextlib
import datetime
import email.utils
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import psycopg2.extensions
import sqlalchemy.event

from kinto_emailer import jobs, messages, recipients
from tests.support import EmailerWebTest, eventually, skip_unless_postgresql, write_config
from tests.test_postgresql import PostgreSQL


BIN = os.path.dirname(sys.executable)
HOOK = {"template": "{uri}", "recipients": ["a@example.com"], "resource_name": "record"}
QUEUE_SETTINGS = {
    "emailer.worker": "false",
    "emailer.retry_delays": "0.3 0.3 0.3 0.3 0.3",
    "emailer.stalled_timeout": "2",
    # Hundreds of messages to one address within the hour.
    "emailer.max_messages_per_recipient_hour": "1000",
}


def drafts_of_age(days):
    """A draft as a change ``days`` ago would have left it."""
    return [
        messages.Draft(
            recipients.parse_mailbox("kinto@example.com"),
            recipients.parse_mailbox("a@example.com"),
            "Old",
            "old change",
            "/buckets/b/collections/c/records/old",
            "http://localhost/v1/",
            key=messages.idempotency_key("old", time.time_ns()),
            created=datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=days),
        )
    ]


@skip_unless_postgresql
class WorkerProcessTest(PostgreSQL, EmailerWebTest):
    extra_settings = {**QUEUE_SETTINGS, "batch_max_requests": "50"}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.directory = tempfile.TemporaryDirectory()
        cls.log = open(os.path.join(cls.directory.name, "workers.log"), "ab")
        cls.config = write_config(
            cls.directory.name,
            cls.sink.port,
            QUEUE_SETTINGS,
            postgresql=True,
        )

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        cls.log.close()
        cls.directory.cleanup()

    def setUp(self):
        super().setUp()
        self.queue = self.registry.emailer_delivery.queue
        self.create_collection()
        hooks = {"data": {"kinto-emailer": {"hooks": [HOOK]}}}
        self.app.put_json("/buckets/b", hooks, headers=self.headers)
        # No worker runs yet: what the setup itself changed is worked out here (no mail).
        self.queue.expand_all()

    def command(self, name, *args):
        return subprocess.run(
            [os.path.join(BIN, "kinto-emailer"), name, self.config, *args],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def start_worker(self):
        worker = subprocess.Popen(
            [os.path.join(BIN, "kinto-emailer"), "worker", self.config],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.addCleanup(worker.wait)
        self.addCleanup(worker.terminate)
        return worker

    def create_records(self, count):
        # Batches of 50: WebOb leaves larger request bodies in unclosed temporary files.
        for start in range(0, count, 50):
            requests = [
                {"method": "PUT", "path": f"/buckets/b/collections/c/records/r{i:03}"}
                for i in range(start, min(count, start + 50))
            ]
            self.app.post_json("/batch", {"requests": requests}, headers=self.headers)

    def received_uris(self):
        return collections.Counter(m.body for m in self.sink.received)

    def test_temporary_failures_are_retried_then_sent(self):
        self.sink.defer["a@example.com"] = 2
        self.create_records(1)
        self.start_worker()
        self.assertEqual(len(self.sink.wait_for(1)), 1)
        self.assertTrue(self.queue.join(10))
        self.assertEqual(len(self.sink.attempts), 3)
        status = self.queue.status()
        self.assertEqual((status["sent"], status["retried"], status["failed"]), (1, 2, 0))
        self.assertIn("retried    2", self.command("status"))

    def test_mail_waits_for_the_smtp_server_to_come_back(self):
        self.sink.stop()
        self.create_records(1)
        self.start_worker()
        self.assertTrue(eventually(lambda: self.queue.status()["retried"] >= 1))
        self.sink.restart()
        self.assertEqual(len(self.sink.wait_for(1)), 1)
        self.assertTrue(self.queue.join(10))
        self.assertEqual(self.queue.status()["sent"], 1)

    def test_permanent_failures_are_kept_listed_and_sent_again(self):
        self.sink.refuse.add("a@example.com")
        self.create_records(1)
        self.start_worker()
        self.assertTrue(eventually(lambda: self.queue.failed()))
        [failed] = self.queue.failed()
        self.assertEqual(failed["attempts"], 1)
        self.assertIn("550", failed["last_error"])
        listing = self.command("failed")
        self.assertIn(failed["key"], listing)
        self.assertIn("/buckets/b/collections/c/records/r000", listing)
        self.sink.refuse.clear()
        self.assertIn("1 failed message(s) queued again", self.command("resend", failed["key"]))
        self.assertEqual(len(self.sink.wait_for(1)), 1)
        self.assertEqual(self.queue.failed(), [])

    def test_a_message_or_change_that_cannot_be_loaded_is_listed_and_stops_nothing(self):
        poison = {**drafts_of_age(0)[0].to_json(), "key": "poison", "recipient": "nobody"}
        with jobs.session(self.queue.dsn) as connection:
            jobs.execute(
                connection,
                "INSERT INTO kinto_emailer_jobs (key, draft) VALUES ('poison', %s)",
                (json.dumps(poison),),
            )
            jobs.execute(connection, "INSERT INTO kinto_emailer_changes (change) VALUES ('{}')")
        self.create_records(2)
        self.start_worker()
        self.assertEqual(len(self.sink.wait_for(2)), 2)
        self.assertTrue(self.queue.join(10))
        status = self.command("status")
        self.assertIn("failed     2", status)
        listing = self.command("failed")
        self.assertIn("poison", listing)
        self.assertIn("'nobody' is not a valid email address", listing)
        self.assertIn("cannot work out the change", listing)

    def test_the_kinto_process_sends_nothing_with_worker_false(self):
        self.create_records(1)
        self.assertFalse(self.queue.join(1))
        self.assertEqual(self.queue.status()["changes"], 1)
        self.queue.expand_all()
        self.assertEqual(self.queue.status()["queued"], 1)
        self.assertEqual(self.sink.received, [])

    def test_status_counts_the_messages_a_worker_holds_without_locking_any(self):
        self.create_records(3)
        self.queue.expand_all()
        with jobs.session(self.queue.dsn, autocommit=False) as worker:
            jobs.execute(worker, "SELECT key FROM kinto_emailer_jobs LIMIT 1 FOR UPDATE")
            status = self.queue.status()
            self.assertEqual((status["queued"], status["sending"]), (2, 1))
            self.assertIn("sending    1", self.command("status"))
            with jobs.session(self.queue.dsn) as connection:
                # A row locked by a transaction keeps its id (xmax) after it ended.
                [(locked,)] = jobs.execute(
                    connection, "SELECT count(*) FROM kinto_emailer_jobs WHERE xmax <> '0'"
                )
            self.assertEqual(locked, 1)
        self.assertEqual(self.queue.status()["queued"], 3)

    def test_mail_is_dated_when_its_change_was_made_not_when_worked_out(self):
        self.create_records(1)
        written = datetime.datetime.now(datetime.UTC)
        time.sleep(1.5)
        self.queue.expand_all()
        self.start_worker()
        [mail] = self.sink.wait_for(1)
        dated = email.utils.parsedate_to_datetime(mail.message["Date"])
        self.assertLess(abs((dated - written).total_seconds()), 1)

    def test_mail_of_changes_older_than_max_age_is_dropped(self):
        old = drafts_of_age(days=3)
        with jobs.session(self.queue.dsn, autocommit=False) as connection:
            jobs.defer(connection, old)
        self.start_worker()
        self.assertTrue(eventually(lambda: self.queue.status()["dropped"] == 1))
        self.assertTrue(self.queue.join(10))
        self.assertEqual(self.sink.received, [])

    def test_kinto_migrate_creates_the_queue_tables(self):
        self.drop_queue()
        subprocess.run(
            [os.path.join(BIN, "kinto"), "migrate", "--ini", self.config],
            capture_output=True,
            check=True,
        )
        self.assertEqual(self.queue.status()["sent"], 0)

    def test_keys_older_than_max_age_are_forgotten(self):
        with jobs.session(self.queue.dsn) as connection:
            jobs.execute(
                connection,
                "INSERT INTO kinto_emailer_sent (key, sent_at)"
                " VALUES ('old', now() - interval '3 days'), ('recent', now())",
            )
        self.start_worker()
        # A worker prunes when it starts, then every minute.
        self.assertTrue(eventually(lambda: self.queue.status()["sent"] == 1, timeout=10))

    def test_two_digest_runs_at_once_send_one_digest_each(self):
        everyone = [f"r{i}@example.com" for i in range(20)]
        self.put_hooks("/buckets/b", {**HOOK, "cadence": "daily", "recipients": everyone})
        self.create_records(3)
        self.assertEqual(self.queue.status()["queued"], 0)
        at = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)).isoformat()
        command = [os.path.join(BIN, "kinto-emailer"), "send-digests", self.config, "--at", at]
        runs = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(2)]
        outputs = [run.communicate()[0] for run in runs]
        self.assertTrue(all("digest(s) queued" in output for output in outputs), outputs)
        self.start_worker()
        self.sink.wait_for(20)
        self.assertTrue(self.queue.join(30))
        self.assertEqual(sorted(m.rcpt_tos[0] for m in self.sink.received), sorted(everyone))
        self.assertEqual(
            {m.message["Subject"] for m in self.sink.received}, {"Daily digest: 3 change(s)"}
        )

    def test_two_workers_never_send_the_same_message(self):
        self.create_records(200)
        self.start_worker()
        self.start_worker()
        self.sink.wait_for(200, timeout=60)
        self.assertTrue(self.queue.join(30))
        counts = self.received_uris()
        self.assertEqual(len(counts), 200)
        self.assertEqual(set(counts.values()), {1})

    def stop_a_worker_midway(self, signum):
        """100 messages: a worker gets ``signum`` after 20 of them, another one sends on."""
        self.sink.delay = 0.02
        self.create_records(100)
        stopped = self.start_worker()
        self.sink.wait_for(20)
        stopped.send_signal(signum)
        stopped.wait()
        self.start_worker()

    def test_a_stopped_worker_hands_its_messages_over(self):
        self.stop_a_worker_midway(signal.SIGTERM)
        self.sink.wait_for(100, timeout=60)
        self.assertTrue(self.queue.join(30))
        self.assertEqual(set(self.received_uris().values()), {1})
        self.assertEqual(len(self.received_uris()), 100)

    def test_a_killed_worker_loses_nothing(self):
        self.stop_a_worker_midway(signal.SIGKILL)
        self.sink.wait_for(100, timeout=60)
        self.assertTrue(eventually(lambda: len(self.received_uris()) == 100, timeout=30))
        self.assertTrue(self.queue.join(30))
        counts = self.received_uris()
        # Only the message in flight when the worker died may have reached the server
        # without its answer reaching the worker: it is sent again, with the same
        # Message-ID, so mail clients show it once.
        repeated = [uri for uri, n in counts.items() if n > 1]
        self.assertLessEqual(len(repeated), 1, repeated)
        ids = collections.defaultdict(set)
        for mail in self.sink.received:
            ids[mail.body].add(mail.message["Message-ID"])
        self.assertEqual({len(v) for v in ids.values()}, {1})


@contextlib.contextmanager
def statements(engine):
    """Every statement run on ``engine``'s connections in the block, whatever runs it
    (Kinto's storage, or the queue on the same connections)."""
    run = []

    class Counting(psycopg2.extensions.cursor):
        def execute(self, query, parameters=None):
            run.append(query)
            return super().execute(query, parameters)

    def counting(dbapi_connection, record, proxy):
        dbapi_connection.cursor_factory = Counting

    def plain(dbapi_connection, record):
        if dbapi_connection is not None:
            dbapi_connection.cursor_factory = psycopg2.extensions.cursor

    sqlalchemy.event.listen(engine, "checkout", counting)
    sqlalchemy.event.listen(engine, "checkin", plain)
    try:
        yield run
    finally:
        sqlalchemy.event.remove(engine, "checkout", counting)
        sqlalchemy.event.remove(engine, "checkin", plain)


@skip_unless_postgresql
class ExpansionStatementsTest(PostgreSQL, EmailerWebTest):
    extra_settings = QUEUE_SETTINGS

    def setUp(self):
        super().setUp()
        self.queue = self.registry.emailer_delivery.queue
        self.app.put_json("/buckets/b", headers=self.headers)
        for i in range(jobs.CLAIM_SIZE):
            self.app.put_json(f"/buckets/b/collections/c{i}", headers=self.headers)
        self.put_hooks("/buckets/b", {**HOOK, "recipients": ["a@example.com", "b@example.com"]})
        # The recipients' preferences, recorded once.
        self.create_record("/buckets/b/collections/c0/records")
        self.queue.expand_all()

    def expanded(self, changes, collections=1):
        for i in range(changes):
            self.create_record(f"/buckets/b/collections/c{i % collections}/records")
        self.assertEqual(self.queue.status()["changes"], changes)
        engine = self.registry.storage.client.session_factory.get_bind()
        with statements(engine) as run:
            self.queue.expand_all()
        self.assertEqual(self.queue.status()["changes"], 0)
        return run

    def test_a_claim_costs_as_many_statements_for_one_change_as_for_a_hundred(self):
        one = self.expanded(1)
        many = self.expanded(jobs.CLAIM_SIZE)
        self.assertEqual(
            len(many), len(one), collections.Counter(" ".join(q.split())[:70] for q in many)
        )
        self.assertEqual(self.queue.status()["queued"], 2 * (1 + 1 + jobs.CLAIM_SIZE))

    def test_a_claim_reads_its_collections_at_once(self):
        one = self.expanded(1)
        many = self.expanded(jobs.CLAIM_SIZE, collections=jobs.CLAIM_SIZE)
        self.assertEqual(
            len(many), len(one), collections.Counter(" ".join(q.split())[:70] for q in many)
        )
