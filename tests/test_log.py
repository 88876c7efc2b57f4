"""The delivery log: ``GET /v1/buckets/<bucket>/emailer/log`` and ``kinto-emailer log``,
through a real SMTP server that accepts, defers (4xx) and refuses (5xx)."""

import base64
import contextlib
import io
import json
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from unittest import mock

from kinto_emailer import deliverylog, jobs
from kinto_emailer.deliverylog import Entry
from kinto_emailer.scripts import emailer_main
from tests.support import (
    BOB,
    EmailerWebTest,
    eventually,
    skip_unless_postgresql,
    write_config,
)
from tests.test_postgresql import PostgreSQL
from tests.test_preferences import app_path, links


HOOK = {
    "resource_name": "record",
    "subject": "New {id}",
    "template": "{uri}",
    "recipients": ["A <a@example.com>"],
}
RECORDS = "/buckets/b/collections/c/records"
LOG = "/buckets/b/emailer/log"


def token(moment, key):
    """A page token as the log makes them, holding anything."""
    text = json.dumps({"time": moment, "key": key})
    return base64.urlsafe_b64encode(text.encode()).decode()


class LogBase(EmailerWebTest):
    extra_settings = {"emailer.retry_delays": "1"}

    def setUp(self):
        super().setUp()
        for bucket in ("b", "b2"):
            self.app.put_json(f"/buckets/{bucket}", headers=self.headers)
            self.app.put_json(f"/buckets/{bucket}/collections/c", headers=self.headers)
        self.put_hooks("/buckets/b", HOOK)

    def write(self, record_id, bucket="b"):
        self.app.put_json(
            f"/buckets/{bucket}/collections/c/records/{record_id}", headers=self.headers
        )

    def log(self, query="", bucket="b", **kw):
        return self.app.get(f"/buckets/{bucket}/emailer/log{query}", headers=self.headers, **kw)

    def entries(self, query="", bucket="b"):
        return self.log(query, bucket).json["data"]

    def entry(self, record_id, recipient="a@example.com"):
        """The entry of the message about a record to a recipient; None if there is none."""
        uri = f"{RECORDS}/{record_id}"
        found = [e for e in self.entries() if e["uri"] == uri and e["recipient"] == recipient]
        self.assertLessEqual(len(found), 1)
        return found[0] if found else None

    def state_of(self, record_id, recipient="a@example.com"):
        entry = self.entry(record_id, recipient)
        return None if entry is None else entry["state"]


