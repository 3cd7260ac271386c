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

from ..platform.seedschema import Fields, Node, plain_failure
from .core.connectivity import ApiKeyLocation, Connection, Domain, RestAuth, Worker
from .core.oauth import Grant, GrantState, RefreshState, RefreshToken
from .core.principals import Directory
from .core.runtimes import Binding, Runtime, RuntimeRegistry
from .core.tokens import AccessToken
from .seed import OnRestart, PrincipalType

T = TypeVar("T")


# Reading checked values (with the platform's JSON-with-path reader) -------------------------------


def _record(node: Node, *keys: str) -> Fields:
    """A saved record: a mapping with exactly these keys (each may be null where optional)."""
    return node.fields(optional=keys)


def _digest(fields: Fields) -> bytes:
    text = fields.str("digest")
    try:
        value = bytes.fromhex(text)
    except ValueError:
        value = b""
    if len(value) != 32:
        raise fields["digest"].error("must be a SHA-256 hex digest")
    return value


def _each(root: Fields, key: str, read: Callable[[Node], T]) -> list[T]:
    return [read(item) for item in root.list(key)]


def _strings(fields: Fields, key: str) -> tuple[str, ...]:
    """A required list of strings (each may be empty)."""
    node = fields.get(key)
    if node is None:
        raise fields.node.error(f"{key} is required")
    return tuple(item.as_str(allow_empty=True) for item in node.as_list())


# Snapshot ---------------------------------------------------------------------------------------


