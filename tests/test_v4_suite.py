# From Kinto/kinto-emailer at tag 4.0.0 (commit e46320198d0263c86db73107f444519ed03b3954), files
# tests/test_includeme.py, tests/test_command_send.py and tests/functional.py.
# Copyright 2017 - Mozilla Corporation; Apache License 2.0 (the project's LICENSE).
# Adapted only to wait for asynchronous delivery and to read the mail from a real SMTP server
# (tests/support.py) or from mail.debug_mailer's folder, instead of mocks of pyramid_mailer, a
# Kinto server started by hand and kinto_client (and, for a test reading sys.argv, with
# fixed arguments); test names and assertions are kept. Tests of
# 4.x's internal functions are left out, and the tests of behaviour changed on purpose are
# expected failures: README.rst, "kinto-emailer 4.0.0's tests", lists both, with the reasons.

import os
import shutil
import sys
import tempfile
import unittest
from glob import glob
from unittest import mock

import pytest
from kinto.core import errors
from kinto.core.testing import FormattedErrorMixin, get_user_headers

from kinto_emailer import command_send
from tests.support import EmailerWebTest, SMTPSink, skip_unless_postgresql, write_config
from tests.test_postgresql import PostgreSQL


def changed_on_purpose(reason: str) -> pytest.MarkDecorator:
    """4.0.0's assertion no longer holds, as README.rst's upgrade section says."""
    return pytest.mark.xfail(strict=True, reason=reason)


NAMED_PATHS = changed_on_purpose("a 400 names the JSON path and says why in other words")


class EmailerTest(EmailerWebTest):
    pass


class PluginSetupTest(EmailerTest):
    @changed_on_purpose("the capability carries version, and groups are notified too")
    def test_capability_is_exposed(self):
        resp = self.app.get("/")
        capabilities = resp.json["capabilities"]
        self.assertIn("emailer", capabilities)
        expected = {
            "description": "Provide emailing capabilities to the server.",
            "url": "https://github.com/Kinto/kinto-emailer/",
        }
        self.assertEqual(expected, capabilities["emailer"])


class BatchRequestTest(EmailerTest):
    def setUp(self):
        super().setUp()
        bucket = {
            "kinto-emailer": {
                "hooks": [
                    {
                        "action": "create",
                        "resource_name": "collection",
                        "subject": "Created {bucket_id}/{collection_id}.",
                        "template": "",
                        "recipients": ["me@you.com"],
                    }
                ]
            }
        }
        self.headers = dict(self.headers, **get_user_headers("nous"))
        self.app.put_json("/buckets/b", {"data": bucket}, headers=self.headers)

    def test_emails_are_generated_for_each_batch_subrequest(self):
        requests = {
            "defaults": {"method": "POST", "path": "/buckets/b/collections"},
            "requests": [{"body": {"data": {"id": "1"}}}, {"body": {"data": {"id": "2"}}}],
        }
        self.app.post_json("/batch", requests, headers=self.headers)
        call1, call2 = self.mails()
        assert call1.message["Subject"] == "Created b/1."
        assert call2.message["Subject"] == "Created b/2."


