"""What recipients see: one-click unsubscribe, a preferences page, and the same
preferences through the API for Kinto users whose principal is an email address.

The pages need no login: their links carry a signed token (:mod:`kinto_emailer.tokens`).
A ``GET`` never changes anything (mail scanners follow links); a ``POST`` does.
"""

import html
from collections.abc import Mapping
from typing import Any

from kinto.core.errors import ERRORS, http_error, raise_invalid
from pyramid.httpexceptions import HTTPForbidden, HTTPSeeOther, HTTPUnauthorized
from pyramid.request import Request
from pyramid.response import Response
from pyramid.security import NO_PERMISSION_REQUIRED

from kinto_emailer import recipients, tokens
from kinto_emailer.errors import InvalidLink
from kinto_emailer.preferences import (
    CHOICES,
    LockedScope,
    PreferenceStore,
    Scope,
    Scopes,
    choose,
)


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


def invalid_link_view(exc: InvalidLink, request: Request) -> Response:
    """A clear 4xx that changes nothing: 410 for an expired link, else 400."""
    status = 410 if exc.expired else 400
    return page("This link does not work", f"<p>{html.escape(str(exc))}</p>", status)


def _link(request: Request, route: str, **query: str) -> str:
    return request.route_url(route, _query=query)


def unsubscribe_get(request: Request) -> Response:
    grant = _grant(request)
    action = html.escape(_link(request, "emailer-unsubscribe", token=request.params["token"]))
    scopes = "".join(f"<li>{html.escape(scope)}</li>" for scope in grant.scopes)
    content = (
        f"<p>Stop the emails sent to <strong>{html.escape(grant.recipient)}</strong> by:</p>"
        f"<ul>{scopes}</ul>"
        f'<form method="post" action="{action}">'
        '<button type="submit">Unsubscribe</button>'
        "</form>"
    )
    return page("Unsubscribe", content)


def unsubscribe_post(request: Request) -> Response:
    """RFC 8058 one-click unsubscribe, and the button of the page: 200 and done."""
    grant = _grant(request)
    store = PreferenceStore(request.registry.storage)
    scopes = store.read(grant.recipient)
    locked = []
    for scope in grant.scopes:
        try:
            scopes = choose(scopes, scope, "off")
        except LockedScope:
            locked.append(scope)
        except KeyError:
            continue  # Never mailed from there, or forgotten since: nothing to stop.
    store.write(grant.recipient, scopes)
    preferences = html.escape(_link(request, "emailer-page", token=request.params["token"]))
    content = (
        f"<p><strong>{html.escape(grant.recipient)}</strong> will get no more emails from "
        f"{', '.join(html.escape(s) for s in grant.scopes if s not in locked)}.</p>"
    )
    if locked:
        content += (
            "<p>The emails of "
            f"{', '.join(html.escape(s) for s in locked)} cannot be turned off.</p>"
        )
    content += f'<p><a href="{preferences}">Choose which emails you get</a></p>'
    return page("You are unsubscribed", content)


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
    grant = _grant(request)
    scopes = PreferenceStore(request.registry.storage).read(grant.recipient)
    token = request.params["token"]
    action = html.escape(_link(request, "emailer-page", token=token))
    status = '<p role="status">Your choices are saved.</p>' if request.params.get("saved") else ""
    if not scopes:
        body = "<p>No email is sent to this address at the moment.</p>"
    else:
        fieldsets = "".join(
            _fieldset(index, uri, scope)
            for index, (uri, scope) in enumerate(sorted(scopes.items()))
        )
        body = (
            f'<form method="post" action="{action}">{fieldsets}'
            '<button type="submit">Save</button></form>'
        )
    content = (
        f"{status}<p>The emails sent to <strong>{html.escape(grant.recipient)}</strong>,"
        " by where they come from:</p>" + body
    )
    return page("Your email preferences", content)


def preferences_post(request: Request) -> Response:
    grant = _grant(request)
    store = PreferenceStore(request.registry.storage)
    scopes = store.read(grant.recipient)
    for uri, scope in scopes.items():
        choice = request.POST.get(uri)
        if choice in CHOICES and not scope.locked:
            scopes = choose(scopes, uri, None if choice == scope.default else choice)
    store.write(grant.recipient, scopes)
    return HTTPSeeOther(_link(request, "emailer-page", token=request.params["token"], saved="1"))


def _address(request: Request) -> str:
    """The email address of the authenticated user; 401 or 403 otherwise.

    Only user ids of the principal prefixes in ``kinto.emailer.verified_principals``
    are taken as addresses: elsewhere anyone may be named after anyone's address (an
    account ``reviewer@example.com`` of Kinto's accounts plugin, say).
    """
    # Authenticating sets the policy's name, that prefixed_userid needs.
    userid = request.prefixed_userid if request.authenticated_userid else None
    if userid is None:
        raise http_error(
            HTTPUnauthorized(),
            errno=ERRORS.MISSING_AUTH_TOKEN,
            message="Please authenticate yourself to use this endpoint.",
        )
    prefix, _, candidate = userid.partition(":")
    if prefix not in request.registry.emailer_settings.verified_principals:
        raise http_error(
            HTTPForbidden(),
            errno=ERRORS.FORBIDDEN,
            message="This server cannot tell that your user id is your email address: manage"
            " your email preferences through the links at the end of the emails.",
        )
    try:
        return recipients.parse_mailbox(candidate).addr_spec.lower()
    except ValueError as e:
        raise http_error(
            HTTPForbidden(),
            errno=ERRORS.FORBIDDEN,
            message="Only users whose principal is an email address have email preferences.",
        ) from e


def _as_json(address: str, scopes: Scopes) -> dict[str, Any]:
    return {
        "data": {
            "email": address,
            "scopes": {
                uri: {**scope.to_json(), "cadence": scope.cadence}
                for uri, scope in sorted(scopes.items())
            },
        }
    }


def api_get(request: Request) -> dict[str, Any]:
    address = _address(request)
    return _as_json(address, PreferenceStore(request.registry.storage).read(address))


def api_patch(request: Request) -> dict[str, Any]:
    """``{"data": {"scopes": {URI: "immediate" | "daily" | "weekly" | "off" | null}}}``."""
    address = _address(request)
    store = PreferenceStore(request.registry.storage)
    scopes = store.read(address)
    try:
        changes = request.json_body["data"]["scopes"]
    except (ValueError, KeyError, TypeError):
        changes = None
    if not isinstance(changes, Mapping):
        raise_invalid(request, name="data.scopes", description="An object of scope URIs.")
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
    store.write(address, scopes)
    return _as_json(address, scopes)


def includeme(config: Any) -> None:
    config.add_route("emailer-unsubscribe", "/emailer/unsubscribe")
    config.add_route("emailer-page", "/emailer/page")
    config.add_route("emailer-preferences", "/emailer/preferences")
    public = {"permission": NO_PERMISSION_REQUIRED}
    for route, method, view in [
        ("emailer-unsubscribe", "GET", unsubscribe_get),
        ("emailer-unsubscribe", "POST", unsubscribe_post),
        ("emailer-page", "GET", preferences_get),
        ("emailer-page", "POST", preferences_post),
    ]:
        config.add_view(view, route_name=route, request_method=method, **public)
    for method, view in [("GET", api_get), ("PATCH", api_patch)]:
        config.add_view(
            view,
            route_name="emailer-preferences",
            request_method=method,
            renderer="json",
            **public,
        )
    config.add_view(invalid_link_view, context=InvalidLink, **public)
