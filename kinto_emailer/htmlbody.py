"""The HTML part of emails: an editor's template, cleaned; the operator's layout; a text
body turned into paragraphs with links; the footer's links.

What an editor writes is untrusted (anyone who may create a bucket writes hooks): its
placeholders' values are escaped as they are rendered (:func:`templates.render_html`),
and its markup is cleaned by `nh3 <https://nh3.readthedocs.io>`_ (the Rust sanitizer
ammonia), which keeps an allow-list of tags and attributes. The operator's layout is
trusted: it may hold a ``<head>`` and styles.
"""

import html
import re
from collections.abc import Mapping
from typing import Any

import nh3

from kinto_emailer import templates


EDITOR_TAGS = frozenset(nh3.ALLOWED_TAGS - {"img"})
"""Tags an editor's template may use: ammonia's, but images, whose loading tells the
sender who opened the mail and when."""

SLOT = "{body}"
"""Where the layout (``kinto.emailer.html_layout``) takes each message's HTML body."""

_URL = re.compile(r"https?://[^\s<>\"]+")
_TRAILING = ".,;:!?)'"
"""Punctuation that ends a sentence rather than a link."""


def clean(markup: str) -> str:
    """``markup`` with only the tags and attributes of :data:`EDITOR_TAGS` and safe links."""
    return nh3.clean(markup, tags=set(EDITOR_TAGS))


def render(template: str, context: Mapping[str, Any]) -> str:
    """An editor's HTML template rendered: values escaped, then the markup cleaned."""
    return clean(templates.render(template, context, escape=html.escape))


def _linked(line: str) -> str:
    """One line of text, escaped, with its web addresses made links."""
    pieces = []
    start = 0
    for match in _URL.finditer(line):
        url = match[0].rstrip(_TRAILING)
        pieces.append(html.escape(line[start : match.start()]))
        pieces.append(f'<a href="{html.escape(url)}">{html.escape(url)}</a>')
        start = match.start() + len(url)
    pieces.append(html.escape(line[start:]))
    return "".join(pieces)


def paragraphs(text: str) -> str:
    """Plain ``text`` as HTML: a paragraph per block of lines, its lines kept, links made."""
    blocks = re.split(r"\n[ \t]*\n", text.strip("\n"))
    return "\n".join(
        "<p>" + "<br>\n".join(map(_linked, block.split("\n"))) + "</p>"
        for block in blocks
        if block.strip()
    )


def footer(preferences_url: str, unsubscribe_url: str, inbox_url: str = "") -> str:
    """The links of the text footer, as HTML."""
    links = [f'<a href="{html.escape(preferences_url)}">Choose which emails you get</a>']
    if inbox_url:
        links.append(f'<a href="{html.escape(inbox_url)}">Your notifications on the web</a>')
    if unsubscribe_url:
        links.append(f'<a href="{html.escape(unsubscribe_url)}">Unsubscribe</a>')
    return '\n<hr>\n<p style="font-size: small">' + " | ".join(links) + "</p>"


def document(body: str, layout: str | None) -> str:
    """The HTML part: ``body`` in the operator's layout, else in a page of its own."""
    if layout is not None:
        return layout.replace(SLOT, body)
    return (
        '<!DOCTYPE html>\n<html>\n<head><meta charset="utf-8"></head>\n'
        f"<body>\n{body}\n</body>\n</html>\n"
    )
