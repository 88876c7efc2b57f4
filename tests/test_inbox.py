"""Ids and counts of web notifications (kinto_emailer.inbox), as pure functions."""

import unittest
import uuid

from hypothesis import given
from hypothesis import strategies as st
from kinto.core.storage import Filter
from kinto.core.storage.generators import UUID4
from kinto.core.utils import COMPARISON

from kinto_emailer import inbox


MOMENTS = st.integers(min_value=0, max_value=2**48 - 1)
INDEXES = st.integers(min_value=0, max_value=2**32 - 1)


class NotificationIdTest(unittest.TestCase):
    @given(MOMENTS, INDEXES)
    def test_a_uuid_of_version_7_that_kinto_takes_in_its_urls(self, created, index):
        made = inbox.notification_id(created, index)
        self.assertTrue(UUID4().match(made))
        self.assertEqual(uuid.UUID(made).version, 7)
        self.assertEqual(uuid.UUID(made).variant, uuid.RFC_4122)
        self.assertEqual(int(made.replace("-", "")[:12], 16), created)

    @given(MOMENTS, INDEXES, MOMENTS, INDEXES)
    def test_ids_sort_by_creation_then_by_write(self, created, index, other, other_index):
        if (created, index) < (other, other_index):
            self.assertLess(
                inbox.notification_id(created, index), inbox.notification_id(other, other_index)
            )

    @given(MOMENTS, INDEXES)
    def test_the_first_id_of_a_time_parts_older_ones(self, created, index):
        first = inbox.first_id(created)
        self.assertLessEqual(first, inbox.notification_id(created, index))
        if created:
            self.assertLess(inbox.notification_id(created - 1, index), first)

    def test_times_out_of_range_are_clamped(self):
        self.assertEqual(inbox.first_id(-5), inbox.first_id(0))
        self.assertEqual(inbox.first_id(2**49), inbox.first_id(2**48 - 1))

    def test_ids_of_one_time_and_index_differ(self):
        self.assertEqual(len({inbox.notification_id(1, 0) for _ in range(100)}), 100)


class CountsTest(unittest.TestCase):
    def test_the_filters_counts_answer(self):
        counts = inbox.Counts(held=5, unread=2)

        def read(value: object) -> list[Filter]:
            return [Filter(inbox.READ, value, COMPARISON.EQ)]

        self.assertEqual(counts.selected([]), 5)
        self.assertEqual(counts.selected(read(False)), 2)
        self.assertEqual(counts.selected(read(True)), 3)
        # Whatever else is counted by the storage: 0 and 1 are no booleans there.
        for filters in (
            read(0),
            read(1),
            [Filter(inbox.READ, False, COMPARISON.NOT)],
            [Filter("scope", "/buckets/b", COMPARISON.EQ)],
            [*read(False), Filter("last_modified", 1, COMPARISON.GT)],
        ):
            with self.subTest(filters=filters):
                self.assertIsNone(counts.selected(filters))
