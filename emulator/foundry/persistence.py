"""Foundry's durable state: what `--state-file` keeps across a restart, as plain JSON data.

Owns `snapshot` (the instance's state to JSON-ready data) and `read_snapshot` (that data back to
core records, checked completely before anything is replaced). Kept: access tokens (by SHA-256
digest, as the token table holds them; never the raw value), OAuth grants and refresh tokens (by
digest), connections with their secret values, and runtimes with their Module-Auth-Tokens and
deployed-app bindings. Not kept: jobs (in flight or finished), authorization codes (they live
for minutes), posted function schemas (a module posts them again when it starts).

Synchronous; imports nothing from trio, quart, hypercorn or yaml. Malformed data raises
ValueError naming the path of the bad value; never a secret value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import attrs

from .core.connectivity import ApiKeyLocation, Connection, Domain, RestAuth, Worker
from .core.oauth import Grant, GrantState, RefreshState, RefreshToken
from .core.principals import Directory
from .core.runtimes import Binding, Runtime, RuntimeRegistry
from .core.tokens import AccessToken

T = TypeVar("T")


# Reading checked values -------------------------------------------------------------------------


def _bad(path: str, expected: str) -> ValueError:
    return ValueError(f"{path} must be {expected}")


def _obj(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(path, "an object")
    return value


def _list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise _bad(path, "a list")
    return value


def _str(obj: dict[str, Any], key: str, path: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise _bad(f"{path}.{key}", "a string")
    return value


def _opt_str(obj: dict[str, Any], key: str, path: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise _bad(f"{path}.{key}", "a string or null")
    return value


def _num(obj: dict[str, Any], key: str, path: str) -> float:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(f"{path}.{key}", "a number")
    return float(value)


def _opt_num(obj: dict[str, Any], key: str, path: str) -> float | None:
    return None if obj.get(key) is None else _num(obj, key, path)


def _int(obj: dict[str, Any], key: str, path: str) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(f"{path}.{key}", "an integer")
    return value


def _opt_int(obj: dict[str, Any], key: str, path: str) -> int | None:
    return None if obj.get(key) is None else _int(obj, key, path)


def _bool(obj: dict[str, Any], key: str, path: str) -> bool:
    value = obj.get(key)
    if not isinstance(value, bool):
        raise _bad(f"{path}.{key}", "true or false")
    return value


def _strs(obj: dict[str, Any], key: str, path: str) -> tuple[str, ...]:
    items = _list(obj.get(key), f"{path}.{key}")
    if not all(isinstance(item, str) for item in items):
        raise _bad(f"{path}.{key}", "a list of strings")
    return tuple(items)


def _digest(obj: dict[str, Any], path: str) -> bytes:
    text = _str(obj, "digest", path)
    try:
        value = bytes.fromhex(text)
    except ValueError:
        raise _bad(f"{path}.digest", "a SHA-256 hex digest") from None
    if len(value) != 32:
        raise _bad(f"{path}.digest", "a SHA-256 hex digest")
    return value


def _each(data: dict[str, Any], key: str, read: Callable[[dict[str, Any], str], T]) -> list[T]:
    return [
        read(_obj(item, f"{key}[{index}]"), f"{key}[{index}]")
        for index, item in enumerate(_list(data.get(key, []), key))
    ]


def _enum_value(kind: Any, obj: dict[str, Any], key: str, path: str) -> Any:
    text = _str(obj, key, path)
    try:
        return kind(text)
    except ValueError:
        raise _bad(f"{path}.{key}", "one of " + ", ".join(m.value for m in kind)) from None


# Snapshot ---------------------------------------------------------------------------------------


def _token_to_data(key: bytes, token: AccessToken) -> dict[str, Any]:
    return {
        "digest": key.hex(),
        "username": token.username,
        "scopes": sorted(token.scopes),
        "clientId": token.client_id,
        "issuedAt": token.issued_at,
        "expiresAt": token.expires_at,
        "origin": token.origin,
        "revoked": token.revoked,
        "grantId": token.grant_id,
    }


def _grant_to_data(grant: Grant) -> dict[str, Any]:
    return {
        "grantId": grant.grant_id,
        "clientId": grant.client_id,
        "username": grant.username,
        "scopes": list(grant.scopes),
        "createdAt": grant.created_at,
        "state": grant.state.value,
    }


def _refresh_to_data(key: bytes, token: RefreshToken) -> dict[str, Any]:
    return {
        "digest": key.hex(),
        "grantId": token.grant_id,
        "issuedAt": token.issued_at,
        "expiresAt": token.expires_at,
        "state": token.state.value,
    }


def _auth_to_data(auth: RestAuth | None) -> dict[str, Any] | None:
    if auth is None:
        return None
    location = auth.location
    return {
        "kind": auth.kind,
        "secretName": auth.secret_name,
        "username": auth.username,
        "location": None if location is None else {"kind": location.kind, "name": location.name},
    }


def _connection_to_data(connection: Connection) -> dict[str, Any]:
    policies = connection.worker.network_egress_policy_rids
    return {
        "rid": connection.rid,
        "displayName": connection.display_name,
        "parentFolderRid": connection.parent_folder_rid,
        "domains": [
            {
                "host": domain.host,
                "port": domain.port,
                "scheme": domain.scheme,
                "auth": _auth_to_data(domain.auth),
            }
            for domain in connection.domains
        ],
        "oauth2ClientRid": connection.oauth2_client_rid,
        "additionalSecretNames": list(connection.additional_secret_names),
        "networkEgressPolicyRids": None if policies is None else list(policies),
        "createdAt": connection.created_at,
        "updatedAt": connection.updated_at,
        # The secret values: the reason the state file is written with mode 0600.
        "secrets": dict(connection.secrets),
        "exportsEnabled": connection.exports_enabled,
        "exportEnabledWithoutMarkingsValidation": (
            connection.export_enabled_without_markings_validation
        ),
    }


def _runtime_to_data(runtime: Runtime) -> dict[str, Any]:
    return {
        "runtimeId": runtime.runtime_id,
        # The Module-Auth-Token itself: modules hold it and must keep working after a restart.
        "token": runtime.token,
        "tokenSeeded": runtime.token_seeded,
        "onRestart": runtime.on_restart,
        "displayName": runtime.display_name,
        "createdAt": runtime.created_at,
        "resetAt": runtime.reset_at,
        "resets": runtime.resets,
    }


def _binding_to_data(binding: Binding) -> dict[str, Any]:
    return {
        "deployedAppRid": binding.deployed_app_rid,
        "branch": binding.branch,
        "runtimeId": binding.runtime_id,
        "displayName": binding.display_name,
        "active": binding.active,
        "seeded": binding.seeded,
    }


def snapshot(
    directory: Directory,
    tokens: dict[bytes, AccessToken],
    grants: dict[str, Grant],
    refresh_tokens: dict[bytes, RefreshToken],
    connections: dict[str, Connection],
    runtimes: RuntimeRegistry,
) -> dict[str, Any]:
    """Foundry's durable state as JSON-ready data."""
    return {
        # Client-credentials service principals are made on first use; their tokens need them.
        "servicePrincipals": [
            {"clientId": p.oauth_client_id, "displayName": p.display_name}
            for p in directory.principals.values()
            if p.principal_type == "service" and p.oauth_client_id == p.username
        ],
        "tokens": [_token_to_data(key, token) for key, token in tokens.items()],
        "grants": [_grant_to_data(grant) for grant in grants.values()],
        "refreshTokens": [_refresh_to_data(key, token) for key, token in refresh_tokens.items()],
        "connections": [_connection_to_data(c) for c in connections.values()],
        "runtimes": [_runtime_to_data(r) for r in runtimes.runtimes.values()],
        "bindings": [_binding_to_data(b) for b in runtimes.bindings.values()],
    }


