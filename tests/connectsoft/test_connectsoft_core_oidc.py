"""The OIDC issuer: client credentials, signed tokens, verification, discovery, the key file."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
from connectsoft_builders import T0, make_seed
from joserfc import jwt
from joserfc.jwk import ECKey

from emulator.connectsoft.core import oidc as oidc_module
from emulator.connectsoft.core.oidc import OAuthError, OidcIssuer
from emulator.connectsoft.keys import KEY_FILE, SigningKeyError, load_or_create_signing_key

ISSUER = "http://127.0.0.1:4100"


@pytest.fixture(scope="module")
def key() -> ECKey:
    return ECKey.generate_key("P-256")


def make_issuer(key: ECKey) -> OidcIssuer:
    counter = iter(range(1000))
    return OidcIssuer.create(key, make_seed().clients, 3600, ISSUER, lambda: f"jti-{next(counter)}")


def grant(oidc: OidcIssuer, **overrides: Any) -> Any:
    args: dict[str, Any] = {
        "client_id": "portal",
        "client_secret": "portal-secret-value",
        "grant_type": "client_credentials",
        "scope": None,
        "tenant": None,
        "now": T0,
    }
    args.update(overrides)
    return oidc.issue(**args)


def test_issue_and_verify(key: ECKey) -> None:
    issuer = make_issuer(key)
    token = grant(issuer, scope="runtime.health.read runtime.drift.read")
    assert token.response()["token_type"] == "Bearer"
    assert token.response()["scope"] == "runtime.health.read runtime.drift.read"
    caller = issuer.verify(token.access_token, T0 + 10)
    assert caller.tenant_id == "connectsoft"
    assert caller.scopes == {"runtime.health.read", "runtime.drift.read"}
    claims = jwt.decode(token.access_token, key).claims
    assert claims["tenantId"] == "connectsoft"
    assert claims["iss"] == ISSUER
    assert claims["exp"] - claims["iat"] == 3600


def test_second_tenant_on_request(key: ECKey) -> None:
    issuer = make_issuer(key)
    token = grant(issuer, tenant="other")
    assert issuer.verify(token.access_token, T0).tenant_id == "other"


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"client_secret": "wrong"}, "invalid_client"),
        ({"client_id": "nobody"}, "invalid_client"),
        ({"client_secret": None}, "invalid_client"),
        ({"grant_type": "password"}, "unsupported_grant_type"),
        ({"scope": "runtime.everything"}, "invalid_scope"),
        ({"tenant": "stranger"}, "invalid_request"),
    ],
)
def test_refusals(key: ECKey, overrides: dict[str, Any], code: str) -> None:
    with pytest.raises(OAuthError) as caught:
        grant(make_issuer(key), **overrides)
    assert caught.value.code == code
    assert "portal-secret-value" not in caught.value.message


def test_scope_outside_the_clients_list() -> None:
    seed = make_seed(
        clients=[
            {
                "client_id": "reader",
                "client_secret": "s",
                "scopes": ["runtime.health.read"],
                "tenants": ["connectsoft"],
            }
        ]
    )
    issuer = OidcIssuer.create(ECKey.generate_key("P-256"), seed.clients, 60, ISSUER, lambda: "j")
    with pytest.raises(OAuthError, match=r"runtime\.drift\.read"):
        issuer.issue(
            client_id="reader",
            client_secret="s",
            grant_type="client_credentials",
            scope="runtime.drift.read",
            tenant=None,
            now=T0,
        )


@pytest.mark.parametrize(
    ("mangle", "now", "message"),
    [
        (lambda t: t, T0 + 3600 + 6, "expired"),
        (lambda t: t[:-4] + ("AAAA" if not t.endswith("AAAA") else "BBBB"), T0, "not a valid"),
        (lambda t: "", T0, "not a valid"),
        (lambda t: "x" * 9000, T0, "not a valid"),
        (lambda t: t, T0 - 60, "not valid yet"),
    ],
)
def test_verify_refusals(key: ECKey, mangle: Any, now: float, message: str) -> None:
    issuer = make_issuer(key)
    token = grant(issuer).access_token
    with pytest.raises(OAuthError, match=message):
        issuer.verify(mangle(token), now)


def test_token_of_another_issuer_or_key(key: ECKey) -> None:
    token = grant(make_issuer(key)).access_token
    elsewhere = OidcIssuer.create(key, make_seed().clients, 60, "http://elsewhere", lambda: "j")
    with pytest.raises(OAuthError, match="someone else"):
        elsewhere.verify(token, T0)
    with pytest.raises(OAuthError):
        make_issuer(ECKey.generate_key("P-256")).verify(token, T0)


def test_jwks_and_discovery(key: ECKey) -> None:
    issuer = make_issuer(key)
    jwks = issuer.jwks()
    (public,) = jwks["keys"]
    assert "d" not in public
    assert public["kid"] == issuer.key_id
    assert public["alg"] == "ES256"
    # The published key verifies an issued token.
    token = grant(issuer).access_token
    assert jwt.decode(token, ECKey.import_key(public)).claims["sub"] == "portal"
    doc = issuer.discovery("http://127.0.0.1:4100/")
    assert doc["issuer"] == "http://127.0.0.1:4100"
    assert doc["token_endpoint"] == "http://127.0.0.1:4100/connect/token"
    assert doc["jwks_uri"] == "http://127.0.0.1:4100/.well-known/jwks.json"


def test_key_file_is_kept_and_private(tmp_path: Path) -> None:
    first = load_or_create_signing_key(tmp_path / "state")
    path = tmp_path / "state" / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = load_or_create_signing_key(tmp_path / "state")
    assert first.thumbprint() == second.thumbprint()


def test_bad_key_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / KEY_FILE).write_text("not json")
    with pytest.raises(SigningKeyError, match=KEY_FILE):
        load_or_create_signing_key(tmp_path)
    public = ECKey.generate_key("P-256").as_dict(private=False)
    (tmp_path / KEY_FILE).write_text(json.dumps(public))
    with pytest.raises(SigningKeyError, match="private"):
        load_or_create_signing_key(tmp_path)


def test_issuers_stay_bounded(key: ECKey) -> None:
    issuer = make_issuer(key)
    for n in range(40):
        token = grant(issuer, issuer=f"http://host-{n}:4100")
        assert issuer.verify(token.access_token, T0).subject == "portal"
    late = jwt.decode(grant(issuer, issuer="http://host-99:4100").access_token, key).claims
    assert late["iss"] == ISSUER


def test_racing_starts_agree_on_one_key(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=8) as pool:
        keys = list(pool.map(lambda _: load_or_create_signing_key(tmp_path), range(16)))
    assert len({key.thumbprint() for key in keys}) == 1
    assert [p.name for p in tmp_path.iterdir()] == [KEY_FILE]


def test_a_remembered_signature_still_has_its_lifetime_and_claims_checked(
    key: ECKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    issuer = make_issuer(key)
    token = grant(issuer, scope="runtime.health.read").access_token
    first = issuer.verify(token, T0)
    decodes: list[str] = []
    original = oidc_module.jwt.decode
    monkeypatch.setattr(
        oidc_module.jwt, "decode", lambda *args, **kw: decodes.append("x") or original(*args, **kw)
    )
    # The same token again: no second signature check, the same caller.
    assert issuer.verify(token, T0 + 1) == first
    assert decodes == []
    # Its lifetime is still checked on every call.
    with pytest.raises(OAuthError, match="expired"):
        issuer.verify(token, T0 + 3600 + 6)
    # A tampered token is checked (and refused), whatever was remembered.
    with pytest.raises(OAuthError, match="not a valid"):
        issuer.verify(token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"), T0)
    assert decodes == ["x"]


def test_remembered_signatures_stay_bounded(key: ECKey, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(oidc_module, "MAX_VERIFIED", 3)
    issuer = make_issuer(key)
    tokens = [grant(issuer).access_token for _ in range(5)]
    for token in tokens:
        issuer.verify(token, T0)
    # Every token still verifies; only the last three are remembered.
    assert all(issuer.verify(token, T0).tenant_id == "connectsoft" for token in tokens)
    assert len(issuer._verified) == 3
