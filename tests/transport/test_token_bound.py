"""Issued access tokens are bounded (issue 16, defect 12): expired ones go first, then the
oldest; seeded tokens stay. Sync, no event loop (core/ is plain Python)."""

from __future__ import annotations

from emulator.foundry.core.tokens import MAX_ISSUED_TOKENS, TokenStore
from emulator.foundry.seed import TokenSeed
from emulator.platform.clock import Randomness


def issue(store: TokenStore, randomness: Randomness, now: float, ttl: int = 3600) -> str:
    value, _ = store.issue(
        randomness,
        username="svc",
        scopes=["api:read"],
        client_id="c",
        ttl=ttl,
        now=now,
        origin="client_credentials",
    )
    return value


def test_issued_tokens_never_exceed_the_bound_and_the_newest_still_work() -> None:
    store = TokenStore(capacity=100)
    seed = TokenSeed("seeded", "jane", ("a",), expires_in=None, path="tokens.seeded", source="t")
    store.add_seeded([seed], now=0.0)
    randomness = Randomness()
    values = [issue(store, randomness, now=float(i)) for i in range(1000)]
    assert store.count() <= 100 + 1
    assert store.authenticate("seeded", now=1000.0).username == "jane"
    assert store.authenticate(values[-1], now=1000.0).username == "svc"


def test_expired_tokens_are_forgotten_before_live_ones() -> None:
    store = TokenStore(capacity=100)
    randomness = Randomness()
    live = issue(store, randomness, now=0.0, ttl=10_000)
    for i in range(150):
        issue(store, randomness, now=float(i), ttl=1)
    # The first token is the oldest, but the only live one besides the newest: it stays.
    assert store.authenticate(live, now=200.0).username == "svc"
    assert store.count() <= 100


def test_the_default_bound_is_stated() -> None:
    assert TokenStore().capacity == MAX_ISSUED_TOKENS <= 100_000
