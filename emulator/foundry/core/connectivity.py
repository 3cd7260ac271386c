"""Connectivity: REST connections, their domains, workers and secrets (kept by name).

Owns `Connectivity` (every connection by RID), `Connection`, and `ConnectionDraft`, the named
constructor that turns a create request's JSON into checked values. Secret values live only in
`Connection.secrets` (excluded from repr); everything a caller can read names secrets, never
shows their values, and no error message or parameter carries a secret value.

A plaintext secret given inside a domain's auth on create is stored under a generated secret
name that says where it was given: `domains[<index>].auth.<field>` (for example
`domains[0].auth.bearerToken`, `domains[0].auth.apiKey`, `domains[0].auth.password`). Reads
render it as `{"type": "asSecretName", "value": <that name>}` and updateSecrets can change it.

Request bodies are checked here with small validators of their own rather than the platform's
JSON-with-path reader (emulator.platform.seedschema): their failures are Foundry API errors
whose names and parameters (`PropertyCannotBeBlank`, `propertyName`) clients match on, so they
are part of the wire format, not generic reading.

Imports nothing from trio, quart, hypercorn or yaml; no JSON rendering (see api/connectivity.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from ...platform.seedschema import SeedError
from ..seed import RID_PATTERN, ConnectionSeed
from .errors import Conflict, InvalidArgument, NotFound

REST = "rest"
SCHEMES = ("HTTP", "HTTPS")
AUTH_TYPES = ("bearerToken", "apiKey", "basic", "oauth2")
API_KEY_LOCATIONS = ("header", "queryParameter")
# Connections beyond this are refused (every buffer is bounded; the seed does not count).
MAX_CONNECTIONS = 10_000


# Errors ------------------------------------------------------------------------------------
# errorNames the foundry-platform-sdk declares are used where one fits, so its typed
# exceptions fire; the rest are the emulator's own, each with the offending property named.


def _malformed(path: str, expected: str) -> InvalidArgument:
    return InvalidArgument(
        "InvalidRequestBody",
        f"{path} must be {expected}.",
        {"propertyName": path, "expected": expected},
    )


def _blank(path: str) -> InvalidArgument:
    return InvalidArgument(
        "PropertyCannotBeBlank", f"{path} is required and cannot be blank.", {"propertyName": path}
    )


def invalid_rid(path: str, value: str) -> InvalidArgument:
    return InvalidArgument(
        "InvalidResourceIdentifier",
        f"{path} {value!r} is not a resource identifier "
        "(ri.<service>.<instance>.<type>.<locator>).",
        {"propertyName": path, "value": value},
    )


def connection_not_found(rid: str) -> NotFound:
    return NotFound(
        "ConnectionNotFound", "The given Connection could not be found.", {"connectionRid": rid}
    )


# Reading JSON with paths --------------------------------------------------------------------


def _object(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _malformed(path, "a JSON object")
    return value


def _optional_text(obj: Mapping[str, Any], key: str, path: str) -> str | None:
    """A string field that may be absent or null; present but blank is PropertyCannotBeBlank."""
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _malformed(path, "a string")
    if not value.strip():
        raise _blank(path)
    return value


def _text(obj: Mapping[str, Any], key: str, path: str) -> str:
    """A required string field: missing, null or whitespace-only is PropertyCannotBeBlank."""
    value = _optional_text(obj, key, path)
    if value is None:
        raise _blank(path)
    return value


def _check_rid(value: str, path: str) -> str:
    # fullmatch: the pattern's `$` alone would let a trailing newline through.
    if not RID_PATTERN.fullmatch(value):
        raise invalid_rid(path, value)
    return value


def _type_tag(obj: Mapping[str, Any], path: str) -> str:
    return _text(obj, "type", f"{path}.type")


# Values --------------------------------------------------------------------------------------


@attrs.frozen
class ApiKeyLocation:
    kind: str  # "header" or "queryParameter"
    name: str  # the header or query parameter name


@attrs.frozen
class RestAuth:
    """A domain's authentication; secrets appear only as secret names."""

    kind: str  # one of AUTH_TYPES
    # bearerToken: the token; apiKey: the key; basic: the password. None for oauth2.
    secret_name: str | None = None
    username: str | None = None  # basic
    location: ApiKeyLocation | None = None  # apiKey


