"""The records of an OAuth sign-in and their state machines.

Owns the checked authorization request (RFC 6749 section 4.1.1, PKCE from RFC 7636),
authorization codes (issued -> redeemed | voided), grants (active -> revoked) and refresh
tokens (active -> rotated | revoked), each with one transition table and one apply function:
no status is assigned anywhere else. Must not import trio, quart, hypercorn or yaml.
"""

from __future__ import annotations

import base64
import enum
import hashlib
from collections.abc import Iterable

import attrs

from ....platform.statemachine import Transitions
from ..tokens import AccessToken, same_secret
from .clients import OAuthClient
from .common import _transition

# Authorization requests ------------------------------------------------------------------------


@attrs.frozen
class AuthorizeParams:
    """The parameters of an authorization request (query of GET authorize, or the picker form)."""

    response_type: str | None
    client_id: str | None
    redirect_uri: str | None
    scope: str | None
    state: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    # Names that appeared more than once (RFC 6749 section 3.1 forbids that).
    repeated: frozenset[str] = frozenset()

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str]]) -> AuthorizeParams:
        values: dict[str, str] = {}
        repeated: set[str] = set()
        for key, value in pairs:
            if key in values:
                repeated.add(key)
            values[key] = value

        def get(name: str) -> str | None:
            value = values.get(name)
            return value if value else None

        return cls(
            response_type=get("response_type"),
            client_id=get("client_id"),
            redirect_uri=get("redirect_uri"),
            scope=get("scope"),
            state=get("state"),
            code_challenge=get("code_challenge"),
            code_challenge_method=get("code_challenge_method"),
            repeated=frozenset(repeated),
        )


@attrs.frozen
class AuthorizationTarget:
    """A client and the redirect URI errors may now be sent to."""

    client: OAuthClient
    redirect_uri: str
    # Whether the request named the redirect URI (then the token request must repeat it).
    redirect_uri_given: bool


@attrs.frozen
class AuthorizationRequest:
    """A fully checked authorization request, ready to show or to answer with a code."""

    client: OAuthClient
    redirect_uri: str
    redirect_uri_given: bool
    scopes: tuple[str, ...]
    state: str | None
    code_challenge: str | None
    code_challenge_method: str | None


# Authorization codes ---------------------------------------------------------------------------


class CodeState(enum.Enum):
    ISSUED = "issued"
    REDEEMED = "redeemed"
    VOIDED = "voided"


class CodeEvent(enum.Enum):
    REDEEM = "redeem"
    VOID = "void"


CODE_TRANSITIONS: Transitions[CodeState, CodeEvent] = Transitions(
    "code",
    {
        (CodeState.ISSUED, CodeEvent.REDEEM): CodeState.REDEEMED,
        (CodeState.ISSUED, CodeEvent.VOID): CodeState.VOIDED,
    },
)


@attrs.define
class AuthorizationCode:
    client_id: str
    username: str
    redirect_uri: str
    redirect_uri_given: bool
    scopes: tuple[str, ...]
    code_challenge: str | None
    code_challenge_method: str | None
    issued_at: float
    expires_at: float
    state: CodeState = CodeState.ISSUED
    # The grant the redemption created (revoked if the code is presented again).
    grant_id: str | None = None


def apply_code_event(code: AuthorizationCode, event: CodeEvent) -> None:
    code.state = _transition(CODE_TRANSITIONS, code.state, event)


def pkce_matches(method: str, challenge: str, verifier: str) -> bool:
    if method == "S256":
        hashed = hashlib.sha256(verifier.encode("ascii")).digest()
        computed = base64.urlsafe_b64encode(hashed).rstrip(b"=").decode("ascii")
        return same_secret(computed, challenge)
    return same_secret(verifier, challenge)


# Grants and refresh tokens ---------------------------------------------------------------------


class GrantState(enum.Enum):
    ACTIVE = "active"
    REVOKED = "revoked"


class GrantEvent(enum.Enum):
    REVOKE = "revoke"


GRANT_TRANSITIONS: Transitions[GrantState, GrantEvent] = Transitions(
    "grant", {(GrantState.ACTIVE, GrantEvent.REVOKE): GrantState.REVOKED}
)


class RefreshState(enum.Enum):
    ACTIVE = "active"
    ROTATED = "rotated"
    REVOKED = "revoked"


class RefreshEvent(enum.Enum):
    ROTATE = "rotate"
    REVOKE = "revoke"


REFRESH_TRANSITIONS: Transitions[RefreshState, RefreshEvent] = Transitions(
    "refresh token",
    {
        (RefreshState.ACTIVE, RefreshEvent.ROTATE): RefreshState.ROTATED,
        (RefreshState.ACTIVE, RefreshEvent.REVOKE): RefreshState.REVOKED,
    },
)


@attrs.define
class RefreshToken:
    grant_id: str
    issued_at: float
    # None: lives until used (rotated) or revoked.
    expires_at: float | None
    state: RefreshState = RefreshState.ACTIVE


def apply_refresh_event(token: RefreshToken, event: RefreshEvent) -> None:
    token.state = _transition(REFRESH_TRANSITIONS, token.state, event)


@attrs.define
class Grant:
    """What one user allowed one client (one authorization code redemption)."""

    grant_id: str
    client_id: str
    username: str
    scopes: tuple[str, ...]
    created_at: float
    state: GrantState = GrantState.ACTIVE
    access_tokens: list[AccessToken] = attrs.field(factory=list)
    refresh_tokens: list[RefreshToken] = attrs.field(factory=list)


def apply_grant_event(grant: Grant, event: GrantEvent) -> None:
    grant.state = _transition(GRANT_TRANSITIONS, grant.state, event)


# Issued tokens ---------------------------------------------------------------------------------


@attrs.frozen
class IssuedTokens:
    """A token response: the values are shown once, here, and kept only as digests."""

    access_token: str
    expires_in: int
    scopes: tuple[str, ...]
    refresh_token: str | None
    token_type: str = "Bearer"
