"""Kinto's storage backend stays Kinto's: its type, its signatures, its metrics, its flush."""

import inspect
from datetime import UTC, datetime

import transaction
from kinto.core.storage.exceptions import ObjectNotFoundError

from kinto_emailer.errors import InvalidHook
from tests.support import EmailerWebTest


HOOK = {"template": "{uri}", "recipients": ["a@example.com"]}
BAD = {"kinto-emailer": {"hooks": [{**HOOK, "template": "{nope}"}]}}


class StorageTest(EmailerWebTest):
    extra_settings = {
        "includes": "kinto_emailer kinto.plugins.flush tests.plugins.recording_metrics"
    }

    @property
    def storage(self):
        return self.registry.storage

    def backend_module(self):
        return self.registry.settings["storage_backend"]

    def test_registry_storage_is_the_backend_itself(self):
        self.assertEqual(type(self.storage).__module__, self.backend_module())
        self.assertEqual(type(self.storage).__name__, "Storage")

    def test_methods_keep_the_signatures_of_the_backend(self):
        for name in ("create", "update", "get", "list_all", "delete", "flush"):
            with self.subTest(method=name):
                own = getattr(type(self.storage), name).__get__(self.storage)
                self.assertEqual(
                    inspect.signature(getattr(self.storage, name)), inspect.signature(own)
                )

    def test_keywords_kinto_still_accepts_are_accepted_and_checked(self):
        with transaction.manager, self.assertWarns(DeprecationWarning):
            self.storage.create(
                collection_id="bucket", parent_id="", record={"id": "old", **BAD["kinto-emailer"]}
            )
        with transaction.manager, self.assertWarns(DeprecationWarning):
            self.storage.update(
                collection_id="bucket",
                parent_id="",
                object_id="old",
                record={"id": "old", "kinto-emailer": {"hooks": [HOOK]}},
            )
        with transaction.manager, self.assertWarns(DeprecationWarning):
            stored = self.storage.get(collection_id="bucket", parent_id="", object_id="old")
        self.assertEqual(stored["kinto-emailer"], {"hooks": [HOOK]})
        for call in (
            lambda: self.storage.create("bucket", "", {"id": "new", **BAD}),
            lambda: self.storage.create(resource_name="bucket", parent_id="", obj=BAD),
            lambda: self.storage.update("bucket", "", "old", {"id": "old", **BAD}),
        ):
            with self.assertRaises(InvalidHook), transaction.manager:
                call()
        with self.assertRaises(InvalidHook), self.assertWarns(DeprecationWarning):
            with transaction.manager:
                self.storage.update(
                    collection_id="bucket", parent_id="", object_id="old", record=BAD
                )
        with transaction.manager:
            stored = self.storage.get(resource_name="bucket", parent_id="", object_id="old")
            self.assertEqual(stored["kinto-emailer"], {"hooks": [HOOK]})
            with self.assertRaises(ObjectNotFoundError):
                self.storage.get(resource_name="bucket", parent_id="", object_id="new")

    def test_backend_methods_are_timed_under_kinto_s_names(self):
        timed = self.registry.metrics.timed
        del timed[:]
        self.app.put_json("/buckets/b", headers=self.headers)
        self.app.put_json(
            "/buckets/b", {"data": {"kinto-emailer": {"hooks": [HOOK]}}}, headers=self.headers
        )
        self.app.patch_json("/buckets/b", {"data": {"x": 1}}, headers=self.headers)
        self.app.get("/buckets/b/collections", headers=self.headers)
        # Kinto's two backends are both named Storage.
        key = "backend.storage.seconds"
        methods = {dict(labels)["method"] for name, labels in timed if name == key}
        self.assertLessEqual({"create", "update", "get", "list_all"}, methods)
        self.assertEqual(
            {name for name, _ in timed if name.startswith("backend.") and "storage" in name},
            {key},
        )

    def test_the_flush_endpoint_empties_the_plugin_s_tables(self):
        tally = self.registry.emailer_outbox.tally
        window = datetime(2024, 1, 1, tzinfo=UTC)
        with transaction.manager, tally.usage(window, ["bucket:b"]) as usage:
            usage["bucket:b"].used = 3
        self.app.post("/__flush__", status=202)
        with transaction.manager, tally.usage(window, ["bucket:b"]) as usage:
            self.assertEqual(usage["bucket:b"].used, 0)