@attrs.frozen
class Domain:
    host: str
    port: int | None
    scheme: str | None  # "HTTP" or "HTTPS"; None means HTTPS
    auth: RestAuth | None


@attrs.frozen
class Worker:
    # None: an unknown (legacy) worker, which only seeds can have.
    network_egress_policy_rids: tuple[str, ...] | None

    @property
    def is_foundry(self) -> bool:
        return self.network_egress_policy_rids is not None


@attrs.define
class _Secrets:
    """Plaintext secret values collected while reading a request, by secret name."""

    values: dict[str, str] = attrs.field(factory=dict, repr=False)

    def put(self, name: str, value: str, path: str) -> None:
        if name in self.values:
            raise InvalidArgument(
                "DuplicateSecretName",
                f"The secret name {name!r} is given twice ({path}).",
                {"secretName": name},
            )
        self.values[name] = value


def _encrypted(
    value: Any, path: str, generated_name: str, secrets: _Secrets, *, seeded: bool
) -> str:
    """An EncryptedProperty: a plaintext value (stored under `generated_name`) or, in seeds
    only, a secret name (a create request must give plaintext, as in Foundry). Returns the
    secret name."""
    prop = _object(value, path)
    tag = _type_tag(prop, path)
    if tag == "asPlaintextValue":
        secret = prop.get("value")
        if not isinstance(secret, str):
            raise _malformed(f"{path}.value", "a string")
        if not secret:
            raise _blank(f"{path}.value")
        secrets.put(generated_name, secret, path)
        return generated_name
    if tag == "asSecretName":
        if not seeded:
            raise InvalidArgument(
                "EncryptedPropertyMustBeSpecifiedAsPlaintextValue",
                f'{path} must be given as {{"type": "asPlaintextValue", "value": ...}} '
                "when a connection is created.",
                {"propertyName": path},
            )
        return _text(prop, "value", f"{path}.value")
    raise _malformed(f"{path}.type", "asPlaintextValue or asSecretName")


def _auth(value: Any, path: str, index: int, secrets: _Secrets, *, seeded: bool) -> RestAuth:
    obj = _object(value, path)
    kind = _type_tag(obj, path)
    generated = f"domains[{index}].auth."
    if kind == "bearerToken":
        name = _encrypted(
            obj.get("bearerToken"),
            f"{path}.bearerToken",
            generated + "bearerToken",
            secrets,
            seeded=seeded,
        )
        return RestAuth(kind=kind, secret_name=name)
    if kind == "apiKey":
        location = _object(obj.get("location"), f"{path}.location")
        where = _type_tag(location, f"{path}.location")
        if where not in API_KEY_LOCATIONS:
            raise _malformed(f"{path}.location.type", "header or queryParameter")
        field = "headerName" if where == "header" else "queryParameterName"
        location_name = _text(location, field, f"{path}.location.{field}")
        name = _encrypted(
            obj.get("apiKey"),
            f"{path}.apiKey",
            generated + "apiKey",
            secrets,
            seeded=seeded,
        )
        return RestAuth(
            kind=kind, secret_name=name, location=ApiKeyLocation(kind=where, name=location_name)
        )
    if kind == "basic":
        username = _text(obj, "username", f"{path}.username")
        name = _encrypted(
            obj.get("password"),
            f"{path}.password",
            generated + "password",
            secrets,
            seeded=seeded,
        )
        return RestAuth(kind=kind, secret_name=name, username=username)
    if kind == "oauth2":
        return RestAuth(kind=kind)
    raise _malformed(f"{path}.type", "one of " + ", ".join(AUTH_TYPES))


