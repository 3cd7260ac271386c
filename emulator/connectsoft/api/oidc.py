"""The OpenID Connect endpoints of ConnectSoft: token, discovery document and JWKS.

Owns `POST /connect/token` (the client-credentials grant; client credentials from HTTP Basic or
the form, as RFC 6749 allows; the `tenant` form field picks one of the client's tenants, an
emulator extension), `GET /.well-known/openid-configuration` and `GET /.well-known/jwks.json`.
The paths are OpenIddict's, the authorization server the source names. Client secrets and
tokens are never logged. Imports quart and the core.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING
from urllib.parse import unquote

from quart import Blueprint, Response, request

from ...web.http import json_response, parse_form, read_body
from ..core.oidc import OAuthError
from .errors import TOKEN, TOKEN_PATH

if TYPE_CHECKING:
    from ..instance import ConnectSoftInstance

FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FORM_BYTES = 16 * 1024


def base_url() -> str:
    """Where the caller reached this listener (scheme and authority)."""
    return request.host_url.rstrip("/")


def oidc_blueprint(instance: ConnectSoftInstance) -> Blueprint:
    blueprint = Blueprint("connectsoft_oidc", __name__)
    settings = instance.context.settings

    @blueprint.post(TOKEN_PATH)
    async def token() -> Response:
        """Issue an access token (client credentials)."""
        if request.mimetype != FORM_TYPE:
            raise TOKEN.error(400, "invalid_request", f"The token request must be {FORM_TYPE}.")
        data = await read_body(
            TOKEN, min(settings.max_body_bytes, MAX_FORM_BYTES), settings.body_timeout
        )
        form = parse_form(data, TOKEN)
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        basic = _basic(request.headers.get("Authorization"))
        if basic is not None:
            if client_id is not None and client_id != basic[0]:
                raise OAuthError("invalid_request", "Two different client ids were given.")
            client_id, client_secret = basic
        issued = instance.issuer.issue(
            client_id=client_id,
            client_secret=client_secret,
            grant_type=form.get("grant_type"),
            scope=form.get("scope"),
            tenant=form.get("tenant"),
            now=instance.engine.now(),
            issuer=base_url(),
        )
        return json_response(issued.response(), headers={"Cache-Control": "no-store"})

    @blueprint.get("/.well-known/openid-configuration")
    async def discovery() -> Response:
        """OpenID Provider metadata."""
        return json_response(instance.issuer.discovery(base_url()))

    @blueprint.get("/.well-known/jwks.json")
    async def jwks() -> Response:
        """The public key that verifies the tokens."""
        return json_response(instance.issuer.jwks())

    return blueprint


def _basic(header: str | None) -> tuple[str, str] | None:
    """HTTP Basic client credentials (each part form-decoded, as RFC 6749 2.3.1 says)."""
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise OAuthError("invalid_client", "Client authentication failed.") from None
    user, sep, password = decoded.partition(":")
    if not sep:
        raise OAuthError("invalid_client", "Client authentication failed.")
    return unquote(user.replace("+", " ")), unquote(password.replace("+", " "))
