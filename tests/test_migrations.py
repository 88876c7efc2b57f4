"""``kinto migrate`` creates and upgrades the queue's tables, and runs other plugins' too."""

import os
import subprocess
import sys
import tempfile
import unittest

from kinto_emailer import jobs, migration
from tests.support import POSTGRESQL_URL, skip_unless_postgresql, write_config


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KINTO = os.path.join(os.path.dirname(sys.executable), "kinto")
VERSION_ROWS = "SELECT name, value FROM metadata WHERE name LIKE '%\\_schema\\_version'"


@skip_unless_postgresql
class KintoMigrateTest(unittest.TestCase):
    def setUp(self):
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        self.config = write_config(
            directory.name,
            25,
            includes="kinto_emailer tests.plugins.migrating",
            postgresql=True,
        )
        self.dsn = jobs.conninfo(POSTGRESQL_URL)
        self.migrate()
        # A database of Kinto where no plugin migrated yet.
        self.execute(f"DROP TABLE IF EXISTS {', '.join(jobs.TABLES)}")
        self.execute(
            "DELETE FROM metadata WHERE name IN ('tests_plugin_schema_version', %s)",
            (f"{migration.NAME}_schema_version",),
        )
        self.addCleanup(self.migrate)

    def execute(self, query, parameters=None):
        with jobs.session(self.dsn) as connection:
            return jobs.execute(connection, query, parameters)

    def migrate(self, *args):
        return subprocess.run(
            [KINTO, "migrate", "--ini", self.config, *args],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONPATH": ROOT},
        )

    def versions(self):
        return dict(self.execute(VERSION_ROWS))

    def test_runs_the_migrations_of_every_plugin(self):
        self.migrate()
        versions = self.versions()
        self.assertEqual(versions["tests_plugin_schema_version"], "2")
        self.assertEqual(
            versions[f"{migration.NAME}_schema_version"],
            str(migration.EmailerMigration.schema_version),
        )
        self.assertEqual(self.execute("SELECT count(*) FROM kinto_emailer_jobs"), [(0,)])

    def test_dry_run_changes_nothing(self):
        self.migrate("--dry-run")
        self.assertNotIn(f"{migration.NAME}_schema_version", self.versions())
        self.assertEqual(self.execute("SELECT to_regclass('kinto_emailer_jobs')::text"), [(None,)])

    def test_tables_made_before_migrations_existed_are_upgraded_and_kept(self):
        # What earlier versions made: the tables of the first migration, no version row.
        with open(os.path.join(migration.DIRECTORY, "migration_001_002.sql")) as f:
            first = f.read().split("INSERT INTO metadata")[0]
        self.execute(first)
        self.execute("INSERT INTO kinto_emailer_sent (key) VALUES ('kept')")
        self.migrate()
        self.migrate()  # Up to date: nothing happens.
        self.assertEqual(self.execute("SELECT key FROM kinto_emailer_sent"), [("kept",)])
        self.assertIn(f"{migration.NAME}_schema_version", self.versions())
