"""The Connectivity API blueprint: `/api/v2/connectivity/connections` (REST connections).

Owns the routes create, get, getConfiguration and updateSecrets, and the serializers of a
connection and its configuration. Secrets are rendered by name only (`asSecretName`,
`asSecretsNames`); no response carries a secret value. Scope failures are 403s with the
errorName the foundry-platform-sdk declares for the endpoint, so its typed exceptions fire.
Unknown query parameters (older SDKs send `preview=true`) are ignored.

Imports quart and the core; nothing from hypercorn or yaml.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quart import Blueprint, Response

from ...web.http import json_response, parse_json, read_body
from ..core.connectivity import (
    Connection,
    ConnectionDraft,
    Domain,
    RestAuth,
    Worker,
    read_secret_update,
)
from .errors import FOUNDRY_API

if TYPE_CHECKING:
    from ..service import FoundryInstance

READ_SCOPE = "api:connectivity-connection-read"
WRITE_SCOPE = "api:connectivity-connection-write"


# Serializers ----------------------------------------------------------------------------------


def secret_to_json(name: str) -> dict[str, Any]:
    return {"type": "asSecretName", "value": name}


def auth_to_json(auth: RestAuth) -> dict[str, Any]:
    body: dict[str, Any] = {"type": auth.kind}
    if auth.kind == "bearerToken" and auth.secret_name is not None:
        body["bearerToken"] = secret_to_json(auth.secret_name)
    elif auth.kind == "apiKey" and auth.secret_name is not None and auth.location is not None:
        field = "headerName" if auth.location.kind == "header" else "queryParameterName"
        body["location"] = {"type": auth.location.kind, field: auth.location.name}
        body["apiKey"] = secret_to_json(auth.secret_name)
    elif auth.kind == "basic" and auth.secret_name is not None:
        body["username"] = auth.username
        body["password"] = secret_to_json(auth.secret_name)
    return body


def domain_to_json(domain: Domain) -> dict[str, Any]:
    body: dict[str, Any] = {"host": domain.host}
    if domain.port is not None:
        body["port"] = domain.port
    if domain.scheme is not None:
        body["scheme"] = domain.scheme
    if domain.auth is not None:
        body["auth"] = auth_to_json(domain.auth)
    return body


def configuration_to_json(connection: Connection) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "rest",
        "domains": [domain_to_json(domain) for domain in connection.domains],
        "additionalSecrets": {
            "type": "asSecretsNames",
            "secretNames": sorted(connection.additional_secret_names),
        },
    }
    if connection.oauth2_client_rid is not None:
        body["oauth2ClientRid"] = connection.oauth2_client_rid
    return body


def worker_to_json(worker: Worker) -> dict[str, Any]:
    if worker.network_egress_policy_rids is None:
        return {"type": "unknownWorker"}
    return {
        "type": "foundryWorker",
        "networkEgressPolicyRids": list(worker.network_egress_policy_rids),
    }


def connection_to_json(connection: Connection) -> dict[str, Any]:
    return {
        "rid": connection.rid,
        "parentFolderRid": connection.parent_folder_rid,
        "displayName": connection.display_name,
        "exportSettings": {
            "exportsEnabled": connection.exports_enabled,
            "exportEnabledWithoutMarkingsValidation": (
                connection.export_enabled_without_markings_validation
            ),
        },
        "worker": worker_to_json(connection.worker),
        "configuration": configuration_to_json(connection),
    }


# Routes -----------------------------------------------------------------------------------------


def connectivity_blueprint(instance: FoundryInstance) -> Blueprint:
    blueprint = Blueprint("foundry_connectivity", __name__, url_prefix="/api/v2/connectivity")

    def authorize(scope: str, denied: str, rid: str | None = None) -> None:
        # `instance.auth` is looked up per request: reset() replaces it with a fresh one.
        instance.auth.require(
            FOUNDRY_API,
            scope=scope,
            denied=denied,
            parameters={} if rid is None else {"connectionRid": rid},
        )

    async def read_json() -> Any:
        settings = instance.context.settings
        data = await read_body(FOUNDRY_API, settings.max_body_bytes, settings.body_timeout)
        if not data.strip():
            raise FOUNDRY_API.error(
                400,
                "InvalidRequestBody",
                "The request body is empty; a JSON object is expected.",
                parameters={"propertyName": "requestBody", "expected": "a JSON object"},
            )
        return parse_json(data, FOUNDRY_API, "InvalidRequestBody")

    @blueprint.post("/connections")
    async def create_connection() -> Response:
        authorize(WRITE_SCOPE, "CreateConnectionPermissionDenied")
        data = await read_json()
        context = instance.context
        draft = ConnectionDraft.from_json(data)
        connection = instance.connectivity.create(
            draft,
            rid=f"ri.magritte..source.{context.randomness.uuid()}",
            now=context.clock.now(),
        )
        return json_response(connection_to_json(connection))

    def existing(connection_rid: str) -> Connection:
        return instance.connectivity.get(connection_rid)

    @blueprint.get("/connections/<connection_rid>")
    async def get_connection(connection_rid: str) -> Response:
        # The SDK declares no permission error for get; this name follows Foundry's pattern.
        authorize(READ_SCOPE, "GetConnectionPermissionDenied", connection_rid)
        return json_response(connection_to_json(existing(connection_rid)))

    @blueprint.get("/connections/<connection_rid>/getConfiguration")
    async def get_configuration(connection_rid: str) -> Response:
        authorize(READ_SCOPE, "GetConfigurationPermissionDenied", connection_rid)
        return json_response(configuration_to_json(existing(connection_rid)))

    @blueprint.post("/connections/<connection_rid>/updateSecrets")
    async def update_secrets(connection_rid: str) -> Response:
        authorize(WRITE_SCOPE, "UpdateSecretsForConnectionPermissionDenied", connection_rid)
        existing(connection_rid)  # a missing connection is reported before a bad body
        data = await read_json()
        secrets = read_secret_update(data)
        instance.connectivity.update_secrets(
            connection_rid, secrets, now=instance.context.clock.now()
        )
        return Response(b"", status=204)

    return blueprint
