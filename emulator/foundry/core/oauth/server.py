"""The Multipass OAuth 2.0 authorization server.

Owns `OAuthServer`: authorization requests, single-use authorization codes bound to client,
redirect URI and PKCE challenge, grants with rotating refresh tokens, client-credential tokens
for service principals, and revocation (RFC 7009). Access tokens themselves live in the
`TokenStore` of `tokens.py`; this module issues them.

Calls validate before they mutate. The only failed calls that change state are the security
responses the RFCs ask for: a code presented with the wrong redirect URI, verifier or client is
voided (it cannot be retried by an attacker), a second use of a code revokes what the first use
issued (RFC 6749 section 4.1.2), and a second use of a rotated refresh token revokes its grant
(RFC 9700 section 4.14.2).

Secrets (codes, refresh tokens, client secrets) are kept only as SHA-256 digests or compared
with `same_secret` (constant time). Must not import trio, quart, hypercorn or yaml.
"""

from __future__ import annotations

import attrs

from ....platform.clock import Randomness
from ...seed import FoundrySeed, OAuthSettingsSeed
from ..errors import Conflict, NotFound
from ..principals import Directory
from ..tokens import TokenStore, digest
from .clients import (
    ClientCredentials,
    ClientRegistry,
    OAuthClient,
    _check_allowed,
    check_grant_allowed,
    format_scope,
    parse_scope,
    redirect_uri_matches,
    redirect_uri_problem,
)
from .common import (
    MAX_LIVE_CODES,
    OFFLINE_ACCESS,
    PKCE_METHODS,
    PKCE_VALUE,
    PRUNE_INTERVAL,
    AuthorizeRefused,
    OAuthError,
)
from .records import (
    AuthorizationCode,
    AuthorizationRequest,
    AuthorizationTarget,
    AuthorizeParams,
    CodeEvent,
    CodeState,
    Grant,
    GrantEvent,
    GrantState,
    IssuedTokens,
    RefreshEvent,
    RefreshState,
    RefreshToken,
    apply_code_event,
    apply_grant_event,
    apply_refresh_event,
    pkce_matches,
)

# The server ------------------------------------------------------------------------------------


