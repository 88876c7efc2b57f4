"""The plugin's suites again, on Kinto's PostgreSQL backends (as in production)."""

import contextlib
import io
import logging
import tempfile
from unittest import mock

from kinto.core.storage.postgresql import Storage as PostgreSQLStorage

import tests.test_bounds as bounds
import tests.test_delivery as delivery
import tests.test_headers as headers
import tests.test_inbox_page as inbox_page
import tests.test_links as links
import tests.test_plugin as plugin
import tests.test_preferences as preferences
import tests.test_storage as storage
import tests.test_transactions as transactions
import tests.test_validation as validation
import tests.test_web as web
from kinto_emailer import jobs
from kinto_emailer.scripts import emailer_main
from tests.support import POSTGRESQL_URL, skip_unless_postgresql, write_config


class PostgreSQL:
    """Storage and permissions in PostgreSQL; every test starts from empty tables."""

    @classmethod
    def get_app_settings(cls, extras=None):
        settings = super().get_app_settings(extras)
        for backend in ("storage", "permission"):
            settings[f"{backend}_backend"] = f"kinto.core.{backend}.postgresql"
            settings[f"{backend}_url"] = POSTGRESQL_URL
        return settings


@skip_unless_postgresql
class UnreachableServerTest(PostgreSQL, delivery.UnreachableServerTest):
    pass


@skip_unless_postgresql
class HookResolutionTest(PostgreSQL, plugin.HookResolutionTest):
    pass


@skip_unless_postgresql
class GroupRecipientsTest(PostgreSQL, plugin.GroupRecipientsTest):
    pass


@skip_unless_postgresql
class HeaderInjectionTest(PostgreSQL, headers.HeaderInjectionTest):
    pass


@skip_unless_postgresql
class ValidationTest(PostgreSQL, validation.ValidationTest):
    pass


@skip_unless_postgresql
class WebTest(PostgreSQL, web.WebTest):
    pass


@skip_unless_postgresql
class WebRetentionTest(PostgreSQL, web.RetentionTest):
    pass


@skip_unless_postgresql
class WebBoundsTest(PostgreSQL, web.BoundsTest):
    pass


@skip_unless_postgresql
class WebScopesBoundTest(PostgreSQL, web.ScopesBoundTest):
    pass


@skip_unless_postgresql
class WebChannelPreferencesTest(PostgreSQL, web.ChannelPreferencesTest):
    pass


@skip_unless_postgresql
class InboxSignedLinkTest(PostgreSQL, inbox_page.SignedLinkTest):
    pass


@skip_unless_postgresql
class InboxLoggedInTest(PostgreSQL, inbox_page.LoggedInTest):
    pass


@skip_unless_postgresql
class StoredEarlierTest(PostgreSQL, validation.StoredEarlierTest):
    def check(self):
        """``kinto-emailer check`` on a configuration of this database: its status and output."""
        with tempfile.TemporaryDirectory() as directory:
            config = write_config(directory, self.sink.port, postgresql=True)
            output = io.StringIO()
            with contextlib.redirect_stdout(output):
                status = emailer_main(["check", config])
        return status, output.getvalue().splitlines()

    def test_check_lists_every_stored_hook_refused_today(self):
        status, lines = self.check()
        self.assertEqual(status, 1)
        reasons = ["'recipient' was unexpected", "{impacted_objects}", "admin@localhost"]
        for uri in ("/buckets/b", validation.COLLECTION):
            for index, reason in enumerate(reasons):
                [line] = [line for line in lines if line.startswith(f"{uri}  ") and reason in line]
                self.assertIn(f"  hook {index}  data.kinto-emailer.hooks.{index}", line)
        self.assertEqual(len(lines), 7)
        self.assertEqual("6 stored hook problem(s): saving these hooks would fail", lines[-1])
        for uri in ("/buckets/b", validation.COLLECTION):
            self.put_hooks(uri, validation.RECORD_HOOK)
        self.assertEqual(self.check(), (0, ["Every stored hook passes today's checks"]))


@skip_unless_postgresql
class StorageTest(PostgreSQL, storage.StorageTest):
    def test_registry_storage_is_the_backend_itself(self):
        super().test_registry_storage_is_the_backend_itself()
        self.assertIsInstance(self.storage, PostgreSQLStorage)

    def test_the_flush_endpoint_empties_the_plugin_s_tables(self):
        count = "SELECT count(*) FROM kinto_emailer_usage"
        dsn = self.registry.emailer_delivery.queue.dsn
        with jobs.session(dsn) as connection:
            jobs.execute(
                connection,
                "INSERT INTO kinto_emailer_usage (key, window_start, used)"
                " VALUES ('bucket:b', '2024-01-01', 3)",
            )
            self.assertEqual(jobs.execute(connection, count), [(1,)])
        self.app.post("/__flush__", status=202)
        with jobs.session(dsn) as connection:
            self.assertEqual(jobs.execute(connection, count), [(0,)])


