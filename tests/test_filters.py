"""Regular-expression filters: linear time on any id, one parser on save and on use."""

import contextlib
import faulthandler
import logging
import os
import unittest
from collections.abc import Iterator

import pytest
from kinto.core.events import ResourceChanged

from kinto_emailer import hooks
from kinto_emailer.errors import InvalidHook
from kinto_emailer.listener import event_names
from tests.plugins import Published
from tests.support import EmailerWebTest, skip_unless_postgresql, store_unchecked
from tests.test_postgresql import PostgreSQL


HOOK = {"template": "{uri}", "recipients": ["a@example.com"]}
LIVENESS_SECONDS = 30
"""A generous deadline for work that takes milliseconds: a liveness check, not a speed target."""
RECORDS = "/buckets/b/collections/c/records"


class RegexFilterTest(EmailerWebTest):
    @pytest.fixture(autouse=True)
    def _stderr(self, capfd: pytest.CaptureFixture[str]) -> Iterator[None]:
        """A copy of the real standard error, which pytest captures otherwise."""
        with capfd.disabled():
            self.stderr = os.dup(2)
        yield
        os.close(self.stderr)

    @contextlib.contextmanager
    def deadline(self, seconds: float) -> Iterator[None]:
        """Past ``seconds``, print every thread's stack and end the process with status 1.

        A backtracking regular expression holds the GIL: no timeout written in Python
        could fire while it runs, and the test would hang instead of failing.
        """
        faulthandler.dump_traceback_later(seconds, exit=True, file=self.stderr)
        try:
            yield
        finally:
            faulthandler.cancel_dump_traceback_later()

    def setUp(self):
        super().setUp()
        self.create_collection()
        self.mails()

    def test_a_backtracking_pattern_is_matched_in_linear_time(self):
        self.put_hooks("/buckets/b", {**HOOK, "record_id": "^(a+)+$"})
        # A backtracking engine tries 2**40 ways to split the a's before the "-": hours.
        refused, matched = "a" * 40 + "-", "a" * 40
        with self.deadline(2 * LIVENESS_SECONDS):
            self.app.put_json(f"{RECORDS}/{refused}", headers=self.headers, status=201)
            self.app.put_json(f"{RECORDS}/{matched}", headers=self.headers, status=201)
            self.assertTrue(self.registry.emailer_delivery.join(LIVENESS_SECONDS))
        self.assertEqual([m.body for m in self.sink.received], [f"{RECORDS}/{matched}"])

    def test_a_leading_negative_lookahead_excludes(self):
        self.put_hooks(
            "/buckets/b",
            {**HOOK, "resource_name": "record", "collection_id": "^(?!drafts$)(?!tmp-)"},
        )
        for cid in ("c", "drafts", "drafts2", "tmp-1"):
            self.app.put_json(f"/buckets/b/collections/{cid}", headers=self.headers)
            self.app.put_json(f"/buckets/b/collections/{cid}/records/r", headers=self.headers)
        self.assertEqual(
            sorted(m.body for m in self.mails()),
            ["/buckets/b/collections/c/records/r", "/buckets/b/collections/drafts2/records/r"],
        )

    def test_stored_hooks_with_patterns_refused_now_are_skipped(self):
        stored_before_checks = {
            "id": "b",
            "kinto-emailer": {
                "hooks": [
                    {**HOOK, "record_id": "^(a)\\1"},
                    {**HOOK, "event": "^a{99999999999}"},
                    {**HOOK, "record_id": "^(?:a?){999}a{999}"},
                    {**HOOK, "template": "{timestamp:c}"},
                    {**HOOK, "record_id": "^r", "recipients": ["b@example.com"]},
                ]
            },
        }
        # What an earlier release let editors store.
        store_unchecked(self.registry, "bucket", "", "b", stored_before_checks)
        with self.assertLogs("kinto_emailer", logging.WARNING) as logs:
            self.app.put_json(f"{RECORDS}/r1", headers=self.headers)
            mails = self.mails()
        self.assertEqual(
            [(m.rcpt_tos, m.body) for m in mails],
            [(["b@example.com"], "/buckets/b/collections/c/records/r1")],
        )
        output = "\n".join(logs.output)
        for path in (
            "hooks.0.record_id",
            "hooks.1.event",
            "hooks.2.record_id",
            "hooks.3.template",
        ):
            self.assertIn(f"data.kinto-emailer.{path}", output)


@skip_unless_postgresql
class RegexFilterPostgreSQLTest(PostgreSQL, RegexFilterTest):
    pass


class Retitled(ResourceChanged):
    """A change that another plugin notifies as a kind of its own."""