class LogTest(LogBase):
    def test_a_sent_message(self):
        before = time.time() * 1000
        self.write("r1")
        [mail] = self.mails()
        [entry] = self.entries()
        self.assertEqual(
            {k: entry[k] for k in ("recipient", "subject", "uri", "state")},
            {
                "recipient": "a@example.com",
                "subject": "New r1",
                "uri": f"{RECORDS}/r1",
                "state": "sent",
            },
        )
        self.assertEqual(len(entry["key"]), 64)
        self.assertLessEqual(before - 1, entry["time"])
        self.assertLessEqual(entry["time"], entry["sent_at"])
        self.assertLessEqual(entry["sent_at"], time.time() * 1000 + 1)
        self.assertEqual(
            sorted(entry), ["key", "recipient", "sent_at", "state", "subject", "time", "uri"]
        )
        # Its Message-ID comes from its key: a support request with the mail finds it.
        self.assertEqual(mail.message["Message-ID"], f"<{entry['key'][:32]}@example.com>")

    def test_a_message_queued_while_the_server_takes_its_time(self):
        self.sink.delay = 1.5
        self.addCleanup(setattr, self.sink, "delay", 0.0)
        self.write("r1")
        self.assertTrue(eventually(lambda: self.entries(), timeout=10))
        self.assertEqual(self.state_of("r1"), "queued")
        self.assertEqual(
            sorted(self.entry("r1")),
            sorted(["key", "recipient", "state", "subject", "time", "uri"]),
        )
        self.mails()
        self.assertEqual(self.state_of("r1"), "sent")

    def test_a_deferred_message_is_retrying_then_sent(self):
        self.sink.defer["a@example.com"] = 1
        self.write("r1")
        self.mails()
        entry = self.entry("r1")
        self.assertEqual(entry["state"], "retrying")
        self.assertEqual(entry["attempts"], 1)
        self.assertIn("451", entry["last_error"])
        self.assertIn(f"127.0.0.1:{self.sink.port}", entry["last_error"])
        self.assertGreater(entry["next_attempt"], entry["time"] + 900)
        self.assertEqual(len(self.sink.wait_for(1)), 1)
        self.assertTrue(eventually(lambda: self.state_of("r1") == "sent"))

    def test_a_refused_message_failed_with_the_servers_answer(self):
        self.sink.refuse.add("a@example.com")
        self.write("r1")
        self.mails()
        entry = self.entry("r1")
        self.assertEqual(entry["state"], "failed")
        self.assertEqual(entry["attempts"], 1)
        self.assertIn("(550, b'5.1.1 Mailbox unavailable')", entry["last_error"])
        self.assertIn(f"127.0.0.1:{self.sink.port}", entry["last_error"])
        self.assertGreaterEqual(entry["failed_at"], entry["time"])

    def test_newest_first_filters_and_paging(self):
        self.put_hooks("/buckets/b", {**HOOK, "recipients": ["a@example.com", "b@example.com"]})
        self.sink.refuse.add("b@example.com")
        for record_id in ("r1", "r2", "r3"):
            time.sleep(0.002)  # Three times.
            self.write(record_id)
        self.mails()
        entries = self.entries()
        self.assertEqual(len(entries), 6)
        self.assertEqual(
            [e["time"] for e in entries], sorted((e["time"] for e in entries), reverse=True)
        )
        self.assertEqual(
            [e["uri"].rsplit("/", 1)[1] for e in entries], ["r3", "r3", "r2", "r2", "r1", "r1"]
        )

        refused = self.entries("?recipient=B <B@Example.com>")
        self.assertEqual(
            {(e["recipient"], e["state"]) for e in refused}, {("b@example.com", "failed")}
        )
        self.assertEqual(len(refused), 3)
        self.assertEqual(self.entries(f"?uri={RECORDS}/r2"), entries[2:4])
        self.assertEqual(len(self.entries("?state=sent")), 3)
        self.assertEqual(len(self.entries("?state=sent,failed")), 6)
        self.assertEqual(self.entries("?state=queued"), [])
        self.assertEqual(len(self.entries(f"?state=failed&uri={RECORDS}/r1")), 1)

        # Kinto's paging: _limit, Next-Page with a _token; HEAD counts.
        pages = []
        response = self.log("?_limit=4")
        while True:
            self.assertNotIn("Total-Records", response.headers)
            pages.append(response.json["data"])
            if "Next-Page" not in response.headers:
                break
            self.assertIn("_limit=4", response.headers["Next-Page"])
            response = self.follow(response)
        self.assertEqual([len(p) for p in pages], [4, 2])
        self.assertEqual([e for p in pages for e in p], entries)
        head = self.app.head(LOG, headers=self.headers)
        self.assertEqual(head.headers["Total-Records"], "6")
        self.assertEqual(head.body, b"")
        # Filters hold on every page, and on counts.
        response = self.log("?state=sent&_limit=2")
        following = self.follow(response)
        self.assertEqual([e["state"] for e in following.json["data"]], ["sent"])
        self.assertNotIn("Next-Page", following.headers)
        head = self.app.head(f"{LOG}?state=failed", headers=self.headers)
        self.assertEqual(head.headers["Total-Records"], "3")
        self.assertEqual(head.headers["Total-Objects"], "3")
        # Read by scripts of other origins, as Kinto's lists are.
        origin = {**self.headers, "Origin": "https://admin.example.com"}
        response = self.app.get(f"{LOG}?_limit=1", headers=origin)
        self.assertEqual(response.headers["Access-Control-Allow-Origin"], "*")
        exposed = response.headers["Access-Control-Expose-Headers"]
        for header in ("Next-Page", "Total-Records", "Total-Objects"):
            self.assertIn(header, exposed)

    def follow(self, response):
        """The page of the Next-Page header of ``response``."""
        path = app_path(response.headers["Next-Page"]).removeprefix("/v1")
        return self.app.get(path, headers=self.headers)

    def test_bad_parameters_are_400_naming_them(self):
        cases = {
            "?state=lost": "state",
            "?state=sent,": "state",
            "?recipient=not an address": "recipient",
            "?_limit=0": "_limit",
            "?_limit=ten": "_limit",
            "?_token=garbage": "_token",
            "?_token=e30=": "_token",
            f"?_token={token(10**30, 'k')}": "_token",
            f"?_token={token(-1, 'k')}": "_token",
            f"?_token={token(True, 'k')}": "_token",
            f"?_token={token(1, 'k' * 1000)}": "_token",
            "?_sort=time": "_sort",
            f"?uri=/{'x' * 2000}": "uri",
        }
        for query, name in cases.items():
            with self.subTest(query=query):
                response = self.log(query, status=400)
                self.assertEqual(response.json["details"][0]["location"], "querystring")
                self.assertEqual(response.json["details"][0]["name"], name)

    def test_only_writers_of_the_bucket_read_its_log(self):
        self.write("r1")
        self.mails()
        # Readers, of the bucket or by a grant to everyone: authenticated 403, anonymous 401.
        self.app.patch_json(
            "/buckets/b", {"permissions": {"read": ["system.Everyone"]}}, headers=self.headers
        )
        self.app.get(LOG, headers=BOB, status=403)
        response = self.app.get(LOG, status=401)
        self.assertEqual(response.json["errno"], 104)
        self.app.get("/buckets/unknown/emailer/log", headers=BOB, status=403)
        self.app.get("/buckets/unknown/emailer/log", status=401)
        self.app.head(LOG, headers=BOB, status=403)
        # A writer of the bucket (not of its collections only) reads it.
        self.app.patch_json(
            "/buckets/b/collections/c",
            {"permissions": {"write": ["system.Authenticated"]}},
            headers=self.headers,
        )
        self.app.get(LOG, headers=BOB, status=403)
        self.app.patch_json(
            "/buckets/b",
            {"permissions": {"write": ["system.Authenticated"]}},
            headers=self.headers,
        )
        [entry] = self.app.get(LOG, headers=BOB).json["data"]
        self.assertEqual(entry["state"], "sent")

    def test_another_buckets_messages_never_appear(self):
        self.put_hooks("/buckets/b2", {**HOOK, "recipients": ["a@example.com"]})
        self.write("r1")
        self.write("r1", bucket="b2")
        self.write("r2", bucket="b2")
        self.mails()
        self.assertEqual([e["uri"] for e in self.entries()], [f"{RECORDS}/r1"])
        self.assertEqual(
            [e["uri"] for e in self.entries(bucket="b2")],
            ["/buckets/b2/collections/c/records/r2", "/buckets/b2/collections/c/records/r1"],
        )
        self.assertEqual(self.entries("?uri=/buckets/b2/collections/c/records/r1"), [])
        head = self.app.head("/buckets/b2/emailer/log", headers=self.headers)
        self.assertEqual(head.headers["Total-Records"], "2")
        # Writers of one bucket only.
        self.app.patch_json(
            "/buckets/b2",
            {"permissions": {"write": ["system.Authenticated"]}},
            headers=self.headers,
        )
        self.app.get("/buckets/b2/emailer/log", headers=BOB, status=200)
        self.app.get(LOG, headers=BOB, status=403)


