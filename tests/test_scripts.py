"""``kinto-send-email CONFIG RECIPIENT`` against a real SMTP server."""

import contextlib
import io
import os
import subprocess
import sys
import tempfile
import unittest

from kinto_emailer.scripts import send_email_main
from tests.support import SMTPSink, free_port


HERE = os.path.dirname(__file__)


class SendEmailTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.sink = SMTPSink().start()
        with open(os.path.join(HERE, "config", "kinto.ini")) as f:
            cls.template = f.read()

    @classmethod
    def tearDownClass(cls):
        cls.sink.stop()

    def setUp(self):
        self.sink.clear()
        self.directory = tempfile.TemporaryDirectory()
        self.addCleanup(self.directory.cleanup)

    def config(self, port=None, extra=""):
        path = os.path.join(self.directory.name, "kinto.ini")
        with open(path, "w") as f:
            f.write(self.template.format(port=port or self.sink.port, extra=extra))
        return path

    def test_sends_a_test_message(self):
        code = send_email_main([self.config(), "Me <me@example.com>"])
        self.assertEqual(code, 0)
        [mail] = self.sink.received
        self.assertEqual(mail.rcpt_tos, ["me@example.com"])
        self.assertEqual(mail.message["Subject"], "[Kinto Test] kinto-emailer test message")
        self.assertEqual(mail.message["To"], "Me <me@example.com>")

    def test_installed_command(self):
        command = os.path.join(os.path.dirname(sys.executable), "kinto-send-email")
        result = subprocess.run(
            [command, self.config(), "me@example.com"], capture_output=True, text=True
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("Test message sent to me@example.com", result.stdout)
        self.assertEqual(len(self.sink.received), 1)

    def assert_fails(self, args, message):
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            code = send_email_main(args)
        self.assertEqual(code, 1)
        self.assertIn(message, stderr.getvalue())
        self.assertEqual(self.sink.received, [])

    def test_smtp_server_down(self):
        self.assert_fails([self.config(port=free_port()), "me@example.com"], "Connection refused")

    def test_missing_config(self):
        self.assert_fails(["/nonexistent/kinto.ini", "me@example.com"], "Cannot read")

    def test_bad_setting(self):
        config = self.config(extra="kinto.emailer.max_recipient = 3")
        self.assert_fails([config, "me@example.com"], "kinto.emailer.max_recipient")

    def test_bad_recipient(self):
        self.assert_fails([self.config(), "a@example.com, b@example.com"], "Invalid recipient")

    def test_plugin_not_included(self):
        config = self.config()
        with open(config) as f:
            text = f.read().replace("kinto.includes = kinto_emailer", "kinto.includes =")
        with open(config, "w") as f:
            f.write(text)
        self.assert_fails([config, "me@example.com"], "does not list kinto_emailer")

    def test_usage(self):
        with self.assertRaises(SystemExit) as cm, contextlib.redirect_stderr(io.StringIO()):
            send_email_main([])
        self.assertEqual(cm.exception.code, 2)