class EventFilterTest(unittest.TestCase):
    """kinto-emailer 4.x matched ``event`` against any event's class path."""

    def test_any_event_class_path_is_accepted_beside_the_known_names(self):
        for value in (
            *hooks.KNOWN_EVENTS,
            "mylib.MyEvent",
            "mylib.events.Outer.Inner",
            "plugin_ü.Événement",
        ):
            with self.subTest(value):
                self.assertEqual(hooks.parse_filter("event", value, "p").value, value)

    def test_an_event_answers_to_its_own_class_path(self):
        cases = [
            (ResourceChanged({}, [], None), set(hooks.RESOURCE_EVENTS)),
            (Retitled({}, [], None), {"tests.test_filters.Retitled", *hooks.RESOURCE_EVENTS}),
            (Published(None, {}, [], None, None), {"tests.plugins.Published"}),
        ]
        for event, names in cases:
            with self.subTest(type(event).__name__):
                self.assertEqual(set(event_names(event)), names)

    def test_what_no_event_class_is_called_is_refused(self):
        for value in (
            "MyEvent",
            "mylib.",
            "mylib..MyEvent",
            "mylib.1Event",
            "mylib.My Event",
            "mylib.MyEvent\n",
            # A typo in the modules of the known names: nothing there sends such an event.
            "kinto.core.events.AfterResourceChange",
            "kinto_remote_settings.signer.events.ReviewSubmitted",
        ):
            with self.subTest(value), self.assertRaises(InvalidHook) as cm:
                hooks.parse_filter("event", value, "data.kinto-emailer.hooks.0.event")
            self.assertIn("kinto.core.events.AfterResourceChanged", cm.exception.description)
            self.assertIn("class", cm.exception.description)


class PatternTest(unittest.TestCase):
    """The parser of filters, alone: what matches what, like Python's ``re.match``."""

    def matches(self, pattern: str, value: str) -> bool:
        return hooks.parse_filter("id", pattern, "data.x").matches((value,))

    def test_matches_from_the_start_like_re_match(self):
        cases = [
            ("^r[0-9]", "r1", True),
            ("^r[0-9]", "r1-and-more", True),
            ("^r[0-9]$", "r1-and-more", False),
            ("^r[0-9]", "xr1", False),
            ("^(a+)+$", "a" * 5000, True),
            ("^(a+)+$", "a" * 5000 + "-", False),
            ("^(?i)DRAFT", "draft-1", True),
            ("^a{2,3}$", "aaa", True),
            ("^a\\{2\\}", "a{2}", True),
            ("^(?:x|y)\\z", "x", True),
        ]
        for pattern, value, expected in cases:
            with self.subTest(pattern=pattern, value=value):
                self.assertIs(self.matches(pattern, value), expected)

    def test_leading_negative_lookaheads(self):
        cases = [
            ("^(?!drafts$)", "drafts", False),
            ("^(?!drafts$)", "drafts2", True),
            ("^(?!drafts$)", "", True),
            ("^(?!a)(?!b)", "c", True),
            ("^(?!a)(?!b)", "b", False),
            ("^(?![)])x", "x", True),
            ("^(?![)])x", ")x", False),
            ("^(?!\\))", ")", False),
            ("^(?!(a|b)c)[a-z]+$", "ac", False),
            ("^(?!(a|b)c)[a-z]+$", "ad", True),
            ("^(?!(a|b)c)[a-z]+$", "a-", False),
        ]
        for pattern, value, expected in cases:
            with self.subTest(pattern=pattern, value=value):
                self.assertIs(self.matches(pattern, value), expected)

    def test_errors_name_the_path(self):
        with self.assertRaises(InvalidHook) as cm:
            hooks.parse_filter("event", "^a{99999999999}", "data.kinto-emailer.hooks.0.event")
        self.assertEqual(cm.exception.path, "data.kinto-emailer.hooks.0.event")

    def test_the_readme_states_the_bounds(self):
        with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.rst")) as f:
            readme = f.read()
        for bound in (
            f"at most {hooks.MAX_PATTERN_LENGTH} characters",
            f"at most {hooks.MAX_REPEAT} (RE2's",
            f"at most {hooks.MAX_PATTERN_PROGRAM:,} instructions",
            f"at most {hooks.MAX_PATTERN_MEMORY // 1024} KiB",
        ):
            self.assertIn(bound, readme)

    def test_a_pattern_of_the_bounded_length_compiles(self):
        self.assertTrue(self.matches("^" + "r" * (hooks.MAX_PATTERN_LENGTH - 1), "r" * 300))
        with self.assertRaises(InvalidHook):
            self.matches("^" + "r" * hooks.MAX_PATTERN_LENGTH, "r")
