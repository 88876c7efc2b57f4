"""``kinto-emailer check CONFIG``: the stored hooks that saving would refuse today.

Hooks stored by kinto-emailer 4.x were barely checked: the operator lists them, with
the reason, to fix them before or after upgrading.
"""

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
from unittest import mock

from kinto_emailer import jobs, scripts
from kinto_emailer.scripts import emailer_main
from tests.support import (
    POSTGRESQL_URL,
    EmailerWebTest,
    skip_unless_postgresql,
    write_config,
)
from tests.test_postgresql import PostgreSQL


BIN = os.path.dirname(sys.executable)
HOOK = {"template": "{uri}", "recipients": ["a@example.com"]}


@skip_unless_postgresql
class CheckTest(PostgreSQL, EmailerWebTest):
    extra_settings = {"emailer.worker": "false"}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.directory = tempfile.TemporaryDirectory()
        cls.config = write_config(
            cls.directory.name,
            cls.sink.port,
            cls.extra_settings,
            postgresql=True,
        )

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        cls.directory.cleanup()

    def setUp(self):
        super().setUp()
        for uri in ("/buckets/b", "/buckets/b/collections/c", "/buckets/e"):
            self.app.put_json(uri, headers=self.headers)

    def store_as_4x_did(self, uri, emailer):
        """Write ``emailer`` in the metadata of ``uri`` as 4.x let editors, unchecked."""
        parent_id, resource_name, object_id = uri.rsplit("/", 2)
        with jobs.session(POSTGRESQL_URL) as connection, connection.cursor() as cursor:
            cursor.execute(
                "UPDATE objects SET data = jsonb_set(data, '{kinto-emailer}', %s::jsonb)"
                " WHERE parent_id = %s AND resource_name = %s AND id = %s",
                (json.dumps(emailer), parent_id, resource_name.removesuffix("s"), object_id),
            )
            updated = cursor.rowcount
        self.assertEqual(updated, 1)

    def check(self):
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            code = emailer_main(["check", self.config])
        return code, stdout.getvalue()

    def test_lists_each_refused_hook_with_its_uri_index_and_reason(self):
        self.store_as_4x_did(
            "/buckets/b",
            {
                "hooks": [
                    HOOK,
                    {**HOOK, "template": "{impacted_objects}"},
                    {**HOOK, "recipients": ["admin@localhost"]},
                    {**HOOK, "color": "red"},
                ]
            },
        )
        self.store_as_4x_did(
            "/buckets/b/collections/c",
            {"hooks": [{**HOOK, "event": "kinto.core.events.AfterResourceChange"}]},
        )
        self.store_as_4x_did("/buckets/e", {"hooks": "none"})
        code, output = self.check()
        self.assertEqual(code, 1)
        lines = output.splitlines()
        self.assertEqual(len(lines), 6, output)
        path = "data.kinto-emailer.hooks"
        expected = [
            (f"/buckets/b  hook 1  {path}.1.template: ", "{impacted_objects}"),
            (f"/buckets/b  hook 2  {path}.2.recipients.0: ", "admin@localhost"),
            (f"/buckets/b  hook 3  {path}.3: ", "'color' was unexpected"),
            (f"/buckets/b/collections/c  hook 0  {path}.0.event: ", "AfterResourceChange"),
            (f"/buckets/e  hooks  {path}: ", "'none' is not of type 'array'"),
        ]
        for line, (start, reason) in zip(lines, expected, strict=False):
            self.assertTrue(line.startswith(start), line)
            self.assertIn(reason, line)
        self.assertEqual(lines[-1], "5 stored hook problem(s): saving these hooks would fail")

    def test_exit_status_0_when_every_stored_hook_passes(self):
        self.store_as_4x_did("/buckets/b", {"hooks": [HOOK]})
        self.store_as_4x_did("/buckets/b/collections/c", {"hooks": []})
        self.assertEqual(self.check(), (0, "Every stored hook passes today's checks\n"))

    def test_the_operators_bounds_count(self):
        self.store_as_4x_did("/buckets/b", {"hooks": [HOOK, HOOK]})
        result = subprocess.run(
            [os.path.join(BIN, "kinto-emailer"), "check", self.config],
            env={**os.environ, "KINTO_EMAILER_MAX_HOOKS": "1"},
            capture_output=True,
            text=True,
        )
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertTrue(
            result.stdout.startswith("/buckets/b  hooks  data.kinto-emailer.hooks: "),
            result.stdout,
        )
        self.assertIn("kinto.emailer.max_hooks", result.stdout)

    def test_every_bucket_is_read_a_page_at_a_time(self):
        for number in range(5):
            self.app.put_json(f"/buckets/x{number}", headers=self.headers)
            self.store_as_4x_did(f"/buckets/x{number}", {"hooks": [{"template": "{uri}"}]})
        with mock.patch.object(scripts, "PAGE", 2):
            code, output = self.check()
        self.assertEqual(code, 1)
        listed = [line.split()[0] for line in output.splitlines()[:-1]]
        self.assertEqual(listed, [f"/buckets/x{number}" for number in range(5)])
