"""The Multipass OAuth 2.0 blueprint: `/multipass/api/oauth2/...`.

Owns the routes authorize (the sign-in page), authorize/callback (the page's form), token and
revoke_token; reading client credentials from form fields or HTTP Basic; the redirects of RFC
6749 section 4.1.2; and rendering the sign-in and error pages from `templates/` with a tiny
template helper that escapes every value. The protocol itself lives in `core/oauth.py`.

The token endpoint is a raw ASGI route (`oauth_routes`, emulator.web.rawasgi), because every
client hits it and Quart's per-request cost dominated it; the pages and revoke_token are a
Quart blueprint. Both read forms and client credentials with the same functions below.

Codes, tokens and secrets are never logged. Imports quart and the core; nothing from
hypercorn or yaml.
"""

from __future__ import annotations

import base64
import binascii
import functools
import html
import logging
import string
from collections import Counter
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import attrs
from quart import Blueprint, Response, request

from ...web.http import mimetype_of, parse_form, parse_form_pairs, read_body
from ...web.rawasgi import RawRequest, RawRoute, headers_of, with_automatic_methods
from ..core.errors import NotFound
from ..core.oauth import (
    SCOPE_DESCRIPTIONS,
    AuthorizationRequest,
    AuthorizeParams,
    AuthorizeRefused,
    ClientCredentials,
    IssuedTokens,
    OAuthError,
    format_scope,
)
from ..core.principals import Principal
from ..seed import GRANT_TYPES
from .errors import OAUTH

if TYPE_CHECKING:
    from ..service import FoundryInstance

log = logging.getLogger("emulator.foundry.oauth")

PREFIX = "/multipass/api/oauth2"
AUTHORIZE_PATH = f"{PREFIX}/authorize"
TOKEN_PATH = f"{PREFIX}/token"
CALLBACK_PATH = f"{PREFIX}/authorize/callback"
FORM_TYPE = "application/x-www-form-urlencoded"
# OAuth forms are small; a larger one is a mistake, answered 413 before it is read whole.
MAX_FORM_BYTES = 64 * 1024
# RFC 6749 section 5.1: token responses (and, here, their errors) must not be cached.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
NO_STORE_HEADERS = headers_of(NO_STORE)
# For the HTML pages. No form-action: Chrome applies it to the redirect that follows the form
# post, which must be free to reach any registered redirect URI.
PAGE_HEADERS = {
    **NO_STORE,
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "base-uri 'none'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
AUTHORIZE_FIELDS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
)


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


def field(form: Mapping[str, str], name: str) -> str | None:
    value = form.get(name)
    return value if value else None


async def read_oauth_form(limit: int, deadline: float) -> dict[str, str]:
    """The form body of a token or revocation request (Quart); see `oauth_form`."""
    check_form_type(request.mimetype)
    return oauth_form(await read_body(OAUTH, limit, deadline, setting=""))


async def read_raw_oauth_form(raw: RawRequest, limit: int, deadline: float) -> dict[str, str]:
    """`read_oauth_form` for a raw route."""
    check_form_type(mimetype_of(raw.header(b"content-type")))
    return oauth_form(await raw.read_body(limit, deadline, setting=""))


def check_form_type(mimetype: str) -> None:
    if mimetype != FORM_TYPE:
        got = mimetype or "no Content-Type"
        raise OAUTH.error(
            400,
            "invalid_request",
            f"Content-Type must be {FORM_TYPE} (got {got}).",
            headers=NO_STORE,
        )


def oauth_form(data: bytes) -> dict[str, str]:
    """The fields of a token or revocation form; repeated parameters are refused."""
    pairs = parse_form_pairs(data, OAUTH)
    form = dict(pairs)
    if len(form) != len(pairs):
        counts = Counter(name for name, _ in pairs)
        repeated = sorted(name for name, count in counts.items() if count > 1)
        raise OAUTH.error(
            400,
            "invalid_request",
            f"Parameters must not repeat: {', '.join(repeated)}.",
            headers=NO_STORE,
        )
    return form


