"""HTML mail: a hook's ``html_template`` (values escaped, markup cleaned) and the
operator's ``kinto.emailer.html_layout``, sent as ``multipart/alternative`` with the text."""

import os
import tempfile
import unittest
from email import message_from_bytes, policy
from html.parser import HTMLParser

from hypothesis import given
from hypothesis import settings as examples
from hypothesis import strategies as st
from pyramid.exceptions import ConfigurationError

from kinto_emailer import htmlbody, messages
from kinto_emailer.errors import InvalidHook
from kinto_emailer.recipients import parse_mailbox
from kinto_emailer.settings import parse_settings
from tests.support import EmailerWebTest, skip_unless_postgresql, store_unchecked
from tests.test_postgresql import PostgreSQL


RECORDS = "/buckets/b/collections/c/records"
TEMPLATE = '<h1>{new[title]}</h1><p class="x">By <a href="{root_url}">{user_id}</a></p>'
HOSTILE = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "</p><a href='javascript:alert(1)'>click</a>",
    "&lt;b&gt; & <b>bold</b>",
    "{uri} ]]> <!-- -->",
]
HTML_PATH = "data.kinto-emailer.hooks.0.html_template"
GROWING = "".join(f"<b title={i}><p>x" for i in range(400))
"""Formatting tags left open, each with attributes of its own: an HTML parser opens
every one of them again in each new paragraph, a square of the template's length."""


class Parts(HTMLParser):
    """The tags, attributes and text of an HTML document."""

    def __init__(self, markup: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str | None]] = []
        self.text: list[str] = []
        self.feed(markup)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attributes += attrs

    def handle_data(self, data):
        self.text.append(data)


def html_part(mail) -> str:
    return mail.message.get_body(("html",)).get_content()


