"""Reliable delivery: retries on the configured delays, failures kept, old mail dropped."""

import logging
import os
import ssl
import subprocess
import sys
import tempfile
import textwrap
from unittest import mock

from kinto_emailer.delivery import Breaker
from tests.support import EmailerWebTest, SilentServer, SMTPSink, eventually


HOOK = {"template": "{uri}", "recipients": ["a@example.com"], "resource_name": "record"}
DELAYS = (0.2, 0.4, 0.8)


class ImplicitTLSTest(EmailerWebTest):
    """``mail.ssl``: TLS from the first byte (port 465), the server's certificate checked."""

    extra_settings = {"mail.ssl": "true"}

    @classmethod
    def setUpClass(cls):
        cls.certificates = tempfile.TemporaryDirectory()
        certificate = os.path.join(cls.certificates.name, "certificate.pem")
        key = os.path.join(cls.certificates.name, "key.pem")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
            + ["-keyout", key, "-out", certificate, "-subj", "/CN=127.0.0.1"]
            + ["-addext", "subjectAltName=IP:127.0.0.1"],
            check=True,
            capture_output=True,
        )
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(certificate, key)
        # The client trusts this server as it would a real one's: through its CA file.
        cls.trust = mock.patch.dict(os.environ, {"SSL_CERT_FILE": certificate})
        cls.trust.start()
        cls.sink = SMTPSink(ssl_context=context).start()
        super(EmailerWebTest, cls).setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        cls.trust.stop()
        cls.certificates.cleanup()

    def test_mail_goes_over_tls_from_the_first_byte(self):
        self.create_collection()
        self.put_hooks("/buckets/b", {"template": "{uri}", "recipients": ["a@example.com"]})
        self.app.put_json("/buckets/b/collections/c/records/r", headers=self.headers)
        [mail] = self.mails()
        self.assertEqual(mail.body, "/buckets/b/collections/c/records/r")
        self.assertEqual(list(self.registry.emailer_outbox.failures), [])


class DeliveryTest(EmailerWebTest):
    extra_settings = {"emailer.retry_delays": " ".join(map(str, DELAYS))}

    def setUp(self):
        super().setUp()
        self.create_collection()
        self.put_hooks("/buckets/b", HOOK)
        self.outbox = self.registry.emailer_outbox
        self.counts = dict(self.outbox.counts)
        self.outbox.failures.clear()

    def counted(self, name):
        return self.outbox.counts[name] - self.counts[name]

    def write(self, record_id="r1"):
        self.app.put_json(f"/buckets/b/collections/c/records/{record_id}", headers=self.headers)

    def test_temporary_failures_are_retried_on_the_configured_delays(self):
        self.sink.defer["a@example.com"] = 2
        self.write()
        [mail] = self.sink.wait_for(1)
        self.assertEqual(mail.rcpt_tos, ["a@example.com"])
        times = [t for t, _ in self.sink.attempts]
        self.assertEqual(len(times), 3)
        self.assertGreaterEqual(times[1] - times[0], DELAYS[0])
        self.assertGreaterEqual(times[2] - times[1], DELAYS[1])
        self.outbox.join()
        self.assertEqual((self.counted("retried"), self.counted("sent")), (2, 1))
        self.assertEqual(len(self.sink.received), 1)

    def test_permanent_refusals_are_not_retried(self):
        self.sink.refuse.add("a@example.com")
        with self.assertLogs("kinto_emailer.delivery", logging.ERROR) as logs:
            self.write()
            self.outbox.join()
        [job] = self.outbox.failures
        self.assertEqual(job.attempts, 1)
        self.assertIn("550", job.last_error)
        self.assertIn("/buckets/b/collections/c/records/r1", logs.output[0])
        self.assertEqual(len(self.sink.attempts), 1)
        self.assertEqual((self.counted("failed"), self.counted("retried")), (1, 0))

    def test_a_message_still_failing_after_the_last_delay_is_kept_as_failed(self):
        self.sink.defer["a@example.com"] = 99
        self.write()
        self.assertTrue(eventually(lambda: self.outbox.failures))
        [job] = self.outbox.failures
        self.assertEqual(job.attempts, len(DELAYS) + 1)
        self.assertIn("451", job.last_error)
        self.assertEqual(len(self.sink.attempts), len(DELAYS) + 1)
        self.assertEqual(self.sink.received, [])

    def test_one_deferred_recipient_does_not_delay_the_others(self):
        self.put_hooks("/buckets/b", {**HOOK, "recipients": ["a@example.com", "b@example.com"]})
        self.sink.defer["a@example.com"] = 1
        self.write()
        self.outbox.join()
        self.assertEqual([m.rcpt_tos for m in self.sink.received], [["b@example.com"]])
        self.assertEqual(len(self.sink.wait_for(2)), 2)


class ReconnectTest(EmailerWebTest):
    def test_the_kept_connection_is_opened_again_when_the_server_dropped_it(self):
        self.create_collection()
        self.put_hooks("/buckets/b", HOOK)
        self.app.put_json("/buckets/b/collections/c/records/r1", headers=self.headers)
        self.assertEqual(len(self.mails()), 1)
        self.sink.stop()
        restarted = SMTPSink(port=self.sink.port).start()
        self.addCleanup(restarted.stop)
        retried = self.registry.emailer_outbox.counts["retried"]
        self.app.put_json("/buckets/b/collections/c/records/r2", headers=self.headers)
        self.registry.emailer_outbox.join()
        self.assertEqual(
            [m.body for m in restarted.received], ["/buckets/b/collections/c/records/r2"]
        )
        self.assertEqual(self.registry.emailer_outbox.counts["retried"], retried)