# Restore ----------------------------------------------------------------------------------------


def _read_token(obj: dict[str, Any], path: str) -> tuple[bytes, AccessToken]:
    return _digest(obj, path), AccessToken(
        username=_str(obj, "username", path),
        scopes=frozenset(_strs(obj, "scopes", path)),
        client_id=_opt_str(obj, "clientId", path),
        issued_at=_num(obj, "issuedAt", path),
        expires_at=_opt_num(obj, "expiresAt", path),
        origin=_str(obj, "origin", path),
        revoked=_bool(obj, "revoked", path),
        grant_id=_opt_str(obj, "grantId", path),
    )


def _read_grant(obj: dict[str, Any], path: str) -> Grant:
    return Grant(
        grant_id=_str(obj, "grantId", path),
        client_id=_str(obj, "clientId", path),
        username=_str(obj, "username", path),
        scopes=_strs(obj, "scopes", path),
        created_at=_num(obj, "createdAt", path),
        state=_enum_value(GrantState, obj, "state", path),
    )


def _read_refresh(obj: dict[str, Any], path: str) -> tuple[bytes, RefreshToken]:
    return _digest(obj, path), RefreshToken(
        grant_id=_str(obj, "grantId", path),
        issued_at=_num(obj, "issuedAt", path),
        expires_at=_opt_num(obj, "expiresAt", path),
        state=_enum_value(RefreshState, obj, "state", path),
    )


