"""The Multipass sign-in page: `/multipass/api/oauth2/authorize` and its form.

Owns the authorization-code sign-in as a person sees it: the page that names the application
and the scopes it asks for and lists the seed's active human users (or denies access), its
form, the redirects of RFC 6749 section 4.1.2, and rendering the pages from `templates/` with a
tiny template helper that escapes every value. The protocol itself lives in `core/oauth/`.

Codes are never logged. Imports quart and the core; nothing from hypercorn or yaml.
"""

from __future__ import annotations

import functools
import html
import logging
import string
from collections.abc import Iterable
from importlib import resources
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import attrs
from quart import Blueprint, Response, request

from ...web.http import parse_form, read_body
from ..core.errors import NotFound
from ..core.oauth import (
    SCOPE_DESCRIPTIONS,
    AuthorizationRequest,
    AuthorizeParams,
    AuthorizeRefused,
    OAuthError,
)
from ..core.principals import Principal
from .errors import OAUTH

if TYPE_CHECKING:
    from ..service import FoundryInstance

from .oauth import (
    AUTHORIZE_FIELDS,
    AUTHORIZE_PATH,
    CALLBACK_PATH,
    FORM_TYPE,
    MAX_FORM_BYTES,
    NO_STORE,
    PAGE_HEADERS,
    PREFIX,
    field,
)

log = logging.getLogger("emulator.foundry.oauth")


# Pages -----------------------------------------------------------------------------------------


@attrs.frozen
class Markup:
    """HTML that is already safe (rendered by `render`); inserted without escaping."""

    text: str


@functools.cache
def _template(name: str) -> string.Template:
    source = resources.files("emulator.foundry").joinpath("templates", name)
    return string.Template(source.read_text(encoding="utf-8"))


def render(template: str, /, **values: str | Markup) -> Markup:
    """Fill a template from `templates/`; every plain string is HTML-escaped."""
    filled = {
        key: value.text if isinstance(value, Markup) else html.escape(value, quote=True)
        for key, value in values.items()
    }
    return Markup(_template(template).substitute(filled))


def join(parts: Iterable[Markup]) -> Markup:
    return Markup("\n".join(part.text.rstrip("\n") for part in parts))


def html_response(page: Markup, status: int = 200) -> Response:
    response = Response(page.text, status=status, content_type="text/html; charset=utf-8")
    response.headers.update(PAGE_HEADERS)
    return response


def error_page(code: str, message: str, *, back: str | None = None) -> Response:
    titles = {
        "invalid_client": "Application not found",
        "invalid_request": "Invalid sign-in request",
        "user_not_available": "User not available",
    }
    back_link = (
        Markup("")
        if back is None
        else Markup(f'<p><a href="{html.escape(back, quote=True)}">Choose another user</a></p>')
    )
    page = render(
        "oauth_error.html",
        style=Markup(_template("oauth.css").template),
        title=titles.get(code, "Sign-in failed"),
        message=message,
        code=code,
        back_link=back_link,
    )
    return html_response(page, 400)


def picker_page(
    checked: AuthorizationRequest, params: AuthorizeParams, users: Iterable[Principal]
) -> Response:
    client = checked.client
    scope_items = [
        render(
            "oauth_scope.html",
            scope=scope,
            description=SCOPE_DESCRIPTIONS.get(scope, "A scope the emulator does not describe"),
        )
        for scope in checked.scopes
    ]
    scopes = join(scope_items) if scope_items else Markup("<li>No scopes</li>")
    user_buttons = [
        render(
            "oauth_user.html",
            username=user.username,
            initial=(user.display_name or user.username)[:1].upper(),
            display_name=user.display_name,
            details=" · ".join(part for part in (user.username, user.email) if part),
        )
        for user in users
    ]
    users_html = (
        join(user_buttons)
        if user_buttons
        else Markup(
            "<p>No active users are in the seed; add one under <code>foundry.users</code>.</p>"
        )
    )
    note = Markup(
        '<p class="note">Development mode: the seed registers no OAuth clients, so any '
        "client_id, redirect URI and scope are accepted.</p>"
        if client.development
        else ""
    )
    hidden = join(
        render("oauth_hidden.html", name=name, value=value)
        for name, value in _authorize_fields(params)
    )
    page = render(
        "oauth_authorize.html",
        style=Markup(_template("oauth.css").template),
        client_name=client.name,
        client_id=client.client_id,
        development_note=note,
        scopes=scopes,
        callback_url=CALLBACK_PATH,
        hidden_fields=hidden,
        users=users_html,
        redirect_uri=checked.redirect_uri,
    )
    return html_response(page)


