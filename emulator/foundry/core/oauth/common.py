"""Shared pieces of the OAuth server: scopes it knows, limits, and its errors.

Owns the scope table (what the sign-in page says of each), the PKCE and redirect-URI
constants, `OAuthError` (an RFC 6749 error code and description), `AuthorizeRefused` and the
transition helper the OAuth state machines share. Must not import trio, quart, hypercorn or
yaml.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from typing import TypeVar

from ....platform.statemachine import Transitions
from ..errors import DomainError

OFFLINE_ACCESS = "offline_access"
# The scopes the emulator's routes know, with the words the sign-in page shows for them. A
# client that does not restrict its scopes (or any client in development mode) gets all of
# them when it asks for none (RFC 6749 section 3.3 allows a default).
SCOPE_DESCRIPTIONS: Mapping[str, str] = {
    "api:admin-read": "See your user profile, groups and enrollment",
    "api:connectivity-connection-read": "Read data connections and their configuration",
    "api:connectivity-connection-write": "Create data connections and change their secrets",
    "api:ontologies-read": "Read ontologies and run ontology queries",
    "api:ontologies-write": "Change ontology data",
    OFFLINE_ACCESS: "Stay signed in (issue a refresh token)",
}
DEFAULT_SCOPES: tuple[str, ...] = tuple(SCOPE_DESCRIPTIONS)
PKCE_METHODS = ("S256", "plain")
# RFC 7636 section 4.1: 43 to 128 characters of the unreserved set.
PKCE_VALUE = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
# RFC 6749 section 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
# Redirect URI schemes that could run code in a browser are never accepted, registered or not.
FORBIDDEN_SCHEMES = frozenset({"javascript", "data", "vbscript", "file"})
# Unredeemed codes kept at most; more sign-ins within one code lifetime get temporarily_unavailable.
MAX_LIVE_CODES = 10_000
# Expired codes, grants and access tokens are forgotten at most this often (seconds).
PRUNE_INTERVAL = 60.0


S = TypeVar("S", bound=enum.Enum)
V = TypeVar("V", bound=enum.Enum)


class OAuthError(DomainError):
    """An RFC 6749 error; `code` is the error code (invalid_request, invalid_grant, ...)."""


class AuthorizeRefused(DomainError):
    """An authorization request that must not be redirected back (RFC 6749 section 4.1.2.1):
    the client or the redirect URI is missing, unknown or invalid. Shown as a page instead."""


class IllegalTransition(DomainError):
    """A state machine was asked for a transition its table does not have."""


def _transition(table: Transitions[S, V], state: S, event: V) -> S:
    """The next state, or the core's IllegalTransition (a Conflict) changing nothing."""
    if not table.allows(state, event):
        raise IllegalTransition(
            "illegal_transition",
            f"A {table.machine} in state {state.value} cannot {event.value}.",
        )
    return table.target(state, event)