def _read_auth(value: Any, path: str) -> RestAuth | None:
    if value is None:
        return None
    obj = _obj(value, path)
    location_value = obj.get("location")
    location = None
    if location_value is not None:
        location_obj = _obj(location_value, f"{path}.location")
        location = ApiKeyLocation(
            kind=_str(location_obj, "kind", f"{path}.location"),
            name=_str(location_obj, "name", f"{path}.location"),
        )
    return RestAuth(
        kind=_str(obj, "kind", path),
        secret_name=_opt_str(obj, "secretName", path),
        username=_opt_str(obj, "username", path),
        location=location,
    )


def _read_domain(obj: dict[str, Any], path: str) -> Domain:
    return Domain(
        host=_str(obj, "host", path),
        port=_opt_int(obj, "port", path),
        scheme=_opt_str(obj, "scheme", path),
        auth=_read_auth(obj.get("auth"), f"{path}.auth"),
    )


def _read_connection(obj: dict[str, Any], path: str) -> Connection:
    secrets = _obj(obj.get("secrets"), f"{path}.secrets")
    if not all(isinstance(value, str) for value in secrets.values()):
        # Name the path only: a secret value never goes into a message.
        raise _bad(f"{path}.secrets", "an object of strings")
    policies = obj.get("networkEgressPolicyRids")
    return Connection(
        rid=_str(obj, "rid", path),
        display_name=_str(obj, "displayName", path),
        parent_folder_rid=_str(obj, "parentFolderRid", path),
        domains=tuple(
            _read_domain(_obj(item, f"{path}.domains[{i}]"), f"{path}.domains[{i}]")
            for i, item in enumerate(_list(obj.get("domains"), f"{path}.domains"))
        ),
        oauth2_client_rid=_opt_str(obj, "oauth2ClientRid", path),
        additional_secret_names=_strs(obj, "additionalSecretNames", path),
        worker=Worker(
            network_egress_policy_rids=(
                None if policies is None else _strs(obj, "networkEgressPolicyRids", path)
            )
        ),
        created_at=_num(obj, "createdAt", path),
        updated_at=_num(obj, "updatedAt", path),
        secrets=dict(secrets),
        exports_enabled=_bool(obj, "exportsEnabled", path),
        export_enabled_without_markings_validation=_bool(
            obj, "exportEnabledWithoutMarkingsValidation", path
        ),
    )


def _read_runtime(obj: dict[str, Any], path: str) -> Runtime:
    token = _str(obj, "token", path)
    if not token:
        raise _bad(f"{path}.token", "a non-empty string")
    return Runtime(
        runtime_id=_str(obj, "runtimeId", path),
        token=token,
        token_seeded=_bool(obj, "tokenSeeded", path),
        on_restart=_str(obj, "onRestart", path),
        display_name=_opt_str(obj, "displayName", path),
        created_at=_num(obj, "createdAt", path),
        reset_at=_num(obj, "resetAt", path),
        resets=_int(obj, "resets", path),
    )


def _read_binding(obj: dict[str, Any], path: str) -> Binding:
    return Binding(
        deployed_app_rid=_str(obj, "deployedAppRid", path),
        branch=_str(obj, "branch", path),
        runtime_id=_str(obj, "runtimeId", path),
        display_name=_str(obj, "displayName", path),
        active=_bool(obj, "active", path),
        seeded=_bool(obj, "seeded", path),
    )