def _domain(value: Any, path: str, index: int, secrets: _Secrets, *, seeded: bool) -> Domain:
    obj = _object(value, path)
    host = _text(obj, "host", f"{path}.host")
    if "://" in host or ":" in host or "/" in host or any(ch.isspace() for ch in host):
        raise InvalidArgument(
            "HostNameCannotHaveProtocolOrPort",
            f"{path}.host must be a bare host name, without a protocol, port, path or spaces; "
            f"got {host!r}.",
            {"hostName": host},
        )
    port = obj.get("port")
    if port is not None:
        if isinstance(port, bool) or not isinstance(port, int):
            raise _malformed(f"{path}.port", "an integer")
        if not 1 <= port <= 65535:
            raise InvalidArgument(
                "PortNotInRange",
                f"{path}.port must be between 1 and 65535, got {port}.",
                {"port": port},
            )
    scheme = obj.get("scheme")
    if scheme is not None and scheme not in SCHEMES:
        raise _malformed(f"{path}.scheme", "HTTP or HTTPS")
    auth_value = obj.get("auth")
    auth = (
        None
        if auth_value is None
        else _auth(auth_value, f"{path}.auth", index, secrets, seeded=seeded)
    )
    if auth is not None and auth.kind != "oauth2" and scheme == "HTTP" and not seeded:
        raise InvalidArgument(
            "DomainMustUseHttpsWithAuthentication",
            f"{path} sends credentials, so its scheme must be HTTPS.",
            {"propertyName": f"{path}.scheme"},
        )
    return Domain(host=host, port=port, scheme=scheme, auth=auth)


def _worker(value: Any, path: str) -> Worker:
    obj = _object(value, path)
    kind = _type_tag(obj, path)
    if kind == "unknownWorker":
        raise InvalidArgument(
            "UnknownWorkerCannotBeUsedForCreatingOrUpdatingConnections",
            "The unknown worker cannot be used to create a connection; "
            'use {"type": "foundryWorker", "networkEgressPolicyRids": [...]}.',
            {},
        )
    if kind != "foundryWorker":
        raise _malformed(f"{path}.type", "foundryWorker")
    rids = obj.get("networkEgressPolicyRids")
    if not isinstance(rids, list):
        raise _malformed(f"{path}.networkEgressPolicyRids", "a list of resource identifiers")
    checked = []
    for number, rid in enumerate(rids):
        item_path = f"{path}.networkEgressPolicyRids[{number}]"
        if not isinstance(rid, str):
            raise _malformed(item_path, "a string")
        checked.append(_check_rid(rid, item_path))
    return Worker(network_egress_policy_rids=tuple(checked))


def _additional_secrets(value: Any, path: str, secrets: _Secrets) -> tuple[str, ...]:
    obj = _object(value, path)
    tag = _type_tag(obj, path)
    if tag == "asSecretsNames":
        raise InvalidArgument(
            "AdditionalSecretsMustBeSpecifiedAsPlaintextValueMap",
            f'{path} must be {{"type": "asSecretsWithPlaintextValues", "secrets": {{...}}}} '
            "when a connection is created.",
            {"propertyName": path},
        )
    if tag != "asSecretsWithPlaintextValues":
        raise _malformed(f"{path}.type", "asSecretsWithPlaintextValues")
    names = []
    for name, secret in _plaintext_map(obj.get("secrets"), f"{path}.secrets").items():
        secrets.put(name, secret, f"{path}.secrets")
        names.append(name)
    return tuple(names)


def _plaintext_map(value: Any, path: str) -> dict[str, str]:
    """A JSON object of secret names to plaintext values (names non-blank, values strings)."""
    obj = _object(value, path)
    result = {}
    for name, secret in obj.items():
        if not name.strip():
            raise _blank(f"{path} (a secret name)")
        if not isinstance(secret, str):
            # The value is not echoed: it may be a secret of the wrong type.
            raise _malformed(f"{path}[{name!r}]", "a string (the plaintext secret value)")
        result[name] = secret
    return result