class WritersBySettingTest(LogBase):
    extra_settings = {**LogBase.extra_settings, "bucket_write_principals": "system.Authenticated"}

    def test_the_writers_that_kintos_settings_name_read_every_log(self):
        self.write("r1")
        self.mails()
        [entry] = self.app.get(LOG, headers=BOB).json["data"]
        self.assertEqual(entry["uri"], f"{RECORDS}/r1")
        self.app.get(LOG, status=401)


class DecidedTest(LogBase):
    """What is decided instead of queuing a message: a digest entry, mail turned off."""

    def test_mail_kept_for_a_digest(self):
        self.put_hooks("/buckets/b", {**HOOK, "cadence": "weekly"})
        self.write("r1")
        self.mails()
        entry = self.entry("r1")
        self.assertEqual((entry["state"], entry["cadence"]), ("digest", "weekly"))
        self.assertEqual(entry["subject"], "New r1")
        self.assertEqual(self.sink.received, [])

    def test_mail_turned_off_by_its_recipient(self):
        self.write("r1")
        [mail] = self.mails()
        unsubscribe, _ = links(mail)
        self.post_link(unsubscribe)
        self.write("r2")
        self.mails()
        self.assertEqual(self.state_of("r1"), "sent")
        entry = self.entry("r2")
        self.assertEqual(entry["state"], "off")
        self.assertEqual(sorted(entry), ["key", "recipient", "state", "subject", "time", "uri"])
        self.assertEqual(len(self.sink.received), 1)