def client_credentials(form: Mapping[str, str], header: str | None) -> ClientCredentials:
    """Client authentication from HTTP Basic (client_secret_basic; `header` is the request's
    Authorization value) or form fields (client_secret_post); both at once is invalid_request
    (RFC 6749 section 2.3)."""
    form_id = field(form, "client_id")
    form_secret = field(form, "client_secret")
    if not header:
        method = "client_secret_post" if form_secret is not None else "none"
        return ClientCredentials(form_id, form_secret, method)
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        raise OAuthError(
            "invalid_client",
            f"This endpoint takes client authentication by HTTP Basic or form fields, "
            f"not {scheme or 'an empty'} Authorization.",
        )
    try:
        raw = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = None
    text = None
    if raw is not None:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            # foundry-dev-tools encodes the pair as ISO-8859-1.
            text = raw.decode("latin-1")
    if text is None or ":" not in text:
        raise OAuthError(
            "invalid_client",
            "The Basic credentials are malformed (base64 of client_id:client_secret).",
        )
    # Used as sent, not percent-decoded: foundry-dev-tools and requests send them raw.
    basic_id, _, basic_secret = text.partition(":")
    if form_secret is not None:
        raise OAuthError(
            "invalid_request",
            "Use one client authentication method: both HTTP Basic and a client_secret "
            "field were sent.",
        )
    if form_id is not None and form_id != basic_id:
        raise OAuthError(
            "invalid_request",
            "The client_id field and the HTTP Basic client id differ.",
        )
    return ClientCredentials(basic_id or None, basic_secret or None, "client_secret_basic")


def issued_to_json(issued: IssuedTokens) -> dict[str, Any]:
    body: dict[str, Any] = {
        "access_token": issued.access_token,
        "token_type": issued.token_type,
        "expires_in": issued.expires_in,
        "scope": format_scope(issued.scopes),
    }
    if issued.refresh_token is not None:
        body["refresh_token"] = issued.refresh_token
    return body


# The blueprint ---------------------------------------------------------------------------------


def oauth_blueprint(instance: FoundryInstance) -> Blueprint:
    blueprint = Blueprint("multipass_oauth2", __name__, url_prefix=PREFIX)
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

    @blueprint.post("/revoke_token")
    async def revoke_token() -> Response:
        """RFC 7009 revocation (the SDK's sign_out): 200 even for an unknown token."""
        form = await read_oauth_form(form_limit, settings.body_timeout)
        credentials = client_credentials(form, request.headers.get("Authorization"))
        oauth = instance.oauth
        # An OAuthError propagates: the OAuth family translates it (RFC 6749 section 5.2).
        client = oauth.authenticate_client(credentials)
        revoked = oauth.revoke(client, field(form, "token"))
        if revoked:
            log.info("client %s revoked a token", client.client_id)
        response = Response(b"", status=200)
        response.headers.update(NO_STORE)
        return response

    return blueprint


def oauth_routes(instance: FoundryInstance) -> list[RawRoute]:
    """The token endpoint as a raw route (POST; OPTIONS as Quart answered it)."""
    settings = instance.context.settings
    clock = instance.context.clock
    form_limit = min(settings.max_body_bytes, MAX_FORM_BYTES)

    async def token(raw: RawRequest) -> None:
        form = await read_raw_oauth_form(raw, form_limit, settings.body_timeout)
        issued = exchange(instance, form, raw.header(b"authorization"), clock.now())
        await raw.respond_json(200, issued_to_json(issued), NO_STORE_HEADERS)

    return with_automatic_methods(
        [
            RawRoute(
                "POST",
                TOKEN_PATH,
                token,
                "Token exchange for the authorization_code, refresh_token and "
                "client_credentials grants",
            )
        ]
    )


def exchange(
    instance: FoundryInstance, form: Mapping[str, str], authorization: str | None, now: float
) -> IssuedTokens:
    """Token exchange for the authorization_code, refresh_token and client_credentials grants
    (client authentication by form fields or HTTP Basic); an OAUTH ApiError otherwise."""
    grant_type = field(form, "grant_type")
    if grant_type is None:
        raise OAuthError("invalid_request", "The grant_type parameter is required.")
    if grant_type not in GRANT_TYPES:
        raise OAuthError(
            "unsupported_grant_type",
            f"grant_type {grant_type!r} is not supported; use one of {', '.join(GRANT_TYPES)}.",
        )
    credentials = client_credentials(form, authorization)
    oauth = instance.oauth  # looked up per request: reset() replaces it
    try:
        client = oauth.authenticate_client(credentials)
        if grant_type == "authorization_code":
            issued = oauth.exchange_code(
                client,
                field(form, "code"),
                field(form, "redirect_uri"),
                field(form, "code_verifier"),
                now,
            )
        elif grant_type == "refresh_token":
            issued = oauth.refresh(client, field(form, "refresh_token"), field(form, "scope"), now)
        else:
            issued = oauth.client_credentials(client, field(form, "scope"), now)
    except OAuthError as error:
        log.info("token request refused (grant %s): %s: %s", grant_type, error.code, error.message)
        raise
    log.debug(
        "issued tokens for grant %s to client %s (client authentication: %s)",
        grant_type,
        client.client_id,
        credentials.method,
    )
    return issued
