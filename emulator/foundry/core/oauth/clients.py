"""OAuth clients, scopes and redirect URIs.

Owns the registered clients (or development mode when the seed registers none), client
authentication (form or Basic, secrets compared in constant time), which grants and scopes a
client may use, and the redirect-URI rules: exact match with a registered URI except a trailing
slash and case of scheme and host, loopback URIs on any port (RFC 8252 section 7.3), never a
scheme that could run code. Must not import trio, quart, hypercorn or yaml.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

import attrs

from ...seed import GRANT_TYPES, OAuthClientSeed
from ..tokens import same_secret
from .common import DEFAULT_SCOPES, FORBIDDEN_SCHEMES, LOOPBACK_HOSTS, SCOPE_TOKEN, OAuthError

# Clients ---------------------------------------------------------------------------------------


@attrs.frozen
class OAuthClient:
    client_id: str
    name: str
    # None: a public client (no secret; must use PKCE).
    secret: str | None
    redirect_uris: tuple[str, ...]
    grant_types: tuple[str, ...]
    # Empty: the client may ask for any scope.
    allowed_scopes: tuple[str, ...]
    # Development mode (no clients in the seed): no secret, redirect URI or scope checks.
    development: bool = False

    @classmethod
    def from_seed(cls, seed: OAuthClientSeed) -> OAuthClient:
        return cls(
            client_id=seed.client_id,
            name=seed.name,
            secret=seed.client_secret,
            redirect_uris=seed.redirect_uris,
            grant_types=seed.grant_types,
            allowed_scopes=seed.allowed_scopes,
        )

    @classmethod
    def for_development(cls, client_id: str) -> OAuthClient:
        return cls(
            client_id=client_id,
            name=client_id,
            secret=None,
            redirect_uris=(),
            grant_types=GRANT_TYPES,
            allowed_scopes=(),
            development=True,
        )

    @property
    def confidential(self) -> bool:
        return self.secret is not None

    def allows_grant(self, grant_type: str) -> bool:
        return grant_type in self.grant_types

    def default_scopes(self) -> tuple[str, ...]:
        return self.allowed_scopes or DEFAULT_SCOPES


@attrs.frozen
class ClientCredentials:
    """How a request to the token or revocation endpoint identified its client."""

    client_id: str | None
    client_secret: str | None
    # RFC 7591 names: "client_secret_basic" (HTTP Basic), "client_secret_post" (form fields)
    # or "none" (a public client sending only its client_id).
    method: str


@attrs.define
class ClientRegistry:
    clients: dict[str, OAuthClient]

    @classmethod
    def from_seed(cls, seeds: Iterable[OAuthClientSeed]) -> ClientRegistry:
        return cls({seed.client_id: OAuthClient.from_seed(seed) for seed in seeds})

    @property
    def development(self) -> bool:
        return not self.clients

    def find(self, client_id: str) -> OAuthClient | None:
        if self.development:
            return OAuthClient.for_development(client_id)
        return self.clients.get(client_id)

    def authenticate(self, credentials: ClientCredentials) -> OAuthClient:
        """The client these credentials prove, or OAuthError invalid_client (RFC 6749 2.3)."""
        client_id = credentials.client_id
        if not client_id:
            raise OAuthError(
                "invalid_client",
                "No client authentication: send client_id (and client_secret for a "
                "confidential client) as form fields or with HTTP Basic.",
            )
        client = self.find(client_id)
        if client is None:
            raise OAuthError(
                "invalid_client",
                f"No OAuth client '{client_id}' is registered (see foundry.oauth_clients in "
                "the seed).",
            )
        if client.development:
            return client  # any id works and the secret is not checked
        given = credentials.client_secret
        if client.secret is None:
            if given:
                raise OAuthError(
                    "invalid_client",
                    f"Client '{client_id}' is a public client and has no secret; send only "
                    "client_id (and use PKCE).",
                )
            return client
        if given is None:
            raise OAuthError(
                "invalid_client",
                f"Client '{client_id}' is confidential: authenticate with its client_secret "
                "(form field or HTTP Basic).",
            )
        if not same_secret(given, client.secret):
            raise OAuthError("invalid_client", f"The client_secret of '{client_id}' is incorrect.")
        return client


def check_grant_allowed(client: OAuthClient, grant_type: str) -> None:
    if not client.allows_grant(grant_type):
        raise OAuthError(
            "unauthorized_client",
            f"Client '{client.client_id}' may not use the {grant_type} grant (its grant_types: "
            f"{', '.join(client.grant_types) or 'none'}).",
        )


# Scopes ----------------------------------------------------------------------------------------


def parse_scope(text: str | None) -> tuple[str, ...] | None:
    """The scopes of a `scope` parameter in order, without repeats; None when not given."""
    if text is None or not text.strip():
        return None
    scopes: list[str] = []
    for item in text.split():
        if not SCOPE_TOKEN.match(item):
            raise OAuthError("invalid_scope", f"The scope {item!r} is malformed.")
        if item not in scopes:
            scopes.append(item)
    return tuple(scopes)


def format_scope(scopes: Iterable[str]) -> str:
    return " ".join(scopes)


def _check_allowed(client: OAuthClient, scopes: tuple[str, ...]) -> None:
    if client.development or not client.allowed_scopes:
        return
    outside = [scope for scope in scopes if scope not in client.allowed_scopes]
    if outside:
        raise OAuthError(
            "invalid_scope",
            f"Client '{client.client_id}' may not ask for {', '.join(outside)} (allowed: "
            f"{', '.join(client.allowed_scopes)}).",
        )


# Redirect URIs ---------------------------------------------------------------------------------


def _scheme(uri: str) -> str:
    return urlsplit(uri).scheme.lower()


def redirect_uri_problem(uri: str) -> str | None:
    """Why `uri` cannot be a redirect URI at all (RFC 6749 section 3.1.2), or None."""
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return "it is not a valid URL"
    scheme = parts.scheme.lower()
    if not scheme:
        return "it is not an absolute URL"
    if scheme in FORBIDDEN_SCHEMES:
        return f"the {scheme}: scheme is not allowed"
    if scheme in ("http", "https") and not parts.hostname:
        return "it has no host"
    if parts.fragment or "#" in uri:
        return "it must not contain a fragment"
    if parts.username is not None or parts.password is not None:
        return "it must not contain user information"
    return None


def _path(path: str) -> str:
    return path.rstrip("/")


def redirect_uri_matches(registered: str, given: str) -> bool:
    """Exact match after normalising case of scheme and host and a trailing slash; a registered
    http loopback URI matches any port (RFC 8252 section 7.3, for CLI listeners on port 0)."""
    try:
        want = urlsplit(registered)
        got = urlsplit(given)
        want_port, got_port = want.port, got.port
    except ValueError:
        return False
    scheme = want.scheme.lower()
    if scheme != got.scheme.lower():
        return False
    if scheme not in ("http", "https"):
        return registered.rstrip("/") == given.rstrip("/")
    if got.username is not None or got.password is not None:
        return False
    if (want.hostname or "") != (got.hostname or ""):
        return False
    if _path(want.path) != _path(got.path) or want.query != got.query:
        return False
    if scheme == "http" and want.hostname in LOOPBACK_HOSTS:
        return True
    default = 443 if scheme == "https" else 80
    return (want_port or default) == (got_port or default)