@attrs.frozen
class ConnectionDraft:
    """A checked create request: everything a new connection needs except its RID."""

    display_name: str
    parent_folder_rid: str
    domains: tuple[Domain, ...]
    oauth2_client_rid: str | None
    additional_secret_names: tuple[str, ...]
    # Every plaintext secret given (additional and auth), by secret name.
    secrets: Mapping[str, str] = attrs.field(repr=False)
    worker: Worker

    @classmethod
    def from_json(cls, data: Any) -> ConnectionDraft:
        """Read a CreateConnectionRequest body; InvalidArgument names the first problem."""
        body = _object(data, "requestBody")
        display_name = _text(body, "displayName", "displayName")
        parent = _check_rid(_text(body, "parentFolderRid", "parentFolderRid"), "parentFolderRid")
        if body.get("configuration") is None:
            raise _blank("configuration")
        config = _object(body["configuration"], "configuration")
        connection_type = _type_tag(config, "configuration")
        if connection_type != REST:
            raise InvalidArgument(
                "ConnectionTypeNotSupported",
                f"Connections of type {connection_type!r} are not supported by the emulator; "
                "only 'rest' is.",
                {"connectionType": connection_type},
            )
        raw_domains = config.get("domains")
        if raw_domains is None or raw_domains == []:
            raise InvalidArgument(
                "PropertyCannotBeEmpty",
                "configuration.domains must list at least one domain.",
                {"propertyName": "configuration.domains"},
            )
        if not isinstance(raw_domains, list):
            raise _malformed("configuration.domains", "a list of domains")
        secrets = _Secrets()
        additional: tuple[str, ...] = ()
        if config.get("additionalSecrets") is not None:
            additional = _additional_secrets(
                config["additionalSecrets"], "configuration.additionalSecrets", secrets
            )
        domains = tuple(
            _domain(item, f"configuration.domains[{index}]", index, secrets, seeded=False)
            for index, item in enumerate(raw_domains)
        )
        oauth2 = _optional_text(config, "oauth2ClientRid", "configuration.oauth2ClientRid")
        if oauth2 is not None:
            _check_rid(oauth2, "configuration.oauth2ClientRid")
        if body.get("worker") is None:
            raise _blank("worker")
        worker = _worker(body["worker"], "worker")
        return cls(
            display_name=display_name,
            parent_folder_rid=parent,
            domains=domains,
            oauth2_client_rid=oauth2,
            additional_secret_names=additional,
            secrets=dict(secrets.values),
            worker=worker,
        )


def read_secret_update(data: Any) -> dict[str, str]:
    """Read an UpdateSecretsForConnectionRequest body: `{"secrets": {name: plaintext}}`."""
    body = _object(data, "requestBody")
    if body.get("secrets") is None:
        raise _malformed("secrets", "an object of secret names to plaintext values")
    return _plaintext_map(body["secrets"], "secrets")


# Entities -------------------------------------------------------------------------------------


