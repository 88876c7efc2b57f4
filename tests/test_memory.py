"""Memory stays bounded on the memory backend: failed list, caches by size, logs per batch."""

import logging
import threading
from unittest import mock

from kinto_emailer import hooks, recipients, templates
from kinto_emailer.caching import ENTRY_OVERHEAD, SizedCache
from tests.support import EmailerWebTest, eventually


HOOK = {"template": "{uri}", "recipients": ["a@example.com"], "resource_name": "record"}


class FailedListTest(EmailerWebTest):
    def setUp(self):
        super().setUp()
        self.create_collection()
        self.outbox = self.registry.emailer_outbox
        self.outbox.failures.clear()
        self.sink.refuse.add("a@example.com")

    def test_the_newest_failures_are_kept_and_the_others_counted(self):
        self.put_hooks("/buckets/b", HOOK)
        self.outbox.MAX_FAILURES = 3
        failed, forgotten = self.outbox.counts["failed"], self.outbox.forgotten
        for i in range(5):
            self.app.put_json(f"/buckets/b/collections/c/records/r{i}", headers=self.headers)
            self.outbox.join()
        self.assertEqual(
            [job.draft.uri.rsplit("/", 1)[1] for job in self.outbox.failures], ["r2", "r3", "r4"]
        )
        self.assertEqual(self.outbox.forgotten - forgotten, 2)
        self.assertEqual(self.outbox.counts["failed"] - failed, 5)

    def test_the_failures_of_a_batch_make_one_log_line(self):
        addresses = [f"{name}@example.com" for name in "abcde"]
        self.sink.refuse.update(addresses)
        self.put_hooks("/buckets/b", {**HOOK, "recipients": addresses})
        with self.assertLogs("kinto_emailer.delivery", logging.WARNING) as logs:
            self.app.put_json("/buckets/b/collections/c/records/r1", headers=self.headers)
            self.outbox.join()
        [line] = logs.output
        self.assertIn("5 message(s) failed for good", line)
        self.assertIn("/buckets/b/collections/c/records/r1", line)
        self.assertIn("550", line)


class OutageTest(EmailerWebTest):
    """While the SMTP server is down, a large change is not turned into messages in memory."""

    extra_settings = {
        "emailer.retry_delays": "1 1 1 1 1 1 1 1 1 1",
        "emailer.max_messages_per_recipient_hour": "1000",
        "batch_max_requests": "50",
    }
    READERS = [f"reader{i}@example.com" for i in range(50)]

    def test_a_bucket_waiting_for_100_retries_works_out_no_more_of_its_changes(self):
        self.create_collection()
        self.put_hooks("/buckets/b", {**HOOK, "recipients": self.READERS})
        outbox = self.registry.emailer_outbox
        outbox.MAX_SCHEDULED = 100
        queued = outbox.counts["queued"]
        self.sink.stop()
        self.addCleanup(self.sink.restart)
        requests = [
            {"method": "PUT", "path": f"/buckets/b/collections/c/records/r{i:02}"}
            for i in range(12)
        ]
        self.app.post_json("/batch", {"requests": requests}, headers=self.headers)
        outbox.join()
        # Those waiting for a retry and a round or two, not the change's 600 messages.
        self.assertLess(outbox.counts["queued"] - queued, 400)
        self.sink.restart()
        sent = lambda: {(m.body, m.rcpt_tos[0]) for m in self.sink.received}  # noqa: E731
        self.assertTrue(eventually(lambda: len(sent()) == 600, timeout=60))
        outbox.join()
        self.assertEqual(len(self.sink.received), 600)


class CachesTest(EmailerWebTest):
    def test_hooks_of_large_templates_are_not_all_kept(self):
        # Bounds lowered for the test: WebOb keeps request bodies over 10 KB in temporary
        # files that it leaves open.
        for cache in (hooks._load, templates.parse):
            patcher = mock.patch.multiple(cache, max_chars=80_000, max_entry_chars=10_000)
            patcher.start()
            self.addCleanup(patcher.stop)
        template = "x" * 4_000 + " {uri}"
        mailed = 0
        for i in range(30):
            # Thirty buckets of distinct hooks: more than the cache may hold.
            self.app.put_json(f"/buckets/b{i}", headers=self.headers)
            self.app.put_json(f"/buckets/b{i}/collections/c", headers=self.headers)
            self.put_hooks(f"/buckets/b{i}", {**HOOK, "template": template + str(i)})
            self.app.put_json(f"/buckets/b{i}/collections/c/records/r", headers=self.headers)
            mailed += len(self.mails())
        self.assertEqual(mailed, 30)
        for cache in (hooks._load, templates.parse, recipients.parse_mailbox):
            info = cache.cache_info()
            self.assertLessEqual(info.chars, info.max_chars, cache)
        self.assertLess(hooks._load.cache_info().entries, 30)

    def test_a_template_too_long_to_use_takes_no_room(self):
        before = templates.parse.cache_info()
        huge = "y" * templates.MAX_BODY_LENGTH + "{uri}"
        for _ in range(2):
            with self.assertRaises(ValueError):
                templates.parse(huge)
        after = templates.parse.cache_info()
        self.assertEqual((after.entries, after.chars), (before.entries, before.chars))
        self.assertGreaterEqual(templates.TEMPLATES_CACHE_CHARS, 60 * templates.MAX_BODY_LENGTH)


def test_the_least_recently_used_entries_go_first_and_the_size_is_kept():
    calls = []
    size = ENTRY_OVERHEAD + 10
    cache = SizedCache(lambda text: calls.append(text) or text.upper(), 8 * size)
    eight = [letter * 10 for letter in "abcdefgh"]
    for text in [*eight, "a" * 10, "i" * 10, "a" * 10, "b" * 10]:
        assert cache(text) == text.upper()
    # "a" was used again before "i" came: "b" went out, and is worked out again.
    assert calls == [*eight, "i" * 10, "b" * 10]
    info = cache.cache_info()
    assert (info.entries, info.chars) == (8, 8 * size)
    assert (info.hits, info.misses) == (2, 10)


class SharedReadsTest(EmailerWebTest):
    """The changes of a round read their bucket, and their recipients' preferences, once."""

    def test_a_round_of_changes_reads_the_bucket_once(self):
        self.app.put_json("/buckets/b", headers=self.headers)
        for i in range(20):
            self.app.put_json(f"/buckets/b/collections/c{i}", headers=self.headers)
        self.put_hooks("/buckets/b", HOOK)
        storage = self.registry.storage
        reads = []

        def get(**kwargs):
            # What the outbox reads: a write reads the same to tell whether to note it.
            if threading.current_thread().name == "kinto-emailer-outbox":
                reads.append((kwargs["resource_name"], kwargs["object_id"]))
            return read(**kwargs)

        read = storage.get
        self.addCleanup(setattr, storage, "get", read)
        storage.get = get
        # Twenty changes, handed over at once: one round works them out.
        creates = [
            {"method": "POST", "path": f"/buckets/b/collections/c{i}/records"} for i in range(20)
        ]
        self.app.post_json("/batch", {"requests": creates}, headers=self.headers)
        self.assertEqual(len(self.mails()), 20)
        self.assertEqual(reads.count(("bucket", "b")), 1, reads)
        # Read once, and once more to record the scope that mails the address.
        self.assertEqual(len([r for r in reads if r[0] == "emailer-preferences"]), 2, reads)
