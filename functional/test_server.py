"""A running Kinto (``kinto start`` with config/postgresql.ini) driven over HTTP.

The server, its PostgreSQL database and the SMTP server it mails are all real; the
settings that differ from the shipped file, and the secret, come from environment
variables, and the account the tests use from ``kinto create-user``, as an operator
would do.
"""

import contextlib
import os
import secrets
import subprocess
import unittest
import uuid

import requests

from functional.server import BIN, kinto, running_kinto
from tests.support import (
    POSTGRESQL_URL,
    SMTPSink,
    postgresql_available,
    skip_unless_postgresql,
)
from tests.test_headers import INJECTION


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "config", "postgresql.ini")
# Beside the test database, named after it: runs with other test databases do not meet.
DATABASE_URL = POSTGRESQL_URL + "_functional"


@skip_unless_postgresql
class ServerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        assert postgresql_available(DATABASE_URL), f"no PostgreSQL at {DATABASE_URL}"
        cls.sink = SMTPSink().start()
        cls.env = {
            **os.environ,
            "KINTO_STORAGE_URL": DATABASE_URL,
            "KINTO_PERMISSION_URL": DATABASE_URL,
            "MAIL_PORT": str(cls.sink.port),
            "KINTO_USERID_HMAC_SECRET": secrets.token_hex(32),
        }
        cls.admin = ("admin", secrets.token_urlsafe(16))
        kinto("migrate", config=CONFIG, env=cls.env)
        # One argument: a password may start with "-".
        user, password = f"--username={cls.admin[0]}", f"--password={cls.admin[1]}"
        kinto("create-user", user, password, config=CONFIG, env=cls.env)
        with contextlib.ExitStack() as stack:
            stack.callback(cls.sink.stop)
            cls.url = stack.enter_context(
                running_kinto(CONFIG, cls.env, os.path.join(ROOT, ".functional-server.log"))
            )
            cls.stack = stack.pop_all()

    @classmethod
    def tearDownClass(cls):
        cls.stack.close()

    def setUp(self):
        self.sink.clear()
        self.session = requests.Session()
        self.session.auth = self.admin
        self.bucket = f"/buckets/b{uuid.uuid4().hex[:8]}"

    def call(self, method, path, body=None, status=200):
        response = self.session.request(method, f"{self.url}{path}", json=body, timeout=10)
        self.assertEqual(response.status_code, status, response.text)
        return response.json()

    def test_capability(self):
        self.assertIn("emailer", self.call("GET", "/")["capabilities"])

    def test_record_changes_are_mailed_to_addresses_and_group_members(self):
        self.call("PUT", self.bucket, status=201)
        self.call(
            "PUT",
            f"{self.bucket}/groups/reviewers",
            {"data": {"members": ["account:rev@example.com", "ldap:other@example.com"]}},
            status=201,
        )
        hooks = [
            {
                "resource_name": "record",
                "subject": "{action}: {new[title]}",
                "template": "{uri} by {user_id}",
                "recipients": ["Editor <editor@example.com>", f"{self.bucket}/groups/reviewers"],
            }
        ]
        self.call("PATCH", self.bucket, {"data": {"kinto-emailer": {"hooks": hooks}}})
        self.call("PUT", f"{self.bucket}/collections/c", status=201)
        record = self.call(
            "POST",
            f"{self.bucket}/collections/c/records",
            {"data": {"title": "Hello"}},
            status=201,
        )["data"]
        mails = self.sink.wait_for(3)
        self.assertEqual(
            sorted(m.rcpt_tos[0] for m in mails),
            ["editor@example.com", "other@example.com", "rev@example.com"],
        )
        for mail in mails:
            self.assertEqual(mail.message["Subject"], "create: Hello")
            self.assertTrue(
                mail.body.startswith(f"{self.bucket}/collections/c/records/{record['id']} by ")
            )

    def test_bad_hooks_are_refused_and_not_stored(self):
        self.call("PUT", self.bucket, status=201)
        error = self.call(
            "PATCH",
            self.bucket,
            {
                "data": {
                    "kinto-emailer": {"hooks": [{"template": "{nope}", "recipients": ["a@b.c"]}]}
                }
            },
            status=400,
        )
        self.assertEqual(error["details"][0]["name"], "data.kinto-emailer.hooks.0.template")
        self.assertNotIn("kinto-emailer", self.call("GET", self.bucket)["data"])

    def test_kinto_send_email(self):
        result = subprocess.run(
            [os.path.join(BIN, "kinto-send-email"), CONFIG, "ops@example.com"],
            env=self.env,
            capture_output=True,
            text=True,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        [mail] = self.sink.wait_for(1)
        self.assertEqual(mail.rcpt_tos, ["ops@example.com"])

    def test_record_data_adds_no_header(self):
        self.call("PUT", self.bucket, status=201)
        hooks = [
            {
                "resource_name": "record",
                "subject": "{new[title]}",
                "template": "{uri} was created.",
                "recipients": ["editor@example.com"],
            }
        ]
        self.call("PATCH", self.bucket, {"data": {"kinto-emailer": {"hooks": hooks}}})
        self.call("PUT", f"{self.bucket}/collections/c", status=201)
        uri = f"{self.bucket}/collections/c/records/r"
        self.call("PUT", uri, {"data": {"title": INJECTION}}, status=201)
        [mail] = self.sink.wait_for(1)
        self.assertNotIn("Reply-To", mail.message)
        self.assertNotRegex(mail.message["Subject"], r"[\r\n]")
        self.assertEqual(mail.body, f"{uri} was created.")

    def test_accounts_are_made_by_the_administrator_and_prove_no_address(self):
        anonymous = requests.put(
            f"{self.url}/accounts/reviewer@example.com",
            json={"data": {"password": "s3cret-enough"}},
            timeout=10,
        )
        self.assertEqual(anonymous.status_code, 401, anonymous.text)
        # Basic auth is off: a made-up user and password are not authenticated.
        self.session.auth = ("someone", "anything")
        self.call("PUT", self.bucket, status=401)
        self.session.auth = self.admin
        reviewer = f"reviewer-{uuid.uuid4().hex[:8]}@example.com"
        self.call("PUT", f"/accounts/{reviewer}", {"data": {"password": "pw"}}, 201)
        self.session.auth = (reviewer, "pw")
        # The account's own preferences (of its web notifications), never the address's.
        mine = self.call("GET", "/emailer/preferences")["data"]
        self.assertEqual(mine, {"email": None, "scopes": {}, "suppressed": False})

    def test_without_a_secret_kinto_starts_and_warns(self):
        env = {k: v for k, v in self.env.items() if k != "KINTO_USERID_HMAC_SECRET"}
        result = subprocess.run(
            [os.path.join(BIN, "kinto"), "migrate", "--ini", CONFIG],
            env=env,
            capture_output=True,
            text=True,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("'kinto.userid_hmac_secret'", result.stderr)
        self.assertIn("no unsubscribe or preferences links", result.stderr)