class HookValidationTest(FormattedErrorMixin, EmailerTest):
    def setUp(self):
        super().setUp()
        self.valid_collection = {
            "kinto-emailer": {
                "hooks": [
                    {
                        "template": "{user_id} requested review on {uri}.",
                        "recipients": [
                            "me@you.com",
                            "My friend alice <alice@wonderland.com>",
                            "<t.h.i.s+that@some.crazy.moderndomainnameyouknow>",
                        ],
                    }
                ]
            }
        }
        self.headers = dict(self.headers, **get_user_headers("nous"))
        self.app.put("/buckets/b", headers=self.headers)

    def test_supports_simple_recipients_list(self):
        self.app.put_json(
            "/buckets/b/collections/c", {"data": self.valid_collection}, headers=self.headers
        )

    def test_supports_groups_url(self):
        self.valid_collection["kinto-emailer"]["hooks"][0]["recipients"] += ["/buckets/b/groups/g"]
        self.app.put_json(
            "/buckets/b/collections/c", {"data": self.valid_collection}, headers=self.headers
        )

    def test_supports_empty_list_of_hooks(self):
        self.valid_collection["kinto-emailer"]["hooks"] = []
        self.app.put_json(
            "/buckets/b/collections/c", {"data": self.valid_collection}, headers=self.headers
        )

    def test_supports_empty_template(self):
        self.valid_collection["kinto-emailer"]["hooks"][0]["template"] = ""
        self.app.put_json(
            "/buckets/b/collections/c", {"data": self.valid_collection}, headers=self.headers
        )

    @NAMED_PATHS
    def test_fails_with_missing_hooks(self):
        self.valid_collection["kinto-emailer"].pop("hooks")
        r = self.app.put_json(
            "/buckets/b/collections/c",
            {"data": self.valid_collection},
            headers=self.headers,
            status=400,
        )
        assert 'Missing "hooks"' in r.json["message"]

    @NAMED_PATHS
    def test_bucket_validation_errors_are_well_formatted(self):
        self.valid_collection["kinto-emailer"].pop("hooks")
        r = self.app.post_json(
            "/buckets", {"data": self.valid_collection}, headers=self.headers, status=400
        )
        self.assertFormattedError(
            r,
            400,
            errno=errors.ERRORS.INVALID_PARAMETERS,
            error="Invalid parameters",
            message='Missing "hooks"',
            info=None,
        )

    @NAMED_PATHS
    def test_collection_validation_errors_are_well_formatted(self):
        self.valid_collection["kinto-emailer"].pop("hooks")
        r = self.app.put_json(
            "/buckets/b/collections/c",
            {"data": self.valid_collection},
            headers=self.headers,
            status=400,
        )
        self.assertFormattedError(
            r,
            400,
            errno=errors.ERRORS.INVALID_PARAMETERS,
            error="Invalid parameters",
            message='Missing "hooks"',
            info=None,
        )

    @NAMED_PATHS
    def test_fails_if_missing_template(self):
        self.valid_collection["kinto-emailer"]["hooks"][0].pop("template")
        r = self.app.put_json(
            "/buckets/b/collections/c",
            {"data": self.valid_collection},
            headers=self.headers,
            status=400,
        )
        assert 'Missing "template"' in r.json["message"]

    @NAMED_PATHS
    def test_fails_with_empty_list_of_recipients(self):
        self.valid_collection["kinto-emailer"]["hooks"][0]["recipients"] = []
        r = self.app.put_json(
            "/buckets/b/collections/c",
            {"data": self.valid_collection},
            headers=self.headers,
            status=400,
        )
        assert "Empty list of recipients" in r.json["message"]

    @NAMED_PATHS
    def test_fails_with_invalid_email_recipients(self):
        self.valid_collection["kinto-emailer"]["hooks"][0]["recipients"].extend(
            ["<fe@gmail.com", "haha@haha@com"]
        )
        r = self.app.put_json(
            "/buckets/b/collections/c",
            {"data": self.valid_collection},
            headers=self.headers,
            status=400,
        )
        assert "Invalid recipients <fe@gmail.com, haha@haha@com" in r.json["message"]

    @NAMED_PATHS
    def test_fails_if_group_is_from_other_bucket(self):
        self.valid_collection["kinto-emailer"]["hooks"][0]["recipients"] += [
            "/buckets/plop/groups/g"
        ]
        r = self.app.put_json(
            "/buckets/b/collections/c",
            {"data": self.valid_collection},
            headers=self.headers,
            status=400,
        )
        assert "Invalid bucket for groups /buckets/plop/groups/g" in r.json["message"]

    @NAMED_PATHS
    def test_fails_if_group_uri_is_invalid(self):
        self.valid_collection["kinto-emailer"]["hooks"][0]["recipients"] += [
            "/buckets/b/group/g"  # /groups/g!
        ]
        r = self.app.put_json(
            "/buckets/b/collections/c",
            {"data": self.valid_collection},
            headers=self.headers,
            status=400,
        )
        assert "Invalid recipients /buckets/b/group/g" in r.json["message"]


