"""The plugin's suites again, on Kinto's PostgreSQL backends (as in production)."""

import logging

import tests.test_bounds as bounds
import tests.test_delivery as delivery
import tests.test_headers as headers
import tests.test_links as links
import tests.test_plugin as plugin
import tests.test_preferences as preferences
import tests.test_transactions as transactions
import tests.test_validation as validation
from kinto_emailer import jobs
from tests.support import POSTGRESQL_URL, skip_unless_postgresql


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
        queue = self.registry.emailer_delivery.queue
        with jobs.session(queue.dsn) as connection:
            jobs.execute(connection, f"DROP TABLE {', '.join(jobs.TABLES)}")
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
            queue.install()
        started_early.put_json("/buckets/b/collections/c1/records/mailed", headers=self.headers)
        self.assertEqual(
            [m.body for m in self.mails()], ["/buckets/b/collections/c1/records/mailed"]
        )


@skip_unless_postgresql
class MaildirQueueTest(PostgreSQL, transactions.MaildirQueueTest):
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
class PublicUrlTest(PostgreSQL, links.PublicUrlTest):
    pass


@skip_unless_postgresql
class NoLinksTest(PostgreSQL, links.NoLinksTest):
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
