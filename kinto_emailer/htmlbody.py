"""The HTML part of emails: an editor's template, cleaned; the operator's layout; a text
body turned into paragraphs with links; the footer's links.

What an editor writes is untrusted (anyone who may create a bucket writes hooks): its
markup is cleaned by `nh3 <https://nh3.readthedocs.io>`_ (the Rust sanitizer ammonia),
which keeps an allow-list of tags and attributes, once with its placeholders as text
(:func:`prepare`), so that a value can only ever be text or an attribute's value; then
each email's values go in, HTML-escaped, and the result is cleaned again (a link's
address may come from a value). The operator's layout is trusted: it may hold a
``<head>`` and styles.
"""

import html
import re
import uuid
from collections.abc import Mapping
from html.parser import HTMLParser
from typing import Any

import nh3

from kinto_emailer import caching, templates
from kinto_emailer.errors import InvalidHook, RenderError


EDITOR_TAGS = frozenset(nh3.ALLOWED_TAGS - {"img"})
"""Tags an editor's template may use: ammonia's, but images, whose loading tells the
sender who opened the mail and when."""

URL_SCHEMES = frozenset({"http", "https", "mailto"})
"""What links of an editor's template may address (ammonia's own list adds ``tel``,
``sms``, ``magnet`` and a score of others); relative addresses stay."""

SLOT = "{body}"
"""Where the layout (``kinto.emailer.html_layout``) takes each message's HTML body."""

_URL = re.compile(r"https?://[^\s<>\"]+")
_TRAILING = ".,;:!?)'"
"""Punctuation that ends a sentence rather than a link."""


MAX_TEMPLATE_LENGTH = 16_384
"""Characters of an editor's ``html_template``. Parsing HTML costs up to the square of
its length (formatting tags left open are opened again in every new block): this bounds
what checking one costs, a fraction of a second."""
MAX_DEPTH = 100
"""Elements nested in an editor's cleaned template: parsing costs its depth at each tag."""
_VOID = frozenset("area base br col embed hr img input link meta source track wbr".split())
"""Elements without an end tag."""


def clean(markup: str) -> str:
    """``markup`` with only the tags and attributes of :data:`EDITOR_TAGS`, and links to
    :data:`URL_SCHEMES`."""
    return nh3.clean(markup, tags=set(EDITOR_TAGS), url_schemes=set(URL_SCHEMES))


class _Depth(HTMLParser):
    """How deep the elements of cleaned markup (every element closed) nest."""

    def __init__(self, markup: str) -> None:
        super().__init__()
        self.depth = self.deepest = 0
        self.feed(markup)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _VOID:
            self.depth += 1
            self.deepest = max(self.deepest, self.depth)

    def handle_endtag(self, tag: str) -> None:
        if tag not in _VOID:
            self.depth -= 1


@caching.sized_cache(templates.TEMPLATES_CACHE_CHARS)
def prepare(template: str) -> str:
    """An editor's HTML template, its markup cleaned with its placeholders as text: a
    template whose values, escaped, can only be text or attribute values.

    ValueError for a template that fails :func:`templates.parse`, is longer than
    :data:`MAX_TEMPLATE_LENGTH`, or once cleaned is longer than a body may be
    (:data:`templates.MAX_BODY_LENGTH`) or nests deeper than :data:`MAX_DEPTH`.
    """
    if len(template) > MAX_TEMPLATE_LENGTH:
        raise ValueError(f"at most {MAX_TEMPLATE_LENGTH} characters, not {len(template)}")
    pieces = templates.parse(template)
    # Each placeholder as a word of its own that no parser changes, and that starts with
    # a digit: after a "<", no tag.
    nonce = uuid.uuid4().hex
    while nonce in template:
        nonce = uuid.uuid4().hex
    fields = [piece.source for piece in pieces if not isinstance(piece, str)]
    marks = iter(range(len(fields)))
    marked = "".join(
        piece if isinstance(piece, str) else f"0{nonce}{next(marks)}z" for piece in pieces
    )
    cleaned = clean(marked).replace("{", "{{").replace("}", "}}")
    prepared = re.sub(f"0{nonce}([0-9]+)z", lambda match: fields[int(match[1])], cleaned)
    if len(prepared) > templates.MAX_BODY_LENGTH:
        raise ValueError(
            f"once cleaned, its markup holds {len(prepared)} characters, more than the"
            f" {templates.MAX_BODY_LENGTH} of a body: close formatting tags (<b>, <a>...)"
            " where they end"
        )
    depth = _Depth(prepared).deepest
    if depth > MAX_DEPTH:
        raise ValueError(f"once cleaned, its elements nest {depth} deep: at most {MAX_DEPTH}")
    return prepared


def check(template: str, path: str) -> None:
    """Raise :class:`InvalidHook` naming ``path`` when ``template`` is no HTML template
    that :func:`render` takes."""
    templates.check(template, path)
    try:
        prepare(template)
    except ValueError as e:
        raise InvalidHook(path, str(e)) from e


def render(template: str, context: Mapping[str, Any]) -> str:
    """An editor's HTML template rendered: its cleaned markup with the values escaped,
    cleaned again for the addresses of links that values gave.

    RenderError for a template that :func:`check` refuses."""
    try:
        prepared = prepare(template)
    except ValueError as e:
        raise RenderError(str(e)) from e
    return clean(templates.render(prepared, context, escape=html.escape))


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
