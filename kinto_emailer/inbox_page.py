"""The inbox page, ``/v1/emailer/inbox``: web notifications for people, in a browser.

Two ways in. The link at the end of an email (of a hook that leaves web notifications
too) carries the token of the other links: no login, and it shows the notifications
kept for its address from its scopes only, as the preferences page shows only those
scopes' mail (an email forwarded to someone opens nothing else). A logged-in Kinto user
sees their whole inbox, as ``/v1/emailer/notifications`` does (see
:func:`kinto_emailer.feed.reader_key`).

Newest first, a bounded page at a time. A ``GET`` changes nothing; a ``POST`` marks one
notification, or all of them, read. No other site can make a browser send these forms:
a link's forms carry its token in their action, a logged-in user's a token of their own
(:func:`kinto_emailer.tokens.form_token`), that only this server can make. Subjects and
bodies are the text of whoever wrote the hooks: they are escaped, and the page runs no
script at all (its Content-Security-Policy forbids any).
"""

import html
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pyramid.httpexceptions import (
    HTTPBadRequest,
    HTTPException,
    HTTPNotFound,
    HTTPSeeOther,
    HTTPUnauthorized,
)
from pyramid.request import Request
from pyramid.response import Response
from pyramid.security import NO_PERMISSION_REQUIRED, forget

from kinto_emailer import feed, inbox, tokens, views


ROUTE = "emailer-inbox"
PAGE_SIZE = 20
"""Notifications a page shows; older ones are a link away."""
MARK_ALL = "Mark all read"
MARK_ONE = "Mark read"
FORM_TOKEN = "form_token"
"""The field of a logged-in user's forms that holds :func:`tokens.form_token`."""
NOTIFICATION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
CURSOR = re.compile(r"(\d{1,15}):([A-Za-z0-9_-]{1,64})", re.ASCII)
"""``before``: the ``created`` and ``id`` of the last notification of the page before."""


@dataclass(frozen=True)
class Reader:
    """Whose inbox a request opens, and what of it."""

    key: str
    scopes: inbox.Scopes
    """A link's own scopes; None for a logged-in user (every scope)."""
    form_token: str | None
    """What a logged-in user's forms must carry; None for a link (its token)."""


def _reader(request: Request) -> Reader:
    """The link's reader if the request has a token (400 or 410 for a bad one), else the
    logged-in user; 401 otherwise, with a page saying how to get in."""
    if "token" in request.params:
        grant = views._grant(request)
        return Reader(grant.recipient, grant.scopes, None)
    try:
        key = feed.reader_key(request)
    except HTTPUnauthorized:
        # forget(): the browser asks for credentials, when Kinto takes Basic ones.
        raise views._broken_link(
            HTTPUnauthorized(headers=forget(request)),
            "Open this page from the link at the end of one of your emails,"
            " or log in to this server.",
            "Log in to read your notifications",
        ) from None
    return Reader(key, None, tokens.form_token(request.registry.emailer_settings.secret, key))


def _cursor(request: Request) -> dict[str, str]:
    """The query of the page shown (``before``, checked), that its forms come back to;
    400 for one that was changed."""
    before = request.GET.get("before")
    if before is None:
        return {}
    if CURSOR.fullmatch(before) is None:
        raise views._broken_link(
            HTTPBadRequest(),
            "This page's address was changed or cut: open your inbox from its first page.",
        )
    return {"before": before}


def _before(cursor: dict[str, str]) -> inbox.Cursor | None:
    if not cursor:
        return None
    created, last = cursor["before"].split(":", 1)
    return int(created), last


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _time(created: Any) -> str:
    if not isinstance(created, int):
        return ""
    moment = datetime.fromtimestamp(created / 1000, UTC)
    return f'<time datetime="{moment:%Y-%m-%dT%H:%M:%SZ}">{moment:%Y-%m-%d %H:%M} UTC</time>'


def _item(index: int, notification: dict[str, Any], action: str, fields: dict[str, str]) -> str:
    """One notification: unread ones say so in words (for screen readers too), and have
    their own button."""
    heading = f"notification-{index}"
    subject = html.escape(str(notification.get("subject") or "(no subject)"))
    link = str(notification.get("link", ""))
    # Only web addresses: a stored link is never a javascript: or data: one.
    if link.startswith(("https://", "http://")):
        subject = f'<a href="{html.escape(link)}">{subject}</a>'
    unread = notification.get(inbox.READ) is False
    marker = "<strong>Unread:</strong> " if unread else ""
    button = (
        views._form(action, MARK_ONE, described_by=heading, read=str(notification["id"]), **fields)
        if unread
        else ""
    )
    attributes = ' class="unread"' if unread else ""
    when = _time(notification.get("created"))
    where = html.escape(str(notification.get("scope", "")))
    return (
        f"<li{attributes}>"
        f'<h2 id="{heading}">{marker}{subject}</h2>'
        f"<p>{', '.join(filter(None, (when, where)))}</p>"
        f'<p class="notification-body">{html.escape(str(notification.get("body", "")))}</p>'
        f"{button}</li>"
    )