@skip_unless_postgresql
class EventsTest(PostgreSQL, transactions.EventsTest):
    def test_an_aborted_write_is_rolled_back_and_mails_nobody(self):
        self.put_hooks("/buckets/b", {"template": "{uri}", "recipients": ["a@example.com"]})
        requests = [
            {"method": "PUT", "path": "/buckets/b/collections/c1/records/ok"},
            {
                "method": "PUT",
                "path": "/buckets/b/collections/c1/records/bad",
                "body": {"data": {"fail": True}},
            },
        ]
        self.app.post_json("/batch", {"requests": requests}, headers=self.headers, status=500)
        self.app.get("/buckets/b/collections/c1/records/ok", headers=self.headers, status=404)
        self.assertEqual(self.mails(), [])

    def test_writes_go_on_before_kinto_migrate_created_the_queue(self):
        self.put_hooks("/buckets/b", {"template": "{uri}", "recipients": ["a@example.com"]})
        self.drop_queue()
        # A Kinto process started before anyone ran kinto migrate.
        started_early = self.make_app({"emailer.worker": "false"})
        try:
            with self.assertLogs("kinto_emailer", logging.ERROR) as logs:
                started_early.put_json(
                    "/buckets/b/collections/c1/records/lost", headers=self.headers
                )
            # The worker of this class's app may log that it misses the tables too.
            self.assertTrue(any("run kinto migrate" in line for line in logs.output))
            self.app.get("/buckets/b/collections/c1/records/lost", headers=self.headers)
        finally:
            self.migrate()
        started_early.put_json("/buckets/b/collections/c1/records/mailed", headers=self.headers)
        self.assertEqual(
            [m.body for m in self.mails()], ["/buckets/b/collections/c1/records/mailed"]
        )


@skip_unless_postgresql
class MaildirQueueTest(PostgreSQL, transactions.MaildirQueueTest):
    pass


@skip_unless_postgresql
class DebugMailerTest(PostgreSQL, transactions.DebugMailerTest):
    pass


@skip_unless_postgresql
class UnsubscribeTest(PostgreSQL, preferences.UnsubscribeTest):
    pass


@skip_unless_postgresql
class PreferencesPageTest(PostgreSQL, preferences.PreferencesPageTest):
    pass


@skip_unless_postgresql
class LockedTest(PostgreSQL, preferences.LockedTest):
    pass


@skip_unless_postgresql
class MixedScopeTest(PostgreSQL, preferences.MixedScopeTest):
    pass


@skip_unless_postgresql
class KeptDigestTest(PostgreSQL, preferences.KeptDigestTest):
    pass


@skip_unless_postgresql
class TokenScopeTest(PostgreSQL, preferences.TokenScopeTest):
    pass


@skip_unless_postgresql
class TokenLifetimeTest(PostgreSQL, preferences.TokenLifetimeTest):
    pass


@skip_unless_postgresql
class TokenLogTest(PostgreSQL, preferences.TokenLogTest):
    pass


@skip_unless_postgresql
class SuppressionTest(PostgreSQL, preferences.SuppressionTest):
    pass


@skip_unless_postgresql
class PreferencesApiTest(PostgreSQL, preferences.PreferencesApiTest):
    pass


@skip_unless_postgresql
class LockedApiTest(PostgreSQL, preferences.LockedApiTest):
    pass


@skip_unless_postgresql
class AccountsTest(PostgreSQL, preferences.AccountsTest):
    pass


@skip_unless_postgresql
class PublicUrlTest(PostgreSQL, links.PublicUrlTest):
    pass


@skip_unless_postgresql
class NoLinksTest(PostgreSQL, links.NoLinksTest):
    pass


@skip_unless_postgresql
class NoSecretTest(PostgreSQL, links.NoSecretTest):
    pass


@skip_unless_postgresql
class LockedDigestTest(PostgreSQL, preferences.LockedDigestTest):
    pass


@skip_unless_postgresql
class DigestTest(PostgreSQL, preferences.DigestTest):
    pass


@skip_unless_postgresql
class GroupingTest(PostgreSQL, preferences.GroupingTest):
    pass


@skip_unless_postgresql
class BoundsTest(PostgreSQL, bounds.BoundsTest):
    def test_limited_mail_is_shown_by_status(self):
        self.put_hooks("/buckets/b", {**bounds.HOOK, "recipients": ["x@example.com"] * 1})
        for _ in range(4):
            self.create_record(bounds.RECORDS)
        self.mails()
        status = self.registry.emailer_delivery.queue.status()
        self.assertEqual((status["sent"], status["limited"]), (3, 1))


@skip_unless_postgresql
class WebTogetherTest(PostgreSQL, web.WebBase):
    def test_a_change_leaves_its_emails_and_notifications_together_or_neither(self):
        self.put_hooks(
            "/buckets/b",
            {**web.HOOK, "recipients": ["a@example.com"], "channels": ["email", "web"]},
        )
        queue = self.registry.emailer_delivery.queue
        # Queueing its mail fails once the notification is written: the worker's
        # transaction is rolled back, notification included, and the change kept as failed.
        with mock.patch.object(jobs.JobQueue, "defer", side_effect=RuntimeError("disk full")):
            self.create("r1")
        alice = web.user("a@example.com")
        self.assertEqual(self.feed(alice), [])
        self.assertEqual(self.mails(), [])
        [failed] = queue.failed()
        self.assertEqual(queue.resend([failed["key"]]), 1)
        self.assertEqual(len(self.sink.wait_for(1)), 1)
        self.assertEqual(self.subjects(alice), ["created r1"])
