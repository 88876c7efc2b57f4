"""Settings are parsed once at startup; a bad one stops Kinto, naming the key."""

import base64
import contextlib
import logging
import os
import re
import unittest
from unittest import mock

import webtest
from kinto import main as kinto_main
from kinto.plugins import accounts
from pyramid.exceptions import ConfigurationError
from pyramid.paster import get_appsettings
from pyramid_mailer import IMailer

from kinto_emailer.settings import EmailerSettings, parse_settings
from tests.support import app_settings


SECRET = {"userid_hmac_secret": "a secret of Kinto's"}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = ("kinto.ini", "postgresql.ini")
# A value, but not one taken from elsewhere ($VARIABLE, "$(command)").
SECRET_IN_INI = r"(?:hmac_secret|emailer\.secret)[ \t]*=[ \t]*([^\s$`'\"][^\n]*)"
SECRET_IN_SHELL = r"_SECRET=([^\s$`'\"]\S*)"
SHIPPED = [
    os.path.join(ROOT, name)
    for name in ("README.rst", "Makefile", "config/kinto.ini", "config/postgresql.ini")
]


class ParseSettingsTest(unittest.TestCase):
    def test_defaults(self):
        settings = {"userid_hmac_secret": "a secret of Kinto's"}
        self.assertEqual(parse_settings(settings), EmailerSettings(secret="a secret of Kinto's"))

    def test_without_a_secret_links_are_off_and_one_warning_says_how_to_sign_them(self):
        public = {"emailer.public_url": "https://kinto.example.com/v1/"}
        for settings in ({}, {"userid_hmac_secret": ""}):
            with self.subTest(settings=settings):
                with self.assertLogs("kinto_emailer", logging.WARNING) as logs:
                    self.assertEqual(parse_settings({**public, **settings}).secret, "")
                [warning] = logs.output
                for name in ("kinto.emailer.secret", "kinto.userid_hmac_secret", "links"):
                    self.assertIn(name, warning)
        settings = {"emailer.secret": "0123456789abcdef", "userid_hmac_secret": "other"}
        self.assertEqual(parse_settings(settings).secret, "0123456789abcdef")

    def test_values(self):
        settings = parse_settings(
            {
                "emailer.allowed_domains": "Example.com @example.org Exämple.com",
                "emailer.allowed_senders": "News@Exämple.com @bücher.example",
                "emailer.max_recipients": 5,
                "emailer.smtp_timeout": "2.5",
                "emailer.smtp_connections": "4",
                "emailer.retry_delays": "1 2.5 4",
                "emailer.max_age": 60,
                "mail.debug_mailer": "true",
                "mail.top_level_directory": "/tmp/mails",
                "mail.queue_path": "/tmp/queue",
                "mail.default_sender": "a@example.com",
                "kinto.emailer.max_recipients": "5",
                "emailer.digest_daily_hour": "6",
                "emailer.digest_weekly_day": 4,
                "emailer.group_threshold": "20",
                "emailer.verified_principals": "ldap fxa:",
                "emailer.web_max_age": "3600",
                "emailer.web_max_per_recipient": "50",
                "emailer.max_scopes_per_recipient": "20",
                "emailer.log_max_age": "86400",
                "userid_hmac_secret": "a secret of Kinto's",
            }
        )
        # In ASCII, as the addresses they are compared with.
        self.assertEqual(
            settings.allowed_domains, ("example.com", "example.org", "xn--exmple-cua.com")
        )
        self.assertEqual(
            settings.allowed_senders, ("news@xn--exmple-cua.com", "@xn--bcher-kva.example")
        )
        self.assertEqual(settings.max_recipients, 5)
        self.assertEqual(settings.smtp_timeout, 2.5)
        self.assertEqual(settings.smtp_connections, 4)
        self.assertEqual(settings.retry_delays, (1.0, 2.5, 4.0))
        self.assertEqual(settings.max_age, 60.0)
        self.assertTrue(settings.debug)
        self.assertEqual(settings.debug_directory, "/tmp/mails")
        self.assertEqual(settings.queue_path, "/tmp/queue")
        self.assertEqual(settings.default_sender, "a@example.com")
        self.assertEqual((settings.digest_daily_hour, settings.digest_weekly_day), (6, 4))
        self.assertEqual(settings.group_threshold, 20)
        self.assertEqual(settings.verified_principals, ("ldap", "fxa"))
        self.assertEqual((settings.web_max_age, settings.web_max_per_recipient), (3600.0, 50))
        self.assertEqual(settings.max_scopes_per_recipient, 20)
        self.assertEqual(settings.log_max_age, 86400.0)
        self.assertEqual(parse_settings(SECRET).log_max_age, 30 * 24 * 3600.0)
        self.assertIsNone(
            parse_settings({**SECRET, "emailer.group_threshold": "off"}).group_threshold
        )

    def test_errors_name_the_key(self):
        cases = [
            ({"emailer.max_recipient": 3}, "Unknown setting 'kinto.emailer.max_recipient'"),
            ({"emailer.max_recipients": 0}, "'kinto.emailer.max_recipients' must be a positive"),
            ({"emailer.max_recipients": "ten"}, "'kinto.emailer.max_recipients'"),
            ({"emailer.max_recipients": True}, "'kinto.emailer.max_recipients'"),
            ({"emailer.smtp_timeout": -1}, "'kinto.emailer.smtp_timeout'"),
            ({"emailer.smtp_connections": 0}, "'kinto.emailer.smtp_connections' must be"),
            ({"emailer.smtp_connections": "33"}, "from 1 to 32, not '33'"),
            ({"emailer.smtp_connections": "2.5"}, "'kinto.emailer.smtp_connections'"),
            ({"emailer.allowed_domains": "example"}, "'kinto.emailer.allowed_domains'"),
            ({"emailer.retry_delays": "300 soon"}, "'kinto.emailer.retry_delays' must list"),
            ({"emailer.retry_delays": "300 -1"}, "'kinto.emailer.retry_delays' must list"),
            ({"emailer.max_age": "0"}, "'kinto.emailer.max_age'"),
            ({"emailer.web_max_age": "-1"}, "'kinto.emailer.web_max_age' must be a positive"),
            ({"emailer.web_max_per_recipient": "1.5"}, "'kinto.emailer.web_max_per_recipient'"),
            ({"emailer.max_scopes_per_recipient": "0"}, "'kinto.emailer.max_scopes_per_recip"),
            ({"emailer.log_max_age": "a month"}, "'kinto.emailer.log_max_age' must be a positive"),
            ({"mail.debug_mailer": "maybe"}, "'mail.debug_mailer'"),
            ({"mail.default_sender": "two@example.com, b@example.com"}, "'mail.default_sender'"),
            ({"emailer.digest_daily_hour": "24"}, "'kinto.emailer.digest_daily_hour'"),
            ({"emailer.digest_weekly_day": "monday"}, "'kinto.emailer.digest_weekly_day'"),
            ({"emailer.group_threshold": "many"}, "'kinto.emailer.group_threshold'"),
            ({"emailer.secret": "short"}, "'kinto.emailer.secret'"),
            ({"emailer.verified_principals": "ldap a:b"}, "'kinto.emailer.verified_principals'"),
            ({"emailer.verified_principals": "account"}, "'kinto.emailer.verified_principals'"),
        ]
        for settings, message in cases:
            with self.subTest(settings=settings):
                with self.assertRaises(ConfigurationError) as cm:
                    parse_settings({**SECRET, **settings})
                self.assertIn(message, str(cm.exception))