class OverBoundTest(LogBase):
    extra_settings = {"emailer.max_messages_per_bucket_hour": "2"}

    def test_mail_over_a_bound_is_dropped_and_as_many_are_logged_as_it_lets_through(self):
        everyone = [f"r{i}@example.com" for i in range(5)]
        self.put_hooks("/buckets/b", {**HOOK, "recipients": everyone})
        self.write("r1")
        self.assertEqual(len(self.mails()), 2)
        entries = self.entries()
        self.assertEqual(
            sorted(e["state"] for e in entries), ["dropped", "dropped", "sent", "sent"]
        )
        for entry in entries:
            if entry["state"] == "dropped":
                self.assertEqual(
                    entry["reason"], "over kinto.emailer.max_messages_per_bucket_hour"
                )
        # The bound lets 2 through an hour: 2 of its refusals are kept, whatever comes.
        self.write("r2")
        self.mails()
        self.assertEqual(len(self.entries()), 4)


class InTransactionTest(LogBase):
    """The Maildir queue and the debug mailer work mail out in the write's transaction:
    a rolled-back write leaves no entry."""

    @classmethod
    def setUpClass(cls):
        cls.directory = tempfile.mkdtemp()
        cls.extra_settings = {
            **cls.extra_settings,
            "includes": "kinto_emailer tests.plugins.failing",
            **cls.mail_settings(cls.directory),
        }
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        shutil.rmtree(cls.directory)

    def write_both(self):
        self.put_hooks("/buckets/b", HOOK)
        self.write("r1")
        self.app.put_json(
            f"{RECORDS}/r2", {"data": {"fail": True}}, headers=self.headers, status=500
        )
        self.assertEqual(self.entries(f"?uri={RECORDS}/r2"), [])
        return self.entry("r1")


class MaildirTest(InTransactionTest):
    @staticmethod
    def mail_settings(directory):
        return {"mail.queue_path": directory}

    def test_mail_handed_to_the_maildir_is_queued(self):
        entry = self.write_both()
        self.assertEqual(entry["state"], "queued")


class DebugMailerTest(InTransactionTest):
    @staticmethod
    def mail_settings(directory):
        return {"mail.debug_mailer": "true", "mail.top_level_directory": directory}

    def test_mail_written_as_a_file_is_sent(self):
        self.put_hooks("/buckets/b", {**HOOK, "cadence": "daily"})
        self.write("r0")
        self.assertEqual(self.entry("r0")["state"], "digest")
        entry = self.write_both()
        self.assertEqual(entry["state"], "sent")


class TooOldTest(LogBase):
    extra_settings = {"emailer.retry_delays": "0.3", "emailer.max_age": "0.2"}

    def test_a_message_whose_change_got_too_old_is_dropped(self):
        self.sink.defer["a@example.com"] = 1
        self.write("r1")
        self.assertTrue(eventually(lambda: self.state_of("r1") == "dropped", timeout=10))
        entry = self.entry("r1")
        self.assertEqual(entry["reason"], "older than kinto.emailer.max_age")
        self.assertEqual(self.sink.received, [])


