"""What recipients see: one-click unsubscribe, a preferences page, and the same
preferences through the API for Kinto users whose principal is an email address.

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
    HTTPForbidden,
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
    CHOICES,
    LockedScope,
    Preferences,
    PreferenceStore,
    Scope,
    choose,
)


PAGES = {
    "emailer-unsubscribe": "/emailer/unsubscribe",
    "emailer-page": "/emailer/page",
    "emailer-suppress": "/emailer/suppress",
}
"""The routes of the pages, whose links carry a token."""

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


def _broken_link(error: HTTPException, reason: str) -> HTTPException:
    text = page("This link does not work", f"<p>{html.escape(reason)}</p>", error.code)
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
    arguments = {"token": request.params["token"], **query}
    public_url = request.registry.emailer_settings.public_url
    if not public_url:
        return request.route_path(route, _query=arguments)
    return f"{public_url}{PAGES[route].lstrip('/')}?{urlencode(arguments)}"


def _form(action: str, button: str, **fields: str) -> str:
    hidden = "".join(
        f'<input type="hidden" name="{name}" value="{html.escape(value)}">'
        for name, value in fields.items()
    )
    return (
        f'<form method="post" action="{html.escape(action)}">{hidden}'
        f'<button type="submit">{html.escape(button)}</button></form>'
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
    return [scope for scope in scopes if preferences.scopes.get(scope, Scope()).locked]


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
                scopes = choose(scopes, scope, "off", known=False)
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


def _fieldset(index: int, uri: str, scope: Scope) -> str:
    legend = html.escape(uri)
    name = html.escape(uri, quote=True)
    locked = " disabled" if scope.locked else ""
    options = []
    for position, choice in enumerate(CHOICES):
        field_id = f"scope-{index}-{position}"
        checked = " checked" if scope.cadence == choice else ""
        options.append(
            f'<div><input type="radio" id="{field_id}" name="{name}" value="{choice}"'
            f'{checked}{locked}> <label for="{field_id}">{LABELS[choice]}</label></div>'
        )
    note = (
        '<p class="locked">This mail is locked: its senders do not let it be changed.</p>'
        if scope.locked
        else ""
    )
    return f"<fieldset><legend>{legend}</legend>{note}{''.join(options)}</fieldset>"


def preferences_get(request: Request) -> Response:
    """The link's own scopes (never the address's others), and the stop-all section."""
    grant = _grant(request)
    preferences = PreferenceStore(request.registry.storage).read(grant.recipient)
    status = '<p role="status">Your choices are saved.</p>' if request.params.get("saved") else ""
    fieldsets = "".join(
        _fieldset(index, uri, preferences.scopes.get(uri, Scope()))
        for index, uri in enumerate(grant.scopes)
    )
    content = (
        f"{status}<p>The emails sent to <strong>{html.escape(grant.recipient)}</strong>"
        " from the places of this link:</p>"
        f'<form method="post" action="{html.escape(_link(request, "emailer-page"))}">'
        f'{fieldsets}<button type="submit">Save</button></form>'
        f"{_all_mail(request, preferences.suppressed)}"
    )
    return page("Your email preferences", content)


def preferences_post(request: Request) -> Response:
    grant = _grant(request)

    def save(preferences: Preferences) -> Preferences:
        scopes = preferences.scopes
        for uri in grant.scopes:
            scope = scopes.get(uri, Scope())
            choice = request.POST.get(uri)
            if choice in CHOICES and not scope.locked:
                choice = None if choice == scope.default else choice
                scopes = choose(scopes, uri, choice, known=False)
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


def _address(request: Request) -> str:
    """The email address of the authenticated user; 401 or 403 otherwise.

    Only user ids of the principal prefixes in ``kinto.emailer.verified_principals``
    are taken as addresses (see :func:`recipients.principal_address`).
    """
    userid = authenticated_userid(request)
    try:
        return recipients.principal_address(
            userid, request.registry.emailer_settings.verified_principals
        )
    except recipients.UnverifiedPrincipal as e:
        raise http_error(
            HTTPForbidden(),
            errno=ERRORS.FORBIDDEN,
            message="This server cannot tell that your user id is your email address: manage"
            " your email preferences through the links at the end of the emails.",
        ) from e
    except ValueError as e:
        raise http_error(
            HTTPForbidden(),
            errno=ERRORS.FORBIDDEN,
            message="Only users whose principal is an email address have email preferences.",
        ) from e


def _as_json(address: str, preferences: Preferences) -> dict[str, Any]:
    return {
        "data": {
            "email": address,
            "scopes": {
                uri: {**scope.to_json(), "cadence": scope.cadence}
                for uri, scope in sorted(preferences.scopes.items())
            },
            "suppressed": preferences.suppressed,
        }
    }


def api_get(request: Request) -> dict[str, Any]:
    address = _address(request)
    return _as_json(address, PreferenceStore(request.registry.storage).read(address))


def api_patch(request: Request) -> dict[str, Any]:
    """``{"data": {"scopes": {URI: "immediate" | "daily" | "weekly" | "off" | null},
    "suppressed": true | false}}``, either or both."""
    address = _address(request)
    try:
        data = request.json_body["data"]
    except (ValueError, KeyError, TypeError):
        data = None
    if not isinstance(data, Mapping) or not {"scopes", "suppressed"} & data.keys():
        raise_invalid(request, name="data", description="An object with scopes or suppressed.")
    changes = data.get("scopes", {})
    if not isinstance(changes, Mapping):
        raise_invalid(request, name="data.scopes", description="An object of scope URIs.")
    if not isinstance(data.get("suppressed", False), bool):
        raise_invalid(request, name="data.suppressed", description="true or false.")

    def apply(preferences: Preferences) -> Preferences:
        scopes = preferences.scopes
        for uri, choice in changes.items():
            name = f"data.scopes.{uri}"
            try:
                scopes = choose(scopes, uri, choice)
            except LockedScope:
                raise_invalid(request, name=name, description="This mail cannot be changed.")
            except KeyError:
                raise_invalid(request, name=name, description="No email comes from this scope.")
            except ValueError as e:
                raise_invalid(request, name=name, description=str(e))
        return Preferences(scopes, data.get("suppressed", preferences.suppressed))

    preferences = PreferenceStore(request.registry.storage).update(address, apply)
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
    for method, view in [("GET", api_get), ("PATCH", api_patch)]:
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