class MetricsTest(EmailerWebTest):
    extra_settings = {"includes": "kinto_emailer tests.plugins.recording_metrics"}

    def test_counts_go_to_kintos_metrics(self):
        self.create_collection()
        self.put_hooks("/buckets/b", {**HOOK, "recipients": ["a@example.com", "x@example.com"]})
        self.sink.refuse.add("x@example.com")
        self.app.put_json("/buckets/b/collections/c/records/r1", headers=self.headers)
        self.mails()
        counts = self.registry.metrics.counts
        self.assertEqual(counts["plugins.emailer.queued"], 2)
        self.assertEqual(counts["plugins.emailer.sent"], 1)
        self.assertEqual(counts["plugins.emailer.failed"], 1)


class SMTPDownTest(EmailerWebTest):
    """The SMTP server is down during the write and comes back later."""

    extra_settings = {"emailer.retry_delays": "0.3 0.3 0.3 0.3"}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.sink.stop()

    def test_mail_arrives_once_the_server_is_back(self):
        self.create_collection()
        self.put_hooks("/buckets/b", HOOK)
        self.app.put_json("/buckets/b/collections/c/records/r1", headers=self.headers)
        self.registry.emailer_outbox.join()
        back = SMTPSink(port=self.sink.port).start()
        self.addCleanup(back.stop)
        [mail] = back.wait_for(1)
        self.assertEqual(mail.body, "/buckets/b/collections/c/records/r1")
        self.registry.emailer_outbox.join()
        self.assertEqual(len(back.received), 1)


class UnreachableServerTest(EmailerWebTest):
    """A server that does not answer is left alone for a while, not waited on per message."""

    extra_settings = {
        "includes": "kinto_emailer tests.plugins.recording_metrics",
        "emailer.retry_delays": "0.2 0.2",
        "emailer.smtp_timeout": "1",
    }

    def setUp(self):
        super().setUp()
        self.create_collection()
        self.put_hooks("/buckets/b", HOOK)
        self.sink.stop()
        self.addCleanup(self.sink.restart)
        self.retried = self.counted("retried")

    def counted(self, name):
        return self.registry.metrics.counts.get(f"plugins.emailer.{name}", 0)

    def write(self, records):
        requests = [
            {"method": "PUT", "path": f"/buckets/b/collections/c/records/r{i}"}
            for i in range(records)
        ]
        self.app.post_json("/batch", {"requests": requests}, headers=self.headers)

    def all_retried(self, records):
        return eventually(lambda: self.counted("retried") - self.retried >= records, timeout=20)

    def comes_back(self, records):
        self.sink.restart()
        received = self.sink.wait_for(records, timeout=20)
        self.assertEqual(len({m.body for m in received}), records)
        self.assertEqual(self.counted("failed"), 0)

    def test_a_silent_server_costs_one_timeout_not_one_per_message(self):
        silent = SilentServer(self.sink.port)
        self.addCleanup(silent.stop)
        self.write(10)
        self.assertTrue(self.all_retried(10))
        self.assertEqual(len(silent.connections), 1)
        silent.stop()
        self.comes_back(10)

    def test_a_stopped_server_is_not_tried_for_each_message(self):
        with self.assertLogs("kinto_emailer.delivery", logging.WARNING) as logs:
            self.write(10)
            self.assertTrue(self.all_retried(10))
        tries = [line for line in logs.output if "did not answer" in line]
        self.assertEqual(len(tries), 1, logs.output)
        self.comes_back(10)


class MaxAgeTest(EmailerWebTest):
    extra_settings = {"emailer.retry_delays": "0.3", "emailer.max_age": "0.1"}

    def test_mail_of_old_changes_is_dropped_and_counted(self):
        outbox = self.registry.emailer_outbox
        self.create_collection()
        self.put_hooks("/buckets/b", HOOK)
        self.sink.defer["a@example.com"] = 1
        dropped = outbox.counts["dropped"]
        with self.assertLogs("kinto_emailer.delivery", logging.WARNING) as logs:
            self.app.put_json("/buckets/b/collections/c/records/r1", headers=self.headers)
            outbox.join()
            self.sink.wait_for(2, timeout=1)
            outbox.join()
        self.assertEqual(outbox.counts["dropped"], dropped + 1)
        self.assertIn("older than max_age", "\n".join(logs.output))
        self.assertEqual(self.sink.received, [])


class DrainTest(EmailerWebTest):
    def test_a_stopping_process_sends_what_is_due(self):
        script = textwrap.dedent(
            f"""
            import webtest
            from kinto import main
            from kinto.core.testing import get_user_headers
            from tests.support import app_settings

            app = webtest.TestApp(main({{}}, **app_settings({self.sink.port})))
            headers = get_user_headers("alice")
            hooks = {{"kinto-emailer": {{"hooks": [{HOOK!r}]}}}}
            app.put_json("/v1/buckets/b", {{"data": hooks}}, headers=headers)
            app.put_json("/v1/buckets/b/collections/c", headers=headers)
            for i in range(20):
                app.put_json(f"/v1/buckets/b/collections/c/records/r{{i}}", headers=headers)
            """
        )
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        subprocess.run([sys.executable, "-c", script], cwd=root, check=True, capture_output=True)
        self.assertEqual(len(self.sink.received), 20)


def test_the_breaker_waits_longer_at_each_failure_in_a_row_up_to_a_minute():
    now = [0.0]
    breaker = Breaker(clock=lambda: now[0])
    delays = [breaker.trip("refused") for _ in range(8)]
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60]
    now[0] = 59.5
    assert breaker.wait() == 0.5
    breaker.reset()
    assert (breaker.wait(), breaker.trip("refused")) == (0, 1)