class RetentionTest(LogBase):
    extra_settings = {"emailer.log_max_age": "1"}

    def test_entries_older_than_log_max_age_are_not_shown(self):
        self.write("r1")
        self.mails()
        self.assertEqual(len(self.entries()), 1)
        time.sleep(1.1)
        self.write("r2")
        self.mails()
        self.assertEqual([e["uri"] for e in self.entries()], [f"{RECORDS}/r2"])
        self.assertEqual(self.app.head(LOG, headers=self.headers).headers["Total-Records"], "1")


class CommandTest(LogBase):
    def run_command(self, *args):
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = emailer_main(["log", self.config, *args])
        return code, stdout.getvalue(), stderr.getvalue()

    def setUp(self):
        super().setUp()
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        self.config = write_config(directory.name, self.sink.port)

    def test_the_memory_backend_has_no_log_outside_its_process(self):
        code, _, stderr = self.run_command()
        self.assertEqual(code, 1)
        self.assertIn("does not store Kinto's data in PostgreSQL", stderr)
        self.assertIn("GET /v1/buckets/<bucket>/emailer/log", stderr)


@skip_unless_postgresql
class PostgreSQLLogTest(PostgreSQL, LogTest):
    pass


@skip_unless_postgresql
class PostgreSQLDecidedTest(PostgreSQL, DecidedTest):
    pass


@skip_unless_postgresql
class PostgreSQLOverBoundTest(PostgreSQL, OverBoundTest):
    pass


@skip_unless_postgresql
class PostgreSQLTooOldTest(PostgreSQL, TooOldTest):
    pass


@skip_unless_postgresql
class PostgreSQLRetentionTest(PostgreSQL, RetentionTest):
    def rows(self, table):
        with jobs.session(self.registry.emailer_delivery.queue.dsn) as connection:
            return jobs.execute(connection, f"SELECT key FROM {table}")

    def test_workers_delete_entries_older_than_log_max_age_in_batches(self):
        self.write("r1")
        self.mails()
        old = datetime.now(UTC) - timedelta(seconds=5)
        decided = [
            Entry(f"{i:064}", "a@example.com", "s", "/buckets/b", old, "off") for i in range(4)
        ]
        with jobs.session(self.registry.emailer_delivery.queue.dsn) as connection:
            jobs.log_decided(connection, decided)
        self.assertEqual(len(self.rows("kinto_emailer_log")), 5)
        time.sleep(1.1)
        with mock.patch.object(deliverylog, "PRUNE_BATCH", 2):
            self.registry.emailer_delivery.queue.make_worker().prune()
        self.assertEqual(self.rows("kinto_emailer_log"), [])
        # Sent keys are kept max_age, whatever the log keeps.
        self.assertEqual(len(self.rows("kinto_emailer_sent")), 1)


@skip_unless_postgresql
class PostgreSQLCommandTest(PostgreSQL, CommandTest):
    def setUp(self):
        super().setUp()
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        self.config = write_config(directory.name, self.sink.port, postgresql=True)

    def test_the_memory_backend_has_no_log_outside_its_process(self):
        pass

    def test_prints_the_log_of_a_bucket_and_recipient(self):
        self.put_hooks("/buckets/b", {**HOOK, "recipients": ["a@example.com", "b@example.com"]})
        self.put_hooks("/buckets/b2", {**HOOK, "recipients": ["a@example.com"]})
        self.sink.refuse.add("b@example.com")
        self.write("r1")
        self.write("r2", bucket="b2")
        self.mails()
        code, stdout, _ = self.run_command()
        self.assertEqual(code, 0)
        self.assertEqual(len(stdout.splitlines()), 3, stdout)
        code, stdout, _ = self.run_command("--bucket", "b", "--recipient", "B@example.com")
        [line] = stdout.splitlines()
        self.assertIn("failed", line)
        self.assertIn(f"{RECORDS}/r1", line)
        self.assertIn('"New r1"', line)
        self.assertIn("(550, b'5.1.1 Mailbox unavailable')", line)
        code, stdout, _ = self.run_command("--bucket", "b2", "--limit", "1")
        self.assertEqual(stdout.splitlines()[1:], [])
        code, stdout, _ = self.run_command("--limit", "1")
        self.assertEqual(stdout.splitlines()[-1], "... and 2 older (--limit)")
