"""What recipients see: one-click unsubscribe, a preferences page, and the same
preferences through the API for Kinto users (their email when their principal is a
verified address; their web notifications in any case).

The pages need no login: their links carry a signed token (:mod:`kinto_emailer.tokens`),
which shows and changes the scopes it names only, and, on every page, whether all mail
to its address is stopped. A ``GET`` never changes anything (mail scanners follow
links); a ``POST`` does exactly what its button says.
"""

import contextlib
import html
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import urlencode

from kinto.core.errors import ERRORS, http_error, raise_invalid
from pyramid.events import NewRequest
from pyramid.httpexceptions import (
    HTTPBadRequest,
    HTTPException,
    HTTPGone,
    HTTPNotFound,
    HTTPSeeOther,
    HTTPUnauthorized,
)
from pyramid.request import Request
from pyramid.response import Response
from pyramid.security import NO_PERMISSION_REQUIRED

from kinto_emailer import recipients, tokens
from kinto_emailer.errors import InvalidLink
from kinto_emailer.preferences import (
    CHANNELS,
    CHOICES,
    DEFAULTS,
    Cell,
    LockedScope,
    NotSent,
    Preferences,
    PreferenceStore,
    Value,
    choose,
    cleared,
)


PAGES = {
    "emailer-unsubscribe": "/emailer/unsubscribe",
    "emailer-page": "/emailer/page",
    "emailer-suppress": "/emailer/suppress",
    "emailer-inbox": "/emailer/inbox",
}
"""The routes of the pages, whose links carry a token (the inbox's, unless opened by a
logged-in user: see :mod:`kinto_emailer.inbox_page`)."""

STOP_ALL = "Stop all mail from this server to me"
RESUME = "Receive mail from this server again"


LABELS = {
    "immediate": "Each change, as it happens",
    "daily": "A daily digest",
    "weekly": "A weekly digest",
    "off": "Nothing",
}

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 40rem; margin: 2rem auto;
       padding: 0 1rem; line-height: 1.5; color: #1a1a1a; }}
