"""Who a bearer token stands for: the principal directory plus the access-token table.

Owns `Identity.authenticate`, the one place a bearer token becomes a principal with scopes.
"""

from __future__ import annotations

import attrs

from ..seed import FoundrySeed
from .errors import AuthenticationError
from .principals import Directory, Principal
from .tokens import AccessToken, TokenStore


@attrs.define
class Identity:
    directory: Directory
    tokens: TokenStore

    @classmethod
    def from_seed(cls, seed: FoundrySeed, now: float) -> Identity:
        tokens = TokenStore()
        tokens.add_seeded(seed.tokens, now)
        return cls(directory=Directory.from_seed(seed.users), tokens=tokens)

    def authenticate(self, token: str | None, now: float) -> tuple[Principal, AccessToken]:
        record = self.tokens.authenticate(token, now)
        principal = self.directory.get(record.username)
        if principal is None or not principal.active:
            raise AuthenticationError(
                "invalid_token", "The principal this token was issued to is not active."
            )
        return principal, record
