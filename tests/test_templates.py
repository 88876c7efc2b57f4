"""The template checker and renderer, table-driven and property-based."""

import string
import unittest

from hypothesis import given, settings
from hypothesis import strategies as st

from kinto_emailer import templates
from kinto_emailer.errors import InvalidHook, RenderError


CONTEXT = {
    "id": "r1",
    "timestamp": 1700000000000,
    "new": {"title": "T", "n": 3, "tags": ["a"], "meta": {"lang": "fr"}, "none": None},
    "old": None,
    "settings": {"project_name": "Kinto", "url": "https://kinto.example.com/"},
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
contexts = st.fixed_dictionaries(
    {
        "id": st.text(),
        "timestamp": st.integers(),
        "new": st.dictionaries(st.sampled_from(["title", "n", "x"]), json_values) | st.none(),
        "old": st.dictionaries(st.sampled_from(["title", "n", "x"]), json_values) | st.none(),
        "settings": st.fixed_dictionaries({"project_name": st.text()}),
    }
)
placeholders = st.sampled_from(
    [
        "{id}",
        "{timestamp}",
        "{new[title]}",
        "{old[n]}",
        "{new[x][y]}",
        "{settings[project_name]}",
        "{uri}",
        "{comment}",
        "{id:>100}",
        "{new[title]:.5}",
        "{timestamp:,}",
        "{id:^30}",
    ]
)
templates_strategy = st.lists(placeholders | st.text(alphabet=string.ascii_letters + " \n"))


class RenderTest(unittest.TestCase):
    def test_render(self):
        cases = {
            "{id} {new[title]}": "r1 T",
            "{new[n]:>4}|{new[tags]}|{new[meta]}": '   3|["a"]|{"lang": "fr"}',
            "{old[title]}{new[missing]}{new[none]}{comment}": "",
            "{settings[project_name]} {{literal}}": "Kinto {literal}",
            # The settings that 4.x showed.
            "{settings[url]}": "https://kinto.example.com/",
            "{timestamp:d}": "1700000000000",
        }
        for template, expected in cases.items():
            with self.subTest(template=template):
                self.assertEqual(templates.render(template, CONTEXT), expected)

    def test_specs_must_fit_the_placeholders_type(self):
        for template in ("{id:d}", "{timestamp:c}", "{timestamp:s}", "{new[n]:.2f}"):
            with self.subTest(template=template):
                with self.assertRaises(InvalidHook) as cm:
                    templates.check(template, "data.t")
                self.assertIn(f"cannot format {template}", cm.exception.description)
                with self.assertRaises(RenderError):
                    templates.render(template, CONTEXT)

    def test_a_value_that_does_not_fit_its_spec_is_shown_as_text(self):
        cases = {
            # Integers take the spec when they can, else their text takes it.
            "{new[n]:>4}": "   3",
            "{new[n]:.5}": "3",
            "{new[big]:.3}": "123",
            "{new[flag]:s}|{new[none]:s}": "True|",
            "{new[tags]:.3}": '["a',
            # Values an event does not have are empty, whatever the spec.
            "[{changes_count:d}][{changes_size_bytes:>5,}]": "[][     ]",
            # A string in an integer placeholder (an unusual review event's payload).
            "{comment:<3}|{timestamp:=+8,d}": "   |    text",
        }
        context = {
            **CONTEXT,
            "new": {**CONTEXT["new"], "big": 123456, "flag": True},
            "timestamp": "text",
        }
        for template, expected in cases.items():
            with self.subTest(template=template):
                templates.check(template, "data.t")
                self.assertEqual(templates.render(template, context), expected)

    def test_templates_stored_before_the_checks_are_render_errors(self):
        for template in ("{nope}", "{0}", "{", "{id.__class__}", "{id:>200000000}"):
            with self.subTest(template=template), self.assertRaises(RenderError):
                templates.render(template, CONTEXT)

    def test_output_is_bounded(self):
        body = templates.render("{new[title]}" * 5000, {"new": {"title": "x" * 5000}})
        self.assertEqual(len(body), templates.MAX_BODY_LENGTH)
        self.assertTrue(body.endswith("[...]"))

    def test_values_are_clipped(self):
        body = templates.render("{new[title]}", {"new": {"title": "x" * 5000}})
        self.assertEqual(len(body), templates.MAX_VALUE_LENGTH)

    def test_render_line_is_one_bounded_line(self):
        line = templates.render_line(
            "{new[title]}", {"new": {"title": "a\r\nb\tc\x0bd\u2028e\x00f" + "x" * 500}}
        )
        self.assertTrue(line.startswith("a b c d e f"))
        self.assertEqual(len(line), templates.MAX_LINE_LENGTH)

    def test_check_names_the_path(self):
        with self.assertRaises(InvalidHook) as cm:
            templates.check("{nope}", "data.x")
        self.assertEqual(cm.exception.path, "data.x")
        self.assertIn(templates.allowed_placeholders(), cm.exception.description)


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text()
)
any_json = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=4,
)
any_context = st.dictionaries(
    st.sampled_from(
        [*templates.SCALAR_PLACEHOLDERS, *templates.REVIEW_PLACEHOLDERS, "settings", "new", "old"]
    ),
    any_json | st.dictionaries(st.sampled_from(["a", "b", "project_name"]), any_json),
    max_size=6,
)
field_names = st.sampled_from(
    [
        *templates.SCALAR_PLACEHOLDERS,
        *templates.REVIEW_PLACEHOLDERS,
        "settings[project_name]",
        "new[a]",
        "old[a][b]",
        "new[b][a][b]",
    ]
)
numbers = st.integers(min_value=0, max_value=templates.MAX_SPEC_NUMBER).map(str)
specs = st.tuples(
    st.sampled_from(["", "", "<", ">", "^", "=", "*<", "0>", "x^", "-="]),
    st.sampled_from(["", "", "", "+", "-", " "]),
    st.sampled_from(["", "", "", "z"]),
    st.sampled_from(["", "", "", "#"]),
    st.sampled_from(["", "", "", "0"]),
    st.just("") | numbers,
    st.sampled_from(["", "", "", ",", "_"]),
    st.just("") | numbers.map(lambda n: "." + n),
    st.sampled_from(["", "", "", "", "s", *"bcdeEfFgGnosxX%"]),
).map("".join)
fields = st.tuples(field_names, specs).map(
    lambda f: f"{{{f[0]}:{f[1]}}}" if f[1] else f"{{{f[0]}}}"
)