@attrs.define
class OAuthServer:
    clients: ClientRegistry
    settings: OAuthSettingsSeed
    directory: Directory
    tokens: TokenStore
    randomness: Randomness
    codes: dict[bytes, AuthorizationCode] = attrs.field(factory=dict)
    grants: dict[str, Grant] = attrs.field(factory=dict)
    refresh_tokens: dict[bytes, RefreshToken] = attrs.field(factory=dict)
    last_prune: float = 0.0
    max_live_codes: int = MAX_LIVE_CODES

    @classmethod
    def from_seed(
        cls, seed: FoundrySeed, directory: Directory, tokens: TokenStore, randomness: Randomness
    ) -> OAuthServer:
        return cls(
            clients=ClientRegistry.from_seed(seed.oauth_clients),
            settings=seed.oauth,
            directory=directory,
            tokens=tokens,
            randomness=randomness,
        )

    @property
    def development(self) -> bool:
        return self.clients.development

    # Authorization endpoint --------------------------------------------------------------------

    def authorization_target(self, params: AuthorizeParams) -> AuthorizationTarget:
        """The client and redirect URI of a request, or AuthorizeRefused (never redirected)."""
        for name in ("client_id", "redirect_uri"):
            if name in params.repeated:
                raise AuthorizeRefused("invalid_request", f"The {name} parameter is repeated.")
        client_id = params.client_id
        if not client_id:
            raise AuthorizeRefused("invalid_request", "The client_id parameter is required.")
        client = self.clients.find(client_id)
        if client is None:
            raise AuthorizeRefused(
                "invalid_client",
                f"No OAuth client '{client_id}' is registered with the emulator (see "
                "foundry.oauth_clients in the seed).",
            )
        given = params.redirect_uri
        if given is None:
            if len(client.redirect_uris) == 1:
                default = client.redirect_uris[0]
                problem = redirect_uri_problem(default)
                if problem is not None:
                    raise AuthorizeRefused(
                        "invalid_request", f"The registered redirect_uri is unusable: {problem}."
                    )
                return AuthorizationTarget(client, default, False)
            if client.development:
                reason = "no clients are configured, so there is no registered one to use"
            elif client.redirect_uris:
                reason = f"client '{client_id}' registers several"
            else:
                reason = f"client '{client_id}' registers none"
            raise AuthorizeRefused(
                "invalid_request", f"The redirect_uri parameter is required: {reason}."
            )
        problem = redirect_uri_problem(given)
        if problem is not None:
            raise AuthorizeRefused("invalid_request", f"The redirect_uri is invalid: {problem}.")
        if not client.development and not any(
            redirect_uri_matches(registered, given) for registered in client.redirect_uris
        ):
            registered = ", ".join(client.redirect_uris) or "none"
            raise AuthorizeRefused(
                "invalid_request",
                f"The redirect_uri {given} is not registered for client '{client_id}' "
                f"(registered: {registered}).",
            )
        return AuthorizationTarget(client, given, True)

    def check_authorization(
        self, target: AuthorizationTarget, params: AuthorizeParams
    ) -> AuthorizationRequest:
        """The rest of RFC 6749 section 4.1.1 and RFC 7636 section 4.3; OAuthError otherwise
        (which the caller sends to the redirect URI)."""
        client = target.client
        if params.repeated:
            names = ", ".join(sorted(params.repeated))
            raise OAuthError("invalid_request", f"Parameters must not repeat: {names}.")
        if params.response_type is None:
            raise OAuthError("invalid_request", "The response_type parameter is required.")
        if params.response_type != "code":
            raise OAuthError(
                "unsupported_response_type", "Foundry supports only response_type=code."
            )
        check_grant_allowed(client, "authorization_code")
        scopes = self._requested_scopes(client, params.scope)
        challenge, method = self._check_pkce(client, params)
        return AuthorizationRequest(
            client=client,
            redirect_uri=target.redirect_uri,
            redirect_uri_given=target.redirect_uri_given,
            scopes=scopes,
            state=params.state,
            code_challenge=challenge,
            code_challenge_method=method,
        )

    def _requested_scopes(self, client: OAuthClient, text: str | None) -> tuple[str, ...]:
        requested = parse_scope(text)
        refresh_allowed = client.allows_grant("refresh_token")
        if requested is None:
            defaults = client.default_scopes()
            if not refresh_allowed:
                defaults = tuple(s for s in defaults if s != OFFLINE_ACCESS)
            return defaults
        _check_allowed(client, requested)
        if OFFLINE_ACCESS in requested and not refresh_allowed:
            raise OAuthError(
                "invalid_scope",
                f"Client '{client.client_id}' may not use refresh tokens (its grant_types lack "
                "refresh_token), so offline_access cannot be granted.",
            )
        return requested

    @staticmethod
    def _check_pkce(client: OAuthClient, params: AuthorizeParams) -> tuple[str | None, str | None]:
        challenge = params.code_challenge
        method = params.code_challenge_method
        if challenge is None:
            if method is not None:
                raise OAuthError(
                    "invalid_request", "code_challenge_method was given without code_challenge."
                )
            if not client.confidential and not client.development:
                raise OAuthError(
                    "invalid_request",
                    f"Client '{client.client_id}' is a public client: PKCE is required "
                    "(code_challenge with code_challenge_method=S256).",
                )
            return None, None
        method = method or "plain"  # RFC 7636 section 4.3
        if method not in PKCE_METHODS:
            raise OAuthError(
                "invalid_request",
                f"code_challenge_method {method!r} is not supported (use S256 or plain).",
            )
        if not PKCE_VALUE.match(challenge):
            raise OAuthError(
                "invalid_request",
                "code_challenge must be 43 to 128 characters of A-Z a-z 0-9 - . _ ~.",
            )
        return challenge, method

    def issue_code(self, request: AuthorizationRequest, username: str | None, now: float) -> str:
        """A new authorization code for the chosen user. NotFound when the user cannot sign in;
        OAuthError temporarily_unavailable when too many codes are outstanding."""
        principal = self.directory.get(username) if username else None
        if principal is None or not principal.is_human or not principal.active:
            raise NotFound(
                "user_not_available",
                f"The user {username or '(none)'} is not an active user who can sign in.",
            )
        self.prune(now)
        live = sum(1 for code in self.codes.values() if code.state is CodeState.ISSUED)
        if live >= self.max_live_codes:
            raise OAuthError(
                "temporarily_unavailable",
                f"{live} authorization codes are waiting to be exchanged; try again later.",
            )
        value = self.randomness.token("", 32)
        self.codes[digest(value)] = AuthorizationCode(
            client_id=request.client.client_id,
            username=principal.username,
            redirect_uri=request.redirect_uri,
            redirect_uri_given=request.redirect_uri_given,
            scopes=request.scopes,
            code_challenge=request.code_challenge,
            code_challenge_method=request.code_challenge_method,
            issued_at=now,
            expires_at=now + self.settings.code_ttl,
        )
        return value

    # Token endpoint ----------------------------------------------------------------------------

    def authenticate_client(self, credentials: ClientCredentials) -> OAuthClient:
        return self.clients.authenticate(credentials)

    def exchange_code(
        self,
        client: OAuthClient,
        code: str | None,
        redirect_uri: str | None,
        code_verifier: str | None,
        now: float,
    ) -> IssuedTokens:
        """grant_type=authorization_code (RFC 6749 section 4.1.3, RFC 7636 section 4.6)."""
        check_grant_allowed(client, "authorization_code")
        if not code:
            raise OAuthError("invalid_request", "The code parameter is required.")
        record = self.codes.get(digest(code))
        if record is None:
            raise OAuthError(
                "invalid_grant",
                "The authorization code is not known (mistyped, expired long ago, or issued "
                "before a reset).",
            )
        if record.client_id != client.client_id:
            self._void(record)
            raise OAuthError(
                "invalid_grant", "The authorization code was issued to another client."
            )
        if record.state is CodeState.REDEEMED:
            if record.grant_id is not None:
                self.revoke_grant(record.grant_id)
            raise OAuthError(
                "invalid_grant",
                "The authorization code was already used; the tokens issued for it are now "
                "revoked.",
            )
        if record.state is CodeState.VOIDED:
            raise OAuthError(
                "invalid_grant",
                "The authorization code is no longer valid: an earlier exchange of it failed.",
            )
        problem = self._redemption_problem(record, redirect_uri, code_verifier, now)
        if problem is not None:
            self._void(record)
            raise problem
        principal = self.directory.get(record.username)
        if principal is None or not principal.active:
            self._void(record)
            raise OAuthError("invalid_grant", f"The user {record.username} is no longer active.")
        apply_code_event(record, CodeEvent.REDEEM)
        grant = Grant(
            grant_id=self.randomness.uuid(),
            client_id=client.client_id,
            username=principal.username,
            scopes=record.scopes,
            created_at=now,
        )
        self.grants[grant.grant_id] = grant
        record.grant_id = grant.grant_id
        offline = OFFLINE_ACCESS in grant.scopes and client.allows_grant("refresh_token")
        return self._issue_for_grant(grant, grant.scopes, now, "authorization_code", offline)

    def _redemption_problem(
        self,
        record: AuthorizationCode,
        redirect_uri: str | None,
        code_verifier: str | None,
        now: float,
    ) -> OAuthError | None:
        if now >= record.expires_at:
            return OAuthError(
                "invalid_grant",
                f"The authorization code expired (codes live {self.settings.code_ttl} s).",
            )
        if redirect_uri is None:
            if record.redirect_uri_given:
                return OAuthError(
                    "invalid_request",
                    "The redirect_uri parameter is required: the authorization request had one.",
                )
        elif redirect_uri != record.redirect_uri:
            return OAuthError(
                "invalid_grant",
                "The redirect_uri does not match the one of the authorization request.",
            )
        if record.code_challenge is None:
            if code_verifier is not None:
                return OAuthError(
                    "invalid_grant",
                    "A code_verifier was sent, but the authorization request had no "
                    "code_challenge.",
                )
            return None
        if code_verifier is None:
            return OAuthError(
                "invalid_grant", "The code_verifier parameter is required (PKCE was used)."
            )
        if not PKCE_VALUE.match(code_verifier):
            return OAuthError(
                "invalid_grant",
                "code_verifier must be 43 to 128 characters of A-Z a-z 0-9 - . _ ~.",
            )
        method = record.code_challenge_method or "plain"
        if not pkce_matches(method, record.code_challenge, code_verifier):
            return OAuthError(
                "invalid_grant",
                f"PKCE verification failed: the code_verifier does not match the {method} "
                "code_challenge.",
            )
        return None

    def _void(self, record: AuthorizationCode) -> None:
        if record.state is CodeState.ISSUED:
            apply_code_event(record, CodeEvent.VOID)

    def refresh(
        self, client: OAuthClient, value: str | None, scope: str | None, now: float
    ) -> IssuedTokens:
        """grant_type=refresh_token (RFC 6749 section 6): rotates the refresh token."""
        check_grant_allowed(client, "refresh_token")
        if not value:
            raise OAuthError("invalid_request", "The refresh_token parameter is required.")
        token = self.refresh_tokens.get(digest(value))
        grant = None if token is None else self.grants.get(token.grant_id)
        if token is None or grant is None:
            raise OAuthError(
                "invalid_grant",
                "The refresh token is not known (mistyped, or issued before a reset).",
            )
        if grant.client_id != client.client_id:
            raise OAuthError("invalid_grant", "The refresh token was issued to another client.")
        if token.state is RefreshState.ROTATED:
            self.revoke_grant(grant.grant_id)
            raise OAuthError(
                "invalid_grant",
                "The refresh token was already used and replaced by a newer one; as a "
                "precaution the whole grant is now revoked. Sign in again.",
            )
        if token.state is RefreshState.REVOKED or grant.state is GrantState.REVOKED:
            raise OAuthError("invalid_grant", "The refresh token has been revoked.")
        if token.expires_at is not None and now >= token.expires_at:
            raise OAuthError("invalid_grant", "The refresh token has expired.")
        requested = parse_scope(scope)
        if requested is not None:
            wider = [item for item in requested if item not in grant.scopes]
            if wider:
                raise OAuthError(
                    "invalid_scope",
                    f"A refresh may only narrow the grant; {', '.join(wider)} was not granted "
                    f"(granted: {format_scope(grant.scopes)}).",
                )
        principal = self.directory.get(grant.username)
        if principal is None or not principal.active:
            raise OAuthError("invalid_grant", f"The user {grant.username} is no longer active.")
        apply_refresh_event(token, RefreshEvent.ROTATE)
        return self._issue_for_grant(
            grant, requested or grant.scopes, now, "refresh_token", offline=True
        )

    def _issue_for_grant(
        self, grant: Grant, scopes: tuple[str, ...], now: float, origin: str, offline: bool
    ) -> IssuedTokens:
        ttl = self.settings.access_token_ttl
        access, record = self.tokens.issue(
            self.randomness,
            username=grant.username,
            scopes=scopes,
            client_id=grant.client_id,
            ttl=ttl,
            now=now,
            origin=origin,
            grant_id=grant.grant_id,
        )
        grant.access_tokens.append(record)
        refresh_value = None
        if offline:
            refresh_value = self.randomness.token("foundry_refresh_", 32)
            refresh_ttl = self.settings.refresh_token_ttl
            refresh = RefreshToken(
                grant_id=grant.grant_id,
                issued_at=now,
                expires_at=None if refresh_ttl is None else now + refresh_ttl,
            )
            self.refresh_tokens[digest(refresh_value)] = refresh
            grant.refresh_tokens.append(refresh)
        return IssuedTokens(
            access_token=access, expires_in=ttl, scopes=scopes, refresh_token=refresh_value
        )

    def client_credentials(
        self, client: OAuthClient, scope: str | None, now: float
    ) -> IssuedTokens:
        """grant_type=client_credentials (RFC 6749 section 4.4): an access token for the
        client's service principal, never a refresh token."""
        check_grant_allowed(client, "client_credentials")
        requested = parse_scope(scope)
        # foundry-platform-sdk appends offline_access to every scope list it sends; with no
        # refresh token in this grant (RFC 6749 section 4.4.3) it means nothing and is dropped.
        if requested is None:
            scopes = client.default_scopes()
        else:
            scopes = requested
            _check_allowed(client, tuple(s for s in requested if s != OFFLINE_ACCESS))
        scopes = tuple(s for s in scopes if s != OFFLINE_ACCESS)
        try:
            principal = self.directory.service_principal(client.client_id, client.name)
        except Conflict as error:
            raise OAuthError("unauthorized_client", error.message) from None
        self.prune(now)
        ttl = self.settings.access_token_ttl
        access, _ = self.tokens.issue(
            self.randomness,
            username=principal.username,
            scopes=scopes,
            client_id=client.client_id,
            ttl=ttl,
            now=now,
            origin="client_credentials",
        )
        return IssuedTokens(access_token=access, expires_in=ttl, scopes=scopes, refresh_token=None)

    # Revocation endpoint -----------------------------------------------------------------------

    def revoke(self, client: OAuthClient, value: str | None) -> bool:
        """RFC 7009: revoke an access or refresh token of this client, and with it the grant it
        belongs to (so the SDK's sign_out ends the sign-in). Unknown tokens are not an error
        (section 2.2); returns whether something was revoked."""
        if not value:
            raise OAuthError("invalid_request", "The token parameter is required.")
        key = digest(value)
        refresh = self.refresh_tokens.get(key)
        if refresh is not None:
            grant = self.grants.get(refresh.grant_id)
            if grant is None:
                return False
            self._check_owner(client, grant.client_id)
            return self.revoke_grant(grant.grant_id)
        access = self.tokens.by_digest.get(key)
        if access is None:
            return False
        # Seeded tokens belong to no client; any client may revoke them (until a reset).
        if access.client_id is not None:
            self._check_owner(client, access.client_id)
        if access.grant_id is not None and access.grant_id in self.grants:
            return self.revoke_grant(access.grant_id)
        if access.revoked:
            return False
        access.revoke()
        return True

    @staticmethod
    def _check_owner(client: OAuthClient, owner: str) -> None:
        if owner != client.client_id:
            raise OAuthError(
                "unauthorized_client",
                f"The token was not issued to client '{client.client_id}', so it may not "
                "revoke it.",
            )

    def revoke_grant(self, grant_id: str) -> bool:
        """Revoke a grant, its refresh token and every access token issued under it."""
        grant = self.grants.get(grant_id)
        if grant is None or grant.state is GrantState.REVOKED:
            return False
        apply_grant_event(grant, GrantEvent.REVOKE)
        for refresh in grant.refresh_tokens:
            if refresh.state is RefreshState.ACTIVE:
                apply_refresh_event(refresh, RefreshEvent.REVOKE)
        for access in grant.access_tokens:
            access.revoke()
        return True

    # Housekeeping ------------------------------------------------------------------------------

    def prune(self, now: float, *, force: bool = False) -> None:
        """Forget expired codes, spent grants and long-expired access tokens (bounded memory).
        Runs at most every PRUNE_INTERVAL seconds unless forced."""
        if not force and now - self.last_prune < PRUNE_INTERVAL:
            return
        self.last_prune = now
        for key in [k for k, code in self.codes.items() if now >= code.expires_at]:
            del self.codes[key]
        spent = {grant_id for grant_id in self.grants if self._grant_spent(grant_id, now)}
        for grant_id in spent:
            del self.grants[grant_id]
        for key in [k for k, t in self.refresh_tokens.items() if t.grant_id in spent]:
            del self.refresh_tokens[key]
        self.tokens.sweep(now)

    def _grant_spent(self, grant_id: str, now: float) -> bool:
        """No token of the grant can be used any more (then it is forgotten)."""
        grant = self.grants[grant_id]
        live_access = any(
            not t.revoked and (t.expires_at is None or now < t.expires_at)
            for t in grant.access_tokens
        )
        live_refresh = any(
            t.state is RefreshState.ACTIVE and (t.expires_at is None or now < t.expires_at)
            for t in grant.refresh_tokens
        )
        return not live_access and not live_refresh

    def statistics(self, now: float) -> dict[str, int]:
        """Counts for the state page; no secret."""
        return {
            "clients": len(self.clients.clients),
            "pendingCodes": sum(
                1
                for code in self.codes.values()
                if code.state is CodeState.ISSUED and now < code.expires_at
            ),
            "activeGrants": sum(1 for g in self.grants.values() if g.state is GrantState.ACTIVE),
        }