def inbox_get(request: Request) -> Response:
    reader = _reader(request)
    cursor = _cursor(request)
    store = inbox.InboxStore(request.registry.storage, request.registry.emailer_settings)
    found = store.newest(reader.key, reader.scopes, _before(cursor), PAGE_SIZE + 1)
    shown = found[:PAGE_SIZE]
    total = store.count(reader.key, reader.scopes)
    unread = store.count(reader.key, reader.scopes, unread=True)
    action = views._link(request, ROUTE, **cursor)
    fields = {FORM_TOKEN: reader.form_token} if reader.form_token else {}

    status = '<p role="status">Marked read.</p>' if request.GET.get("marked") else ""
    whose = f"<strong>{html.escape(reader.key)}</strong>"
    counts = f"{unread} unread of {_plural(total, 'notification')} for {whose}"
    if reader.scopes is None:
        intro = f"<p>{counts}, newest first.</p>"
    else:
        intro = (
            f"<p>{counts} from the places of this link, newest first:</p>"
            f"{views._scope_list(reader.scopes)}"
            "<p>Log in to this server to see those of other places.</p>"
        )
    mark_all = views._form(action, MARK_ALL, read="all", **fields) if unread else ""
    if shown:
        items = "".join(
            _item(index, notification, action, fields) for index, notification in enumerate(shown)
        )
        listing = f'<ol class="notifications">{items}</ol>'
    else:
        listing = "<p>No older notifications.</p>" if cursor else "<p>No notifications.</p>"
    pages = []
    if cursor:
        pages.append(
            f'<a href="{html.escape(views._link(request, ROUTE))}">Newest notifications</a>'
        )
    if len(found) > PAGE_SIZE:
        last = shown[-1]
        older = views._link(request, ROUTE, before=f"{last.get('created', 0)}:{last['id']}")
        pages.append(f'<a href="{html.escape(older)}" rel="next">Older notifications</a>')
    nav = (
        f'<nav aria-label="Pages of notifications"><p>{" | ".join(pages)}</p></nav>'
        if pages
        else ""
    )
    return views.page("Your notifications", f"{status}{intro}{mark_all}{listing}{nav}")


def inbox_post(request: Request) -> Response:
    """``read=all``, or ``read=<id>`` of one notification; then back to the page shown."""
    reader = _reader(request)
    if reader.form_token is not None and not tokens.form_token_valid(
        request.registry.emailer_settings.secret,
        request.POST.get(FORM_TOKEN, ""),
        reader.key,
    ):
        return views.page(
            "This form is not from your inbox",
            "<p>Nothing was changed: open your inbox and try again from there.</p>",
            403,
        )
    cursor = _cursor(request)
    which = request.POST.get("read", "")
    store = inbox.InboxStore(request.registry.storage, request.registry.emailer_settings)
    if which == "all":
        store.mark_all_read(reader.key, reader.scopes)
    elif NOTIFICATION_ID.fullmatch(which) is None:
        return views.page("This form was not understood", "<p>Nothing was changed.</p>", 400)
    elif not store.mark_read(reader.key, which, reader.scopes):
        back = html.escape(views._link(request, ROUTE, **cursor))
        return views.page(
            "This notification is not in this inbox",
            f'<p>Nothing was changed: it may be gone since. <a href="{back}">Your inbox</a></p>',
            404,
        )
    return HTTPSeeOther(views._link(request, ROUTE, marked="1", **cursor))


def unsigned_inbox_view(request: Request) -> HTTPException:
    """Without a secret, neither a link's token nor a form's can be checked."""
    return views._broken_link(
        HTTPNotFound(),
        "This server has no secret to sign its pages with, so it shows no inbox page:"
        " read your notifications through /v1/emailer/notifications.",
        "No inbox page here",
    )


def includeme(config: Any) -> None:
    # The route is the views module's, with the other pages whose links carry a token.
    signed = bool(config.registry.emailer_settings.secret)
    for method, view in [("GET", inbox_get), ("POST", inbox_post)]:
        config.add_view(
            view if signed else unsigned_inbox_view,
            route_name=ROUTE,
            request_method=method,
            permission=NO_PERMISSION_REQUIRED,
        )
