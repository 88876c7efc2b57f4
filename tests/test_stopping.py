"""A Kinto stopped by SIGTERM (systemd, Docker) sends what is due, as on SIGINT."""

import base64
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request

from tests.support import SMTPSink, free_port


HERE = os.path.dirname(__file__)
BIN = os.path.dirname(sys.executable)
HOOK = {"template": "{uri}", "recipients": ["a@example.com"], "resource_name": "record"}
RECORDS = 10
SERVER = """
[server:main]
use = egg:waitress#main
host = 127.0.0.1
port = {http_port}
"""


class SigtermTest(unittest.TestCase):
    def setUp(self):
        # Each message takes 0.2 s: most are still to send when the signal comes.
        self.sink = SMTPSink(delay=0.2).start()
        self.addCleanup(self.sink.stop)
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        self.http_port = free_port()
        with open(os.path.join(HERE, "config", "kinto.ini")) as f:
            text = f.read().format(
                port=self.sink.port,
                extra="kinto.bucket_create_principals = system.Authenticated\n"
                "multiauth.policies = basicauth\nkinto.emailer.drain_timeout = 20",
            )
        self.config = os.path.join(directory.name, "kinto.ini")
        with open(self.config, "w") as f:
            f.write(text + SERVER.format(http_port=self.http_port))
        self.log = open(os.path.join(directory.name, "kinto.log"), "w+")
        self.addCleanup(self.log.close)

    def request(self, method, path, data=None):
        body = json.dumps({"data": data or {}}).encode()
        auth = base64.b64encode(b"alice:secret").decode()
        headers = {"Content-Type": "application/json", "Authorization": f"Basic {auth}"}
        url = f"http://127.0.0.1:{self.http_port}/v1{path}"
        request = urllib.request.Request(url, body, headers, method=method)
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status

    def wait_until_listening(self, process):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/v1/", timeout=1)
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        self.log.seek(0)
        self.fail(f"kinto start did not listen: {self.log.read()}")

    def test_kinto_start_sends_what_is_due_on_sigterm(self):
        process = subprocess.Popen(
            [os.path.join(BIN, "kinto"), "start", "--ini", self.config],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.addCleanup(lambda: process.poll() is None and process.kill())
        self.wait_until_listening(process)
        self.request("PUT", "/buckets/b", {"kinto-emailer": {"hooks": [HOOK]}})
        self.request("PUT", "/buckets/b/collections/c")
        for i in range(RECORDS):
            self.request("PUT", f"/buckets/b/collections/c/records/r{i}")
        sent_before = len(self.sink.received)
        process.send_signal(signal.SIGTERM)
        status = process.wait(timeout=30)
        self.log.seek(0)
        output = self.log.read()
        self.assertLess(sent_before, RECORDS, "everything went out before the signal")
        self.assertIn(status, (0, -signal.SIGTERM, 128 + signal.SIGTERM), output)
        self.assertEqual(len(self.sink.received), RECORDS, output)