USAGE_EXIT = pytest.mark.xfail(
    strict=True, raises=SystemExit, reason="a usage error exits with status 2, as argparse does"
)


class CommandTest(unittest.TestCase):
    @USAGE_EXIT
    def test_uses_sys_args_by_default(self):
        # The arguments of a bare `pytest`, as 4.x's CI ran it: not those of this run.
        with mock.patch.object(sys, "argv", ["pytest"]):
            assert command_send.main() > 0  # will fail

    @USAGE_EXIT
    def test_returns_non_zero_if_not_enough_args(self):
        assert command_send.main([]) > 0

    def test_calls_send_immmediately_with_parameters(self):
        sink = SMTPSink().start()
        self.addCleanup(sink.stop)
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        command_send.main([write_config(directory, sink.port), "me@restmail.net"])

        (message,) = sink.wait_for(1)
        assert "kinto-emailer" in message.message["Subject"]


class FunctionalTest(EmailerWebTest):
    # In-process instead of a server on port 8888: its root URL is set as such.
    extra_settings = {
        "includes": "kinto.plugins.flush kinto_emailer",
        "bucket_create_principals": "system.Everyone",
        "mail.debug_mailer": "true",
        "emailer.public_url": "http://localhost:8888/v1/",
    }

    @classmethod
    def setUpClass(cls):
        cls.directory = tempfile.mkdtemp()
        cls.extra_settings = {**cls.extra_settings, "mail.top_level_directory": cls.directory}
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        shutil.rmtree(cls.directory)

    def setUp(self):
        super().setUp()
        self.app.extra_environ = {**self.app.extra_environ, "REMOTE_ADDR": "127.0.0.1"}
        self.headers = {**self.headers, **get_user_headers("user", "p4ssw0rd")}
        self.app.put_json("/buckets/emailer", headers=self.headers)

    def tearDown(self):
        super().tearDown()
        # Delete all files but keep the folder for next runs.
        shutil.rmtree(self.directory, ignore_errors=True)
        os.makedirs(self.directory)

    def create_collection(self, data: dict) -> None:
        self.app.put_json(
            "/buckets/emailer/collections/collection1", {"data": data}, headers=self.headers
        )

    @changed_on_purpose("ASCII text goes 7bit, not quoted-printable: 127.0.0.1 edited")
    def test_new_record_send_email(self):
        self.create_collection(
            data={
                "kinto-emailer": {
                    "hooks": [
                        {
                            "resource_name": "record",
                            "action": "create",
                            "subject": "Action on {root_url}",
                            "template": (
                                "{client_address} edited:\n "
                                "{bucket_id}/{collection_id}/{record_id}."
                            ),
                            "recipients": ["kinto-emailer@restmail.net"],
                        }
                    ]
                }
            }
        )

        record = self.create_record(
            "/buckets/emailer/collections/collection1/records", {"foo": "bar"}
        ).json["data"]

        filename = glob(os.path.join(self.directory, "*.eml"))[0]
        with open(filename) as f:
            body = f.read()

        assert "kinto-emailer@restmail.net" in body
        assert "Action on http://localhost:8888/v1/" in body
        assert "127.0.0.1=20edited" in body
        assert "emailer/collection1/{}".format(record["id"]) in body

    def test_delete_collection_sends_email(self):
        self.create_collection(
            data={
                "kinto-emailer": {
                    "hooks": [
                        {
                            "resource_name": "collection",
                            "action": "delete",
                            "subject": "Collection {bucket_id}/{collection_id} was deleted",
                            "template": "(no body)",
                            "recipients": ["whatever@filesystem.local"],
                        }
                    ]
                }
            }
        )

        self.app.delete("/buckets/emailer/collections/collection1", headers=self.headers)

        filename = glob(os.path.join(self.directory, "*.eml"))[0]
        with open(filename) as f:
            body = f.read()

        assert "Collection emailer/collection1 was deleted" in body


@skip_unless_postgresql
class PostgreSQLFunctionalTest(PostgreSQL, FunctionalTest):
    """As 4.0.0's functional tests ran: on PostgreSQL."""
