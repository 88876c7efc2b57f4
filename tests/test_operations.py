"""What operators see: where mail goes at startup, a line per message sent, versions,
errors that name the SMTP server, and counts and timings through Kinto's metrics."""

import logging
import os
import re
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta

from kinto import main as kinto_main
from kinto.plugins import prometheus

from kinto_emailer import __version__, send_digests
from tests.support import (
    EmailerWebTest,
    app_settings,
    free_port,
    skip_unless_postgresql,
    write_config,
)
from tests.test_postgresql import PostgreSQL


HOOK = {"template": "{uri}", "resource_name": "record", "recipients": ["a@example.com"]}
BIN = os.path.dirname(sys.executable)


def startup_lines(**settings: str) -> list[str]:
    """The INFO lines of kinto_emailer while a Kinto app with ``settings`` starts."""
    logger = logging.getLogger("kinto_emailer")
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append  # type: ignore[method-assign]
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        kinto_main({}, **app_settings(2525, **settings))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return [r.getMessage() for r in records if r.levelno == logging.INFO]


class StartupLineTest(EmailerWebTest):
    def test_says_where_mail_goes_and_how_the_queue_runs(self):
        [line] = startup_lines(**{"mail.tls": "true"})
        self.assertIn("SMTP server 127.0.0.1:2525", line)
        self.assertIn("STARTTLS required", line)
        self.assertIn("a thread of this process", line)

    def test_each_tls_mode_is_named(self):
        cases = {
            "no TLS": {},
            "STARTTLS required": {"mail.tls": "true"},
            "TLS from the start": {"mail.ssl": "true"},
        }
        for mode, settings in cases.items():
            with self.subTest(mode=mode):
                [line] = startup_lines(**settings)
                self.assertIn(f"({mode})", line)

    def test_names_the_debug_folder_and_the_maildir(self):
        with tempfile.TemporaryDirectory() as directory:
            [line] = startup_lines(
                **{"mail.debug_mailer": "true", "mail.top_level_directory": directory}
            )
            self.assertIn(f"into .eml files of {directory}", line)
            maildir = os.path.join(directory, "queue")
            [line] = startup_lines(**{"mail.queue_path": maildir})
            self.assertIn(f"Maildir {maildir}", line)


@skip_unless_postgresql
class PostgreSQLStartupLineTest(PostgreSQL, EmailerWebTest):
    def test_says_how_the_queue_runs(self):
        settings = self.get_app_settings()
        for worker, said in [("true", "worker thread"), ("false", "kinto-emailer worker")]:
            with self.subTest(worker=worker):
                lines = startup_lines(
                    **{k: v for k, v in settings.items() if k.endswith(("_backend", "_url"))},
                    **{"emailer.worker": worker},
                )
                [line] = lines
                self.assertIn("PostgreSQL", line)
                self.assertIn(said, line)


class SentLineTest(EmailerWebTest):
    def setUp(self):
        super().setUp()
        self.create_collection()
        self.put_hooks("/buckets/b", HOOK)

    def test_one_info_line_per_message_sent(self):
        with self.assertLogs("kinto_emailer", logging.INFO) as logs:
            self.app.put_json("/buckets/b/collections/c/records/r1", headers=self.headers)
            [mail] = self.mails()
        key = mail.message["Message-ID"][1:].split("@")[0]
        sent = [line for line in logs.output if line.startswith("INFO") and key in line]
        self.assertEqual(len(sent), 1, logs.output)
        self.assertIn("a@example.com", sent[0])
        self.assertIn("/buckets/b/collections/c/records/r1", sent[0])

    def test_refusals_name_the_smtp_server(self):
        self.sink.refuse.add("a@example.com")
        self.app.put_json("/buckets/b/collections/c/records/r1", headers=self.headers)
        self.mails()
        queue = self.registry.emailer_delivery.queue
        if queue is None:
            [error] = [job.last_error for job in self.registry.emailer_outbox.failures]
        else:
            [error] = [row["last_error"] for row in queue.failed()]
        self.assertIn(f"127.0.0.1:{self.sink.port}", error)


@skip_unless_postgresql
class PostgreSQLSentLineTest(PostgreSQL, SentLineTest):
    pass


class PrometheusTest(EmailerWebTest):
    """Counts and timings read where dashboards read them: Kinto's Prometheus plugin."""

    extra_settings = {
        "includes": "kinto.plugins.prometheus kinto_emailer",
        "project_name": "kinto",
    }

    @classmethod
    def setUpClass(cls):
        prometheus.reset_registry()
        super().setUpClass()

    def metric(self, name: str) -> float:
        text = self.app.get("/__metrics__").text
        found = re.search(rf"^kinto_plugins_emailer_{name} (\S+)$", text, re.MULTILINE)
        return float(found[1]) if found else 0.0

    def test_messages_web_notifications_and_delivery_time(self):
        self.create_collection()
        self.put_hooks(
            "/buckets/b",
            {**HOOK, "channels": ["email", "web"]},
            {**HOOK, "recipients": ["b@example.com"]},
        )
        before = {
            name: self.metric(name)
            for name in ("queued_total", "sent_total", "web_total", "delivery_seconds_count")
        }
        self.app.put_json("/buckets/b/collections/c/records/r1", headers=self.headers)
        self.mails()
        self.assertEqual(self.metric("queued_total") - before["queued_total"], 2)
        self.assertEqual(self.metric("sent_total") - before["sent_total"], 2)
        self.assertEqual(self.metric("web_total") - before["web_total"], 1)
        self.assertEqual(
            self.metric("delivery_seconds_count") - before["delivery_seconds_count"], 2
        )

    def test_digests(self):
        self.create_collection()
        self.put_hooks("/buckets/b", {**HOOK, "cadence": "daily"})
        self.app.put_json("/buckets/b/collections/c/records/r1", headers=self.headers)
        self.mails()
        before = self.metric("digests_total")
        send_digests(self.registry, datetime.now(UTC) + timedelta(days=1))
        self.assertEqual(len(self.mails()), 1)
        self.assertEqual(self.metric("digests_total") - before, 1)


class VersionTest(EmailerWebTest):
    def test_both_commands_say_their_version(self):
        for command in ("kinto-emailer", "kinto-send-email"):
            with self.subTest(command=command):
                done = subprocess.run(
                    [os.path.join(BIN, command), "--version"], capture_output=True, text=True
                )
                self.assertEqual(done.returncode, 0, done.stderr)
                self.assertEqual(done.stdout.strip(), f"{command} {__version__}")

    def test_send_email_names_the_server_it_could_not_reach(self):
        port = free_port()
        with tempfile.TemporaryDirectory() as directory:
            config = write_config(directory, port, {"emailer.smtp_timeout": "2"})
            done = subprocess.run(
                [os.path.join(BIN, "kinto-send-email"), config, "you@example.com"],
                capture_output=True,
                text=True,
            )
        self.assertEqual(done.returncode, 1)
        self.assertIn(f"127.0.0.1:{port}", done.stderr)


@skip_unless_postgresql
class PostgreSQLPrometheusTest(PostgreSQL, PrometheusTest):
    pass