def _authorize_fields(params: AuthorizeParams) -> list[tuple[str, str]]:
    """The request's own parameters, as given, to carry through the picker form."""
    fields = []
    for name in AUTHORIZE_FIELDS:
        value = getattr(params, name)
        if value is not None:
            fields.append((name, value))
    return fields


# Redirects -------------------------------------------------------------------------------------


def with_query(uri: str, extra: Iterable[tuple[str, str]]) -> str:
    """`uri` with `extra` parameters added, keeping its own query (RFC 6749 section 3.1.2)."""
    parts = urlsplit(uri)
    added = list(extra)
    names = {name for name, _ in added}
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in names]
    return urlunsplit(parts._replace(query=urlencode(kept + added), fragment=""))


def redirect(uri: str, status: int) -> Response:
    response = Response(b"", status=status)
    response.headers["Location"] = uri
    response.headers.update(NO_STORE)
    return response


def error_redirect(uri: str, error: OAuthError, state: str | None, status: int) -> Response:
    extra = [("error", error.code), ("error_description", error.message)]
    if state is not None:
        extra.append(("state", state))
    return redirect(with_query(uri, extra), status)


# Token endpoint helpers ------------------------------------------------------------------------


# The blueprint ---------------------------------------------------------------------------------


def signin_blueprint(instance: FoundryInstance) -> Blueprint:
    """The sign-in page and its form."""
    blueprint = Blueprint("multipass_signin", __name__, url_prefix=PREFIX)
    settings = instance.context.settings
    clock = instance.context.clock
    form_limit = min(settings.max_body_bytes, MAX_FORM_BYTES)

    @blueprint.get("/authorize")
    async def authorize() -> Response:
        """The sign-in page: pick a seeded user (or deny) for an authorization-code request."""
        oauth = instance.oauth  # looked up per request: reset() replaces it
        params = AuthorizeParams.from_pairs(request.args.items(multi=True))
        try:
            target = oauth.authorization_target(params)
        except AuthorizeRefused as refused:
            return error_page(refused.code, refused.message)
        try:
            checked = oauth.check_authorization(target, params)
        except OAuthError as error:
            return error_redirect(target.redirect_uri, error, params.state, 302)
        return picker_page(checked, params, oauth.directory.active_humans())

    @blueprint.post("/authorize/callback")
    async def authorize_callback() -> Response:
        """The sign-in page's form: a user was picked (a code is issued) or access denied."""
        oauth = instance.oauth
        if request.mimetype != FORM_TYPE:
            return error_page("invalid_request", f"The sign-in form must be posted as {FORM_TYPE}.")
        data = await read_body(OAUTH, form_limit, settings.body_timeout, setting="")
        form = parse_form(data, OAUTH)
        params = AuthorizeParams.from_pairs(parse_qsl(data.decode("utf-8"), keep_blank_values=True))
        try:
            target = oauth.authorization_target(params)
        except AuthorizeRefused as refused:
            return error_page(refused.code, refused.message)
        try:
            checked = oauth.check_authorization(target, params)
        except OAuthError as error:
            return error_redirect(target.redirect_uri, error, params.state, 303)
        if form.get("decision") == "deny":
            denied = OAuthError("access_denied", "The user denied the request.")
            return error_redirect(checked.redirect_uri, denied, checked.state, 303)
        back = AUTHORIZE_PATH + "?" + urlencode(_authorize_fields(params))
        try:
            code = oauth.issue_code(checked, field(form, "username"), clock.now())
        except NotFound as missing:
            return error_page(missing.code, missing.message, back=back)
        except OAuthError as error:
            return error_redirect(checked.redirect_uri, error, checked.state, 303)
        log.info(
            "authorization code issued to client %s for user %s",
            checked.client.client_id,
            form.get("username"),
        )
        extra = [("code", code)]
        if checked.state is not None:
            extra.append(("state", checked.state))
        return redirect(with_query(checked.redirect_uri, extra), 303)

    return blueprint