fieldset {{ margin: 1rem 0; border: 1px solid #767676; }}
button {{ font-size: 1rem; padding: 0.5rem 1.25rem; }}
:focus-visible {{ outline: 3px solid #0b57d0; outline-offset: 2px; }}
[role=status] {{ background: #e6f4ea; padding: 0.5rem 1rem; }}
.locked {{ color: #5f5f5f; }}
table {{ border-collapse: collapse; width: 100%; margin: 1rem 0; }}
caption {{ text-align: left; font-weight: bold; }}
th, td {{ text-align: left; vertical-align: top; padding: 0.5rem;
         border-bottom: 1px solid #767676; overflow-wrap: break-word; }}
td fieldset {{ margin: 0; padding: 0; border: 0; }}
.vh {{ position: absolute; width: 1px; height: 1px; overflow: hidden;
       clip-path: inset(50%); white-space: nowrap; }}
.notifications {{ list-style: none; padding: 0; }}
.notifications > li {{ margin: 1rem 0; padding: 0.5rem 1rem; border-left: 4px solid #c7c7c7; }}
.notifications > li.unread {{ border-left-color: #0b57d0; background: #f1f5fd; }}
.notifications h2 {{ font-size: 1.125rem; margin: 0; }}
.notification-body {{ white-space: pre-wrap; overflow-wrap: anywhere; }}
</style>
</head>
<body>
<main>
<h1>{title}</h1>
{content}
</main>
</body>
</html>
"""


def page(title: str, content: str, status: int = 200) -> Response:
    text = PAGE.format(title=html.escape(title), content=content)
    response = Response(text, status=status, content_type="text/html", charset="utf-8")
    # Kinto's default policy forbids everything, the page's own style included.
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self';"
        " frame-ancestors 'none'; base-uri 'none'"
    )
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def _grant(request: Request) -> tokens.Grant:
    settings = request.registry.emailer_settings
    return tokens.verify(settings.secret, request.params.get("token", ""), settings.link_max_age)


def _broken_link(
    error: HTTPException, reason: str, title: str = "This link does not work"
) -> HTTPException:
    text = page(title, f"<p>{html.escape(reason)}</p>", error.code)
    # An HTTP error, not a plain response: Kinto's batch requests raise what they get.
    error.headers.update(text.headers)
    error.body = text.body
    return error


def invalid_link_view(exc: InvalidLink, request: Request) -> HTTPException:
    """A clear 4xx that changes nothing: 410 for an expired link, else 400."""
    return _broken_link(HTTPGone() if exc.expired else HTTPBadRequest(), str(exc))


def unsigned_link_view(request: Request) -> HTTPException:
    """Without a secret no token can be checked: every link is unknown here (404)."""
    return _broken_link(
        HTTPNotFound(),
        "This server sends emails with no links now, so it cannot check this one:"
        " nothing was changed.",
    )


def _link(request: Request, route: str, **query: str) -> str:
    """A page of the same link: its token, the other pages' only way in.

    On the public URL, as in the emails: never on the request's ``Host``, which whoever
    sends the request chooses (a proxy or cache may keep what it answered).
    """
    # Pages that a logged-in user opened have none: their credentials are their way in.
    token = request.params.get("token")
    arguments = {**({"token": token} if token else {}), **query}
    public_url = request.registry.emailer_settings.public_url
    if not public_url:
        return request.route_path(route, _query=arguments)
    query_string = f"?{urlencode(arguments)}" if arguments else ""
    return f"{public_url}{PAGES[route].lstrip('/')}{query_string}"


def _form(action: str, button: str, *, described_by: str = "", **fields: str) -> str:
    """A POST form of one button; ``described_by``: the id of what the button acts on,
    when its text alone does not say (one of several "Mark read")."""
    hidden = "".join(
        f'<input type="hidden" name="{name}" value="{html.escape(value)}">'
        for name, value in fields.items()
    )
    described = f' aria-describedby="{html.escape(described_by)}"' if described_by else ""
    return (
        f'<form method="post" action="{html.escape(action)}">{hidden}'
        f'<button type="submit"{described}>{html.escape(button)}</button></form>'
    )


def _scope_list(scopes: Iterable[str]) -> str:
    return "<ul>" + "".join(f"<li>{html.escape(scope)}</li>" for scope in scopes) + "</ul>"


def _all_mail(request: Request, suppressed: bool) -> str:
    """The section of every page that stops, or resumes, all mail to the address."""
    action = _link(request, "emailer-suppress")
    if suppressed:
        text = (
            "<p>You stopped all mail from this server to this address: you get only"
            " the mail that cannot be turned off.</p>"
        )
        form = _form(action, RESUME, suppressed="false")
    else:
        text = (
            "<p>Stop every email from this server to this address, from wherever it"
            " comes, now and later, except the mail that cannot be turned off.</p>"
        )
        form = _form(action, STOP_ALL, suppressed="true")
    return (
        '<section aria-labelledby="all-mail"><h2 id="all-mail">All mail from this server</h2>'
        f"{text}{form}</section>"
    )


def _locked(preferences: Preferences, scopes: Iterable[str]) -> list[str]:
    """Of ``scopes``, those whose email the recipient cannot turn off."""
    return [scope for scope in scopes if _page_cells(preferences, scope)["email"].locked]


def _page_cells(preferences: Preferences, scope: str) -> dict[str, Cell]:
    """The cells of a scope of a link: its email did come (whatever storage lost since),
    and its web notifications when they came too."""
    stored = preferences.scopes.get(scope)
    return {"email": Cell(DEFAULTS["email"]), **(stored.cells if stored else {})}


def unsubscribe_get(request: Request) -> Response:
    grant = _grant(request)
    preferences = PreferenceStore(request.registry.storage).read(grant.recipient)
    locked = _locked(preferences, grant.scopes)
    stoppable = [scope for scope in grant.scopes if scope not in locked]
    recipient = f"<strong>{html.escape(grant.recipient)}</strong>"
    content = ""
    if stoppable:
        content += (
            f"<p>Stop the emails sent to {recipient} by:</p>{_scope_list(stoppable)}"
            f"{_form(_link(request, 'emailer-unsubscribe'), 'Unsubscribe')}"
        )
    if locked:
        content += (
            f"<p>The emails sent to {recipient} by these places cannot be turned off:</p>"
            f"{_scope_list(locked)}"
        )
    return page("Unsubscribe", content + _all_mail(request, preferences.suppressed))


def unsubscribe_post(request: Request) -> Response:
    """RFC 8058 one-click unsubscribe, and the button of the page: the link's scopes off.

    200 when they are all off; 409 when some cannot be (locked), saying which.
    """
    grant = _grant(request)

    def turn_off(preferences: Preferences) -> Preferences:
        scopes = preferences.scopes
        for scope in grant.scopes:
            with contextlib.suppress(LockedScope):
                scopes = choose(scopes, scope, "email", "off", known=False)
        return replace(preferences, scopes=scopes)

    preferences = PreferenceStore(request.registry.storage).update(grant.recipient, turn_off)
    locked = _locked(preferences, grant.scopes)
    stopped = [scope for scope in grant.scopes if scope not in locked]
    recipient = f"<strong>{html.escape(grant.recipient)}</strong>"
    content = ""
    if stopped:
        content += f"<p>{recipient} will get no more emails from:</p>{_scope_list(stopped)}"
    if locked:
        content += (
            f"<p>The emails to {recipient} from these places cannot be turned off, and"
            f" will go on:</p>{_scope_list(locked)}"
        )
    content += (
        f'<p><a href="{html.escape(_link(request, "emailer-page"))}">'
        "Choose which emails you get</a></p>"
        f"{_all_mail(request, preferences.suppressed)}"
    )
    if not locked:
        return page("You are unsubscribed", content)
    title = "Some emails cannot be turned off" if stopped else "These emails cannot be turned off"
    return page(title, content, status=409)


def suppress_post(request: Request) -> Response:
    """Stop (``suppressed=true``) or resume (``false``) all mail to the link's address."""
    grant = _grant(request)
    value = request.POST.get("suppressed")
    if value not in ("true", "false"):
        return page("This form was not understood", "<p>Nothing was changed.</p>", 400)
    PreferenceStore(request.registry.storage).update(
        grant.recipient, lambda preferences: replace(preferences, suppressed=value == "true")
    )
    return HTTPSeeOther(_link(request, "emailer-page", saved="1"))


WEB_FIELD = "web:{}"
"""The name of a scope's web checkbox; its email radios are named after the scope itself."""
LOCKED_NOTES = {
    "email": "This mail is locked: its senders do not let it be changed.",
    "web": "These notifications are locked: their senders do not let them be changed.",
}


def _email_cell(index: int, uri: str, cell: Cell) -> str:
    """The radios of a scope's email cadence, a group named after the scope."""
    name = html.escape(uri, quote=True)
    locked = " disabled" if cell.locked else ""
    options = []
    for position, choice in enumerate(CHOICES):
        field_id = f"scope-{index}-{position}"
        checked = " checked" if cell.value == choice else ""
        options.append(
            f'<div><input type="radio" id="{field_id}" name="{name}" value="{choice}"'
            f'{checked}{locked}> <label for="{field_id}">{LABELS[choice]}</label></div>'
        )
    note = f'<p class="locked">{LOCKED_NOTES["email"]}</p>' if cell.locked else ""
    return (
        f'<fieldset><legend class="vh">Email from {html.escape(uri)}</legend>'
        f"{note}{''.join(options)}</fieldset>"
    )


def _web_cell(index: int, uri: str, cell: Cell | None) -> str:
    """A scope's web checkbox. A hidden field says that the form shows it: unchecked,
    the checkbox itself sends nothing."""
    if cell is None:
        return "<p>None come from here.</p>"
    name = html.escape(WEB_FIELD.format(uri), quote=True)
    field_id = f"scope-{index}-web"
    checked = " checked" if cell.value is True else ""
    if cell.locked:
        note_id = f"{field_id}-locked"
        control = (
            f'<input type="checkbox" id="{field_id}"{checked} disabled'
            f' aria-describedby="{note_id}">'
        )
        note = f'<p class="locked" id="{note_id}">{LOCKED_NOTES["web"]}</p>'
    else:
        control = (
            f'<input type="hidden" name="{name}" value="off">'
            f'<input type="checkbox" id="{field_id}" name="{name}" value="on"{checked}>'
        )
        note = ""
    return (
        f'{control} <label for="{field_id}">Web notifications'
        f'<span class="vh"> from {html.escape(uri)}</span></label>{note}'
    )


def _grid(preferences: Preferences, scopes: Iterable[str]) -> str:
    """Open edX's grid: a row per scope, a column per channel."""
    rows = []
    for index, uri in enumerate(scopes):
        cells = _page_cells(preferences, uri)
        rows.append(
            f'<tr><th scope="row">{html.escape(uri)}</th>'
            f"<td>{_email_cell(index, uri, cells['email'])}</td>"
            f"<td>{_web_cell(index, uri, cells.get('web'))}</td></tr>"
        )
    return (
        "<table><caption>What you get from each place</caption><thead><tr>"
        '<th scope="col">Place</th><th scope="col">Email</th><th scope="col">Web</th>'
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def preferences_get(request: Request) -> Response:
    """The link's own scopes (never the address's others), and the stop-all section."""
    grant = _grant(request)
    preferences = PreferenceStore(request.registry.storage).read(grant.recipient)
    status = '<p role="status">Your choices are saved.</p>' if request.params.get("saved") else ""
    content = (
        f"{status}<p>What <strong>{html.escape(grant.recipient)}</strong> gets from the"
        " places of this link: emails, and web notifications to read in the app.</p>"
        f'<form method="post" action="{html.escape(_link(request, "emailer-page"))}">'
        f'{_grid(preferences, grant.scopes)}<button type="submit">Save</button></form>'
        f"{_all_mail(request, preferences.suppressed)}"
    )
    return page("Your notification preferences", content)


def _posted(request: Request, uri: str) -> dict[str, Value]:
    """What the form of the page chose for a scope, by channel: what it did not show
    (a locked cell, a scope without web notifications) is not there."""
    posted: dict[str, Value] = {}
    cadence = request.POST.get(uri)
    if cadence in CHOICES:
        posted["email"] = cadence
    web = request.POST.getall(WEB_FIELD.format(uri))
    if web:
        posted["web"] = "on" in web
    return posted


def preferences_post(request: Request) -> Response:
    grant = _grant(request)

    def save(preferences: Preferences) -> Preferences:
        scopes = preferences.scopes
        for uri in grant.scopes:
            cells = _page_cells(preferences, uri)
            for channel, choice in _posted(request, uri).items():
                cell = cells.get(channel)
                if cell is not None and not cell.locked:
                    # The default is no choice: a recipient follows the hooks' changes.
                    chosen = None if choice == cell.default else choice
                    scopes = choose(scopes, uri, channel, chosen, known=False)
        return replace(preferences, scopes=scopes)

    PreferenceStore(request.registry.storage).update(grant.recipient, save)
    return HTTPSeeOther(_link(request, "emailer-page", saved="1"))


def authenticated_userid(request: Request) -> str:
    """The prefixed user id of the request's user (``account:alice``); 401 if anonymous."""
    # Authenticating sets the policy's name, that prefixed_userid needs.
    userid = request.prefixed_userid if request.authenticated_userid else None
    if userid is None:
        raise http_error(
            HTTPUnauthorized(),
            errno=ERRORS.MISSING_AUTH_TOKEN,
            message="Please authenticate yourself to use this endpoint.",
        )
    return str(userid)


def reader(request: Request) -> tuple[str, str | None]:
    """The inbox key of the authenticated user (see :func:`recipients.inbox_key`), whose
    notifications and preferences they read, and the address it is, if it is one; 401 for
    anonymous requests.

    Only user ids of the principal prefixes in ``kinto.emailer.verified_principals``
    are taken as addresses: a user id such as ``account:a@example.com`` reads what is
    kept for that principal, never for the address.
    """
    userid = authenticated_userid(request)
    key = recipients.inbox_key(userid, request.registry.emailer_settings.verified_principals)
    return key, None if key == userid else key


CHANNEL_NAMES = {"email": "email", "web": "web notifications"}


def _as_json(address: str | None, preferences: Preferences) -> dict[str, Any]:
    return {
        "data": {
            "email": address,
            "scopes": {
                uri: {
                    channel: {**cell.to_json(), "value": cell.value}
                    for channel, cell in sorted(scope.cells.items())
                }
                for uri, scope in sorted(preferences.scopes.items())
            },
            "suppressed": preferences.suppressed,
        }
    }


def api_get(request: Request) -> dict[str, Any]:
    key, address = reader(request)
    return _as_json(address, PreferenceStore(request.registry.storage).read(key))


Change = tuple[str, str, str, Any]
"""The JSON path of a choice, its scope, its channel, and the value asked for."""


def _changes(request: Request, scopes: Any) -> list[Change]:
    """The choices of ``data.scopes``: per scope, an object of channels, or the email
    cadence alone (as before the web channel); 400 for any other shape."""
    if not isinstance(scopes, Mapping):
        raise_invalid(request, name="data.scopes", description="An object of scope URIs.")
    changes = []
    for uri, cells in scopes.items():
        name = f"data.scopes.{uri}"
        if cells is None or isinstance(cells, str):
            changes.append((name, uri, "email", cells))
            continue
        if not isinstance(cells, Mapping) or not cells:
            raise_invalid(
                request,
                name=name,
                description='An object of channels ({"email": "daily", "web": false}),'
                " or an email cadence.",
            )
        for channel, choice in cells.items():
            if channel not in CHANNELS:
                raise_invalid(
                    request, name=f"{name}.{channel}", description="Not a channel: email or web."
                )
            changes.append((f"{name}.{channel}", uri, channel, choice))
    return changes


def _chosen(request: Request, changes: list[Change], preferences: Preferences) -> Preferences:
    """``preferences`` with ``changes``; 400 naming the first that cannot be made."""
    scopes = preferences.scopes
    for name, uri, channel, choice in changes:
        what = CHANNEL_NAMES[channel]
        try:
            scopes = choose(scopes, uri, channel, choice)
        except LockedScope:
            raise_invalid(
                request,
                name=name,
                description=f"Locked: the hooks of this scope do not let you change its {what}.",
            )
        except NotSent:
            known = uri in preferences.scopes
            raise_invalid(
                request,
                name=name,
                description=f"No {what} came to you from this scope."
                if known
                else "Nothing came to you from this scope.",
            )
        except ValueError as e:
            raise_invalid(request, name=name, description=str(e))
    return replace(preferences, scopes=scopes)


def api_write(request: Request) -> dict[str, Any]:
    """``PATCH``: the choices named (``{"data": {"scopes": {URI: {"email": cadence | "off"
    | null, "web": true | false | null}}, "suppressed": true | false}}``, either or
    both; an email cadence alone for a scope stands for ``{"email": ...}``).

    ``PUT``: the same, for every choice: what it leaves out goes back to the hooks'
    default, and mail resumes unless it says ``"suppressed": true``. Locked cells keep
    theirs.

    Under the recipient's lock: a choice saved meanwhile is never undone by a ``PATCH``
    that does not name it.
    """
    key, address = reader(request)
    try:
        data = request.json_body["data"]
    except (ValueError, KeyError, TypeError):
        data = None
    every = request.method == "PUT"
    if not isinstance(data, Mapping) or not (every or {"scopes", "suppressed"} & data.keys()):
        raise_invalid(request, name="data", description="An object with scopes or suppressed.")
    changes = _changes(request, data.get("scopes", {}))
    suppressed = data.get("suppressed")
    if "suppressed" in data and not isinstance(suppressed, bool):
        raise_invalid(request, name="data.suppressed", description="true or false.")
    if suppressed and address is None:
        raise_invalid(
            request,
            name="data.suppressed",
            description="No email comes to your user id, only web notifications: there is"
            " no mail to stop.",
        )

    def apply(preferences: Preferences) -> Preferences:
        base = cleared(preferences) if every else preferences
        chosen = _chosen(request, changes, base)
        return replace(chosen, suppressed=base.suppressed if suppressed is None else suppressed)

    preferences = PreferenceStore(request.registry.storage).update(key, apply)
    return _as_json(address, preferences)


def redact_tokens(event: NewRequest) -> None:
    """Kinto logs the query string of every request: never the token of a page's link.

    On every path: a link that a mail client cut or mangled reaches other routes.
    """
    request = event.request
    querystring = request.log_context().get("querystring")
    if querystring and "token" in querystring:
        request.log_context(querystring={**querystring, "token": "[redacted]"})


def includeme(config: Any) -> None:
    for route, path in {**PAGES, "emailer-preferences": "/emailer/preferences"}.items():
        config.add_route(route, path)
    public = {"permission": NO_PERMISSION_REQUIRED}
    signed = bool(config.registry.emailer_settings.secret)
    for route, method, view in [
        ("emailer-unsubscribe", "GET", unsubscribe_get),
        ("emailer-unsubscribe", "POST", unsubscribe_post),
        ("emailer-suppress", "POST", suppress_post),
        ("emailer-page", "GET", preferences_get),
        ("emailer-page", "POST", preferences_post),
    ]:
        config.add_view(
            view if signed else unsigned_link_view,
            route_name=route,
            request_method=method,
            **public,
        )
    for method, view in [("GET", api_get), ("PATCH", api_write), ("PUT", api_write)]:
        config.add_view(
            view,
            route_name="emailer-preferences",
            request_method=method,
            renderer="json",
            **public,
        )
    config.add_view(invalid_link_view, context=InvalidLink, **public)
    # After Kinto's own subscriber, that puts the query string in the log context.
    config.add_subscriber(redact_tokens, NewRequest)
