"""The Multipass OAuth 2.0 endpoints: token and revoke_token under `/multipass/api/oauth2/...`.

Owns the token and revocation routes, reading OAuth forms and client credentials from form
fields or HTTP Basic, and the token response. The sign-in page and its form are signin.py; the
protocol itself lives in `core/oauth/`.

The token endpoint is a raw ASGI route (`oauth_routes`, emulator.web.rawasgi), because every
client hits it and Quart's per-request cost dominated it; revoke_token is a Quart blueprint.
Both read forms and client credentials with the same functions below.

Codes, tokens and secrets are never logged. Imports quart and the core; nothing from
hypercorn or yaml.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from quart import Blueprint, Response, request

from ...web.http import mimetype_of, parse_form_pairs, read_body
from ...web.rawasgi import RawRequest, RawRoute, headers_of, with_automatic_methods
from ..core.oauth import (
    ClientCredentials,
    IssuedTokens,
    OAuthError,
    format_scope,
)
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
    form_limit = min(settings.max_body_bytes, MAX_FORM_BYTES)

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