def _token_to_data(key: bytes, token: AccessToken, revoked: bool | None = None) -> dict[str, Any]:
    """A token's record; `revoked` as it was when the state was captured (else as it is)."""
    return {
        "digest": key.hex(),
        "username": token.username,
        "scopes": sorted(token.scopes),
        "clientId": token.client_id,
        "issuedAt": token.issued_at,
        "expiresAt": token.expires_at,
        "origin": token.origin,
        "revoked": token.revoked if revoked is None else revoked,
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
        "onRestart": runtime.on_restart.value,
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
    return capture(directory, tokens, grants, refresh_tokens, connections, runtimes)()


def capture(
    directory: Directory,
    tokens: dict[bytes, AccessToken],
    grants: dict[str, Grant],
    refresh_tokens: dict[bytes, RefreshToken],
    connections: dict[str, Connection],
    runtimes: RuntimeRegistry,
    *,
    lazy: bool = False,
) -> Callable[[], dict[str, Any]]:
    """`snapshot` in two halves. On the event loop: every record but the access tokens, and
    of each token the one field that can still change (revoked). The returned function,
    called in a worker thread, renders the tokens (up to 50,000 of them; the rest of a token
    never changes). `lazy`: the tokens as a generator for the state file's writer."""
    captured = [(key, token, token.revoked) for key, token in tokens.items()]
    head = {
        # Client-credentials service principals are made on first use; their tokens need them.
        "servicePrincipals": [
            {"clientId": p.oauth_client_id, "displayName": p.display_name}
            for p in directory.principals.values()
            if p.principal_type is PrincipalType.SERVICE and p.oauth_client_id == p.username
        ],
        "grants": [_grant_to_data(grant) for grant in grants.values()],
        "refreshTokens": [_refresh_to_data(key, token) for key, token in refresh_tokens.items()],
        "connections": [_connection_to_data(c) for c in connections.values()],
        "runtimes": [_runtime_to_data(r) for r in runtimes.runtimes.values()],
        "bindings": [_binding_to_data(b) for b in runtimes.bindings.values()],
    }

    def finish() -> dict[str, Any]:
        rendered = (_token_to_data(key, token, revoked) for key, token, revoked in captured)
        return {**head, "tokens": rendered if lazy else list(rendered)}

    return finish


# Restore ----------------------------------------------------------------------------------------


def _read_token(node: Node) -> tuple[bytes, AccessToken]:
    f = _record(
        node,
        "digest",
        "username",
        "scopes",
        "clientId",
        "issuedAt",
        "expiresAt",
        "origin",
        "revoked",
        "grantId",
    )
    return _digest(f), AccessToken(
        username=f.str("username"),
        scopes=frozenset(_strings(f, "scopes")),
        client_id=f.opt_str("clientId"),
        issued_at=f.float("issuedAt"),
        expires_at=f.opt_float("expiresAt"),
        origin=f.str("origin"),
        revoked=f.bool("revoked"),
        grant_id=f.opt_str("grantId"),
    )


def _read_grant(node: Node) -> Grant:
    f = _record(node, "grantId", "clientId", "username", "scopes", "createdAt", "state")
    return Grant(
        grant_id=f.str("grantId"),
        client_id=f.str("clientId"),
        username=f.str("username"),
        scopes=_strings(f, "scopes"),
        created_at=f.float("createdAt"),
        state=f.choice("state", GrantState),
    )


def _read_refresh(node: Node) -> tuple[bytes, RefreshToken]:
    f = _record(node, "digest", "grantId", "issuedAt", "expiresAt", "state")
    return _digest(f), RefreshToken(
        grant_id=f.str("grantId"),
        issued_at=f.float("issuedAt"),
        expires_at=f.opt_float("expiresAt"),
        state=f.choice("state", RefreshState),
    )


def _read_auth(node: Node | None) -> RestAuth | None:
    if node is None:
        return None
    f = _record(node, "kind", "secretName", "username", "location")
    location_node = f.get("location")
    location = None
    if location_node is not None:
        where = _record(location_node, "kind", "name")
        location = ApiKeyLocation(kind=where.str("kind"), name=where.str("name"))
    return RestAuth(
        kind=f.str("kind"),
        secret_name=f.opt_str("secretName"),
        username=f.opt_str("username"),
        location=location,
    )


def _read_domain(node: Node) -> Domain:
    f = _record(node, "host", "port", "scheme", "auth")
    return Domain(
        host=f.str("host"),
        port=f.opt_int("port"),
        scheme=f.opt_str("scheme"),
        auth=_read_auth(f.get("auth")),
    )


def _read_connection(node: Node) -> Connection:
    f = _record(
        node,
        "rid",
        "displayName",
        "parentFolderRid",
        "domains",
        "oauth2ClientRid",
        "additionalSecretNames",
        "networkEgressPolicyRids",
        "createdAt",
        "updatedAt",
        "secrets",
        "exportsEnabled",
        "exportEnabledWithoutMarkingsValidation",
    )
    secrets_node = f.get("secrets")
    if secrets_node is None or not isinstance(secrets_node.value, dict):
        raise node.error("secrets must be an object of strings")
    secrets = secrets_node.value
    if not all(isinstance(value, str) for value in secrets.values()):
        # Name the path only: a secret value never goes into a message.
        raise secrets_node.error("must be an object of strings")
    policies = f.get("networkEgressPolicyRids")
    return Connection(
        rid=f.str("rid"),
        display_name=f.str("displayName", allow_empty=True),
        parent_folder_rid=f.str("parentFolderRid"),
        domains=tuple(_read_domain(item) for item in f.list("domains")),
        oauth2_client_rid=f.opt_str("oauth2ClientRid"),
        additional_secret_names=_strings(f, "additionalSecretNames"),
        worker=Worker(
            network_egress_policy_rids=(
                None if policies is None else _strings(f, "networkEgressPolicyRids")
            )
        ),
        created_at=f.float("createdAt"),
        updated_at=f.float("updatedAt"),
        secrets=dict(secrets),
        exports_enabled=f.bool("exportsEnabled"),
        export_enabled_without_markings_validation=f.bool("exportEnabledWithoutMarkingsValidation"),
    )


def _read_runtime(node: Node) -> Runtime:
    f = _record(
        node,
        "runtimeId",
        "token",
        "tokenSeeded",
        "onRestart",
        "displayName",
        "createdAt",
        "resetAt",
        "resets",
    )
    return Runtime(
        runtime_id=f.str("runtimeId"),
        token=f.str("token"),
        token_seeded=f.bool("tokenSeeded"),
        on_restart=f.choice("onRestart", OnRestart),
        display_name=f.opt_str("displayName", allow_empty=True),
        created_at=f.float("createdAt"),
        reset_at=f.float("resetAt"),
        resets=f.int("resets"),
    )


def _read_binding(node: Node) -> Binding:
    f = _record(node, "deployedAppRid", "branch", "runtimeId", "displayName", "active", "seeded")
    return Binding(
        deployed_app_rid=f.str("deployedAppRid"),
        branch=f.str("branch"),
        runtime_id=f.str("runtimeId"),
        display_name=f.str("displayName", allow_empty=True),
        active=f.bool("active"),
        seeded=f.bool("seeded"),
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


def _read_service_principal(node: Node) -> tuple[str, str]:
    f = _record(node, "clientId", "displayName")
    return f.str("clientId"), f.str("displayName", allow_empty=True)


def read_snapshot(data: Any, directory: Directory) -> FoundrySnapshot:
    """Check saved data completely and turn it into records (ValueError naming the path)."""
    root = Node(data, "", "", plain_failure)
    if not isinstance(data, dict):
        raise root.error("the saved Foundry state must be an object")
    fields = _record(
        root,
        "servicePrincipals",
        "tokens",
        "grants",
        "refreshTokens",
        "connections",
        "runtimes",
        "bindings",
    )
    principals = _each(fields, "servicePrincipals", _read_service_principal)
    for index, (client_id, _) in enumerate(principals):
        existing = directory.get(client_id)
        if existing is not None and (
            existing.is_human or existing.oauth_client_id not in (None, client_id)
        ):
            raise ValueError(f"servicePrincipals[{index}]: {client_id!r} is another principal")
    tokens = _each(fields, "tokens", _read_token)
    _unique((key.hex() for key, _ in tokens), "access token digest")
    grants = _each(fields, "grants", _read_grant)
    _unique((grant.grant_id for grant in grants), "grantId")
    refresh = _each(fields, "refreshTokens", _read_refresh)
    _unique((key.hex() for key, _ in refresh), "refresh token digest")
    grant_ids = {grant.grant_id for grant in grants}
    for index, (_, token) in enumerate(refresh):
        if token.grant_id not in grant_ids:
            raise ValueError(f"refreshTokens[{index}].grantId names no saved grant")
    connections = _each(fields, "connections", _read_connection)
    _unique((c.rid for c in connections), "connection rid")
    runtimes = _each(fields, "runtimes", _read_runtime)
    _unique((r.runtime_id for r in runtimes), "runtimeId")
    bindings = _each(fields, "bindings", _read_binding)
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