def _unique(keys: Iterable[Any], what: str) -> None:
    seen: set[Any] = set()
    for key in keys:
        if key in seen:
            raise ValueError(f"{what} {key!r} appears twice")
        seen.add(key)


@attrs.frozen
class FoundrySnapshot:
    """Saved Foundry state, read and checked; laid over the seed's state by the instance."""

    service_principals: dict[str, str]  # client id -> display name
    tokens: dict[bytes, AccessToken]
    grants: dict[str, Grant]
    refresh_tokens: dict[bytes, RefreshToken]
    connections: dict[str, Connection]
    runtimes: dict[str, Runtime]
    bindings: dict[tuple[str, str], Binding]

    def add_service_principals(self, directory: Directory) -> None:
        """Make the saved service principals (read_snapshot checked they fit the directory)."""
        for client_id, display_name in self.service_principals.items():
            if directory.get(client_id) is None:  # the seed's own principal wins
                directory.service_principal(client_id, display_name)

    def overlay_runtimes(self, seeded: RuntimeRegistry) -> RuntimeRegistry:
        """The seed's runtimes and bindings with the saved ones laid over them (by id / key)."""
        runtimes = dict(seeded.runtimes)
        for runtime_id, runtime in self.runtimes.items():
            current = runtimes.get(runtime_id)
            # A Module-Auth-Token the seed gives is the seed's to change: the seed wins.
            if current is None or not current.token_seeded:
                runtimes[runtime_id] = runtime
        return RuntimeRegistry(runtimes=runtimes, bindings={**seeded.bindings, **self.bindings})


def _read_service_principal(obj: dict[str, Any], path: str) -> tuple[str, str]:
    return _str(obj, "clientId", path), _str(obj, "displayName", path)


def read_snapshot(data: Any, directory: Directory) -> FoundrySnapshot:
    """Check saved data completely and turn it into records (ValueError naming the path)."""
    data = _obj(data, "foundry")
    principals = _each(data, "servicePrincipals", _read_service_principal)
    for index, (client_id, _) in enumerate(principals):
        existing = directory.get(client_id)
        if existing is not None and (
            existing.is_human or existing.oauth_client_id not in (None, client_id)
        ):
            raise ValueError(f"servicePrincipals[{index}]: {client_id!r} is another principal")
    tokens = _each(data, "tokens", _read_token)
    _unique((key.hex() for key, _ in tokens), "access token digest")
    grants = _each(data, "grants", _read_grant)
    _unique((grant.grant_id for grant in grants), "grantId")
    refresh = _each(data, "refreshTokens", _read_refresh)
    _unique((key.hex() for key, _ in refresh), "refresh token digest")
    grant_ids = {grant.grant_id for grant in grants}
    for index, (_, token) in enumerate(refresh):
        if token.grant_id not in grant_ids:
            raise ValueError(f"refreshTokens[{index}].grantId names no saved grant")
    connections = _each(data, "connections", _read_connection)
    _unique((c.rid for c in connections), "connection rid")
    runtimes = _each(data, "runtimes", _read_runtime)
    _unique((r.runtime_id for r in runtimes), "runtimeId")
    bindings = _each(data, "bindings", _read_binding)
    _unique(((b.deployed_app_rid, b.branch) for b in bindings), "deployed app binding")

    grants_by_id = {grant.grant_id: grant for grant in grants}
    # A grant holds its tokens' records themselves (revoking it revokes them): link them again.
    for _, access in tokens:
        if access.grant_id is not None and access.grant_id in grants_by_id:
            grants_by_id[access.grant_id].access_tokens.append(access)
    for _, token in refresh:
        grants_by_id[token.grant_id].refresh_tokens.append(token)
    return FoundrySnapshot(
        service_principals=dict(principals),
        tokens=dict(tokens),
        grants=grants_by_id,
        refresh_tokens=dict(refresh),
        connections={c.rid: c for c in connections},
        runtimes={r.runtime_id: r for r in runtimes},
        bindings={(b.deployed_app_rid, b.branch): b for b in bindings},
    )