class HTMLTemplateTest(EmailerWebTest):
    def setUp(self):
        super().setUp()
        self.create_collection()
        self.put_hooks(
            "/buckets/b",
            {
                "template": "{new[title]}",
                "html_template": TEMPLATE,
                "resource_name": "record",
                "recipients": ["a@example.com"],
            },
        )

    def test_placeholder_values_never_reach_the_html_unescaped(self):
        for title in HOSTILE:
            self.app.post_json(RECORDS, {"data": {"title": title}}, headers=self.headers)
        mails = self.mails()
        self.assertEqual(len(mails), len(HOSTILE))
        for mail in mails:
            with self.subTest(text=mail.body):
                self.assertEqual(mail.message.get_content_type(), "multipart/alternative")
                parts = Parts(html_part(mail))
                # The template's tags and the footer's, never one of a value.
                self.assertEqual(parts.tags[:4], ["html", "head", "meta", "body"])
                self.assertEqual(parts.tags[4:], ["h1", "p", "a", "hr", "p", "a", "a"])
                self.assertNotIn("onerror", dict(parts.attributes))
                self.assertIn(mail.body, parts.text)

    def test_footer_links_are_in_both_parts(self):
        self.app.post_json(RECORDS, {"data": {"title": "t"}}, headers=self.headers)
        [mail] = self.mails()
        text = mail.text
        hrefs = [v for k, v in Parts(html_part(mail)).attributes if k == "href"]
        unsubscribe = mail.message["List-Unsubscribe"].strip("<>")
        self.assertIn(unsubscribe, text)
        self.assertIn(unsubscribe, hrefs)
        preferences = [line for line in text.splitlines() if "emailer/page?token=" in line]
        self.assertIn(preferences[0].split(": ", 1)[1], hrefs)

    def refused(self, html_template: str) -> str:
        """The description of the 400 that saving ``html_template`` gets."""
        hook = {"template": "t", "html_template": html_template, "recipients": ["a@x.org"]}
        body = {"data": {"kinto-emailer": {"hooks": [hook]}}}
        response = self.app.put_json("/buckets/b", body, headers=self.headers, status=400)
        [detail] = response.json["details"]
        self.assertEqual(detail["name"], HTML_PATH)
        return str(detail["description"])

    def test_an_invalid_html_template_is_refused_naming_its_path(self):
        self.refused("<p>{nope}</p>")

    def test_markup_that_grows_once_cleaned_is_refused(self):
        # 6 KB that an HTML parser makes into megabytes, at each email.
        self.assertLess(len(GROWING), htmlbody.MAX_TEMPLATE_LENGTH)
        self.assertIn("once cleaned", self.refused(GROWING))

    def test_deeply_nested_html_templates_are_refused(self):
        too_deep = "<div>" * (htmlbody.MAX_DEPTH + 1) + "{id}"
        self.assertIn(str(htmlbody.MAX_DEPTH), self.refused(too_deep))
        self.put_hooks(
            "/buckets/b",
            {
                "template": "t",
                "html_template": "<div>" * (htmlbody.MAX_DEPTH - 3) + "{id}",
                "recipients": ["a@x.org"],
            },
        )

    def test_a_stored_html_template_that_grows_is_skipped_when_used(self):
        grows = {"template": "t", "html_template": GROWING, "recipients": ["b@example.com"]}
        hooks = [grows, {"template": "{id}", "recipients": ["a@example.com"]}]
        obj = {"id": "b", "kinto-emailer": {"hooks": hooks}}
        store_unchecked(self.registry, "bucket", "", "b", obj)
        with self.assertLogs("kinto_emailer.hooks", "WARNING") as logs:
            self.app.post_json(RECORDS, {"data": {"title": "t"}}, headers=self.headers)
            self.assertEqual([m.rcpt_tos for m in self.mails()], [["a@example.com"]])
        self.assertIn(f"hook 0 of /buckets/b: {HTML_PATH}", logs.output[0])

    def test_values_are_text_wherever_the_template_puts_them(self):
        # A placeholder where a tag's name or an unquoted attribute goes: record data
        # would make a link of its own, or attributes.
        self.put_hooks(
            "/buckets/b",
            {
                "template": "t",
                "html_template": '<{new[tag]} href="https://evil.example/">x'
                "<a href={new[url]}>{new[title]}</a>",
                "recipients": ["a@example.com"],
            },
        )
        data = {"tag": "a", "url": "https://ok.example/ title=injected", "title": "t"}
        self.app.post_json(RECORDS, {"data": data}, headers=self.headers)
        [mail] = self.mails()
        parts = Parts(html_part(mail))
        self.assertEqual(parts.tags[4:], ["a", "hr", "p", "a", "a"])
        self.assertEqual(
            parts.attributes[1:3], [("href", data["url"]), ("rel", "noopener noreferrer")]
        )
        self.assertIn('<a href="https://evil.example/">x', "".join(parts.text))


@skip_unless_postgresql
class PostgreSQLHTMLTemplateTest(PostgreSQL, HTMLTemplateTest):
    pass


