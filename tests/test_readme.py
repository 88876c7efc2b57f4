"""The README says what the code does: its examples are valid, its tables complete."""

import json
import os
import re
import unittest

from pyramid_mailer.mailer import Mailer

from kinto_emailer import hooks, inbox_page, preview, preview_views, settings, templates


README = os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.rst")
with open(README) as f:
    TEXT = f.read()


def code_blocks(language: str) -> list[str]:
    pattern = rf"\.\. code-block:: {language}\n\n((?:    .*\n|\n)+)"
    return [re.sub(r"^    ", "", block, flags=re.M) for block in re.findall(pattern, TEXT)]


def table_rows() -> dict[str, str]:
    """First cell (the names in it) -> second cell, for every list-table row."""
    rows = {}
    for first, second in re.findall(r"   \* - (.+)\n     - (.+)\n", TEXT):
        for name in re.findall(r"``([^`]+)``", first):
            rows[name] = second
    return rows


# What an empty list setting means, as the table says it.
EMPTY_LISTS = {
    "allowed_domains": "(any domain)",
    "allowed_senders": "(none)",
    "verified_principals": "(none)",
}
# The sender of the README's configuration examples.
SETTINGS = settings.EmailerSettings(default_sender="Kinto <kinto@example.com>")


class ReadmeTest(unittest.TestCase):
    def test_hook_examples_are_valid(self):
        examples = [json.loads(b) for b in code_blocks("json")]
        self.assertTrue(examples)
        for example in examples:
            hooks.validate(example, "workspace", SETTINGS)
        curl = next(b for b in code_blocks("shell") if "kinto-emailer" in b)
        body = json.loads(re.search(r"-d '(\{\"data\": \{\"kinto-emailer\".*?)'\n", curl, re.S)[1])
        hooks.validate(body["data"], "workspace", settings.EmailerSettings())

    def test_hook_examples_make_links_without_a_double_slash(self):
        # {root_url} ends with a slash, and {uri} starts with one.
        for example in (json.loads(b) for b in code_blocks("json")):
            for value in example.values():
                if isinstance(value, str):
                    self.assertNotRegex(value, r"\{root_url\}(\{uri\}|/)")

    def test_every_setting_is_in_the_table_with_its_default(self):
        rows = table_rows()
        documented = {name for name in rows if name.startswith(("kinto.emailer.", "mail."))}
        ours = {f"kinto.emailer.{name}" for name in settings._PARSERS}
        # pyramid_mailer's keys and its debug mailer's: those the environment may set too.
        mailer = {f"mail.{name}" for name in settings.MAIL_KEYS}
        self.assertEqual(documented, ours | mailer)
        defaults = settings.EmailerSettings()
        # Settings whose default is another setting's value.
        fallbacks = {
            "secret": "(``kinto.userid_hmac_secret``)",
            "public_url": "(``kinto.http_scheme``, ``kinto.http_host``)",
        }
        for name in settings._PARSERS:
            value = getattr(defaults, name)
            if name in fallbacks:
                expected = fallbacks[name]
            elif isinstance(value, bool):
                expected = f"``{str(value).lower()}``"
            elif value is None:
                expected = "(off)"
            elif isinstance(value, tuple):
                expected = " ".join(f"{v:g}" for v in value)
                expected = f"``{expected}``" if value else EMPTY_LISTS[name]
            else:
                expected = f"``{value:.15g}``"
            self.assertEqual(rows[f"kinto.emailer.{name}"], expected, name)
        self.assertEqual(rows["mail.top_level_directory"], f"``{defaults.debug_directory}``")
        smtp = Mailer().smtp_mailer
        self.assertEqual(rows["mail.host"], f"``{smtp.hostname}``")
        self.assertEqual(rows["mail.port"], f"``{smtp.port}``")

    def test_every_placeholder_and_filter_is_documented(self):
        rows = table_rows()
        for name in templates.SCALAR_PLACEHOLDERS + templates.REVIEW_PLACEHOLDERS:
            self.assertIn(f"{{{name}}}", rows)
        for key in templates.SETTINGS_KEYS:
            self.assertIn(f"{{settings[{key}]}}", rows)
        for version in templates.OBJECT_VERSIONS:
            self.assertIn(f"{{{version}[field]}}", rows)
        for field in hooks.FILTER_FIELDS + tuple(hooks.HOOK_SCHEMA["properties"]):
            self.assertIn(field, rows)
        for event in hooks.KNOWN_EVENTS:
            self.assertIn(event.rsplit(".", 1)[1], TEXT)

    def test_documented_limits(self):
        self.assertIn(f"{templates.MAX_VALUE_LENGTH:,} characters", TEXT)
        self.assertIn(f"a body at {templates.MAX_BODY_LENGTH:,}", TEXT)
        self.assertIn(f"at\n{templates.MAX_LINE_LENGTH}", TEXT)
        self.assertIn(f"a template holds at most {templates.MAX_BODY_LENGTH:,} characters", TEXT)
        self.assertIn(f"at most {templates.MAX_SPEC_NUMBER}", TEXT)
        self.assertIn(f"newest first,\n{inbox_page.PAGE_SIZE} a page", TEXT)

    def test_documented_preview_bounds(self):
        section = " ".join(TEXT[TEXT.index("Preview\n---") : TEXT.index("Bounds\n---")].split())
        self.assertIn(f"a list of at most {preview.MAX_OBJECTS} of them", section)
        self.assertIn(f"and {preview.MAX_OBJECTS} objects", section)
        self.assertEqual(preview_views.MAX_BODY_BYTES, 1024 * 1024)
        self.assertIn("at most 1 MiB", section)
        shown = preview.MAX_SHOWN
        self.assertIn(f"shows {shown} messages and {shown} notifications", section)
        self.assertIn(f"at most {preview.MAX_SHOWN_CHARS:,} characters", section)
        self.assertEqual((preview_views.PREVIEWS.period, preview_views.MAILED.period), (60, 60))
        self.assertIn(f"at most {preview_views.PREVIEWS.limit} previews a minute", section)
        self.assertIn(f"the first {preview.SENT_TO_ME} messages", section)
        self.assertIn(f"mails at most {preview_views.MAILED.limit} previews a minute", section)
        self.assertIn(f"``{preview.TOKEN}``", section)
        self.assertIn(f"``{preview.SUBJECT_MARK.strip()}``", section)