class SecretTest(unittest.TestCase):
    """Placeholders, from shipped files or not, sign no link."""

    def test_placeholders_and_short_secrets_are_refused(self):
        placeholders = (
            "change-me-to-a-long-random-string",
            "make-run-local-secret-change-me",
            "at least sixteen characters",
            "please CHANGE_ME 0123456789",
            "Changeme0123456789",
            "fifteen chars!!",
        )
        for secret in placeholders:
            for key, settings in [
                ("kinto.emailer.secret", {**SECRET, "emailer.secret": secret}),
                ("kinto.userid_hmac_secret", {"userid_hmac_secret": secret}),
            ]:
                with (
                    self.subTest(key=key, secret=secret),
                    self.assertRaises(ConfigurationError) as cm,
                ):
                    parse_settings(settings)
                self.assertIn(f"'{key}'", str(cm.exception))
        # Kinto's own secret is not ours to check when the links have their own.
        settings = {"userid_hmac_secret": "short", "emailer.secret": "a long random secret"}
        self.assertEqual(parse_settings(settings).secret, "a long random secret")

    def test_no_shipped_file_holds_a_usable_secret(self):
        values = []
        for path in SHIPPED:
            with open(path) as f:
                text = f.read()
            values += re.findall(SECRET_IN_INI, text) + re.findall(SECRET_IN_SHELL, text)
        for value in values:
            with self.subTest(value), self.assertRaises(ConfigurationError):
                parse_settings({"emailer.secret": value})


class VerifiedPrincipalsTest(unittest.TestCase):
    """``account`` proves an address only where Kinto's account validation is on."""

    def test_account_needs_account_validation(self):
        settings = {**SECRET, "emailer.verified_principals": "account ldap"}
        for validation in (False, True):
            with self.subTest(validation=validation), self.assertRaises(ConfigurationError) as cm:
                parse_settings({**settings, "account_validation": validation})
            self.assertIn("'kinto.emailer.verified_principals'", str(cm.exception))
            self.assertIn("kinto.account_validation", str(cm.exception))
        # A Kinto whose accounts plugin validates addresses (13.1 to 19).
        with mock.patch.object(accounts, "ACCOUNT_VALIDATION_CACHE_KEY", "x", create=True):
            with self.assertRaises(ConfigurationError):
                parse_settings(settings)
            verified = parse_settings({**settings, "account_validation": True})
        self.assertEqual(verified.verified_principals, ("account", "ldap"))

    def test_accounts_under_another_name_are_accounts(self):
        settings = {
            **SECRET,
            "multiauth.policies": "ldap",
            "multiauth.policy.ldap.use": "kinto.plugins.accounts.AccountsPolicy",
            "emailer.verified_principals": "ldap",
        }
        with self.assertRaises(ConfigurationError) as cm:
            parse_settings(settings)
        self.assertIn("'ldap'", str(cm.exception))