class EditorMarkupTest(unittest.TestCase):
    def test_long_html_templates_are_refused(self):
        # Over HTTP, a body this long would leave WebOb's temporary file open.
        htmlbody.check("<p>" + "x" * (htmlbody.MAX_TEMPLATE_LENGTH - 7) + "</p>", HTML_PATH)
        with self.assertRaises(InvalidHook) as raised:
            htmlbody.check("<p>" + "x" * htmlbody.MAX_TEMPLATE_LENGTH + "</p>", HTML_PATH)
        self.assertIn(f"at most {htmlbody.MAX_TEMPLATE_LENGTH} characters", str(raised.exception))

    def test_scripts_handlers_images_and_javascript_links_are_removed(self):
        markup = htmlbody.render(
            '<p onclick="x()">Hi<script>alert(1)</script><img src="https://t.example/p.gif">'
            '<a href="javascript:alert(1)">a</a><a href="https://example.com">b</a></p>',
            {},
        )
        parts = Parts(markup)
        self.assertEqual(parts.tags, ["p", "a", "a"])
        self.assertEqual(
            [(k, v) for k, v in parts.attributes if k in ("href", "onclick")],
            [("href", "https://example.com")],
        )

    def test_links_keep_http_https_and_mailto_addresses_only(self):
        kept = ["https://example.com/", "http://example.com/", "mailto:a@example.com", "/v1/"]
        dropped = ["ftp://example.com/", "tel:+1555", "sms:+1555", "magnet:?xt=1", "ssh://h"]
        markup = "".join(f'<a href="{{new[{i}]}}">{i}</a>' for i in range(9))
        values = {str(i): url for i, url in enumerate(kept + dropped)}
        rendered = htmlbody.render(markup, {"new": values})
        hrefs = [value for name, value in Parts(rendered).attributes if name == "href"]
        self.assertEqual(hrefs, kept)

    @examples(max_examples=300, deadline=None)
    @given(st.text(), st.text())
    def test_any_value_is_text_in_the_html(self, title, user_id):
        context = {"new": {"title": title}, "user_id": user_id, "root_url": "https://k/v1/"}
        draft = messages.Draft(
            parse_mailbox("kinto@example.com"),
            parse_mailbox("a@example.com"),
            "subject",
            "text",
            "/buckets/b",
            "https://k/v1/",
            "k" * 64,
            html=htmlbody.render(TEMPLATE, context),
        )
        mail = messages.build(draft)
        message = message_from_bytes(mail.as_bytes(), policy=policy.default)
        parts = Parts(message.get_body(("html",)).get_content())
        self.assertEqual(parts.tags, ["html", "head", "meta", "body", "h1", "p", "a"])
        # class goes too: the allow-list keeps no attribute that styles or tracks.
        self.assertEqual([k for k, _ in parts.attributes], ["charset", "href", "rel"])


class LayoutTest(EmailerWebTest):
    layout_file: str

    @classmethod
    def setUpClass(cls):
        directory = tempfile.mkdtemp()
        cls.layout_file = os.path.join(directory, "layout.html")
        with open(cls.layout_file, "w") as f:
            f.write("<html><head><style>p {color: #333}</style></head><body>{body}</body></html>")
        cls.extra_settings = {"emailer.html_layout": cls.layout_file}
        super().setUpClass()

    def test_text_mail_gets_an_html_part_in_the_layout(self):
        self.create_collection()
        hook = {
            "template": "<b>{new[title]}</b>\n\nSee {root_url}buckets/b",
            "resource_name": "record",
            "recipients": ["a@example.com"],
        }
        self.put_hooks("/buckets/b", hook)
        self.app.post_json(RECORDS, {"data": {"title": "t"}}, headers=self.headers)
        [mail] = self.mails()
        markup = html_part(mail)
        self.assertTrue(markup.startswith("<html><head><style>p {color: #333}</style>"))
        self.assertIn("<p>&lt;b&gt;t&lt;/b&gt;</p>", markup)
        self.assertIn('<a href="http://localhost/v1/buckets/b">', markup)
        self.assertEqual(Parts(markup).tags.count("p"), 3)  # Two paragraphs, a footer.

    def test_a_bad_layout_is_a_startup_error_naming_the_key(self):
        with tempfile.TemporaryDirectory() as directory:
            no_slot = os.path.join(directory, "no-slot.html")
            with open(no_slot, "w") as f:
                f.write("<html></html>")
            for path in (no_slot, os.path.join(directory, "missing.html")):
                with self.subTest(path=path):
                    with self.assertRaises(ConfigurationError) as raised:
                        parse_settings({"emailer.html_layout": path})
                    self.assertIn("kinto.emailer.html_layout", str(raised.exception))


@skip_unless_postgresql
class PostgreSQLLayoutTest(PostgreSQL, LayoutTest):
    pass