@attrs.define
class Connection:
    rid: str
    display_name: str
    parent_folder_rid: str
    domains: tuple[Domain, ...]
    oauth2_client_rid: str | None
    additional_secret_names: tuple[str, ...]
    worker: Worker
    created_at: float
    updated_at: float
    # Secret values by name. Never rendered; repr=False keeps them out of tracebacks.
    secrets: dict[str, str] = attrs.field(factory=dict, repr=False)
    # The emulator cannot change these (Foundry's updateExportSettings is not emulated).
    exports_enabled: bool = False
    export_enabled_without_markings_validation: bool = False

    def secret_names(self) -> frozenset[str]:
        """Every secret this connection has: additional secrets and those its auth uses."""
        auth_names = {
            domain.auth.secret_name
            for domain in self.domains
            if domain.auth is not None and domain.auth.secret_name is not None
        }
        return frozenset(self.secrets) | frozenset(self.additional_secret_names) | auth_names

    @classmethod
    def from_seed(cls, seed: ConnectionSeed, path: str, now: float) -> Connection:
        """A seeded connection. Its `secrets` are its additional secrets; domain auth may
        reference them (or any name) as `asSecretName`, or give plaintext values, which are
        stored under generated names as on create."""
        secrets = _Secrets()
        domains = []
        for index, domain in enumerate(seed.domains):
            domain_path = f"{path}.domains[{index}]"
            try:
                auth = (
                    None
                    if domain.auth is None
                    else _auth(dict(domain.auth), "auth", index, secrets, seeded=True)
                )
            except InvalidArgument as error:
                raise SeedError("", domain_path, f"auth: {error.message}") from None
            domains.append(
                Domain(host=domain.host, port=domain.port, scheme=domain.scheme, auth=auth)
            )
        for name in secrets.values:
            if name in seed.secrets:
                raise SeedError(
                    "", f"{path}.secrets.{name}", "this name is also generated for a domain's auth"
                )
        values = dict(seed.secrets)
        values.update(secrets.values)
        return cls(
            rid=seed.rid,
            display_name=seed.display_name,
            parent_folder_rid=seed.parent_folder_rid,
            domains=tuple(domains),
            oauth2_client_rid=seed.oauth2_client_rid,
            additional_secret_names=tuple(seed.secrets),
            worker=Worker(network_egress_policy_rids=seed.network_egress_policy_rids),
            created_at=now,
            updated_at=now,
            secrets=values,
        )


@attrs.define
class Connectivity:
    """Every connection by RID, in creation order."""

    connections: dict[str, Connection] = attrs.field(factory=dict)
    limit: int = MAX_CONNECTIONS

    @classmethod
    def from_seed(cls, seeds: Iterable[ConnectionSeed], now: float) -> Connectivity:
        connections = {}
        for index, seed in enumerate(seeds):
            connection = Connection.from_seed(seed, f"foundry.connections[{index}]", now)
            connections[connection.rid] = connection
        return cls(connections=connections)

    def get(self, rid: str) -> Connection:
        if not RID_PATTERN.fullmatch(rid):
            raise invalid_rid("connectionRid", rid)
        connection = self.connections.get(rid)
        if connection is None:
            raise connection_not_found(rid)
        return connection

    def create(self, draft: ConnectionDraft, *, rid: str, now: float) -> Connection:
        if not RID_PATTERN.fullmatch(rid):
            raise invalid_rid("connectionRid", rid)
        if rid in self.connections:
            raise Conflict("ConnectionAlreadyExists", f"A connection {rid} already exists.")
        if len(self.connections) >= self.limit:
            raise Conflict(
                "ConnectionLimitReached",
                f"The emulator holds at most {self.limit} connections; reset it to start over.",
                {"limit": self.limit},
            )
        connection = Connection(
            rid=rid,
            display_name=draft.display_name,
            parent_folder_rid=draft.parent_folder_rid,
            domains=draft.domains,
            oauth2_client_rid=draft.oauth2_client_rid,
            additional_secret_names=draft.additional_secret_names,
            worker=draft.worker,
            created_at=now,
            updated_at=now,
            secrets=dict(draft.secrets),
        )
        self.connections[rid] = connection
        return connection

    def update_secrets(self, rid: str, secrets: Mapping[str, str], *, now: float) -> Connection:
        """Set the given secrets' values; secrets not named keep theirs. Every name must
        already be configured on the connection (SecretNamesDoNotExist otherwise)."""
        connection = self.get(rid)
        unknown = sorted(set(secrets) - connection.secret_names())
        if unknown:
            raise InvalidArgument(
                "SecretNamesDoNotExist",
                "These secret names are not configured on the connection: "
                + ", ".join(unknown)
                + ". Configured: "
                + (", ".join(sorted(connection.secret_names())) or "none")
                + ".",
                {"connectionRid": rid, "secretNames": unknown},
            )
        if secrets:
            connection.secrets.update(secrets)
            connection.updated_at = now
        return connection

    def count(self) -> int:
        return len(self.connections)