USABLE_SECRET = "a long random value, really"


class ConfigFilesTest(unittest.TestCase):
    """The shipped ini files are safe to copy: no open doors, no secret in them."""

    def settings(self, name):
        settings = get_appsettings(os.path.join(ROOT, "config", name))
        return {k.removeprefix("kinto."): v for k, v in settings.items()}

    def start(self, name, **environ):
        memory = {
            f"{backend}_{what}": f"kinto.core.{backend}.memory" if what == "backend" else ""
            for backend in ("storage", "permission")
            for what in ("backend", "url")
        }
        # The secret that a developer's shell may hold is not in the way.
        clean = {k: v for k, v in os.environ.items() if "SECRET" not in k}
        with mock.patch.dict(os.environ, {**clean, **environ}, clear=True):
            return kinto_main({}, **{**self.settings(name), **memory})

    @contextlib.contextmanager
    def running(self, name, **environ):
        """The app of ``name`` with a usable secret, its delivery closed after the block."""
        app = self.start(name, KINTO_USERID_HMAC_SECRET=USABLE_SECRET, **environ)
        try:
            yield app
        finally:
            app.registry.emailer_delivery.close(timeout=5)

    def test_nobody_anonymous_creates_buckets_or_accounts(self):
        for name in CONFIGS:
            with self.subTest(name):
                settings = self.settings(name)
                for key in ("bucket_create_principals", "account_create_principals"):
                    self.assertNotIn("system.Everyone", settings.get(key, ""), key)
        # Basic auth takes any user and password: accounts only, for production.
        self.assertEqual(self.settings("postgresql.ini")["multiauth.policies"], "account")

    def test_the_secret_comes_from_the_environment(self):
        for name in CONFIGS:
            with self.subTest(name):
                settings = self.settings(name)
                self.assertNotIn("userid_hmac_secret", settings)
                self.assertNotIn("emailer.secret", settings)
                # Without one, Kinto starts and the emails have no links.
                with self.assertLogs("kinto_emailer", logging.WARNING) as logs:
                    app = self.start(name)
                app.registry.emailer_delivery.close(timeout=5)
                self.assertEqual(app.registry.emailer_settings.secret, "")
                self.assertIn("KINTO_USERID_HMAC_SECRET", "\n".join(logs.output))
                with self.assertRaises(ConfigurationError) as cm:
                    self.start(name, KINTO_USERID_HMAC_SECRET="change-me-please-1234")
                self.assertIn("'kinto.userid_hmac_secret'", str(cm.exception))
                with self.running(name) as app:
                    self.assertEqual(app.registry.emailer_settings.secret, USABLE_SECRET)

    def test_the_environment_sets_a_key_left_out_of_the_file(self):
        # Both files leave the bounds out (commented): the README's variables still count.
        with self.running("kinto.ini", KINTO_EMAILER_MAX_HOOKS="1") as app:
            hook = {"template": "{uri}", "recipients": ["a@example.com"]}
            body = {"data": {"kinto-emailer": {"hooks": [hook, hook]}}}
            headers = {"Authorization": "Basic " + base64.b64encode(b"alice:s").decode()}
            response = webtest.TestApp(app).put_json(
                "/v1/buckets/b", body, headers=headers, status=400
            )
            self.assertIn("kinto.emailer.max_hooks", response.json["message"])

    def test_mail_variables_set_keys_left_out_of_the_file(self):
        # config/kinto.ini names no SMTP server: MAIL_HOST and MAIL_PORT still count.
        with self.running("kinto.ini", MAIL_HOST="smtp.example.net", MAIL_PORT="2525") as app:
            smtp = app.registry.getUtility(IMailer).smtp_mailer
            self.assertEqual((smtp.hostname, int(smtp.port)), ("smtp.example.net", 2525))


class StartupTest(unittest.TestCase):
    def start(self, **settings):
        return kinto_main({}, **app_settings(25, **settings))

    def test_unknown_key_stops_startup(self):
        with self.assertRaises(ConfigurationError) as cm:
            self.start(**{"kinto.emailer.retry": "1"})
        self.assertIn("'kinto.emailer.retry'", str(cm.exception))

    def test_bad_mail_setting_stops_startup(self):
        with self.assertRaises(ConfigurationError) as cm:
            self.start(**{"mail.port": "smtp"})
        self.assertIn("mail.", str(cm.exception))