class PropertyTest(unittest.TestCase):
    @settings(max_examples=300, deadline=None)
    @given(templates_strategy, contexts)
    def test_checked_templates_render_bounded(self, pieces, context):
        template = "".join(
            p.replace("{", "{{").replace("}", "}}")
            if "{" not in p or len(p) < 2 or p[0] != "{"
            else p
            for p in pieces
        )
        templates.check(template, "data.t")
        body = templates.render(template, context)
        self.assertLessEqual(len(body), templates.MAX_BODY_LENGTH)
        line = templates.render_line(template, context)
        self.assertNotRegex(line, r"[\r\n]")
        self.assertLessEqual(len(line), templates.MAX_LINE_LENGTH)

    @settings(max_examples=500, deadline=None)
    @given(st.lists(fields | st.sampled_from(["x", " ", "{{"]), max_size=4), any_context)
    def test_what_check_accepts_renders_against_any_json(self, pieces, context):
        """The save check's promise: a template it accepts never fails at use."""
        template = "".join(pieces)
        try:
            templates.check(template, "data.t")
        except InvalidHook:
            return
        self.assertLessEqual(len(templates.render(template, context)), templates.MAX_BODY_LENGTH)

    @settings(max_examples=500, deadline=None)
    @given(st.text())
    def test_any_text_is_accepted_or_refused_never_crashes(self, template):
        try:
            templates.check(template, "data.t")
        except InvalidHook:
            return
        self.assertLessEqual(len(templates.render(template, CONTEXT)), templates.MAX_BODY_LENGTH)


class LengthTest(unittest.TestCase):
    """Past what a body may hold, a template shows nothing more and costs its whole parse:
    refused on save, and a stored one does not render."""

    def test_templates_longer_than_a_body_are_refused_and_not_rendered(self):
        longest = "{uri}" + "x" * (templates.MAX_BODY_LENGTH - 5)
        templates.check(longest, "data.t")
        too_long = longest + "x"
        with self.assertRaises(InvalidHook) as raised:
            templates.check(too_long, "data.t")
        self.assertIn(f"at most {templates.MAX_BODY_LENGTH} characters", str(raised.exception))
        with self.assertRaises(RenderError):
            templates.render(too_long, {"uri": "/buckets/b"})
